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
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use lb_tests::netns::{CmdOutput, ip_in, is_root};
use lb_tests::topology::{Forwarding, Topology, TopologyOptions, VIP_V4, VipSpec};
use lb_tests::traffic::{
    HealthMode, HealthServer, HttpConn, KeepAliveLoad, Summary, TcpLoad, open_keepalive, tcp_client,
};

/// A small prime ring keeps table generation fast in debug builds.
const RING: u32 = 251;
/// Port of the backends' health-check servers (on their own addresses).
const HC_PORT: u16 = 8080;
const RISE: u32 = 2;
const FALL: u32 = 3;
// Generous probe timeout: a spurious timeout on a loaded CI machine must
// not add to the deliberate failures of the flapping test.
const INTERVAL_MS: u64 = 200;
const TIMEOUT_MS: u64 = 150;
/// New connections per traffic check.
const NEW_CONNECTIONS: usize = 100;
/// Keep-alive connections held across a change.
const KEEPALIVE: usize = 30;
/// Timeout of each connect, read and write of the test's clients.
const OP_TIMEOUT: Duration = Duration::from_secs(3);
/// Bound of every wait for the agent to reach a state.
const WAIT: Duration = Duration::from_secs(20);

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    // A failed test poisons the mutex; the next one may still run.
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn http_check() -> String {
    format!(
        "{{ kind = \"http\", port = {HC_PORT}, path = \"/health\", expect_status = 200, interval_ms = {INTERVAL_MS}, \
         timeout_ms = {TIMEOUT_MS}, rise = {RISE}, fall = {FALL} }}"
    )
}

/// One test's world. Fields drop in order: health servers, then the
/// topology (which stops lb, decaps, and removes the namespaces).
struct Env {
    name: &'static str,
    health: Vec<HealthServer>,
    topo: Topology,
    config: PathBuf,
    vip: VipSpec,
    /// `198.18.100.1:80/tcp`
    vip_id: String,
}

impl Env {
    /// Builds a topology with `backends` backends (health servers on every
    /// one when `health` is set), writes a config with `vip` and starts
    /// `lb run` (keeping its pins when `keep_pins`). `None` when not root.
    fn new(name: &'static str, backends: usize, vip: VipSpec, health: bool, keep_pins: bool) -> Option<Env> {
        if !is_root() {
            eprintln!("{name}: skipped: the agent tests need root");
            return None;
        }
        let opts = TopologyOptions { backends, vips_v6: vec![], udp_ports: vec![], ..Default::default() };
        let topo = Topology::new(opts).unwrap_or_else(|e| panic!("{name}: topology: {e:#}"));
        let mut servers = Vec::new();
        if health {
            for b in topo.backends() {
                let addr = SocketAddr::new(IpAddr::V4(b.v4), HC_PORT);
                let s = HealthServer::start(&b.ns, &b.name, addr, HealthMode::Healthy)
                    .unwrap_or_else(|e| panic!("{name}: health server of {}: {e:#}", b.name));
                servers.push(s);
            }
        }
        let config = topo.write_config(std::slice::from_ref(&vip));
        let vip_id = vip.id();
        let mut env = Env { name, health: servers, topo, config, vip, vip_id };
        let started =
            if keep_pins { env.topo.start_lb_keeping_pins(&env.config) } else { env.topo.start_lb(&env.config) };
        if let Err(e) = started {
            panic!("{name}: starting lb: {e:#}\nconfig:\n{}", std::fs::read_to_string(&env.config).unwrap_or_default());
        }
        Some(env)
    }

    /// Panics naming the test; the topology prints the agent's and the
    /// decapsulators' logs as it is torn down.
    fn fail(&self, what: impl std::fmt::Display) -> ! {
        panic!("{}: {what}", self.name)
    }

    /// `lb --socket S ARGS...` with its exit code and output.
    fn cli(&self, args: &[&str]) -> CmdOutput {
        self.topo.lb_cli_status(args).unwrap_or_else(|e| self.fail(format!("lb {}: {e:#}", args.join(" "))))
    }

