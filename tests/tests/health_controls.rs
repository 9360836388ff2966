//! End-to-end tests of HAProxy's finer health controls in the agent
//! (`lb run`): `fastinter`/`downinter` (the probe's pace follows the
//! backend's state), `slowstart` (a recovered backend's weight ramps up in
//! steps, established connections stay) and the agent check (a backend
//! reports its weight, drain, ready, down and up over a line of text).
//!
//! Each test builds its own topology (see `lb_tests::topology`) and asserts
//! on what `lb status --json` records (probe records, weights, placements)
//! and on where new and established connections go. Waits are bounded polls;
//! a time bound is only a generous limit for "eventually" or "well under the
//! plain interval". Needs root (skipped otherwise) and the `lb` binary.

use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lb_tests::netns::{in_netns, is_root};
use lb_tests::topology::{Forwarding, Topology, TopologyOptions, VIP_V4, VipSpec};
use lb_tests::traffic::{HealthMode, HealthServer, HttpConn, Summary, TcpLoad, open_keepalive, tcp_client};
use serde_json::Value as Json;

const RING: u32 = 251;
const HC_PORT: u16 = 8080;
const AGENT_PORT: u16 = 9777;
const OP_TIMEOUT: Duration = Duration::from_secs(3);
/// Bound of every wait for the agent to reach a state.
const WAIT: Duration = Duration::from_secs(30);
/// Every backend's configured weight: percentages map to distinct weights.
const WEIGHT: u64 = 100;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// One test's world; drops the servers, then the topology.
struct Env {
    name: &'static str,
    health: Vec<HealthServer>,
    topo: Topology,
    vip: VipSpec,
}

impl Env {
    /// A topology of `modes.len()` backends, each with a health server in
    /// that mode when `checked`, and `lb run` with `vip` (weights 100).
    fn new(name: &'static str, modes: &[HealthMode], checked: bool, vip: VipSpec) -> Option<Env> {
        if !is_root() {
            eprintln!("{name}: skipped: needs root");
            return None;
        }
        let opts = TopologyOptions { backends: modes.len(), vips_v6: vec![], udp_ports: vec![], ..Default::default() };
        let mut topo = Topology::new(opts).unwrap_or_else(|e| panic!("{name}: topology: {e:#}"));
        let mut health = Vec::new();
        for (b, mode) in topo.backends().iter().zip(modes).filter(|_| checked) {
            let addr = SocketAddr::new(IpAddr::V4(b.v4), HC_PORT);
            health.push(HealthServer::start(&b.ns, &b.name, addr, *mode).unwrap_or_else(|e| panic!("{name}: {e:#}")));
        }
        let mut vip = vip.ring_size(RING);
        let used = vip.backends.as_ref().map_or(modes.len(), Vec::len);
        vip.weights = Some(vec![WEIGHT as u32; used]);
        let config = topo.write_config(std::slice::from_ref(&vip));
        if let Err(e) = topo.start_lb(&config) {
            panic!("{name}: starting lb: {e:#}\n{}", std::fs::read_to_string(&config).unwrap_or_default());
        }
        Some(Env { name, health, topo, vip })
    }

    fn fail(&self, what: impl std::fmt::Display) -> ! {
        panic!("{}: {what}", self.name)
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = self.topo.lb_cli_status(args).unwrap_or_else(|e| self.fail(format!("lb {args:?}: {e:#}")));
        if !out.success() {
            self.fail(format!("`lb {}` failed: {out}", args.join(" ")));
        }
        out.stdout
    }

    /// This VIP's status.
    fn status(&self) -> Json {
        let all: Json = serde_json::from_str(&self.cli(&["status", "--json"])).unwrap_or_else(|e| self.fail(e));
        let vips = all["vips"].as_array().cloned().unwrap_or_default();
        vips.into_iter().find(|v| v["vip"] == self.vip.id()).unwrap_or_else(|| self.fail(format!("no VIP: {all}")))
    }

    fn addr(&self, i: usize) -> String {
        self.topo.backends()[i].v4.to_string()
    }

