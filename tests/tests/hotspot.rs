//! End-to-end tests of hot-spot detection and correction (`[hot_spot]`):
//! a few heavy keep-alive connections that all reach one backend make it
//! take every packet of the VIP, three times its weighted share.
//!
//! The topology (see `lb_tests::topology`): client, lb, router and three
//! backends in their own namespaces, `lb run` in native XDP mode. Short
//! windows and durations in the configs; every wait is a bounded poll.
//! Needs root (skipped otherwise) and the `lb` binary (`$LB_BIN`).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use lb_tests::netns::{in_netns, ip_in, is_root, spawn_in_netns};
use lb_tests::topology::{Forwarding, Topology, TopologyOptions, VIP_V4, VipSpec};
use lb_tests::traffic::{HttpConn, KeepAliveLoad, open_keepalive};
use serde_json::Value;

const RING: u32 = 251;
const OP_TIMEOUT: Duration = Duration::from_secs(3);
/// Bound of every wait for the agent to reach a state.
const WAIT: Duration = Duration::from_secs(30);
/// Sampled every 100 ms, judged over 500 ms windows, hot after 500 ms; the
/// ratio of a VIP with fewer than 50 packets in a window is not judged.
const HOT_SPOT: &str = "interval_ms = 100\nwindow_ms = 500\nduration_ms = 500\ncooldown_ms = 500\nmin_packets = 50\n";

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

struct Env {
    name: &'static str,
    topo: Topology,
    vip: VipSpec,
}

impl Env {
    /// Three backends and a TCP VIP (Maglev); `hot_spot`: more keys of the table.
    fn new(name: &'static str, hot_spot: &str) -> Option<Env> {
        let vip = VipSpec::tcp(VIP_V4, 80, Forwarding::Ipip).ring_size(RING);
        let opts = TopologyOptions { backends: 3, vips_v6: vec![], udp_ports: vec![], ..Default::default() };
        Env::with(name, opts, vip, "", &format!("{HOT_SPOT}{hot_spot}"))
    }

    /// `vip_keys`: more keys of the VIP's table; `hot_spot`: the `[hot_spot]` table.
    fn with(name: &'static str, opts: TopologyOptions, vip: VipSpec, vip_keys: &str, hot_spot: &str) -> Option<Env> {
        if !is_root() {
            eprintln!("{name}: skipped: the hot-spot tests need root");
            return None;
        }
        let mut topo = Topology::new(opts).unwrap_or_else(|e| panic!("{name}: topology: {e:#}"));
        let proto = format!("protocol = \"{}\"\n", vip.protocol.as_str());
        let vips = topo.render_config(std::slice::from_ref(&vip)).replacen(&proto, &format!("{proto}{vip_keys}"), 1);
        let text = format!("{vips}\n[hot_spot]\n{hot_spot}");
        let config: PathBuf = topo.dir().join("lb-hotspot.toml");
        std::fs::write(&config, &text).unwrap_or_else(|e| panic!("{name}: writing the config: {e}"));
        if let Err(e) = topo.start_lb(&config) {
            panic!("{name}: starting lb: {e:#}\nconfig:\n{text}");
        }
        Some(Env { name, topo, vip })
    }

    fn fail(&self, what: impl std::fmt::Display) -> ! {
        panic!("{}: {what}", self.name)
    }

    fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.topo.lb_cli_status(args).unwrap_or_else(|e| self.fail(format!("lb {args:?}: {e:#}")));
        if !out.success() {
            self.fail(format!("`lb {}` failed: {out}", args.join(" ")));
        }
        out.stdout
    }

    fn status(&self) -> Value {
        let text = self.cli_ok(&["status", "--json"]);
        serde_json::from_str(&text).unwrap_or_else(|e| self.fail(format!("lb status --json: {e}\n{text}")))
    }

    fn backend<'a>(&self, status: &'a Value, i: usize) -> &'a Value {
        let addr = self.topo.backends()[i].v4.to_string();
        status["vips"][0]["backends"]
            .as_array()
            .and_then(|b| b.iter().find(|b| b["address"] == addr.as_str()))
            .unwrap_or_else(|| self.fail(format!("no backend {addr} in {status}")))
    }

    /// Polls the status every 50 ms until `done` holds, for at most [`WAIT`].
    fn wait_status(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let s = self.status();
            if done(&s) {
                return s;
            }
            if Instant::now() >= deadline {
                self.fail(format!("waited {WAIT:?} for {what}; last status:\n{s:#}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `GET /metrics` from the agent (default listener in the lb namespace).
    fn metrics(&self) -> String {
        in_netns(&self.topo.lb().ns, || {
            let mut s = std::net::TcpStream::connect("127.0.0.1:9641")?;
            s.set_read_timeout(Some(OP_TIMEOUT))?;
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        })
        .unwrap_or_else(|e| self.fail(format!("metrics: {e:#}")))
    }

    /// Keep-alive connections that Maglev gave backend 0 (at least one):
    /// opened in rounds of 12, the others closed.
    fn heavy_connections(&self) -> Vec<HttpConn> {
        let target = self.topo.backend_names()[0].clone();
        let mut heavy = Vec::new();
        for _ in 0..5 {
            let conns = open_keepalive(&self.topo.client().ns, self.vip.target(), 12, OP_TIMEOUT)
                .unwrap_or_else(|e| self.fail(format!("keep-alive connections: {e:#}")));
            heavy.extend(conns.into_iter().filter(|(_, b)| *b == target).map(|(c, _)| c));
            if heavy.len() >= 2 {
                break;
            }
        }
        if heavy.is_empty() {
            self.fail("no keep-alive connection reached backend 0 in 60 tries");
        }
        heavy
    }

    fn finish(mut self, load: KeepAliveLoad) {
        let results = load.stop();
        let failed = results.iter().filter(|r| r.error.is_some()).count();
        if failed > 0 {
            self.fail(format!("{failed} heavy connections failed: {results:?}"));
        }
        if let Err(e) = self.topo.check_children() {
            self.fail(format!("{e:#}"));
        }
        if let Err(e) = self.topo.stop_lb() {
            self.fail(format!("{e:#}"));
        }
    }
}

fn ratio(b: &Value) -> f64 {
    b["hot_spot"]["ratios"]["packets"].as_f64().unwrap_or(0.0)
}

#[test]
fn heavy_long_connections_flag_their_backend() {
    let _g = serial();
    let Some(env) = Env::new("heavy_long_connections_flag_their_backend", "") else { return };
    let load = KeepAliveLoad::start(env.heavy_connections(), Duration::from_millis(5), WAIT * 2)
        .unwrap_or_else(|e| env.fail(format!("{e:#}")));
    let s = env.wait_status("backend 0 flagged hot", |s| env.backend(s, 0)["hot_spot"]["hot"] == true);
    let b0 = env.backend(&s, 0);
    // Every packet of the VIP on one of three backends of weight 1: three times its share.
    assert!(ratio(b0) > 2.0, "{b0:#}");
    for i in 1..3 {
        let b = env.backend(&s, i);
        assert!(b["hot_spot"]["hot"] == false && ratio(b) < 1.0, "{b:#}");
    }
    // Detection only: no weight changes, nothing per instance.
    assert_eq!(s["hot_spot"]["adjustments_total"], 0);
    assert_eq!(b0["effective_weight"], 1);
    assert_eq!(s["vips"][0]["per_instance"].as_array().map(Vec::len), Some(0));

    let addr = env.topo.backends()[0].v4.to_string();
    let metrics = env.metrics();
    let line = format!("lb_backend_hot_spot{{vip=\"{}\",backend=\"{addr}\"}} 1", env.vip.id());
    assert!(metrics.lines().any(|l| l == line), "missing {line:?} in\n{metrics}");
    assert!(metrics.contains(&format!(
        "lb_backend_load_ratio{{vip=\"{}\",backend=\"{addr}\",measure=\"packets\"}}",
        env.vip.id()
    )));
    let text = env.cli_ok(&["status"]);
    assert!(text.contains(&format!("HOT SPOT: {addr} takes")), "{text}");
    assert!(env.topo.lb_log().contains("hot spot"), "no warning logged:\n{}", env.topo.lb_log());
    eprintln!("hot spot: backend 0 packet ratio {:.2}", ratio(b0));
    env.finish(load);
}

#[test]
fn correction_steps_down_to_the_floor_and_stops() {
    let _g = serial();
    let Some(env) = Env::new("correction_steps_down_to_the_floor_and_stops", "correct = true\n") else { return };
    let load = KeepAliveLoad::start(env.heavy_connections(), Duration::from_millis(5), WAIT * 3)
        .unwrap_or_else(|e| env.fail(format!("{e:#}")));
    // Established connections keep their backend (the connection table):
    // lowering its weight cannot move them, so the controller goes down the
    // whole ladder (100, 75, 56, 42, 31, 25) and stops at the floor.
    let s = env.wait_status("backend 0 at the floor", |s| env.backend(s, 0)["hot_spot"]["weight_pct"] == 25);
    assert_eq!(s["hot_spot"]["adjustments_total"], 5, "{:#}", s["hot_spot"]);
    let steps: Vec<(u64, u64)> = s["hot_spot"]["adjustments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["old_pct"].as_u64().unwrap(), a["new_pct"].as_u64().unwrap()))
        .collect();
    assert_eq!(steps, [(100, 75), (75, 56), (56, 42), (42, 31), (31, 25)]);
    // Weights of a VIP under correction are scaled by 100: 1 becomes 100.
    assert_eq!(env.backend(&s, 0)["effective_weight"], 25);
    assert_eq!(env.backend(&s, 1)["effective_weight"], 100);
    let per_instance = s["vips"][0]["per_instance"].to_string();
    assert!(per_instance.contains("hot-spot correction"), "{per_instance}");
    let first = s["hot_spot"]["adjustments"][0]["at_unix_ms"].as_u64().unwrap();
    let last = s["hot_spot"]["adjustments"][4]["at_unix_ms"].as_u64().unwrap();

    // Still hot at the floor for 20 more cool-downs: no further change.
    std::thread::sleep(Duration::from_secs(10));
    let s = env.status();
    assert_eq!(s["hot_spot"]["adjustments_total"], 5, "{:#}", s["hot_spot"]);
    assert!(env.backend(&s, 0)["hot_spot"]["hot"] == true && ratio(env.backend(&s, 0)) > 2.0);
    let metrics = env.metrics();
    assert!(metrics.lines().any(|l| l == "lb_hot_spot_adjustments_total 5"), "{metrics}");
    let text = env.cli_ok(&["status"]);
    assert!(text.contains("hot-spot correction (on): 5 weight changes"), "{text}");
    eprintln!("correction: 5 steps to the floor in {} ms, then none for 10 s", last - first);
    env.finish(load);
}

/// Client addresses added for the source-hash test: 198.18.0.100 onwards.
const CLIENTS: u8 = 64;
/// New flows (one datagram each) each heavy client opens per round; each
/// light client opens one. Two heavy clients: about 0.7 times the light load.
const HEAVY_FLOWS: usize = 22;

fn client_addr(i: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 18, 0, 100 + i))
}

/// One new UDP flow from `src`: a datagram to `target`, the answering
/// backend's name (`None`: no answer in 300 ms).
fn flow(src: IpAddr, target: SocketAddr) -> std::io::Result<Option<String>> {
    let s = UdpSocket::bind(SocketAddr::new(src, 0))?;
    s.connect(target)?;
    s.set_read_timeout(Some(Duration::from_millis(300)))?;
    s.send(b"ping")?;
    let mut buf = [0u8; 256];
    Ok(s.recv(&mut buf).ok().map(|n| String::from_utf8_lossy(&buf[..n]).trim().to_string()))
}

/// Light clients (one new flow each per round) and heavy ones (while
/// `heavy_on`), from the client namespace, until `stop`; counts the
/// answers per backend name as the backends themselves saw them.
struct Clients {
    stop: Arc<AtomicBool>,
    heavy_on: Arc<AtomicBool>,
    answers: Arc<Mutex<HashMap<String, u64>>>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<u64>>>,
}

impl Clients {
    fn start(ns: &str, target: SocketAddr, light: Vec<IpAddr>, heavy: Vec<IpAddr>) -> anyhow::Result<Clients> {
        let stop = Arc::new(AtomicBool::new(false));
        let heavy_on = Arc::new(AtomicBool::new(true));
        let answers = Arc::new(Mutex::new(HashMap::new()));
        let (st, on, an) = (stop.clone(), heavy_on.clone(), answers.clone());
        let thread = spawn_in_netns(ns, "clients", move || {
            // Bounded: at most 10 minutes of rounds.
            let end = Instant::now() + Duration::from_secs(600);
            let mut lost = 0u64;
            while !st.load(Ordering::SeqCst) && Instant::now() < end {
                let heavy_flows = if on.load(Ordering::SeqCst) { HEAVY_FLOWS } else { 0 };
                let plan = light.iter().map(|a| (*a, 1)).chain(heavy.iter().map(|a| (*a, heavy_flows)));
                for (src, n) in plan {
                    for _ in 0..n {
                        match flow(src, target)? {
                            Some(b) => *an.lock().unwrap().entry(b).or_default() += 1,
                            None => lost += 1,
                        }
                    }
                }
            }
            Ok(lost)
        })?;
        Ok(Clients { stop, heavy_on, answers, thread: Some(thread) })
    }

    fn answers(&self) -> HashMap<String, u64> {
        self.answers.lock().unwrap().clone()
    }

    /// Stops the clients; returns the datagrams left unanswered.
    fn stop(mut self) -> anyhow::Result<u64> {
        self.stop.store(true, Ordering::SeqCst);
        let t = self.thread.take().expect("running");
        t.join().map_err(|_| anyhow::anyhow!("the client thread panicked"))?
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Env {
    /// Polls until `adjustments_total` has not moved for `quiet` (longer
    /// than the longest cool-down), for at most `bound`; returns the status.
    fn wait_settled(&self, quiet: Duration, bound: Duration) -> Value {
        let deadline = Instant::now() + bound;
        let mut last = (u64::MAX, Instant::now());
        loop {
            let s = self.status();
            let total = s["hot_spot"]["adjustments_total"].as_u64().unwrap_or(0);
            if total != last.0 {
                last = (total, Instant::now());
            } else if last.1.elapsed() >= quiet {
                return s;
            }
            if Instant::now() >= deadline {
                self.fail(format!("the weight changes did not stop within {bound:?}:\n{:#}", s["hot_spot"]));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

fn adjustments(s: &Value) -> Vec<(String, u64, u64)> {
    s["hot_spot"]["adjustments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let backend = a["backend"].as_str().unwrap().to_string();
            (backend, a["old_pct"].as_u64().unwrap(), a["new_pct"].as_u64().unwrap())
        })
        .collect()
}

#[test]
fn source_hash_heavy_clients_are_corrected_and_restored_without_oscillating() {
    let _g = serial();
    let name = "source_hash_heavy_clients_are_corrected_and_restored_without_oscillating";
    let vip = VipSpec::udp(VIP_V4, 5353, Forwarding::Ipip).ring_size(RING);
    let opts = TopologyOptions {
        backends: 4,
        vips_v6: vec![],
        tcp_ports: vec![],
        udp_ports: vec![5353],
        ..Default::default()
    };
    // Cool-down 1 s: at most 16 s after 4 back-offs; quiet means 20 s without a change.
    let hot_spot = "interval_ms = 100\nwindow_ms = 1000\nduration_ms = 1000\ncooldown_ms = 1000\nmin_flows = 200\n\
                    min_packets = 200\ncorrect = true\n";
    let Some(env) = Env::with(name, opts, vip, "algorithm = \"source-hash\"\n", hot_spot) else { return };
    let client = env.topo.client().ns.clone();
    for i in 0..CLIENTS {
        ip_in(&client, &["addr", "add", &format!("{}/24", client_addr(i)), "dev", "eth0"])
            .unwrap_or_else(|e| env.fail(format!("client address: {e:#}")));
    }
    // Where each client address goes: every flow of it to one backend.
    let target = env.vip.target();
    let addrs: Vec<IpAddr> = (0..CLIENTS).map(client_addr).collect();
    let probe = addrs.clone();
    let placed: Vec<String> = in_netns(&client, move || {
        let mut out = Vec::new();
        for a in probe {
            let b: Vec<Option<String>> = (0..3).map(|_| flow(a, target)).collect::<Result<_, _>>()?;
            anyhow::ensure!(b.iter().all(|x| x.is_some() && *x == b[0]), "{a}: answers {b:?}");
            out.push(b[0].clone().unwrap());
        }
        Ok(out)
    })
    .unwrap_or_else(|e| env.fail(format!("placing the clients: {e:#}")));
    // Two heavy clients on the same backend; the others light.
    let (hot_name, heavy) = (0..placed.len())
        .find_map(|i| {
            let same: Vec<usize> = (0..placed.len()).filter(|&j| placed[j] == placed[i]).collect();
            (same.len() >= 2).then(|| (placed[i].clone(), vec![same[0], same[1]]))
        })
        .unwrap_or_else(|| env.fail(format!("no two clients on one backend: {placed:?}")));
    let hot = env.topo.backend_names().iter().position(|n| *n == hot_name).unwrap();
    let light: Vec<IpAddr> = (0..addrs.len()).filter(|i| !heavy.contains(i)).map(|i| addrs[i]).collect();
    let heavy: Vec<IpAddr> = heavy.iter().map(|&i| addrs[i]).collect();
    let clients = Clients::start(&client, target, light, heavy).unwrap_or_else(|e| env.fail(format!("clients: {e:#}")));

    // Hot first, then corrected until the changes stop.
    env.wait_status("the heavy clients' backend flagged", |s| env.backend(s, hot)["hot_spot"]["hot"] == true);
    let before = env.backend(&env.status(), hot)["hot_spot"]["ratios"].clone();
    let s = env.wait_settled(Duration::from_secs(20), Duration::from_secs(240));
    let changes = adjustments(&s);
    let total = s["hot_spot"]["adjustments_total"].as_u64().unwrap();
    assert!((1..=20).contains(&total), "{:#}", s["hot_spot"]);
    // Each backend within the factor, or corrected as far as allowed.
    for i in 0..4 {
        let b = env.backend(&s, i);
        let r = b["hot_spot"]["ratios"]["packets"].as_f64().unwrap_or(0.0);
        assert!(r <= 2.0 || b["hot_spot"]["weight_pct"] == 25, "backend {i}: {b:#}");
    }
    let corrected = env.backend(&s, hot)["hot_spot"].clone();
    if (0..4).any(|i| env.backend(&s, i)["hot_spot"]["weight_pct"] != 100) {
        assert!(s["vips"][0]["per_instance"].to_string().contains("hot-spot correction"), "{s:#}");
    }
    let answers_corrected = clients.answers();

    // The heavy clients leave: every weight comes back, only upwards, then stays.
    clients.heavy_on.store(false, Ordering::SeqCst);
    env.wait_status("every weight back to 100%", |s| {
        (0..4).all(|i| env.backend(s, i)["hot_spot"]["weight_pct"] == 100)
    });
    let s = env.wait_settled(Duration::from_secs(20), Duration::from_secs(240));
    let after: Vec<_> = adjustments(&s).into_iter().skip(changes.len()).collect();
    assert!(after.iter().all(|(_, old, new)| new > old), "lowered after the load evened out: {after:?}");
    assert!((0..4).all(|i| env.backend(&s, i)["hot_spot"]["weight_pct"] == 100), "{:#}", s["hot_spot"]);
    assert_eq!(s["vips"][0]["per_instance"].as_array().map(Vec::len), Some(0));
    let lost = clients.stop().unwrap_or_else(|e| env.fail(format!("clients: {e:#}")));
    eprintln!(
        "source-hash: backend {hot} flagged at {before}; {total} changes {changes:?} -> {corrected}; \
         restored in {} changes; answers {answers_corrected:?}; {lost} datagrams unanswered",
        after.len()
    );
    let mut env = env;
    if let Err(e) = env.topo.stop_lb() {
        env.fail(format!("{e:#}"));
    }
}
