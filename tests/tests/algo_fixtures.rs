//! BPF_PROG_TEST_RUN checks of the per-VIP balancing algorithms: the kernel
//! picks what userspace predicts (source-hash), the exact weighted sequence
//! (round-robin), and the least loaded backend with the active-connection
//! counts kept right (least-connections).
//!
//! Needs root (BPF). One dataplane per test binary, shared under a lock.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use aya::programs::{TestRun, TestRunOptions};
use lb::config::Config;
use lb::dataplane::Dataplane;
use lb_common::net::{TCP_FLAG_ACK, TCP_FLAG_RST};
use lb_common::{
    FlowKey,
    hash::{flow_hash, source_hash},
};
use lb_tests::packet::{self, Packet, TCP_FLAG_FIN};

const XDP_TX: u32 = 3;

const GLOBAL: &str = r#"
[global]
interface = "lb0"
nexthop_mac = "02:00:00:00:00:fe"
tunnel_source_v4 = "198.18.0.2"
tunnel_source_v6 = "2001:db8::2"
"#;

/// Source-hash VIP (tcp/80) and a Maglev VIP over the same backends (tcp/81).
const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 110, 1);
const SH_BACKENDS: [&str; 4] = ["198.18.0.61", "198.18.0.62", "198.18.0.63", "198.18.0.64"];

fn vip_toml(port: u16, algorithm: &str, extra: &str, backends: &[(&str, u32)]) -> String {
    let mut s = format!(
        "[[vip]]\naddress = \"{VIP}\"\nport = {port}\nprotocol = \"tcp\"\nalgorithm = \"{algorithm}\"\n{extra}\n"
    );
    for (addr, weight) in backends {
        s.push_str(&format!("  [[vip.backend]]\n  address = \"{addr}\"\n  weight = {weight}\n"));
    }
    s
}

/// Round-robin VIPs: tcp/82 weighted 2:1:1, tcp/83 the same shares as 4:2:2.
const RR_BACKENDS: [(&str, u32); 3] = [("198.18.0.71", 2), ("198.18.0.72", 1), ("198.18.0.73", 1)];

fn base_config() -> String {
    let sh: Vec<(&str, u32)> = SH_BACKENDS.iter().map(|a| (*a, 1)).collect();
    let doubled: Vec<(&str, u32)> = RR_BACKENDS.iter().map(|(a, w)| (*a, w * 2)).collect();
    [
        GLOBAL.to_string(),
        vip_toml(80, "source-hash", "ring_size = 1009", &sh),
        vip_toml(81, "maglev", "", &sh),
        vip_toml(82, "round-robin", "", &RR_BACKENDS),
        vip_toml(83, "round-robin", "", &doubled),
        vip_toml(84, "least-connections", "", &LC_BACKENDS),
        v6_source_hash_toml(),
    ]
    .join("\n")
}

/// A source-hash VIP over IPv6 (tcp/80 of `VIP6`).
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x110, 0, 0, 0, 0, 1);

fn v6_source_hash_toml() -> String {
    let mut s = format!("[[vip]]\naddress = \"{VIP6}\"\nport = 80\nprotocol = \"tcp\"\nalgorithm = \"source-hash\"\n");
    for i in 1..=4 {
        s.push_str(&format!("  [[vip.backend]]\n  address = \"2001:db8::6{i}\"\n"));
    }
    s
}

/// Least-connections VIP (tcp/84), weighted 2:1:1.
const LC_BACKENDS: [(&str, u32); 3] = [("198.18.0.81", 2), ("198.18.0.82", 1), ("198.18.0.83", 1)];

/// Keeps the test thread on one CPU: the round-robin position is per CPU.
fn pin_to_one_cpu() {
    pin_to_cpu(0);
}

fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t with one bit set, for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set), 0, "sched_setaffinity");
    }
}

static DATAPLANE: OnceLock<Mutex<Dataplane>> = OnceLock::new();

/// The shared dataplane with `config` applied, or None when not root.
fn dataplane(test: &str, config: &str) -> Option<MutexGuard<'static, Dataplane>> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP {test}: BPF_PROG_TEST_RUN of XDP programs needs root");
        return None;
    }
    let dp = DATAPLANE.get_or_init(|| Mutex::new(Dataplane::load().expect("loading the balancer")));
    let mut guard = dp.lock().unwrap_or_else(|e| e.into_inner());
    let cfg = Config::from_toml_str(config).unwrap_or_else(|e| panic!("config rejected: {e}\n{config}"));
    guard.apply(&cfg).expect("applying the configuration");
    Some(guard)
}

