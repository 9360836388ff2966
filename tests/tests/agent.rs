//! End-to-end tests of the agent (`lb run`): health checks with rise/fall,
//! runtime changes through the control API (`lb backend add/del/drain`),
//! a crash and restart that adopts the pinned data path under load, and
//! refused configurations and API calls that must change nothing.
//!
//! Every test builds its own topology (see `lb_tests::topology`): client,
//! lb, router and backends in their own network namespaces, `lb run` in
//! native XDP mode on the lb's veth, `lb decap` on the backends. Backends
//! serve HTTP on the VIP (port 80) and, for the health checks, a
//! [`HealthServer`] on their own address, port 8080, that the test turns
//! healthy, unhealthy, flapping or off.
//!
//! Needs root (skipped otherwise) and the `lb` binary (`$LB_BIN`, default
//! `target/debug/lb`). The tests of this file run one at a time. Waits are
//! bounded polls with generous limits; nothing asserts how fast anything is.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lb_tests::netns::ip_in;
use lb_tests::topology::{Forwarding, VIP_V4, VipSpec};
use lb_tests::traffic::{HealthMode, HealthServer, KeepAliveLoad, Summary};

#[path = "agent/env.rs"]
mod env;
#[path = "agent/refusals.rs"]
mod refusals;
#[path = "agent/restart.rs"]
mod restart;
#[path = "agent/status.rs"]
mod status;
use env::{Env, FALL, KEEPALIVE, NEW_CONNECTIONS, RING, RISE, WAIT, http_check, serial};
use refusals::{BROKEN_BODIES, bad_files, raw_request, refused_calls};
use restart::{stop_and_detach, wait_answers};
use status::{
    Json, check_probe_invariant, is_down_removed, is_up_in_table, shape, str_of, transitions_of,
    transitions_with_reasons, u64_at,
};

