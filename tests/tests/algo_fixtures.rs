//! BPF_PROG_TEST_RUN checks of the per-VIP balancing algorithms: the kernel
//! picks what userspace predicts (source-hash), the exact weighted sequence
//! (round-robin), and the least loaded backend with the active-connection
//! counts kept right (least-connections).
//!
//! Needs root (BPF). One dataplane per test binary, shared under a lock.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Mutex, MutexGuard, OnceLock};

use aya::programs::{TestRun, TestRunOptions};
use lb::config::Config;
use lb::dataplane::Dataplane;
use lb_common::{FlowKey, hash::source_hash};
use lb_tests::packet::{self, Packet};

const XDP_TX: u32 = 3;

const GLOBAL: &str = r#"
[global]
interface = "lb0"
nexthop_mac = "02:00:00:00:00:fe"
tunnel_source_v4 = "198.18.0.2"
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
    ]
    .join("\n")
}

/// Keeps the test thread on one CPU: the round-robin position is per CPU.
fn pin_to_one_cpu() {
    // SAFETY: a zeroed cpu_set_t with one bit set, for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
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