/// Runs one frame; the backend it was encapsulated to (None: not forwarded).
fn forward(dp: &Dataplane, pkt: &Packet) -> Option<IpAddr> {
    let frame = pkt.build();
    let mut out = vec![0u8; frame.len() + 256];
    let r = dp
        .balancer()
        .test_run(TestRunOptions { data_in: Some(&frame), data_out: Some(&mut out), ..Default::default() })
        .expect("BPF_PROG_TEST_RUN");
    out.truncate(r.data_size_out as usize);
    if r.return_value != XDP_TX {
        return None;
    }
    Some(packet::IpView::parse(&out[packet::l2_len(&out)..])?.dst)
}

fn syn(client: Ipv4Addr, sport: u16, port: u16) -> Packet {
    Packet::new().ipv4(client, VIP).tcp(sport, port).syn()
}

#[test]
fn source_hash_sends_every_port_of_a_client_to_the_predicted_backend() {
    let Some(dp) = dataplane("source_hash", &base_config()) else { return };
    let mut by_client: BTreeMap<Ipv4Addr, BTreeSet<IpAddr>> = BTreeMap::new();
    let mut maglev_spread = BTreeSet::new();
    for c in 0..24u8 {
        let client = Ipv4Addr::new(198, 19, 7, c + 1);
        for p in 0..40u16 {
            let sport = 20_000 + p * 397;
            let pkt = syn(client, sport, 80);
            let flow: FlowKey = pkt.flow_key();
            let trace = dp.trace(&flow).expect("trace").expect("a VIP");
            // The userspace hash the trace reports is the kernel's formula.
            assert_eq!(trace.hash, source_hash(&flow), "trace hash of {client}:{sport}");
            assert_eq!(trace.entry, source_hash(&flow) % 1009);
            let got = forward(&dp, &pkt).expect("forwarded");
            assert_eq!(Some(got), trace.ring_backend, "{client}:{sport}: kernel != userspace prediction");
            by_client.entry(client).or_default().insert(got);
            if c == 0 {
                maglev_spread.insert(forward(&dp, &syn(client, sport, 81)).expect("forwarded"));
            }
        }
    }
    for (client, backends) in &by_client {
        assert_eq!(backends.len(), 1, "{client}'s connections reached {backends:?}");
    }
    let reached: BTreeSet<IpAddr> = by_client.values().flatten().copied().collect();
    assert!(reached.len() >= 3, "24 clients reached only {reached:?}");
    // The same client's ports spread under Maglev: the VIP's algorithm is what groups them.
    assert!(maglev_spread.len() >= 2, "maglev sent 40 ports of one client to {maglev_spread:?}");
}

#[test]
fn source_hash_over_ipv6_keeps_a_client_on_the_predicted_backend() {
    let Some(dp) = dataplane("source_hash_v6", &base_config()) else { return };
    let mut reached = BTreeSet::new();
    for c in 0..16u16 {
        let client = Ipv6Addr::new(0x2001, 0xdb8, 0x19, 0, 0, 0, 7, c + 1);
        let mut backends = BTreeSet::new();
        for p in 0..20u16 {
            let pkt = Packet::new().ipv6(client, VIP6).tcp(30_000 + p * 211, 80).syn();
            let flow: FlowKey = pkt.flow_key();
            let trace = dp.trace(&flow).expect("trace").expect("a VIP");
            assert_eq!(trace.hash, source_hash(&flow), "trace hash of [{client}]");
            let got = forward(&dp, &pkt).expect("forwarded");
            assert_eq!(Some(got), trace.ring_backend, "[{client}]: kernel != userspace prediction");
            backends.insert(got);
        }
        assert_eq!(backends.len(), 1, "[{client}]'s connections reached {backends:?}");
        reached.extend(backends);
    }
    assert!(reached.len() >= 3, "16 clients reached only {reached:?}");
}