#[test]
fn health_down_after_fall_and_back_after_rise() {
    let name = "health_down_after_fall_and_back_after_rise";
    let _serial = serial();
    let vip = VipSpec::tcp(VIP_V4, 80, Forwarding::Ipip).ring_size(RING).health_check(&http_check());
    let Some(mut env) = Env::new(name, 3, vip, true, false) else { return };
    let b2 = env.backend_addr(1);
    // Every backend probed and up first.
    env.wait_probed("every backend probed at least twice", 2);
    let fp_all = str_of(&env.vip_status(&env.status()), &["fingerprint"]).to_string();
    let mut report = Vec::new();

    for (round, failing) in [HealthMode::Unhealthy, HealthMode::Refusing].into_iter().enumerate() {
        // Down: `fall` failed probes in a row.
        let failed_before = env.health[1].answered().1;
        env.health[1].set_mode(failing).unwrap();
        let (b, status) = env.wait_status(&format!("backend2 down ({failing:?})"), |s| {
            let b = env.backend_status(s, &b2)?;
            check_probe_invariant(&env, &b);
            is_down_removed(&b).then(|| (b, s.clone()))
        });
        let consecutive = u64_at(&b, &["probe", "consecutive_failed"]);
        assert!(consecutive >= u64::from(FALL), "{name}: down after only {consecutive} consecutive failures: {b:?}");
        assert_eq!(str_of(&b, &["probe", "health"]), "down", "{name}: {b:?}");
        assert!(u64_at(&b, &["probe", "transitions"]) > 2 * round as u64, "{name}: transition not counted: {b:?}");
        assert_eq!(u64_at(&b, &["effective_weight"]), 0, "{name}: {b:?}");
        let last = str_of(&b, &["probe", "last_result"]).to_string();
        match failing {
            HealthMode::Unhealthy => assert!(last.contains("503"), "{name}: last_result {last:?}"),
            _ => assert!(last.contains("connect"), "{name}: last_result {last:?}"),
        }
        let ts = transitions_with_reasons(&status, &b2);
        let (health, reason) = ts.last().cloned().unwrap_or_default();
        assert_eq!(health, "down", "{name}: transitions of {b2}: {ts:?}");
        let why = if failing == HealthMode::Unhealthy { "503" } else { "connect" };
        assert!(reason.contains(why), "{name}: transition reason {reason:?} does not mention {why:?}");
        let live_after = status
            .get("transitions")
            .and_then(Json::as_array)
            .and_then(|t| t.last())
            .and_then(|t| t.get("table_live_after_us"))
            .and_then(Json::as_u64);
        assert!(live_after.is_some(), "{name}: the transition does not say when its table went live: {status:?}");
        println!("{name}: table without backend2 live {} us after the deciding probe", live_after.unwrap_or_default());
        let fp_down = str_of(&env.vip_status(&status), &["fingerprint"]).to_string();
        assert_ne!(fp_down, fp_all, "{name}: the table did not change when backend2 went down");
        let failed_answers = env.health[1].answered().1 - failed_before;
        if failing == HealthMode::Unhealthy {
            // The server saw at least `fall` failed probes before the agent gave up.
            assert!(failed_answers >= FALL as usize, "{name}: down after {failed_answers} 503s");
        }

        let s = env.new_connections(NEW_CONNECTIONS);
        println!("{name}: round {round} ({failing:?}), backend2 down; new connections:\n{s}");
        if s.failures > 0 || s.not_sticky > 0 || s.per_backend["backend2"] > 0 {
            env.fail(format!("with backend2 down, new connections must all succeed and avoid it:\n{s}"));
        }
        report.push(format!(
            "{failing:?}: down after {consecutive} consecutive failed probes ({failed_answers} 503s served), \
             {}/{} new connections avoided it",
            s.total - s.per_backend["backend2"],
            s.total
        ));

        // Up again: `rise` good probes in a row.
        env.health[1].set_mode(HealthMode::Healthy).unwrap();
        let (b, status) = env.wait_status("backend2 up again", |s| {
            let b = env.backend_status(s, &b2)?;
            check_probe_invariant(&env, &b);
            is_up_in_table(&b).then(|| (b, s.clone()))
        });
        let ok = u64_at(&b, &["probe", "consecutive_ok"]);
        assert!(ok >= u64::from(RISE), "{name}: up after only {ok} consecutive good probes: {b:?}");
        let ts = transitions_of(&status, &b2);
        assert_eq!(ts.last().map(String::as_str), Some("up"), "{name}: transitions of {b2}: {ts:?}");
        assert_eq!(ts.len(), 2 * (round + 1), "{name}: transitions of {b2}: {ts:?}");
        let fp = str_of(&env.vip_status(&status), &["fingerprint"]).to_string();
        assert_eq!(fp, fp_all, "{name}: the table is not the one of all backends again");
        let s = env.new_connections(NEW_CONNECTIONS);
        println!("{name}: round {round}, backend2 up again; new connections:\n{s}");
        if s.failures > 0 || s.not_sticky > 0 || s.per_backend["backend2"] == 0 {
            env.fail(format!("with backend2 up again, new connections must all succeed and reach it:\n{s}"));
        }
        report.push(format!(
            "back up after {ok} good probes; {}/{} new connections reached it",
            s.per_backend["backend2"], s.total
        ));
    }
    // The other backends never moved.
    let status = env.status();
    for i in [0, 2] {
        let a = env.backend_addr(i);
        assert!(transitions_of(&status, &a).is_empty(), "{name}: {a} had transitions: {status:?}");
    }
    env.health.iter_mut().for_each(HealthServer::stop);
    env.finish();
    println!("{name}: backend2 {}", report.join("; "));
}