    /// Backend `i` in a VIP status.
    fn backend(&self, vip: &Json, i: usize) -> Json {
        let addr = self.addr(i);
        let list = vip["backends"].as_array().cloned().unwrap_or_default();
        list.into_iter().find(|b| b["address"] == addr.as_str()).unwrap_or_else(|| self.fail(format!("no {addr}")))
    }

    /// Polls the VIP's status every 50 ms until `done` says `Some`.
    fn wait<T>(&self, what: &str, mut done: impl FnMut(&Json) -> Option<T>) -> T {
        let polled = lb_tests::poll::until(WAIT, Duration::from_millis(50), || {
            let s = self.status();
            done(&s).ok_or(s)
        });
        polled.unwrap_or_else(|s| self.fail(format!("waited {WAIT:?} for {what}; status: {s:#}")))
    }

    /// Waits until backend `i` has `placement` and `effective_weight`.
    fn wait_placed(&self, i: usize, placement: &str, weight: u64) -> Json {
        self.wait(&format!("backend{} {placement} at weight {weight}", i + 1), |s| {
            let b = self.backend(s, i);
            (b["placement"] == placement && b["effective_weight"] == weight).then_some(b)
        })
    }

    fn connections(&self, n: usize) -> Summary {
        let mut load = TcpLoad::new(self.vip.target(), n);
        load.op_timeout = OP_TIMEOUT;
        let results = tcp_client(&self.topo.client().ns, &load).unwrap_or_else(|e| self.fail(format!("{e:#}")));
        let s = Summary::new(&results, &self.topo.backend_names());
        if s.failures > 0 || s.not_sticky > 0 {
            self.fail(format!("new connections failed or moved:\n{s}"));
        }
        s
    }

    fn keepalive(&self, n: usize) -> Vec<(HttpConn, String)> {
        open_keepalive(&self.topo.client().ns, self.vip.target(), n, OP_TIMEOUT).unwrap_or_else(|e| self.fail(e))
    }

    /// Every established connection still answers from its first backend.
    fn established_stay(&self, conns: &mut [(HttpConn, String)], when: &str) {
        let moved: Vec<String> = conns
            .iter_mut()
            .filter_map(|(c, first)| match c.get() {
                Ok(b) if b == *first => None,
                other => Some(format!("{first} -> {other:?}")),
            })
            .collect();
        if !moved.is_empty() {
            self.fail(format!("{when}: established connections moved or failed: {moved:?}"));
        }
    }

    fn finish(mut self) {
        self.health.iter_mut().for_each(HealthServer::stop);
        if let Err(e) = self.topo.check_children().and_then(|()| self.topo.stop_lb()) {
            self.fail(format!("{e:#}"));
        }
    }
}

fn u64_of(j: &Json) -> u64 {
    j.as_u64().unwrap_or_else(|| panic!("not a number: {j}"))
}

/// (ok, health, next pace, at) of each recorded probe of a backend.
fn probe_records(b: &Json) -> Vec<(bool, String, String, u64)> {
    let recent = b["probe"]["recent"].as_array().cloned().unwrap_or_default();
    recent
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or("?").to_string();
            (r["ok"] == true, s("health"), s("next"), u64_of(&r["at_unix_ms"]))
        })
        .collect()
}