#[test]
fn round_robin_gives_the_exact_weighted_sequence() {
    let Some(dp) = dataplane("round_robin", &base_config()) else { return };
    pin_to_one_cpu();
    let client = Ipv4Addr::new(198, 19, 8, 1);
    let [a, b, c] = RR_BACKENDS.map(|(addr, _)| addr.parse::<IpAddr>().unwrap());
    // Smooth weighted round-robin of 2:1:1 in address order: a b c a.
    let period = [a, b, c, a];
    for port in [82, 83] {
        let trace = dp.trace(&syn(client, 1, port).flow_key()).unwrap().unwrap();
        assert_eq!(trace.ring_size, 4, "tcp/{port}: weights reduced by their gcd");
        assert_eq!(trace.ring_backend, None, "round-robin is not predicted");
    }
    let mut got = Vec::new();
    for i in 0..300u16 {
        let pkt = syn(client, 30_000 + i, 82);
        let backend = forward(&dp, &pkt).expect("forwarded");
        got.push(backend);
        // The flow's next packets stay on its backend and do not advance the sequence.
        let ack = Packet::new().ipv4(client, VIP).tcp(30_000 + i, 82).ack();
        assert_eq!(forward(&dp, &ack), Some(backend), "ACK of flow {i}");
    }
    // Another test (or CPU) may have left the position anywhere: find it.
    let start = (0..4).find(|&o| period[o] == got[0] && period[(o + 1) % 4] == got[1]).expect("a rotation");
    for (i, backend) in got.iter().enumerate() {
        assert_eq!(*backend, period[(start + i) % 4], "SYN {i}: {got:?}");
    }
    let count = |x: IpAddr| got.iter().filter(|&&g| g == x).count();
    assert_eq!((count(a), count(b), count(c)), (150, 75, 75));
}

/// Active connections of a backend of the VIP on `port`.
fn active_of(dp: &Dataplane, port: u16, addr: IpAddr) -> u64 {
    let counters = dp.backend_counters().expect("backend counters");
    counters.iter().find(|(k, a, _)| k.port == port.to_be() && *a == addr).expect("a configured backend").2.active
}

/// Active connections of the least-connections backends, in address order.
fn lc_active(dp: &Dataplane) -> Vec<u64> {
    LC_BACKENDS.iter().map(|(addr, _)| active_of(dp, 84, addr.parse().unwrap())).collect()
}

#[test]
fn a_repeated_maglev_syn_keeps_its_entry_and_counts_once() {
    let Some(mut dp) = dataplane("repeated_syn", &base_config()) else { return };
    let idle = lb::dataplane::IdleTimeouts { tcp_s: 300, udp_s: 30 };
    let syn = syn(Ipv4Addr::new(198, 19, 9, 2), 5555, 81);
    let first = forward(&dp, &syn).expect("forwarded");
    dp.reconcile_active(idle).expect("recount");
    let truth = active_of(&dp, 81, first);
    let flows = |dp: &Dataplane| dp.backend_counters().expect("counters").iter().map(|c| c.2.new_flows).sum::<u64>();
    let new_flows = flows(&dp);
    // A SYN to a Maglev VIP looks its tuple up: the open entry already names
    // the picked backend, so it is kept, not counted again.
    assert_eq!(forward(&dp, &syn), Some(first), "same ring, same backend");
    assert_eq!(active_of(&dp, 81, first), truth, "a retransmitted SYN is not a second active flow");
    assert_eq!(flows(&dp), new_flows, "nor a second new flow");
    dp.reconcile_active(idle).expect("recount");
    assert_eq!(active_of(&dp, 81, first), truth, "the recount agrees");
    forward(&dp, &Packet::new().ipv4(Ipv4Addr::new(198, 19, 9, 2), VIP).tcp(5555, 81).flags(TCP_FLAG_RST));
    assert_eq!(active_of(&dp, 81, first), truth - 1, "RST");
    // After the RST the same tuple's SYN is a new flow again.
    assert_eq!(forward(&dp, &syn), Some(first));
    assert_eq!((active_of(&dp, 81, first), flows(&dp)), (truth, new_flows + 1));
}

/// What the program must pick: the least active/weight backend, scanning
/// the address-ordered list from `flow_hash % n`, the first of equals.
fn lc_predict(active: &[u64], flow: &FlowKey) -> usize {
    let n = LC_BACKENDS.len();
    let start = flow_hash(flow) as usize % n;
    let mut best = start;
    for k in (0..n).map(|i| (start + i) % n) {
        if active[k] * (LC_BACKENDS[best].1 as u64) < active[best] * (LC_BACKENDS[k].1 as u64) {
            best = k;
        }
    }
    best
}

fn lc_index(addr: IpAddr) -> usize {
    LC_BACKENDS.iter().position(|(a, _)| a.parse::<IpAddr>().unwrap() == addr).expect("an LC backend")
}