    /// `lb ARGS...`, which must exit 0; returns stdout.
    fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        if !out.success() {
            self.fail(format!("`lb {}` failed: {out}", args.join(" ")));
        }
        out.stdout
    }

    /// `lb ARGS...`, which the agent must refuse: exit 64, and stderr
    /// containing every one of `needles`. Returns stderr.
    fn cli_refused(&self, args: &[&str], needles: &[&str]) -> String {
        let out = self.cli(args);
        if out.code != Some(64) || needles.iter().any(|n| !out.stderr.contains(n)) {
            self.fail(format!("`lb {}`: expected exit 64 and {needles:?} in stderr; got {out}", args.join(" ")));
        }
        out.stderr.trim().to_string()
    }

    fn status(&self) -> Json {
        let text = self.cli_ok(&["status", "--json"]);
        Json::parse(&text).unwrap_or_else(|e| self.fail(format!("lb status --json: {e}\n{text}")))
    }

    /// The status of this test's VIP.
    fn vip_status(&self, status: &Json) -> Json {
        let vips = status.get("vips").and_then(Json::as_array).unwrap_or_else(|| self.fail("status has no vips"));
        vips.iter()
            .find(|v| v.str_at("vip") == Some(self.vip_id.as_str()))
            .cloned()
            .unwrap_or_else(|| self.fail(format!("status has no VIP {}: {status:?}", self.vip_id)))
    }

    /// The status of one backend of this test's VIP, if it is listed.
    fn backend_status(&self, status: &Json, addr: &str) -> Option<Json> {
        let vip = self.vip_status(status);
        vip.get("backends")?.as_array()?.iter().find(|b| b.str_at("address") == Some(addr)).cloned()
    }

    fn backend_addr(&self, i: usize) -> String {
        self.topo.backends()[i].v4.to_string()
    }

    /// Polls `lb status --json` every 50 ms until `done` returns
    /// `Some(_)`, for at most [`WAIT`].
    fn wait_status<T>(&self, what: &str, mut done: impl FnMut(&Json) -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            let s = self.status();
            if let Some(t) = done(&s) {
                return t;
            }
            if Instant::now() >= deadline {
                self.fail(format!("waited {WAIT:?} for {what}; last status:\n{}", self.cli(&["status"]).stdout));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `n` new connections (2 requests each) to the VIP.
    fn new_connections(&self, n: usize) -> Summary {
        let mut load = TcpLoad::new(self.vip.target(), n);
        load.requests = 2;
        load.op_timeout = OP_TIMEOUT;
        let results = tcp_client(&self.topo.client().ns, &load).unwrap_or_else(|e| self.fail(format!("client: {e:#}")));
        Summary::new(&results, &self.topo.backend_names())
    }

    fn keepalive(&self, n: usize) -> Vec<(HttpConn, String)> {
        open_keepalive(&self.topo.client().ns, self.vip.target(), n, OP_TIMEOUT)
            .unwrap_or_else(|e| self.fail(format!("keep-alive connections: {e:#}")))
    }

    /// Ends the test: the agent must still run, then it is stopped (exit 0).
    fn finish(mut self) {
        if let Err(e) = self.topo.check_children() {
            self.fail(format!("{e:#}"));
        }
        if let Err(e) = self.topo.stop_lb() {
            self.fail(format!("{e:#}"));
        }
    }
}

fn u64_at(j: &Json, path: &[&str]) -> u64 {
    j.path(path).and_then(Json::as_f64).map(|f| f as u64).unwrap_or_else(|| panic!("no number at {path:?} in {j:?}"))
}

fn str_of<'a>(j: &'a Json, path: &[&str]) -> &'a str {
    j.path(path).and_then(Json::as_str).unwrap_or_else(|| panic!("no string at {path:?} in {j:?}"))
}