#[test]
fn fastinter_and_downinter_pace_the_probes() {
    let name = "fastinter_and_downinter_pace_the_probes";
    let _serial = serial();
    const INTERVAL_MS: u64 = 10_000;
    let check = format!(
        "{{ kind = \"http\", port = {HC_PORT}, path = \"/health\", interval_ms = {INTERVAL_MS}, timeout_ms = 500, \
         fastinter_ms = 100, downinter_ms = 300, rise = 2, fall = 3 }}"
    );
    let vip = VipSpec::tcp(VIP_V4, 80, Forwarding::Ipip).health_check(&check);
    // backend2 fails from the start: its first probe (at start) begins the fall.
    let Some(mut env) = Env::new(name, &[HealthMode::Healthy, HealthMode::Unhealthy], true, vip) else { return };

    let b2 = env.wait("backend2 down", |s| {
        let b = env.backend(s, 1);
        (b["health"] == "down" && b["placement"] == "removed").then_some(b)
    });
    let recs = probe_records(&b2);
    let paces: Vec<(bool, &str, &str)> = recs.iter().take(3).map(|(ok, h, p, _)| (*ok, &h[..], &p[..])).collect();
    assert_eq!(
        paces,
        [(false, "up", "fastinter"), (false, "up", "fastinter"), (false, "down", "downinter")],
        "{name}: backend2's first probes: {recs:?}"
    );
    // At the plain interval the third probe would come 2 intervals after the first.
    let fall_ms = recs[2].3 - recs[0].3;
    assert!(fall_ms < INTERVAL_MS / 2, "{name}: down {fall_ms} ms after the first failed probe: {recs:?}");
    let b1 = env.backend(&env.status(), 0);
    assert_eq!((&b1["probe"]["pace"], u64_of(&b1["probe"]["interval_ms"])), (&Json::from("interval"), INTERVAL_MS));
    assert_eq!((&b2["probe"]["pace"], u64_of(&b2["probe"]["interval_ms"])), (&Json::from("downinter"), 300));

    // A few downinter probes, then healthy again: fastinter while rising.
    env.wait("backend2 probed twice while down", |s| {
        let n = probe_records(&env.backend(s, 1)).iter().filter(|r| r.1 == "down" && !r.0).count();
        (n >= 3).then_some(())
    });
    env.health[1].set_mode(HealthMode::Healthy).unwrap();
    let b2 = env.wait("backend2 up", |s| {
        let b = env.backend(s, 1);
        (b["health"] == "up" && b["placement"] == "in-table").then_some(b)
    });
    let recs = probe_records(&b2);
    let tail: Vec<(bool, &str, &str)> =
        recs.iter().rev().take(3).rev().map(|(ok, h, p, _)| (*ok, &h[..], &p[..])).collect();
    assert_eq!(
        tail,
        [(false, "down", "downinter"), (true, "down", "fastinter"), (true, "up", "interval")],
        "{name}: backend2's last probes: {recs:?}"
    );
    let down_gaps: Vec<u64> = recs.windows(2).filter(|w| w[0].2 == "downinter").map(|w| w[1].3 - w[0].3).collect();
    assert!(down_gaps.iter().all(|g| *g < INTERVAL_MS / 2), "{name}: gaps after downinter probes: {down_gaps:?}");
    assert_eq!((&b2["probe"]["pace"], u64_of(&b2["probe"]["interval_ms"])), (&Json::from("interval"), INTERVAL_MS));
    let b1_checks = u64_of(&env.backend(&env.status(), 0)["probe"]["checks"]);
    env.finish();
    println!(
        "{name}: backend2 down {fall_ms} ms after its first failed probe (3 probes at fastinter 100 ms; at the \
         interval it would take 20 s); gaps at downinter {down_gaps:?} ms; up again after 2 probes at fastinter; \
         healthy backend1 probed {b1_checks} times meanwhile (interval 10 s)"
    );
}