#[test]
fn least_connections_picks_the_least_loaded_and_counts_each_flow_once() {
    let Some(mut dp) = dataplane("least_connections", &base_config()) else { return };
    let client = Ipv4Addr::new(198, 19, 9, 1);
    let pkt = |sport: u16| Packet::new().ipv4(client, VIP).tcp(sport, 84);
    // Start from the truth: the table holds no flow of this VIP yet.
    dp.reconcile_active(lb::dataplane::IdleTimeouts { tcp_s: 300, udp_s: 30 }).expect("recount");
    assert_eq!(lc_active(&dp), vec![0, 0, 0]);
    // 40 new flows: each goes where the prediction says and adds one there.
    let mut flows = Vec::new();
    for i in 0..40u16 {
        let before = lc_active(&dp);
        let sport = 40_000 + i;
        let syn = pkt(sport).syn();
        let want = lc_predict(&before, &syn.flow_key());
        let got = lc_index(forward(&dp, &syn).expect("forwarded"));
        assert_eq!(got, want, "flow {i} with active {before:?}");
        let mut after = before.clone();
        after[got] += 1;
        assert_eq!(lc_active(&dp), after, "flow {i} counted on its backend");
        // A retransmitted SYN of the open flow keeps it, counted once.
        assert_eq!(forward(&dp, &syn).map(lc_index), Some(got), "retransmitted SYN {i}");
        assert_eq!(lc_active(&dp), after, "retransmitted SYN {i} not counted again");
        flows.push((sport, got));
    }
    // Weighted 2:1:1: the loads per unit of weight end up equal.
    assert_eq!(lc_active(&dp), vec![20, 10, 10]);
    // The first FIN takes a flow off; its RST and a second FIN do not again.
    let (sport, b) = *flows.iter().find(|f| f.1 == 0).expect("a flow on backend 0");
    let mut expect = lc_active(&dp);
    assert_eq!(forward(&dp, &pkt(sport).ack()).map(lc_index), Some(b));
    assert_eq!(lc_active(&dp), expect, "an ACK changes nothing");
    forward(&dp, &pkt(sport).flags(TCP_FLAG_FIN | TCP_FLAG_ACK)).expect("FIN forwarded");
    expect[b] -= 1;
    assert_eq!(lc_active(&dp), expect, "FIN");
    forward(&dp, &pkt(sport).flags(TCP_FLAG_RST)).expect("RST forwarded");
    forward(&dp, &pkt(sport).flags(TCP_FLAG_FIN)).expect("FIN forwarded");
    assert_eq!(lc_active(&dp), expect, "RST and FIN after the first FIN");
    // Close every flow of backend 0: the next new flows all go there until it catches up.
    for &(other, _) in flows.iter().filter(|(p, b)| *b == 0 && *p != sport) {
        forward(&dp, &pkt(other).flags(TCP_FLAG_RST)).expect("RST forwarded");
    }
    assert_eq!(lc_active(&dp), vec![0, 10, 10]);
    for i in 0..20u16 {
        let got = lc_index(forward(&dp, &pkt(41_000 + i).syn()).expect("forwarded"));
        assert_eq!(got, 0, "new flow {i} with active {:?}", lc_active(&dp));
    }
    // The recount finds the same truth in the connection table.
    let counted = lc_active(&dp);
    dp.reconcile_active(lb::dataplane::IdleTimeouts { tcp_s: 300, udp_s: 30 }).expect("recount");
    assert_eq!(lc_active(&dp), counted);
    assert_eq!(counted, vec![20, 10, 10]);
}

/// The recount's walk of the connection table, timed: fills the table with
/// `LB_WALK_ENTRIES` flows (default 10000; the README's figures are for
/// 10000 and 1000000) through the program, spread over the CPUs, then
/// recounts. Every recorded flow must be counted, less those that a later
/// flow evicted from a full set (none at the default, a few percent when
/// the table is nearly full).
#[test]
fn recount_walks_the_whole_connection_table() {
    let n: u32 = std::env::var("LB_WALK_ENTRIES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    // No flood guard: every SYN is recorded.
    let config = base_config().replace("[global]\n", "[global]\nnew_flow_limit = 0\n");
    let Some(mut dp) = dataplane("recount_walk", &config) else { return };
    let idle = lb::dataplane::IdleTimeouts { tcp_s: 300, udp_s: 30 };
    let before = dp.reconcile_active(idle).expect("recount").active;
    let evicted = |dp: &Dataplane| dp.stats().expect("stats")[lb_common::stats::CONNTRACK_EVICTED as usize].packets;
    let evicted_before = evicted(&dp);
    // A SYN template to the Maglev VIP; each flow rewrites the source address and port.
    let frame = syn(Ipv4Addr::new(198, 19, 0, 0), 0, 81).build();
    let (src_at, sport_at) = (14 + 12, 14 + 20);
    let cpus = (unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }).max(1) as u32;
    let started = Instant::now();
    let mut input = frame.clone();
    let mut out = vec![0u8; frame.len() + 256];
    for i in 0..n {
        if i % (n / cpus + 1) == 0 {
            pin_to_cpu((i / (n / cpus + 1)) as usize);
        }
        input[src_at..src_at + 4].copy_from_slice(&[198, 19, (i >> 12) as u8, (i >> 4) as u8]);
        input[sport_at..sport_at + 2].copy_from_slice(&(1024 + (i & 0xf) as u16).to_be_bytes());
        let r = dp
            .balancer()
            .test_run(TestRunOptions { data_in: Some(&input), data_out: Some(&mut out), ..Default::default() })
            .expect("BPF_PROG_TEST_RUN");
        assert_eq!(r.return_value, XDP_TX, "flow {i}");
    }
    let filled = started.elapsed();
    let report = dp.reconcile_active(idle).expect("recount");
    let evicted = evicted(&dp) - evicted_before;
    println!(
        "{n} flows recorded in {filled:.2?} ({evicted} evicted); recount: {} entries, {} active, walk and writes {:.2?} \
         ({:.0} ns/entry)",
        report.entries,
        report.active,
        report.took,
        report.took.as_nanos() as f64 / report.entries.max(1) as f64
    );
    if n <= 10_000 {
        assert_eq!(evicted, 0, "a table of 2^20 with {n} flows has room in every set");
    }
    assert!(report.entries >= (n as u64 - evicted), "walked {} of at least {n} - {evicted} entries", report.entries);
    assert_eq!(report.active, before + n as u64 - evicted, "every recorded flow is counted once");
}