/// What must not change when the agent refuses something: per VIP its
/// fingerprint, failing-open flag and every backend's address, weights,
/// state, health and placement (not counters or probe counts).
fn shape(status: &Json) -> String {
    let mut out = String::new();
    for v in status.get("vips").and_then(Json::as_array).into_iter().flatten() {
        out.push_str(&format!(
            "{} fingerprint={} failing_open={:?} ring={:?}\n",
            v.str_at("vip").unwrap_or("?"),
            v.str_at("fingerprint").unwrap_or("?"),
            v.get("failing_open"),
            v.get("ring_size"),
        ));
        for b in v.get("backends").and_then(Json::as_array).into_iter().flatten() {
            out.push_str(&format!(
                "  {} weight={:?}/{:?} state={} health={} placement={}\n",
                b.str_at("address").unwrap_or("?"),
                b.get("weight"),
                b.get("effective_weight"),
                b.str_at("state").unwrap_or("?"),
                b.str_at("health").unwrap_or("?"),
                b.str_at("placement").unwrap_or("?"),
            ));
        }
    }
    out
}

/// The health of every transition of `backend` in the status, in order.
fn transitions_of(status: &Json, backend: &str) -> Vec<String> {
    transitions_with_reasons(status, backend).into_iter().map(|(h, _)| h).collect()
}

/// (health, reason) of every transition of `backend` in the status.
fn transitions_with_reasons(status: &Json, backend: &str) -> Vec<(String, String)> {
    status
        .get("transitions")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .filter(|t| t.str_at("backend") == Some(backend))
        .map(|t| (t.str_at("health").unwrap_or("?").to_string(), t.str_at("reason").unwrap_or("?").to_string()))
        .collect()
}

/// Health down and out of the table, seen by the agent.
fn is_down_removed(b: &Json) -> bool {
    b.str_at("health") == Some("down") && b.str_at("placement") == Some("removed")
}

fn is_up_in_table(b: &Json) -> bool {
    b.str_at("health") == Some("up") && b.str_at("placement") == Some("in-table")
}

/// The probe invariant of rise/fall: a probe that still says up has seen
/// fewer than `fall` failures in a row.
fn check_probe_invariant(env: &Env, b: &Json) {
    if b.path(&["probe", "health"]).and_then(Json::as_str) == Some("up") {
        let failed = u64_at(b, &["probe", "consecutive_failed"]);
        if failed >= u64::from(FALL) {
            env.fail(format!("probe is up after {failed} consecutive failures (fall {FALL}): {b:?}"));
        }
    }
}