#[test]
fn slowstart_ramps_a_recovered_backend_in_steps() {
    let name = "slowstart_ramps_a_recovered_backend_in_steps";
    let _serial = serial();
    let check = format!(
        "{{ kind = \"http\", port = {HC_PORT}, path = \"/health\", interval_ms = 200, timeout_ms = 150, rise = 2, fall = 2 }}"
    );
    let vip =
        VipSpec::tcp(VIP_V4, 80, Forwarding::Ipip).health_check(&check).key("slowstart_ms = 5000").backends(&[0, 1, 2]);
    // backend4 is added through the API at the end.
    let Some(mut env) = Env::new(name, &[HealthMode::Healthy; 4], true, vip) else { return };
    // Up at start: not ramped.
    let b2 = env.wait_placed(1, "in-table", WEIGHT);
    assert_eq!(u64_of(&b2["factors"]["slowstart_pct"]), 100, "{name}: ramped at start: {b2}");

    env.health[1].set_mode(HealthMode::Unhealthy).unwrap();
    env.wait_placed(1, "removed", 0);
    let mut conns = env.keepalive(30);
    env.health[1].set_mode(HealthMode::Healthy).unwrap();

    // The ramp, as status shows it, until backend2 is at its full weight.
    let mut weights: Vec<u64> = Vec::new();
    let mut per_instance = Vec::new();
    let mut early: Option<(u64, Summary, u64)> = None;
    env.wait("the end of backend2's ramp", |s| {
        let b = env.backend(s, 1);
        let w = u64_of(&b["effective_weight"]);
        if b["placement"] != "in-table" {
            return None;
        }
        if weights.last() != Some(&w) {
            weights.push(w);
        }
        if let Some(r) = s["per_instance"].as_array().and_then(|r| r.first()) {
            per_instance.push(r.to_string());
        }
        if early.is_none() {
            // New flows early in the ramp, with the weights before and after.
            let batch = env.connections(60);
            early = Some((w, batch, u64_of(&env.backend(&env.status(), 1)["effective_weight"])));
        }
        (w == WEIGHT && b["factors"]["slowstart_pct"] == 100).then_some(())
    });
    env.established_stay(&mut conns, "after the ramp");
    let late = env.connections(60);
    let (w0, early, w1) = early.unwrap();
    println!("{name}: effective weights of backend2 seen during its ramp: {weights:?}");
    println!("{name}: new connections with backend2 at weight {w0}..{w1}:\n{early}");
    println!("{name}: new connections after the ramp:\n{late}");
    assert!(weights.windows(2).all(|p| p[0] < p[1]), "{name}: the ramp went down: {weights:?}");
    let steps = weights.iter().filter(|w| (1..WEIGHT).contains(*w)).count();
    assert!(steps >= 3, "{name}: only {steps} intermediate weights: {weights:?}");
    assert_eq!(weights.last(), Some(&WEIGHT));
    assert!(
        per_instance.iter().any(|r| r.contains("slow start")),
        "{name}: status never said the ramp is per instance: {per_instance:?}"
    );
    assert_eq!(env.status()["per_instance"], Json::Array(vec![]), "{name}: per-instance reason after the ramp");
    let (e2, l2) = (early.per_backend["backend2"], late.per_backend["backend2"]);
    assert!(e2 < l2, "{name}: backend2 got {e2} new connections early in the ramp, {l2} after it");

    // A backend added through the API ramps too.
    let (vip_id, b4) = (env.vip.id(), env.addr(3));
    env.cli(&["backend", "add", &vip_id, &b4, "--weight", &WEIGHT.to_string()]);
    let mut added = Vec::new();
    env.wait("the end of backend4's ramp", |s| {
        let w = u64_of(&env.backend(s, 3)["effective_weight"]);
        if added.last() != Some(&w) {
            added.push(w);
        }
        (w == WEIGHT).then_some(())
    });
    assert!(added.len() >= 3 && added[0] < WEIGHT / 2, "{name}: backend4 after its add: {added:?}");
    env.finish();
    println!(
        "{name}: {} steps seen ({weights:?}); backend2 took {e2}/60 new connections at weight {w0}..{w1}, {l2}/60 \
         at full weight; 30 established connections kept their backend; backend4 added through the API: {added:?}",
        weights.len()
    );
}