#[test]
fn flapping_below_thresholds_changes_nothing() {
    let name = "flapping_below_thresholds_changes_nothing";
    let _serial = serial();
    let vip = VipSpec::tcp(VIP_V4, 80, Forwarding::Ipip).ring_size(RING).health_check(&http_check());
    let Some(mut env) = Env::new(name, 3, vip, true, false) else { return };
    let b2 = env.backend_addr(1);
    env.wait_probed("every backend probed", 1);
    // The flapping may add `fall - 1` failures to a run of them: start from
    // a passed probe (the first one may have failed while the fresh
    // namespaces resolved their neighbours).
    env.wait_status("backend2's last probe passed", |s| {
        let b = env.backend_status(s, &b2)?;
        (u64_at(&b, &["probe", "consecutive_ok"]) >= 1).then_some(())
    });
    let before = env.status();
    let shape_before = shape(&before);
    let checks_before = u64_at(&env.backend_status(&before, &b2).unwrap(), &["probe", "checks"]);

    // fall - 1 failures, one success, again and again: never `fall` in a row.
    let fail_run = FALL - 1;
    env.health[1].set_mode(HealthMode::Flapping { fail_run }).unwrap();
    const PROBES: usize = 24;
    let (ok0, failed0) = env.health[1].answered();
    let deadline = Instant::now() + WAIT;
    loop {
        let (ok, failed) = env.health[1].answered();
        if ok + failed - ok0 - failed0 >= PROBES {
            break;
        }
        if Instant::now() >= deadline {
            env.fail(format!("only {} probes reached backend2 within {WAIT:?}", ok + failed - ok0 - failed0));
        }
        // Meanwhile the probe never goes down.
        let s = env.status();
        let b = env.backend_status(&s, &b2).unwrap();
        check_probe_invariant(&env, &b);
        if !is_up_in_table(&b) {
            env.fail(format!("backend2 left the table while flapping below fall: {b:?}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (ok, failed) = env.health[1].answered();
    let (ok, failed) = (ok - ok0, failed - failed0);
    let after = env.status();
    let b = env.backend_status(&after, &b2).unwrap();
    let probe_failures = u64_at(&b, &["probe", "failures"]);
    let checks = u64_at(&b, &["probe", "checks"]) - checks_before;
    assert!(probe_failures >= u64::from(fail_run) * 4, "{name}: the agent saw only {probe_failures} failures: {b:?}");
    assert_eq!(u64_at(&b, &["probe", "transitions"]), 0, "{name}: {b:?}");
    let ts = after.get("transitions").and_then(Json::as_array).map_or(0, Vec::len);
    assert_eq!(ts, 0, "{name}: transitions recorded: {after:?}");
    assert_eq!(shape(&after), shape_before, "{name}: status changed while flapping");
    env.health[1].set_mode(HealthMode::Healthy).unwrap();

    let s = env.new_connections(NEW_CONNECTIONS);
    println!("{name}: new connections after the flapping:\n{s}");
    if let Err(e) = s.check(0.0, 1.0) {
        env.fail(format!("traffic must reach all backends: {e:#}"));
    }
    env.health.iter_mut().for_each(HealthServer::stop);
    env.finish();
    println!(
        "{name}: backend2 answered {failed} failures and {ok} successes ({fail_run} failures in a row at most) to \
         {checks} probes; the agent counted {probe_failures} failed probes, 0 transitions, fingerprint unchanged; \
         new connections spread over all 3 backends"
    );
}

#[test]
fn backend_added_through_the_api_gets_new_flows_established_stay() {
    let name = "backend_added_through_the_api_gets_new_flows_established_stay";
    let _serial = serial();
    let vip = VipSpec::tcp(VIP_V4, 80, Forwarding::Ipip).ring_size(RING).backends(&[0, 1, 2]);
    let Some(env) = Env::new(name, 4, vip, false, false) else { return };
    let b4 = env.backend_addr(3);
    let fp3 = str_of(&env.vip_status(&env.status()), &["fingerprint"]).to_string();
    assert!(env.backend_status(&env.status(), &b4).is_none(), "{name}: backend4 listed before it was added");

    let mut conns = env.keepalive(KEEPALIVE);
    let out = env.cli_ok(&["backend", "add", &env.vip_id, &b4]);
    println!("{name}: lb backend add: {}", out.trim());
    let status = env.status();
    let b = env.backend_status(&status, &b4).unwrap_or_else(|| env.fail("backend4 not listed after add"));
    assert!(is_up_in_table(&b), "{name}: {b:?}");
    assert_ne!(str_of(&env.vip_status(&status), &["fingerprint"]), fp3, "{name}: table unchanged by the add");
    for args in [&["backend", "list", &env.vip_id][..], &["status"], &["vip", "list"]] {
        let listed = env.cli_ok(args);
        let want = if args[0] == "vip" { "4/4" } else { b4.as_str() };
        assert!(listed.contains(want), "{name}: `lb {}` does not show {want}:\n{listed}", args.join(" "));
    }

    // Established connections keep their backend.
    let mut moved = Vec::new();
    for (i, (c, first)) in conns.iter_mut().enumerate() {
        for _ in 0..3 {
            match c.get() {
                Ok(b) if b == *first => {}
                Ok(b) => moved.push(format!("connection {i}: {first} then {b}")),
                Err(e) => moved.push(format!("connection {i} ({first}): {e:#}")),
            }
        }
    }
    if !moved.is_empty() {
        env.fail(format!("established connections changed after the add: {moved:?}"));
    }
    let s = env.new_connections(NEW_CONNECTIONS);
    println!("{name}: new connections with backend4 added:\n{s}");
    if let Err(e) = s.check(0.0, 1.0) {
        env.fail(format!("new connections must succeed and reach all 4 backends: {e:#}"));
    }
    let on_b4 = s.per_backend["backend4"];

    // And removed again.
    let out = env.cli_ok(&["backend", "del", &env.vip_id, &b4]);
    println!("{name}: lb backend del: {}", out.trim());
    let status = env.status();
    assert!(env.backend_status(&status, &b4).is_none(), "{name}: backend4 still listed after del");
    assert_eq!(str_of(&env.vip_status(&status), &["fingerprint"]), fp3, "{name}: table differs from the original");
    let s2 = env.new_connections(NEW_CONNECTIONS);
    println!("{name}: new connections after backend4 was removed:\n{s2}");
    if s2.failures > 0 || s2.not_sticky > 0 || s2.per_backend["backend4"] > 0 {
        env.fail(format!("after del, new connections must succeed and avoid backend4:\n{s2}"));
    }
    // Connections of the other backends are still fine.
    let mut broken = Vec::new();
    for (i, (c, first)) in conns.iter_mut().enumerate().filter(|(_, (_, f))| f != "backend4") {
        match c.get() {
            Ok(b) if b == *first => {}
            other => broken.push(format!("connection {i} ({first}): {:?}", other.map_err(|e| format!("{e:#}")))),
        }
    }
    if !broken.is_empty() {
        env.fail(format!("established connections broke after the del: {broken:?}"));
    }
    drop(conns);
    env.finish();
    println!(
        "{name}: {KEEPALIVE}/{KEEPALIVE} established connections kept their backend across the add; \
         {on_b4}/{NEW_CONNECTIONS} new connections reached the added backend4; after del 0/{NEW_CONNECTIONS}"
    );
}

#[test]
fn drain_keeps_established_flows() {
    let name = "drain_keeps_established_flows";
    let _serial = serial();
    let vip = VipSpec::tcp(VIP_V4, 80, Forwarding::Ipip).ring_size(RING);
    let Some(env) = Env::new(name, 3, vip, false, false) else { return };
    let b1 = env.backend_addr(0);
    let mut conns = env.keepalive(KEEPALIVE);
    let on_b1 = conns.iter().filter(|(_, b)| b == "backend1").count();
    assert!(on_b1 > 0, "{name}: none of {KEEPALIVE} connections landed on backend1");

    env.cli_ok(&["backend", "drain", &env.vip_id, &b1]);
    let status = env.status();
    let b = env.backend_status(&status, &b1).unwrap();
    assert_eq!(
        (str_of(&b, &["state"]), str_of(&b, &["placement"]), u64_at(&b, &["effective_weight"])),
        ("drain", "draining", 0),
        "{name}: {b:?}"
    );
    let mut problems = Vec::new();
    for (i, (c, first)) in conns.iter_mut().enumerate() {
        for _ in 0..4 {
            match c.get() {
                Ok(b) if b == *first => {}
                other => problems.push(format!("connection {i} ({first}): {:?}", other.map_err(|e| format!("{e:#}")))),
            }
        }
    }
    if !problems.is_empty() {
        env.fail(format!(
            "established connections must keep answering from their backend during a drain: {problems:?}"
        ));
    }
    let s = env.new_connections(NEW_CONNECTIONS);
    println!("{name}: new connections with backend1 draining:\n{s}");
    if s.failures > 0 || s.not_sticky > 0 || s.per_backend["backend1"] > 0 {
        env.fail(format!("while backend1 drains, new connections must succeed and avoid it:\n{s}"));
    }

    env.cli_ok(&["backend", "undrain", &env.vip_id, &b1]);
    let b = env.backend_status(&env.status(), &b1).unwrap();
    assert_eq!((str_of(&b, &["state"]), str_of(&b, &["placement"])), ("up", "in-table"), "{name}: {b:?}");
    let s2 = env.new_connections(NEW_CONNECTIONS);
    println!("{name}: new connections after undrain:\n{s2}");
    if let Err(e) = s2.check(0.0, 1.0) {
        env.fail(format!("after undrain, new connections must reach all backends: {e:#}"));
    }
    for (i, (c, first)) in conns.iter_mut().enumerate() {
        match c.get() {
            Ok(b) if b == *first => {}
            other => {
                env.fail(format!("connection {i} ({first}) after undrain: {:?}", other.map_err(|e| format!("{e:#}"))))
            }
        }
    }
    drop(conns);
    env.finish();
    println!(
        "{name}: {on_b1} established connections on backend1 answered 4 more requests each from it while it \
         drained; 0/{} new connections reached it; after undrain {}/{}",
        s.total, s2.per_backend["backend1"], s2.total
    );
}

#[test]
fn agent_killed_and_restarted_under_load_loses_no_connection() {
    let name = "agent_killed_and_restarted_under_load_loses_no_connection";
    let _serial = serial();
    let vip = VipSpec::tcp(VIP_V4, 80, Forwarding::Ipip).ring_size(RING).health_check(&http_check());
    let Some(mut env) = Env::new(name, 3, vip, true, true) else { return };
    let lb = env.topo.lb().clone();
    let conns = env.keepalive(KEEPALIVE);
    let first: Vec<String> = conns.iter().map(|(_, b)| b.clone()).collect();
    let load = KeepAliveLoad::start(
        conns.into_iter().map(|(c, _)| c).collect(),
        Duration::from_millis(20),
        Duration::from_secs(15),
    )
    .unwrap_or_else(|e| env.fail(format!("{e:#}")));
    wait_answers(name, &load, "before the kill", 5);
    let before = env.status();
    let packets_before = u64_at(&env.vip_status(&before), &["packets"]);
    let fp_before = str_of(&env.vip_status(&before), &["fingerprint"]).to_string();
    let old_pid = env.topo.lb_pid();
    let answered_at_kill = load.answered();

    let killed = env.topo.kill_lb().unwrap_or_else(|e| env.fail(format!("{e:#}")));
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&killed), Some(libc::SIGKILL), "{name}: {killed}");
    let link = ip_in(&lb.ns, &["link", "show", "dev", &lb.ifname]).unwrap();
    assert!(link.contains("xdp"), "{name}: no XDP program on {} after the agent died: {link}", lb.ifname);
    let dead = env.cli(&["status"]);
    assert_eq!(dead.code, Some(69), "{name}: lb status with the agent dead: {dead}");
    let t_dead = Instant::now();
    // New flows are balanced too while no agent runs.
    let dead_new = env.new_connections(20);
    if dead_new.failures > 0 || dead_new.not_sticky > 0 {
        env.fail(format!("new connections while the agent was dead:\n{dead_new}"));
    }
    wait_answers(name, &load, "while the agent was dead", 5);
    while t_dead.elapsed() < Duration::from_millis(500) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let answered_dead = load.answered() - answered_at_kill;

    if let Err(e) = env.topo.start_lb_keeping_pins(&env.config) {
        drop(load);
        env.fail(format!("restarting lb: {e:#}"));
    }
    assert_ne!(env.topo.lb_pid(), old_pid);
    let log = env.topo.lb_log();
    assert!(log.contains("adopting"), "{name}: the new agent did not adopt the pinned data path:\n{log}");
    // Counters were adopted, not restarted: every request answered since
    // the first snapshot sent at least one packet through the VIP (at most
    // one request per connection was already in flight before it).
    let answered_at_restart = load.answered();
    let packets_restart = u64_at(&env.vip_status(&env.status()), &["packets"]);
    let floor = (packets_before + (answered_at_restart - answered_at_kill) as u64).saturating_sub(KEEPALIVE as u64);
    assert!(
        packets_restart >= floor,
        "{name}: VIP packets right after the restart {packets_restart} < {floor} (before the kill {packets_before}, \
         {} requests answered since): the counters restarted from zero",
        answered_at_restart - answered_at_kill
    );
    let t_up = Instant::now();
    wait_answers(name, &load, "after the restart", 10);
    while t_up.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let results = load.stop();
    let names = env.topo.backend_names();
    let s = Summary::new(&results, &names);
    println!("{name}: keep-alive connections through kill and restart:\n{s}");
    let mut problems = Vec::new();
    for (i, r) in results.iter().enumerate() {
        if let Some(e) = &r.error {
            problems.push(format!("connection {i} failed after {} answers: {e}", r.backends.len()));
        }
        if let Some(b) = r.backends.iter().find(|b| **b != first[i]) {
            problems.push(format!("connection {i} moved from {} to {b}", first[i]));
        }
    }
    if !problems.is_empty() {
        env.fail(format!("connections were lost or moved: {problems:?}\n{s}"));
    }

    // The new agent works, adopted the maps (counters went on) and the table.
    let after = env.wait_probed("probes running again", 1);
    let packets_after = u64_at(&env.vip_status(&after), &["packets"]);
    assert!(packets_after > packets_restart, "{name}: VIP packets {packets_restart} -> {packets_after}");
    assert_eq!(str_of(&env.vip_status(&after), &["fingerprint"]), fp_before, "{name}: table changed by the restart");
    let total = s.answers;

    // Stop for good: SIGTERM leaves the pins, `lb detach` removes them.
    stop_and_detach(&mut env);
    env.health.iter_mut().for_each(HealthServer::stop);
    println!(
        "{name}: {KEEPALIVE} connections answered {total} requests (about {} while no agent ran, \
         when {}/{} new connections succeeded too), 0 failed, 0 moved; \
         the restarted agent adopted the pins: VIP packets {packets_before} before the kill, {packets_restart} right \
         after the restart, {packets_after} at the end; same fingerprint",
        answered_dead, dead_new.good, dead_new.total
    );
}
#[test]
fn bad_config_and_bad_api_calls_change_nothing() {
    let name = "bad_config_and_bad_api_calls_change_nothing";
    let _serial = serial();
    let vip = VipSpec::tcp(VIP_V4, 80, Forwarding::Ipip).ring_size(RING).health_check(&http_check());
    let Some(mut env) = Env::new(name, 3, vip, true, false) else { return };
    let recorded = shape(&env.wait_probed("every backend probed", 1));
    let good = std::fs::read_to_string(&env.config).unwrap();
    let vid = env.vip_id.clone();
    let mut refused = BTreeMap::new();

    // Invalid files: `lb reload` refuses them (64) and names the key.
    for (what, text, needles) in &bad_files(&good) {
        assert_ne!(*text, good, "{name}: {what}: the edit did not apply");
        std::fs::write(&env.config, text).unwrap();
        let err = env.cli_refused(&["reload"], needles);
        refused.insert(format!("reload, {what}"), err);
        assert_eq!(shape(&env.status()), recorded, "{name}: status changed by a refused reload ({what})");
    }
    std::fs::write(&env.config, &good).unwrap();

    // Refused API calls.
    let b1 = env.backend_addr(0);
    for (what, args, needles) in &refused_calls(&vid, &b1) {
        let err = env.cli_refused(args, needles);
        refused.insert(what.to_string(), err);
        assert_eq!(shape(&env.status()), recorded, "{name}: status changed by a refused call ({what})");
    }

    // Raw requests with broken bodies: 400 naming the problem.
    let sock = env.topo.control_socket();
    for (what, path, body, needles) in BROKEN_BODIES {
        let (status, answer) = raw_request(&sock, "POST", path, body);
        if status != 400 || needles.iter().any(|n| !answer.contains(n)) {
            env.fail(format!(
                "raw request ({what}) to {path}: expected 400 naming {needles:?}, got {status}: {answer}"
            ));
        }
        refused.insert(format!("raw {what}"), format!("{status} {answer}"));
        assert_eq!(shape(&env.status()), recorded, "{name}: status changed by a raw request ({what})");
    }

    // A good reload of the unchanged file is accepted and changes nothing either.
    env.cli_ok(&["reload"]);
    assert_eq!(shape(&env.status()), recorded, "{name}: status changed by reloading the same file");
    let s = env.new_connections(NEW_CONNECTIONS);
    println!("{name}: new connections after every refused change:\n{s}");
    if let Err(e) = s.check(0.0, 1.0) {
        env.fail(format!("traffic must still reach all backends: {e:#}"));
    }
    for (what, msg) in &refused {
        println!("{name}: refused {what}: {msg}");
    }
    let count = refused.len();
    env.health.iter_mut().for_each(HealthServer::stop);
    env.finish();
    println!(
        "{name}: {count} refused reloads and calls, status unchanged after each; {}/{} new connections ok",
        s.good, s.total
    );
}