#[test]
fn least_connections_follows_a_weight_change() {
    let backends = [("198.18.0.91", 1), ("198.18.0.92", 1), ("198.18.0.93", 1)];
    let with = |b: &[(&str, u32)]| format!("{}\n{}", base_config(), vip_toml(85, "least-connections", "", b));
    let Some(mut dp) = dataplane("lc_weights", &with(&backends)) else { return };
    dp.reconcile_active(lb::dataplane::IdleTimeouts { tcp_s: 300, udp_s: 30 }).expect("recount");
    let client = Ipv4Addr::new(198, 19, 9, 3);
    let addrs: Vec<IpAddr> = backends.iter().map(|(a, _)| a.parse().unwrap()).collect();
    let active = |dp: &Dataplane| addrs.iter().map(|a| active_of(dp, 85, *a)).collect::<Vec<_>>();
    for i in 0..30u16 {
        forward(&dp, &syn(client, 50_000 + i, 85)).expect("forwarded");
    }
    assert_eq!(active(&dp), vec![10, 10, 10], "equal weights, equal loads");
    // The third backend's weight triples: it takes every new flow until it
    // holds three times the others' load.
    let tripled = [backends[0], backends[1], ("198.18.0.93", 3)];
    let cfg = Config::from_toml_str(&with(&tripled)).expect("config");
    dp.apply(&cfg).expect("apply");
    for i in 0..20u16 {
        assert_eq!(forward(&dp, &syn(client, 51_000 + i, 85)), Some(addrs[2]), "flow {i}: {:?}", active(&dp));
    }
    assert_eq!(active(&dp), vec![10, 10, 30]);
}

/// `ConnEntry::seen` is in units of the kernel's jiffies, which the agent
/// reads through `lb_clock` and converts with a calibrated HZ: the HZ must
/// be the kernel's, and a flow must stop counting once idle past its
/// timeout (and not before).
#[test]
fn the_seen_clock_follows_the_kernels_jiffies() {
    let Some(mut dp) = dataplane("seen_clock", &base_config()) else { return };
    let hz = dp.hz().expect("calibration");
    let config_hz = std::process::Command::new("zcat")
        .arg("/proc/config.gz")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|c| c.lines().find_map(|l| l.strip_prefix("CONFIG_HZ=").and_then(|v| v.parse::<u32>().ok())));
    match config_hz {
        Some(expected) => assert_eq!(hz, expected, "calibrated HZ vs the kernel's CONFIG_HZ"),
        None => println!("no /proc/config.gz: calibrated HZ {hz} not cross-checked"),
    }
    // The dataplane is this test's while the guard is held: no other flow
    // is added meanwhile.
    let idle = lb::dataplane::IdleTimeouts { tcp_s: 1, udp_s: 1 };
    let backend = forward(&dp, &syn(Ipv4Addr::new(198, 19, 9, 7), 7777, 81)).expect("forwarded");
    dp.reconcile_active(idle).expect("recount");
    assert!(active_of(&dp, 81, backend) >= 1, "just seen: active");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let after = dp.reconcile_active(idle).expect("recount").active;
    assert_eq!(after, 0, "every flow idle 1.5 s, past the 1 s timeout: none active");
}