/// A backend's agent: answers each connection with the current reply.
struct AgentServer {
    reply: Arc<Mutex<String>>,
    stop: Arc<AtomicBool>,
    served: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl AgentServer {
    fn start(ns: &str, addr: SocketAddr, reply: &str) -> AgentServer {
        let listener = in_netns(ns, move || Ok(TcpListener::bind(addr)?)).expect("agent listener");
        listener.set_nonblocking(true).unwrap();
        let (reply, stop) = (Arc::new(Mutex::new(reply.to_string())), Arc::new(AtomicBool::new(false)));
        let served = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (reply, stop, served) = (reply.clone(), stop.clone(), served.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((mut s, _)) => {
                            let line = reply.lock().unwrap().clone();
                            if s.write_all(line.as_bytes()).is_ok() {
                                served.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        // Nothing to accept (or a failed accept): look again soon.
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        AgentServer { reply, stop, served, thread: Some(thread) }
    }

    /// Answers `line` from now on; returns once the agent read it twice
    /// (at least one whole exchange with the new line).
    fn set(&self, line: &str) {
        *self.reply.lock().unwrap() = line.to_string();
        let base = self.served.load(Ordering::SeqCst);
        let deadline = Instant::now() + WAIT;
        while self.served.load(Ordering::SeqCst) < base + 2 {
            assert!(Instant::now() < deadline, "the agent check stopped asking");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for AgentServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn agent_check_sets_weight_drain_ready_down_and_up() {
    let name = "agent_check_sets_weight_drain_ready_down_and_up";
    let _serial = serial();
    let vip = VipSpec::tcp(VIP_V4, 80, Forwarding::Ipip)
        .key(&format!("agent_check = {{ port = {AGENT_PORT}, interval_ms = 100, timeout_ms = 80 }}"));
    let Some(env) = Env::new(name, &[HealthMode::Healthy; 3], false, vip) else { return };
    // Only backend2 runs an agent; the others' refused connections change nothing.
    let b = &env.topo.backends()[1];
    let agent = AgentServer::start(&b.ns, SocketAddr::new(IpAddr::V4(b.v4), AGENT_PORT), "50%\n");
    let vip_id = env.vip.id();
    let b2 = env.addr(1);
    let mut report = Vec::new();

    let s = env.wait_placed(1, "in-table", WEIGHT / 2);
    assert_eq!(s["agent"]["last_reply"], "50%", "{name}: {s}");
    assert_eq!(s["agent"]["last_effect"], "weight 50%", "{name}: {s}");
    let b1 = env.wait("backend1's agent failures counted", |st| {
        let b = env.backend(st, 0);
        (u64_of(&b["agent"]["failures"]) >= 2).then_some(b)
    });
    assert_eq!(u64_of(&b1["effective_weight"]), WEIGHT, "{name}: a failed agent check changed backend1: {b1}");
    assert!(b1["agent"]["last_error"].as_str().unwrap_or("").contains("connect"), "{name}: {b1}");
    let half = env.connections(150);
    println!("{name}: backend2 at 50%:\n{half}");
    let n = |s: &Summary, i: usize| s.per_backend[&format!("backend{i}")];
    assert!(n(&half, 2) < n(&half, 1) && n(&half, 2) < n(&half, 3), "{name}: 50% did not lower the share:\n{half}");
    report.push(format!("50%: {}/150 new connections (others {} and {})", n(&half, 2), n(&half, 1), n(&half, 3)));

    let mut conns = env.keepalive(30);
    let on_b2 = conns.iter().filter(|(_, b)| b == "backend2").count();
    agent.set("drain\n");
    let s = env.wait_placed(1, "draining", 0);
    assert_eq!(s["factors"]["agent_admin"], "drain", "{name}: {s}");
    let drained = env.connections(60);
    assert_eq!(n(&drained, 2), 0, "{name}: new connections reached a drained backend:\n{drained}");
    env.established_stay(&mut conns, "drained by its agent");
    report.push(format!("drain: 0/60 new connections, its {on_b2} established ones kept"));

    agent.set("ready 100%\n");
    env.wait_placed(1, "in-table", WEIGHT);
    // The operator's drain wins over the agent's `ready`.
    env.cli(&["backend", "drain", &vip_id, &b2]);
    agent.set("ready 100%\n");
    let s = env.wait_placed(1, "draining", 0);
    assert_eq!(s["state"], "drain", "{name}: {s}");
    env.cli(&["backend", "undrain", &vip_id, &b2]);
    env.wait_placed(1, "in-table", WEIGHT);
    report.push("ready 100%: full weight; an operator drain stayed while the agent said ready".into());

    agent.set("down # maintenance window\n");
    let s = env.wait_placed(1, "removed", 0);
    assert_eq!(s["agent"]["last_effect"], "down (maintenance window)", "{name}: {s}");
    assert_eq!(s["factors"]["agent_down"], true, "{name}: {s}");
    let down = env.connections(60);
    assert_eq!(n(&down, 2), 0, "{name}: new connections reached a backend its agent says is down:\n{down}");
    agent.set("up\n");
    env.wait_placed(1, "in-table", WEIGHT);
    let up = env.connections(60);
    assert!(n(&up, 2) > 0, "{name}: backend2 up again but got no new connection:\n{up}");
    report.push(format!("down: removed, 0/60; up: back, {}/60", n(&up, 2)));
    drop(agent);
    env.finish();
    println!("{name}: backend2's agent: {}", report.join("; "));
}