#[test]
fn health_down_after_fall_and_back_after_rise() {
    let name = "health_down_after_fall_and_back_after_rise";
    let _serial = serial();
    let vip = VipSpec::tcp(VIP_V4, 80, Forwarding::Ipip).ring_size(RING).health_check(&http_check());
    let Some(mut env) = Env::new(name, 3, vip, true, false) else { return };
    let b2 = env.backend_addr(1);
    // Every backend probed and up first.
    env.wait_status("every backend probed at least twice", |s| {
        let v = env.vip_status(s);
        let bs = v.get("backends")?.as_array()?;
        bs.iter().all(|b| is_up_in_table(b) && u64_at(b, &["probe", "checks"]) >= 2).then_some(())
    });
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
    env.wait_status("every backend probed", |s| {
        let v = env.vip_status(s);
        let bs = v.get("backends")?.as_array()?;
        bs.iter().all(|b| is_up_in_table(b) && u64_at(b, &["probe", "checks"]) >= 1).then_some(())
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
    let after = env.wait_status("probes running again", |st| {
        let v = env.vip_status(st);
        let bs = v.get("backends")?.as_array()?;
        bs.iter().all(|b| is_up_in_table(b) && u64_at(b, &["probe", "checks"]) >= 1).then(|| st.clone())
    });
    let packets_after = u64_at(&env.vip_status(&after), &["packets"]);
    assert!(packets_after > packets_restart, "{name}: VIP packets {packets_restart} -> {packets_after}");
    assert_eq!(str_of(&env.vip_status(&after), &["fingerprint"]), fp_before, "{name}: table changed by the restart");
    let total = s.answers;

    // Stop for good: SIGTERM leaves the pins, `lb detach` removes them.
    if let Err(e) = env.topo.stop_lb() {
        env.fail(format!("{e:#}"));
    }
    let link = ip_in(&lb.ns, &["link", "show", "dev", &lb.ifname]).unwrap();
    assert!(link.contains("xdp"), "{name}: a stopped agent (no --detach-on-exit) detached: {link}");
    let out = env.topo.detach_lb().unwrap_or_else(|e| env.fail(format!("lb detach: {e:#}")));
    println!("{name}: lb detach: {}", out.trim());
    let link = ip_in(&lb.ns, &["link", "show", "dev", &lb.ifname]).unwrap();
    assert!(!link.contains("xdp"), "{name}: still attached after lb detach: {link}");
    // bpffs itself shows maps.debug and progs.debug (its preload iterators).
    let pins: Vec<_> = walk(&env.topo.pin_path())
        .into_iter()
        .filter(|p| p.parent() != Some(env.topo.pin_path().as_path()) || p.extension().is_none_or(|e| e != "debug"))
        .collect();
    assert!(pins.is_empty(), "{name}: pins left after lb detach: {pins:?}");
    env.health.iter_mut().for_each(HealthServer::stop);
    println!(
        "{name}: {KEEPALIVE} connections answered {total} requests (about {} while no agent ran, \
         when {}/{} new connections succeeded too), 0 failed, 0 moved; \
         the restarted agent adopted the pins: VIP packets {packets_before} before the kill, {packets_restart} right \
         after the restart, {packets_after} at the end; same fingerprint",
        answered_dead, dead_new.good, dead_new.total
    );
}

/// Waits (bounded) until every connection of `load` answered `more`
/// requests more than when called, or one failed (reported later with the
/// results).
fn wait_answers(name: &str, load: &KeepAliveLoad, what: &str, more: usize) {
    let base = load.answered_per_connection();
    let deadline = Instant::now() + WAIT;
    loop {
        let now = load.answered_per_connection();
        if now.iter().zip(&base).all(|(n, b)| n - b >= more) || load.failed() > 0 {
            return;
        }
        if Instant::now() >= deadline {
            panic!("{name}: {what}: not every connection answered {more} more requests within {WAIT:?}: {now:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Files under `dir` (recursively; bounded).
fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        if out.len() > 1000 {
            break;
        }
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

/// One raw HTTP request on the control socket from this process; returns
/// (status, body).
fn raw_request(socket: &std::path::Path, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = UnixStream::connect(socket).unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: lb\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut answer = Vec::new();
    // Bounded by the read timeout and by this size.
    let _ = s.take(1 << 20).read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

#[test]
fn bad_config_and_bad_api_calls_change_nothing() {
    let name = "bad_config_and_bad_api_calls_change_nothing";
    let _serial = serial();
    let vip = VipSpec::tcp(VIP_V4, 80, Forwarding::Ipip).ring_size(RING).health_check(&http_check());
    let Some(mut env) = Env::new(name, 3, vip, true, false) else { return };
    let wait_probed = |env: &Env| {
        env.wait_status("every backend probed", |s| {
            let v = env.vip_status(s);
            let bs = v.get("backends")?.as_array()?;
            bs.iter().all(|b| is_up_in_table(b) && u64_at(b, &["probe", "checks"]) >= 1).then(|| s.clone())
        })
    };
    let recorded = shape(&wait_probed(&env));
    let good = std::fs::read_to_string(&env.config).unwrap();
    let vid = env.vip_id.clone();
    let mut refused = BTreeMap::new();

    // Invalid files: `lb reload` refuses them (64) and names the key.
    let no_macs: String =
        good.lines().filter(|l| !l.trim_start().starts_with("mac =")).map(|l| format!("{l}\n")).collect();
    let bad_files = [
        ("typo'd key", good.replace("ring_size = ", "ring_sise = "), vec!["ring_sise"]),
        (
            "l2dsr VIP without backend MACs",
            no_macs.replace("forwarding = \"ipip\"\nring_size", "forwarding = \"l2dsr\"\nring_size"),
            vec!["vip[0].backend[0].mac"],
        ),
        (
            "non-prime ring_size",
            good.replace(&format!("ring_size = {RING}"), "ring_size = 250"),
            vec!["vip[0].ring_size", "250"],
        ),
        (
            "health check timeout above its interval",
            good.replace(&format!("timeout_ms = {TIMEOUT_MS}"), "timeout_ms = 5000"),
            vec!["vip[0].health_check.timeout_ms"],
        ),
        ("not TOML", format!("{good}\n[[vip]\n"), vec!["TOML"]),
    ];
    for (what, text, needles) in &bad_files {
        assert_ne!(*text, good, "{name}: {what}: the edit did not apply");
        std::fs::write(&env.config, text).unwrap();
        let err = env.cli_refused(&["reload"], needles);
        refused.insert(format!("reload, {what}"), err);
        assert_eq!(shape(&env.status()), recorded, "{name}: status changed by a refused reload ({what})");
    }
    std::fs::write(&env.config, &good).unwrap();

    // Refused API calls.
    let b1 = env.backend_addr(0);
    let calls: Vec<(&str, Vec<&str>, Vec<&str>)> = vec![
        ("IPv6 backend to an IPv4 VIP", vec!["backend", "add", &vid, "2001:db8::14"], vec!["2001:db8::14", "family"]),
        ("backend to an unknown VIP", vec!["backend", "add", "198.18.100.9:80/tcp", "198.18.0.14"], vec!["no VIP"]),
        ("duplicate backend", vec!["backend", "add", &vid, &b1], vec![&b1, "twice"]),
        ("existing VIP", vec!["vip", "add", &vid, "--backend", "198.18.0.14"], vec!["twice"]),
        (
            "drain of an unknown backend",
            vec!["backend", "drain", &vid, "198.18.0.19"],
            vec!["no backend", "198.18.0.19"],
        ),
        ("del of an unknown backend", vec!["backend", "del", &vid, "198.18.0.19"], vec!["no backend"]),
        ("del of an unknown VIP", vec!["vip", "del", "198.18.100.9:80/tcp"], vec!["no VIP"]),
        (
            "backend weight above the maximum",
            vec!["backend", "add", &vid, "198.18.0.14", "--weight", "10001"],
            vec!["weight"],
        ),
    ];
    for (what, args, needles) in &calls {
        let err = env.cli_refused(args, needles);
        refused.insert(what.to_string(), err);
        assert_eq!(shape(&env.status()), recorded, "{name}: status changed by a refused call ({what})");
    }

    // Raw requests with broken bodies: 400 naming the problem.
    let sock = env.topo.control_socket();
    let raw: [(&str, &str, &str, &[&str]); 5] = [
        (
            "partial JSON",
            "/v1/backends/add",
            r#"{"vip": "198.18.100.1:80/tcp", "backend": {"address": "198.18.0.14""#,
            &["request body", "EOF"],
        ),
        (
            "unknown top-level key",
            "/v1/backends/add",
            r#"{"vip": "198.18.100.1:80/tcp", "backend": {"address": "198.18.0.14"}, "colour": "red"}"#,
            &["unknown field", "colour"],
        ),
        (
            "unknown backend key",
            "/v1/backends/add",
            r#"{"vip": "198.18.100.1:80/tcp", "backend": {"address": "198.18.0.14", "wieght": 2}}"#,
            &["unknown field", "wieght"],
        ),
        (
            "unknown state",
            "/v1/backends/state",
            r#"{"vip": "198.18.100.1:80/tcp", "address": "198.18.0.11", "state": "sleepy"}"#,
            &["sleepy"],
        ),
        (
            "unknown VIP key",
            "/v1/vips/add",
            r#"{"address": "198.18.100.2", "port": 80, "protocol": "tcp", "backends": []}"#,
            &["unknown field", "backends"],
        ),
    ];
    for (what, path, body, needles) in raw {
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

/// `lb status --json` and the API's answers, read with serde_json.
type Json = serde_json::Value;

trait JsonExt {
    fn parse(text: &str) -> Result<Json, String>;
    fn path(&self, keys: &[&str]) -> Option<&Json>;
    fn str_at(&self, key: &str) -> Option<&str>;
}

impl JsonExt for Json {
    fn parse(text: &str) -> Result<Json, String> {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }

    fn path(&self, keys: &[&str]) -> Option<&Json> {
        keys.iter().try_fold(self, |j, k| j.get(k))
    }

    fn str_at(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Json::as_str)
    }
}
