//! BPF_PROG_TEST_RUN fixtures of `lb_balancer`, in the style of Katran's
//! test fixtures: a table of cases, each an input frame built byte by byte,
//! the expected XDP verdict, the exact expected output frame, and the
//! `lb_common::stats` counter that must go up by exactly one.
//!
//! Also here: the "userspace predicts the kernel" test (random flows, the
//! kernel's backend choice == `Dataplane::predict_backend`), and the
//! connection-table test across configuration changes.
//!
//! Needs root (BPF). The dataplane allocates ~250 MB of maps, so it is loaded
//! once per test binary and shared under a lock; every test (re-)applies the
//! base configuration first.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Mutex, MutexGuard, OnceLock};

use aya::programs::{TestRun, TestRunOptions, Xdp};
use lb::config::Config;
use lb::dataplane::Dataplane;
use lb_common::net::{ETH_P_8021AD, ETH_P_8021Q, IPPROTO_TCP, IPPROTO_UDP, TCP_FLAG_ACK, TCP_FLAG_SYN};
use lb_common::{FlowKey, stats};
use lb_tests::packet::{
    self, Ipv6Ext, Mac, Packet, TCP_FLAG_FIN, TCP_FLAG_PSH, hex_diff, ipip_encap, l2dsr, mac, truncate_ip, truncated,
};

// XDP verdicts (enum xdp_action).
const XDP_ABORTED: u32 = 0;
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const XDP_REDIRECT: u32 = 4;

fn verdict_name(v: u32) -> &'static str {
    match v {
        XDP_ABORTED => "XDP_ABORTED",
        XDP_DROP => "XDP_DROP",
        XDP_PASS => "XDP_PASS",
        XDP_TX => "XDP_TX",
        XDP_REDIRECT => "XDP_REDIRECT",
        _ => "unknown",
    }
}

fn stat_name(i: u32) -> &'static str {
    stats::LABELS.get(i as usize).copied().unwrap_or("?")
}

// ---------------------------------------------------------------------------
// Addresses and the configuration

const NEXTHOP_MAC: &str = "02:00:00:00:00:fe";
const TUN_SRC_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const TUN_SRC_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);

/// v4 VIP address: tcp/80 and udp/53, ipip.
const V4: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 1);
/// v4 l2dsr VIP: tcp/80.
const V4_DSR: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 2);
/// v4 VIP without backends: tcp/80.
const V4_EMPTY: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 3);
/// v4 VIP with weighted backends and a small ring: tcp/8080.
const V4_PRED: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 5);
/// v4 VIP of the connection-table test: tcp/443 and udp/443.
const V4_CT: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 9);
/// An address that carries no VIP.
const V4_OTHER: Ipv4Addr = Ipv4Addr::new(198, 18, 200, 1);
const CLIENT4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);

const V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1);
const V6_DSR: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 2);
const V6_EMPTY: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 3);
const V6_PRED: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 5);
const V6_OTHER: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x200, 0, 0, 0, 0, 1);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);

#[derive(Clone, Debug)]
struct BackendDef {
    addr: IpAddr,
    weight: Option<u32>,
    mac: Option<Mac>,
}

#[derive(Clone, Debug)]
struct VipDef {
    addr: IpAddr,
    port: u16,
    proto: u8,
    l2dsr: bool,
    ring_size: Option<u32>,
    backends: Vec<BackendDef>,
}

fn be(addr: &str) -> BackendDef {
    BackendDef { addr: addr.parse().unwrap(), weight: None, mac: None }
}

fn be_w(addr: &str, weight: u32) -> BackendDef {
    BackendDef { weight: Some(weight), ..be(addr) }
}

fn be_mac(addr: &str, m: &str) -> BackendDef {
    BackendDef { mac: Some(mac(m)), ..be(addr) }
}

fn vip(addr: impl Into<IpAddr>, port: u16, proto: u8, backends: Vec<BackendDef>) -> VipDef {
    VipDef { addr: addr.into(), port, proto, l2dsr: false, ring_size: None, backends }
}

fn ct_backends() -> Vec<BackendDef> {
    vec![be("198.18.0.41"), be("198.18.0.42"), be("198.18.0.43")]
}

/// Every VIP the fixtures need.
fn base_vips() -> Vec<VipDef> {
    vec![
        vip(V4, 80, IPPROTO_TCP, vec![be("198.18.0.11"), be("198.18.0.12"), be("198.18.0.13")]),
        vip(V4, 53, IPPROTO_UDP, vec![be("198.18.0.21"), be("198.18.0.22")]),
        VipDef {
            l2dsr: true,
            ..vip(
                V4_DSR,
                80,
                IPPROTO_TCP,
                vec![
                    be_mac("198.18.0.31", "02:00:00:00:01:31"),
                    be_mac("198.18.0.32", "02:00:00:00:01:32"),
                    be_mac("198.18.0.33", "02:00:00:00:01:33"),
                ],
            )
        },
        vip(V4_EMPTY, 80, IPPROTO_TCP, vec![]),
        VipDef {
            ring_size: Some(1009),
            ..vip(
                V4_PRED,
                8080,
                IPPROTO_TCP,
                vec![
                    be_w("198.18.0.51", 1),
                    be_w("198.18.0.52", 2),
                    be_w("198.18.0.53", 3),
                    be_w("198.18.0.54", 1),
                    be_w("198.18.0.55", 1),
                ],
            )
        },
        VipDef { ring_size: Some(251), ..vip(V4_CT, 443, IPPROTO_TCP, ct_backends()) },
        VipDef { ring_size: Some(251), ..vip(V4_CT, 443, IPPROTO_UDP, ct_backends()) },
        vip(V6, 80, IPPROTO_TCP, vec![be("2001:db8::11"), be("2001:db8::12"), be("2001:db8::13")]),
        vip(V6, 53, IPPROTO_UDP, vec![be("2001:db8::21"), be("2001:db8::22")]),
        VipDef {
            l2dsr: true,
            ..vip(
                V6_DSR,
                80,
                IPPROTO_TCP,
                vec![be_mac("2001:db8::31", "02:00:00:00:02:31"), be_mac("2001:db8::32", "02:00:00:00:02:32")],
            )
        },
        vip(V6_EMPTY, 80, IPPROTO_TCP, vec![]),
        VipDef {
            ring_size: Some(1021),
            ..vip(
                V6_PRED,
                4500,
                IPPROTO_UDP,
                vec![be("2001:db8::51"), be("2001:db8::52"), be_w("2001:db8::53", 4), be("2001:db8::54")],
            )
        },
    ]
}

fn config_toml(vips: &[VipDef]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "[global]\ninterface = \"lb0\"\nxdp_mode = \"native\"\nforwarding = \"ipip\"\n\
         nexthop_mac = \"{NEXTHOP_MAC}\"\ntunnel_source_v4 = \"{TUN_SRC_V4}\"\ntunnel_source_v6 = \"{TUN_SRC_V6}\"\n"
    );
    for v in vips {
        let proto = if v.proto == IPPROTO_TCP { "tcp" } else { "udp" };
        let _ = writeln!(s, "[[vip]]\naddress = \"{}\"\nport = {}\nprotocol = \"{proto}\"", v.addr, v.port);
        if v.l2dsr {
            let _ = writeln!(s, "forwarding = \"l2dsr\"");
        }
        if let Some(r) = v.ring_size {
            let _ = writeln!(s, "ring_size = {r}");
        }
        for b in &v.backends {
            let _ = writeln!(s, "  [[vip.backend]]\n  address = \"{}\"", b.addr);
            if let Some(w) = b.weight {
                let _ = writeln!(s, "  weight = {w}");
            }
            if let Some(m) = b.mac {
                let m = m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
                let _ = writeln!(s, "  mac = \"{m}\"");
            }
        }
        s.push('\n');
    }
    s
}

fn config(vips: &[VipDef]) -> Config {
    let text = config_toml(vips);
    Config::from_toml_str(&text).unwrap_or_else(|e| panic!("config rejected: {e}\n{text}"))
}

/// MAC of an l2dsr backend, from the VIP table.
fn backend_mac(vips: &[VipDef], addr: IpAddr) -> Mac {
    vips.iter()
        .flat_map(|v| &v.backends)
        .find(|b| b.addr == addr)
        .and_then(|b| b.mac)
        .unwrap_or_else(|| panic!("no MAC configured for {addr}"))
}

// ---------------------------------------------------------------------------
// The shared dataplane

static DATAPLANE: OnceLock<Mutex<Dataplane>> = OnceLock::new();

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The shared dataplane with the base configuration applied, or None (after
/// printing why) when the test cannot run here.
fn dataplane(test: &str) -> Option<MutexGuard<'static, Dataplane>> {
    if !is_root() {
        eprintln!("SKIP {test}: BPF_PROG_TEST_RUN of XDP programs needs root");
        return None;
    }
    let dp = DATAPLANE.get_or_init(|| Mutex::new(Dataplane::load().expect("loading the balancer")));
    // A failed test may poison the lock; the next one re-applies the base config.
    let mut guard = dp.lock().unwrap_or_else(|e| e.into_inner());
    guard.apply(&config(&base_vips())).expect("applying the base configuration");
    Some(guard)
}

struct RunResult {
    verdict: u32,
    output: Vec<u8>,
}

/// One BPF_PROG_TEST_RUN with a fresh copy of `frame`.
fn run(prog: &Xdp, frame: &[u8]) -> RunResult {
    let input = frame.to_vec();
    let mut out = vec![0u8; frame.len() + 256];
    let r = prog
        .test_run(TestRunOptions { data_in: Some(&input), data_out: Some(&mut out), ..Default::default() })
        .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN failed: {e}"));
    out.truncate(r.data_size_out as usize);
    RunResult { verdict: r.return_value, output: out }
}

/// Packet counts of every `stats` index.
fn counts(dp: &Dataplane) -> Vec<u64> {
    dp.stats().expect("reading STATS").iter().map(|c| c.packets).collect()
}

fn delta(before: &[u64], after: &[u64], index: u32) -> u64 {
    after[index as usize] - before[index as usize]
}

const CONNTRACK_STATS: [u32; 4] =
    [stats::CONNTRACK_FULL, stats::CONNTRACK_HIT, stats::CONNTRACK_MISS, stats::CONNTRACK_REPICK];

/// Sum of the verdict counters (everything but the connection-table ones):
/// each packet is counted under exactly one verdict reason.
fn verdict_delta(before: &[u64], after: &[u64]) -> u64 {
    (0..stats::COUNT).filter(|i| !CONNTRACK_STATS.contains(i)).map(|i| delta(before, after, i)).sum()
}

fn describe_deltas(before: &[u64], after: &[u64]) -> String {
    (0..stats::COUNT)
        .filter(|&i| delta(before, after, i) != 0)
        .map(|i| format!("{}+{}", stat_name(i), delta(before, after, i)))
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------
// The table

/// Which connection-table counter the case moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ct {
    /// None of them (not forwarded).
    None,
    /// `CONNTRACK_MISS` +1 only (new flow or SYN).
    Miss,
    /// `CONNTRACK_HIT` +1 only (established flow).
    Hit,
    /// Not checked.
    Any,
}

struct Case {
    description: String,
    input: Vec<u8>,
    verdict: u32,
    /// Exact expected output frame.
    output: Vec<u8>,
    /// `lb_common::stats` index that must go up by exactly one.
    counter: u32,
    conntrack: Ct,
    /// Backend the output is sent to (forwarded cases), for messages.
    backend: Option<IpAddr>,
}

impl Case {
    fn ct(&mut self, ct: Ct) {
        self.conntrack = ct;
    }
}

/// Builds the table's cases; forwarded ones need the dataplane's prediction.
struct Table<'a> {
    dp: &'a Dataplane,
    vips: Vec<VipDef>,
    nexthop: Mac,
    next_port: u16,
    cases: Vec<Case>,
}

impl<'a> Table<'a> {
    fn new(dp: &'a Dataplane) -> Self {
        Table { dp, vips: base_vips(), nexthop: mac(NEXTHOP_MAC), next_port: 10000, cases: Vec::new() }
    }

    /// A client source port no other case uses, so every case is its own flow.
    fn sport(&mut self) -> u16 {
        self.next_port += 1;
        self.next_port
    }

    fn predict(&self, pkt: &Packet) -> IpAddr {
        let flow = pkt.flow_key();
        self.dp
            .predict_backend(&flow)
            .expect("predict_backend")
            .unwrap_or_else(|| panic!("no backend predicted for {flow:?}"))
    }

    fn pass(&mut self, description: impl Into<String>, input: Vec<u8>, counter: u32) {
        self.cases.push(Case {
            description: description.into(),
            output: input.clone(),
            input,
            verdict: XDP_PASS,
            counter,
            conntrack: Ct::None,
            backend: None,
        });
    }

    fn drop(&mut self, description: impl Into<String>, input: Vec<u8>, counter: u32) -> &mut Case {
        self.cases.push(Case {
            description: description.into(),
            output: input.clone(),
            input,
            verdict: XDP_DROP,
            counter,
            conntrack: Ct::None,
            backend: None,
        });
        self.cases.last_mut().unwrap()
    }

    /// Forwarded by IP-in-IP to the predicted backend.
    fn ipip(&mut self, description: impl Into<String>, pkt: Packet) -> &mut Case {
        let input = pkt.build();
        let backend = self.predict(&pkt);
        let output = ipip_encap(&input, pkt.l2_len(), self.nexthop, TUN_SRC_V4, TUN_SRC_V6, backend);
        self.cases.push(Case {
            description: description.into(),
            input,
            verdict: XDP_TX,
            output,
            counter: stats::TX_IPIP,
            conntrack: Ct::Miss,
            backend: Some(backend),
        });
        self.cases.last_mut().unwrap()
    }

    /// Forwarded by L2 DSR to the predicted backend's MAC.
    fn dsr(&mut self, description: impl Into<String>, pkt: Packet) -> &mut Case {
        let input = pkt.build();
        let backend = self.predict(&pkt);
        let output = l2dsr(&input, backend_mac(&self.vips, backend));
        self.cases.push(Case {
            description: description.into(),
            input,
            verdict: XDP_TX,
            output,
            counter: stats::TX_L2DSR,
            conntrack: Ct::Miss,
            backend: Some(backend),
        });
        self.cases.last_mut().unwrap()
    }
}

/// `frame` with the TCP header at `tcp` given data offset `doff` (words);
/// nothing on the path checks the TCP checksum.
fn with_doff(mut frame: Vec<u8>, tcp: usize, doff: u8) -> Vec<u8> {
    frame[tcp + 12] = (doff << 4) | (frame[tcp + 12] & 0x0f);
    frame
}

fn p4(dst: Ipv4Addr) -> Packet {
    Packet::new().ipv4(CLIENT4, dst)
}

fn p6(dst: Ipv6Addr) -> Packet {
    Packet::new().ipv6(CLIENT6, dst)
}

const HTTP_GET: &[u8] = b"GET / HTTP/1.1\r\nHost: lb\r\n\r\n";
const DNS_QUERY: &[u8] = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x02lb\x00\x00\x01\x00\x01";

fn build_cases(dp: &Dataplane) -> Vec<Case> {
    let mut t = Table::new(dp);

    // ---- forwarded, IPv4 in IPv4 ----
    let sp = t.sport();
    t.ipip("v4 TCP SYN to tcp/80 -> IPv4-in-IPv4", p4(V4).tcp(sp, 80).syn());
    t.ipip("v4 TCP ACK of the same flow (established) -> same backend", p4(V4).tcp(sp, 80).ack().payload(HTTP_GET))
        .ct(Ct::Hit);
    let sp = t.sport();
    t.ipip(
        "v4 TCP ACK+PSH of an unseen flow (mid-stream) -> ring, IPv4-in-IPv4",
        p4(V4).tcp(sp, 80).flags(TCP_FLAG_ACK | TCP_FLAG_PSH).payload(HTTP_GET),
    );
    let sp = t.sport();
    t.ipip(
        "v4 TCP SYN+ACK (not a SYN for the table) of an unseen flow",
        p4(V4).tcp(sp, 80).flags(TCP_FLAG_SYN | TCP_FLAG_ACK),
    );
    let sp = t.sport();
    t.ipip("v4 TCP FIN+ACK of an unseen flow", p4(V4).tcp(sp, 80).flags(TCP_FLAG_FIN | TCP_FLAG_ACK));
    let sp = t.sport();
    t.ipip("v4 UDP to udp/53 -> IPv4-in-IPv4", p4(V4).udp(sp, 53).payload(DNS_QUERY));
    let sp = t.sport();
    t.ipip("v4 TCP with DF -> outer DF set", p4(V4).df().tcp(sp, 80).syn());
    let sp = t.sport();
    t.ipip("v4 TCP without DF, id 0xbeef -> outer DF clear, id 0", p4(V4).ip_id(0xbeef).tcp(sp, 80).syn());
    let sp = t.sport();
    t.ipip("v4 TCP TOS 0xb8 (EF) -> outer TOS 0xb8", p4(V4).tos(0xb8).tcp(sp, 80).syn());
    let sp = t.sport();
    t.ipip("v4 UDP TOS 0x03 (ECN CE) + DF -> outer TOS 0x03, DF", p4(V4).tos(0x03).df().udp(sp, 53).payload(b"x"));
    let sp = t.sport();
    t.ipip("v4 TCP TTL 1 -> forwarded, inner TTL untouched", p4(V4).ttl(1).tcp(sp, 80).syn());
    let sp = t.sport();
    t.ipip("v4 TCP in one 802.1Q tag -> tag kept", p4(V4).dot1q(100).tcp(sp, 80).syn());
    let sp = t.sport();
    t.ipip("v4 UDP in one 802.1ad tag -> tag kept", p4(V4).dot1ad(200).udp(sp, 53).payload(DNS_QUERY));
    let sp = t.sport();
    t.ipip(
        "v4 TCP in 802.1ad + 802.1Q (QinQ) with PCP bits -> tags kept",
        Packet::new()
            .vlan_tci(ETH_P_8021AD, 0xa00a)
            .vlan_tci(ETH_P_8021Q, 0x2014)
            .ipv4(CLIENT4, V4)
            .df()
            .tcp(sp, 80)
            .syn(),
    );
    let sp = t.sport();
    t.ipip("v4 TCP in two 802.1Q tags -> tags kept", p4(V4).dot1q(1).dot1q(2).tcp(sp, 80).ack());
    let sp = t.sport();
    t.ipip(
        "v4 TCP SYN in a 60-byte frame (6 bytes of padding) -> padding kept, outer length from IP",
        p4(V4).tcp(sp, 80).syn().pad_to(60),
    );
    let sp = t.sport();
    t.ipip("v4 UDP in 802.1Q padded to 64 bytes -> padding kept", p4(V4).dot1q(7).udp(sp, 53).payload(b"a").pad_to(64));
    let sp = t.sport();
    t.ipip(
        "v4 TCP with 40 bytes of TCP options and non-zero trailer",
        p4(V4)
            .tcp(sp, 80)
            .syn()
            .tcp_options(&[2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7])
            .trailer(&[0xde, 0xad, 0xbe, 0xef]),
    );

    // ---- forwarded, IPv6 in IPv6 ----
    let sp = t.sport();
    t.ipip("v6 TCP SYN to tcp/80 -> IPv6-in-IPv6", p6(V6).tcp(sp, 80).syn());
    t.ipip("v6 TCP ACK of the same flow (established) -> same backend", p6(V6).tcp(sp, 80).ack().payload(HTTP_GET))
        .ct(Ct::Hit);
    let sp = t.sport();
    t.ipip("v6 TCP ACK of an unseen flow -> ring", p6(V6).tcp(sp, 80).ack());
    let sp = t.sport();
    t.ipip("v6 UDP to udp/53 -> IPv6-in-IPv6", p6(V6).udp(sp, 53).payload(DNS_QUERY));
    let sp = t.sport();
    t.ipip(
        "v6 TCP traffic class 0xb8, flow label 0x12345 -> outer tclass 0xb8, label = flow hash",
        p6(V6).traffic_class(0xb8).flow_label(0x12345).tcp(sp, 80).syn(),
    );
    let sp = t.sport();
    t.ipip(
        "v6 UDP traffic class 0x01 (ECN) -> outer tclass 0x01",
        p6(V6).traffic_class(0x01).udp(sp, 53).payload(b"q"),
    );
    let sp = t.sport();
    t.ipip("v6 TCP in one 802.1Q tag -> tag kept", p6(V6).dot1q(300).tcp(sp, 80).syn());
    let sp = t.sport();
    t.ipip("v6 UDP in 802.1ad + 802.1Q -> tags kept", p6(V6).dot1ad(10).dot1q(20).udp(sp, 53).payload(DNS_QUERY));
    let sp = t.sport();
    t.ipip(
        "v6 UDP with 18 bytes of trailing padding -> kept, outer length from IP",
        p6(V6).udp(sp, 53).payload(b"z").pad_to(81),
    );
    let sp = t.sport();
    t.ipip("v6 TCP hop limit 1 -> forwarded, inner untouched", p6(V6).hop_limit(1).tcp(sp, 80).syn());

    // ---- forwarded, L2 DSR ----
    let sp = t.sport();
    t.dsr("v4 TCP SYN to l2dsr VIP -> backend MAC", p4(V4_DSR).tcp(sp, 80).syn());
    t.dsr("v4 TCP ACK of the same flow to l2dsr VIP -> same backend", p4(V4_DSR).tcp(sp, 80).ack()).ct(Ct::Hit);
    let sp = t.sport();
    t.dsr("v4 TCP to l2dsr VIP in 802.1Q -> tag kept", p4(V4_DSR).dot1q(42).tcp(sp, 80).syn());
    let sp = t.sport();
    t.dsr("v4 TCP to l2dsr VIP in a padded 60-byte frame", p4(V4_DSR).tos(0x10).tcp(sp, 80).syn().pad_to(60));
    let sp = t.sport();
    t.dsr("v6 TCP SYN to l2dsr VIP -> backend MAC", p6(V6_DSR).tcp(sp, 80).syn());
    let sp = t.sport();
    t.dsr("v6 TCP to l2dsr VIP in 802.1ad + 802.1Q -> tags kept", p6(V6_DSR).dot1ad(5).dot1q(6).tcp(sp, 80).ack());

    // ---- passed untouched ----
    let sp = t.sport();
    t.pass(
        "v4 TCP to a VIP in three VLAN tags (802.1ad, 802.1Q, 802.1Q)",
        p4(V4).dot1ad(1).dot1q(2).dot1q(3).tcp(sp, 80).syn().build(),
        stats::PASS_VLAN_DEPTH,
    );
    let sp = t.sport();
    t.pass(
        "v6 TCP to a VIP in three 802.1Q tags",
        p6(V6).dot1q(1).dot1q(2).dot1q(3).tcp(sp, 80).syn().build(),
        stats::PASS_VLAN_DEPTH,
    );
    t.pass(
        "three VLAN tags, frame ends after the third tag",
        truncated(&p4(V4).dot1q(1).dot1q(2).dot1q(3).tcp(1, 80).build(), 26),
        stats::PASS_VLAN_DEPTH,
    );
    let arp = Packet::new()
        .macs([0xff; 6], packet::DEFAULT_SRC_MAC)
        .arp_request(packet::DEFAULT_SRC_MAC, CLIENT4, V4)
        .pad_to(60);
    t.pass("ARP request for the VIP address", arp.build(), stats::PASS_NON_IP);
    t.pass("ARP request in 802.1Q", arp.clone().dot1q(9).build(), stats::PASS_NON_IP);
    t.pass(
        "LLDP frame",
        Packet::new()
            .macs([0x01, 0x80, 0xc2, 0, 0, 0x0e], packet::DEFAULT_SRC_MAC)
            .raw_l3(0x88cc, &[2, 7, 4, 0, 0, 0, 0, 0, 1])
            .pad_to(60)
            .build(),
        stats::PASS_NON_IP,
    );
    let sp = t.sport();
    t.pass("v4 TCP to a non-VIP address", p4(V4_OTHER).tcp(sp, 80).syn().build(), stats::PASS_NOT_VIP);
    let sp = t.sport();
    t.pass("v4 TCP to the VIP address, other port 443", p4(V4).tcp(sp, 443).syn().build(), stats::PASS_NOT_VIP);
    let sp = t.sport();
    t.pass(
        "v4 UDP to the VIP address on port 80 (a TCP VIP)",
        p4(V4).udp(sp, 80).payload(b"x").build(),
        stats::PASS_NOT_VIP,
    );
    let sp = t.sport();
    t.pass("v4 TCP to the VIP address on port 53 (a UDP VIP)", p4(V4).tcp(sp, 53).syn().build(), stats::PASS_NOT_VIP);
    let sp = t.sport();
    t.pass(
        "v4 TCP from port 80 to the VIP address on a non-VIP port (reply direction)",
        p4(V4).tcp(80, 8000 + sp % 100).ack().build(),
        stats::PASS_NOT_VIP,
    );
    let sp = t.sport();
    t.pass("v6 TCP to a non-VIP address", p6(V6_OTHER).tcp(sp, 80).syn().build(), stats::PASS_NOT_VIP);
    let sp = t.sport();
    t.pass("v6 UDP to the VIP address on port 80 (a TCP VIP)", p6(V6).udp(sp, 80).build(), stats::PASS_NOT_VIP);
    let sp = t.sport();
    t.pass("v6 TCP to the l2dsr VIP address on port 53", p6(V6_DSR).tcp(sp, 53).syn().build(), stats::PASS_NOT_VIP);
    // Echo requests to a VIP address are answered (tests/tests/icmp.rs).
    t.pass(
        "ICMP echo request to a non-VIP address",
        p4(V4_OTHER).icmp_echo(7, 1).payload(b"ping").build(),
        stats::PASS_NOT_VIP,
    );
    t.pass(
        "ICMPv6 echo request to a non-VIP address",
        p6(V6_OTHER).icmp_echo(7, 1).payload(b"ping").build(),
        stats::PASS_NOT_VIP,
    );
    t.pass("GRE (protocol 47) to the VIP address", p4(V4).l4_raw(47, &[0, 0, 0x08, 0]).build(), stats::PASS_NOT_VIP);
    t.pass(
        "GRE (protocol 47) with 16 bytes to the VIP address",
        p4(V4).l4_raw(47, &[0, 0, 0x08, 0, 0x45, 0, 0, 12, 0, 0, 0, 0, 1, 2, 3, 4]).build(),
        stats::PASS_NOT_VIP,
    );
    t.pass(
        "ICMP with a 4-byte message (no id/seq) to the VIP address",
        p4(V4).icmp(13, 0, &[]).build(),
        stats::PASS_NOT_VIP,
    );
    t.pass(
        "IPv4 with no upper-layer bytes (protocol 59, total length 20) to the VIP address",
        p4(V4).l4_raw(59, &[]).build(),
        stats::PASS_NOT_VIP,
    );
    t.pass("ICMPv6 with a 4-byte message to the VIP address", p6(V6).icmp(135, 0, &[]).build(), stats::PASS_NOT_VIP);
    t.pass("IPv6 no-next-header (59) to the VIP address", p6(V6).l4_raw(59, &[]).build(), stats::PASS_NOT_VIP);
    let sp = t.sport();
    t.pass(
        "v4 TCP to a VIP behind a 0x9100 tag (not a walked TPID)",
        p4(V4).vlan(0x9100, 5).tcp(sp, 80).syn().build(),
        stats::PASS_NON_IP,
    );
    t.pass("ARP in 802.1ad + 802.1Q", arp.clone().dot1ad(1).dot1q(2).build(), stats::PASS_NON_IP);
    let sp = t.sport();
    t.pass(
        "v4 first fragment (MF) to a non-VIP address",
        p4(V4_OTHER).mf().tcp(sp, 80).syn().build(),
        stats::PASS_NOT_VIP,
    );
    t.pass(
        "v4 non-first fragment to a non-VIP address",
        p4(V4_OTHER).frag_offset(100).l4_raw(IPPROTO_UDP, &[1; 16]).build(),
        stats::PASS_NOT_VIP,
    );
    let sp = t.sport();
    t.pass(
        "v4 with IP options (IHL 6) to a non-VIP address",
        p4(V4_OTHER).ipv4_options(&[0x94, 4, 0, 0]).tcp(sp, 80).syn().build(),
        stats::PASS_NOT_VIP,
    );
    let sp = t.sport();
    t.pass(
        "v6 fragment header to a non-VIP address",
        p6(V6_OTHER).ext(Ipv6Ext::Fragment { offset: 0, more: true, id: 1 }).udp(sp, 53).build(),
        stats::PASS_NOT_VIP,
    );
    let sp = t.sport();
    t.pass(
        "v6 hop-by-hop header to a non-VIP address",
        p6(V6_OTHER).ext(Ipv6Ext::HopByHop(vec![5, 2, 0, 0])).tcp(sp, 80).syn().build(),
        stats::PASS_NOT_VIP,
    );
    let sp = t.sport();
    t.pass(
        "v6 routing header to a non-VIP address",
        p6(V6_OTHER)
            .ext(Ipv6Ext::Routing { routing_type: 4, segments_left: 0, data: vec![] })
            .tcp(sp, 80)
            .syn()
            .build(),
        stats::PASS_NOT_VIP,
    );
    let sp = t.sport();
    let f = p4(V4_OTHER).tcp(sp, 80).syn().build();
    t.pass(
        "v4 TCP header truncated (10 of 20 bytes, IP length agrees) to a non-VIP address",
        truncate_ip(&f, 14, 30),
        stats::PASS_NOT_VIP,
    );
    let sp = t.sport();
    let f = p4(V4_OTHER).udp(sp, 53).build();
    t.pass("v4 UDP header truncated (4 of 8 bytes) to a non-VIP address", truncate_ip(&f, 14, 24), stats::PASS_NOT_VIP);
    let sp = t.sport();
    let f = p6(V6_OTHER).tcp(sp, 80).syn().build();
    t.pass(
        "v6 TCP header truncated (19 of 20 bytes) to a non-VIP address",
        truncate_ip(&f, 14, 59),
        stats::PASS_NOT_VIP,
    );

    // ---- dropped: malformed ----
    let base4 = p4(V4).tcp(20000, 80).syn().build();
    let base4_vlan = p4(V4).dot1q(100).dot1ad(200).tcp(20000, 80).syn().build();
    let base6 = p6(V6).tcp(20000, 80).syn().build();
    let mut tag_only = base4_vlan.clone();
    tag_only.truncate(14);
    t.drop("802.1Q TPID with nothing after it (14-byte frame)", tag_only, stats::DROP_MALFORMED);
    t.drop("truncated inside the first VLAN tag (16 bytes)", truncated(&base4_vlan, 16), stats::DROP_MALFORMED);
    t.drop("truncated inside the second VLAN tag (20 bytes)", truncated(&base4_vlan, 20), stats::DROP_MALFORMED);
    t.drop("IPv4 ethertype, no IP header (14-byte frame)", truncated(&base4, 14), stats::DROP_MALFORMED);
    t.drop("v4 truncated inside the IP header (10 of 20 bytes)", truncated(&base4, 24), stats::DROP_MALFORMED);
    t.drop("v4 truncated inside the IP header (19 of 20 bytes)", truncated(&base4, 33), stats::DROP_MALFORMED);
    t.drop(
        "v4 in two VLAN tags truncated inside the IP header",
        truncated(&base4_vlan, 22 + 12),
        stats::DROP_MALFORMED,
    );
    t.drop("v6 truncated inside the IP header (39 of 40 bytes)", truncated(&base6, 14 + 39), stats::DROP_MALFORMED);
    t.drop(
        "v6 in 802.1ad truncated inside the IP header (20 of 40 bytes)",
        truncated(&p6(V6).dot1ad(3).udp(1, 53).build(), 18 + 20),
        stats::DROP_MALFORMED,
    );
    let sp = t.sport();
    t.drop("version 6 inside an IPv4 ethertype", p4(V4).ip_version(6).tcp(sp, 80).syn().build(), stats::DROP_MALFORMED);
    let sp = t.sport();
    t.drop("version 5 inside an IPv4 ethertype", p4(V4).ip_version(5).tcp(sp, 80).syn().build(), stats::DROP_MALFORMED);
    let sp = t.sport();
    t.drop("version 4 inside an IPv6 ethertype", p6(V6).ip_version(4).tcp(sp, 80).syn().build(), stats::DROP_MALFORMED);
    let sp = t.sport();
    t.drop("v4 IHL 4", p4(V4).ihl(4).tcp(sp, 80).syn().build(), stats::DROP_MALFORMED);
    let sp = t.sport();
    t.drop("v4 IHL 0", p4(V4).ihl(0).tcp(sp, 80).syn().build(), stats::DROP_MALFORMED);
    let sp = t.sport();
    t.drop("v4 total length 19 (< IHL*4)", p4(V4).ipv4_total_len(19).tcp(sp, 80).syn().build(), stats::DROP_MALFORMED);
    let sp = t.sport();
    t.drop("v4 total length 0", p4(V4).ipv4_total_len(0).tcp(sp, 80).syn().build(), stats::DROP_MALFORMED);
    let sp = t.sport();
    t.drop(
        "v4 total length one beyond the frame",
        p4(V4).ipv4_total_len(41).tcp(sp, 80).syn().build(),
        stats::DROP_MALFORMED,
    );
    let sp = t.sport();
    t.drop(
        "v4 total length beyond the frame, to a non-VIP address",
        p4(V4_OTHER).ipv4_total_len(1500).tcp(sp, 80).syn().build(),
        stats::DROP_MALFORMED,
    );
    let sp = t.sport();
    t.drop("v4 IHL 15 beyond total length 40", p4(V4).ihl(15).tcp(sp, 80).syn().build(), stats::DROP_MALFORMED);
    let sp = t.sport();
    t.drop(
        "v6 payload length one beyond the frame",
        p6(V6).ipv6_payload_len(21).tcp(sp, 80).syn().build(),
        stats::DROP_MALFORMED,
    );
    let sp = t.sport();
    let f = p4(V4).tcp(sp, 80).syn().build();
    t.drop(
        "v4 TCP to a VIP, frame cut inside the TCP header (IP length unchanged)",
        truncated(&f, 14 + 20 + 10),
        stats::DROP_MALFORMED,
    );
    let sp = t.sport();
    let f = p4(V4).tcp(sp, 80).syn().build();
    t.drop(
        "v4 TCP to a VIP, TCP header truncated (10 of 20 bytes, IP length agrees)",
        truncate_ip(&f, 14, 30),
        stats::DROP_MALFORMED,
    );
    let sp = t.sport();
    let f = p4(V4).tcp(sp, 80).syn().build();
    t.drop(
        "v4 TCP to a VIP, TCP header truncated (19 of 20 bytes, IP length agrees)",
        truncate_ip(&f, 14, 39),
        stats::DROP_MALFORMED,
    );
    // TCP data offset: the header length in 32-bit words, 5 at least.
    let sp = t.sport();
    t.drop(
        "v4 TCP SYN to a VIP, data offset 4 (a 16-byte header)",
        with_doff(p4(V4).tcp(sp, 80).syn().payload(b"data").build(), 14 + 20, 4),
        stats::DROP_MALFORMED,
    );
    let sp = t.sport();
    t.drop(
        "v6 TCP ACK to a VIP, data offset 0",
        with_doff(p6(V6).tcp(sp, 80).ack().build(), 14 + 40, 0),
        stats::DROP_MALFORMED,
    );
    let sp = t.sport();
    t.drop(
        "v4 TCP SYN to a VIP, data offset 6 (24 bytes) beyond the 20-byte TCP part",
        with_doff(p4(V4).tcp(sp, 80).syn().build(), 14 + 20, 6),
        stats::DROP_MALFORMED,
    );
    let sp = t.sport();
    t.pass(
        "v4 TCP to a non-VIP address, data offset 4",
        with_doff(p4(V4_OTHER).tcp(sp, 80).syn().build(), 14 + 20, 4),
        stats::PASS_NOT_VIP,
    );
    let sp = t.sport();
    let pkt = p4(V4).tcp(sp, 80).syn().payload(b"data");
    assert_eq!(with_doff(pkt.build(), 14 + 20, 5), pkt.build(), "the builder writes data offset 5");
    t.ipip("v4 TCP SYN to a VIP, data offset 5 (a 20-byte header, no options) -> forwarded", pkt);
    let sp = t.sport();
    let mut f = truncate_ip(&p4(V4).tcp(sp, 80).syn().build(), 14, 30);
    f.resize(60, 0);
    t.drop(
        "v4 TCP to a VIP, IP length ends inside the TCP header, Ethernet padding after it",
        f,
        stats::DROP_MALFORMED,
    );
    let sp = t.sport();
    let f = p4(V4).dot1q(5).udp(sp, 53).build();
    t.drop(
        "v4 UDP in 802.1Q to a VIP, UDP header truncated (4 of 8 bytes)",
        truncate_ip(&f, 18, 24),
        stats::DROP_MALFORMED,
    );
    let sp = t.sport();
    let f = p4(V4).udp(sp, 53).build();
    t.drop(
        "v4 UDP to the VIP address on a non-VIP port, UDP header truncated (7 of 8 bytes)",
        truncate_ip(&f, 14, 27),
        stats::DROP_MALFORMED,
    );
    let sp = t.sport();
    let f = p6(V6).tcp(sp, 80).syn().build();
    t.drop("v6 TCP to a VIP, TCP header truncated (12 of 20 bytes)", truncate_ip(&f, 14, 52), stats::DROP_MALFORMED);
    let sp = t.sport();
    let f = p6(V6).udp(sp, 53).build();
    t.drop("v6 UDP to a VIP, UDP header truncated (0 of 8 bytes)", truncate_ip(&f, 14, 40), stats::DROP_MALFORMED);

    // ---- dropped: fragments, options, extension headers ----
    let sp = t.sport();
    t.drop(
        "v4 IP options (router alert, IHL 6) to a VIP",
        p4(V4).ipv4_options(&[0x94, 4, 0, 0]).tcp(sp, 80).syn().build(),
        stats::DROP_IP_OPTIONS,
    );
    let sp = t.sport();
    t.drop(
        "v4 IP options (IHL 15) to a VIP UDP port",
        p4(V4).ipv4_options(&[1; 40]).udp(sp, 53).build(),
        stats::DROP_IP_OPTIONS,
    );
    let sp = t.sport();
    t.drop(
        "v4 IP options to the VIP address on a non-VIP port",
        p4(V4).ipv4_options(&[1, 1, 1, 0]).tcp(sp, 9).build(),
        stats::DROP_IP_OPTIONS,
    );
    let sp = t.sport();
    t.drop(
        "v4 first fragment (MF, offset 0) to a VIP",
        p4(V4).mf().tcp(sp, 80).syn().payload(&[0; 16]).build(),
        stats::DROP_FRAGMENT,
    );
    t.drop(
        "v4 non-first fragment (offset 185) to a VIP",
        p4(V4).frag_offset(185).l4_raw(IPPROTO_TCP, &[0; 24]).build(),
        stats::DROP_FRAGMENT,
    );
    t.drop(
        "v4 middle fragment (MF, offset 3) in 802.1Q to a VIP",
        p4(V4).dot1q(8).mf().frag_offset(3).l4_raw(IPPROTO_UDP, &[0; 24]).build(),
        stats::DROP_FRAGMENT,
    );
    t.drop(
        "v4 last fragment (offset 1) to the l2dsr VIP",
        p4(V4_DSR).frag_offset(1).l4_raw(IPPROTO_TCP, &[0; 8]).build(),
        stats::DROP_FRAGMENT,
    );
    let sp = t.sport();
    t.drop(
        "v6 fragment header (first fragment) to a VIP",
        p6(V6).ext(Ipv6Ext::Fragment { offset: 0, more: true, id: 9 }).tcp(sp, 80).syn().build(),
        stats::DROP_FRAGMENT,
    );
    t.drop(
        "v6 fragment header (non-first fragment) to a VIP",
        p6(V6).ext(Ipv6Ext::Fragment { offset: 10, more: false, id: 9 }).l4_raw(IPPROTO_UDP, &[0; 8]).build(),
        stats::DROP_FRAGMENT,
    );
    let sp = t.sport();
    t.drop(
        "v6 hop-by-hop header to a VIP",
        p6(V6).ext(Ipv6Ext::HopByHop(vec![5, 2, 0, 0])).tcp(sp, 80).syn().build(),
        stats::DROP_IPV6_EXT,
    );
    let sp = t.sport();
    t.drop(
        "v6 routing header to a VIP",
        p6(V6).ext(Ipv6Ext::Routing { routing_type: 4, segments_left: 0, data: vec![] }).udp(sp, 53).build(),
        stats::DROP_IPV6_EXT,
    );
    let sp = t.sport();
    t.drop(
        "v6 destination-options header to a VIP",
        p6(V6).ext(Ipv6Ext::DestOpts(vec![])).tcp(sp, 80).syn().build(),
        stats::DROP_IPV6_EXT,
    );
    let sp = t.sport();
    t.drop(
        "v6 hop-by-hop then fragment header to a VIP in 802.1Q",
        p6(V6)
            .dot1q(4)
            .ext(Ipv6Ext::HopByHop(vec![]))
            .ext(Ipv6Ext::Fragment { offset: 0, more: true, id: 3 })
            .tcp(sp, 80)
            .syn()
            .build(),
        stats::DROP_IPV6_EXT,
    );

    // ---- dropped: VIP without backends ----
    let sp = t.sport();
    t.drop("v4 TCP SYN to a VIP without backends", p4(V4_EMPTY).tcp(sp, 80).syn().build(), stats::DROP_NO_BACKEND)
        .ct(Ct::Any);
    let sp = t.sport();
    t.drop("v4 TCP ACK to a VIP without backends", p4(V4_EMPTY).tcp(sp, 80).ack().build(), stats::DROP_NO_BACKEND)
        .ct(Ct::Any);
    let sp = t.sport();
    t.drop("v6 TCP SYN to a VIP without backends", p6(V6_EMPTY).tcp(sp, 80).syn().build(), stats::DROP_NO_BACKEND)
        .ct(Ct::Any);

    t.cases
}

/// Runs one case; returns a failure report or None.
fn check_case(dp: &Dataplane, case: &Case) -> Option<String> {
    let before = counts(dp);
    let r = run(dp.balancer(), &case.input);
    let after = counts(dp);
    let mut problems = Vec::new();
    if r.verdict != case.verdict {
        problems.push(format!(
            "verdict {} ({}), expected {}",
            verdict_name(r.verdict),
            r.verdict,
            verdict_name(case.verdict)
        ));
    }
    if r.output != case.output {
        let mut p = String::from("output differs");
        if case.verdict == XDP_TX {
            let actual_backend = forwarded_backend(dp, &r.output);
            let _ = write!(p, " (expected backend {:?}, output goes to {actual_backend:?})", case.backend);
        }
        let _ = write!(p, ":\n{}", hex_diff(&case.output, &r.output));
        problems.push(p);
    }
    if delta(&before, &after, case.counter) != 1 {
        problems.push(format!(
            "counter {} went up by {}, expected 1",
            stat_name(case.counter),
            delta(&before, &after, case.counter)
        ));
    }
    if verdict_delta(&before, &after) != 1 {
        problems.push(format!("{} verdict counters moved, expected exactly one", verdict_delta(&before, &after)));
    }
    let ct = |i| delta(&before, &after, i);
    let ct_ok = match case.conntrack {
        Ct::Any => true,
        Ct::None => CONNTRACK_STATS.iter().all(|&i| ct(i) == 0),
        Ct::Miss => ct(stats::CONNTRACK_MISS) == 1 && ct(stats::CONNTRACK_HIT) == 0 && ct(stats::CONNTRACK_REPICK) == 0,
        Ct::Hit => ct(stats::CONNTRACK_HIT) == 1 && ct(stats::CONNTRACK_MISS) == 0 && ct(stats::CONNTRACK_REPICK) == 0,
    };
    if !ct_ok {
        problems.push(format!("connection-table counters: expected {:?}", case.conntrack));
    }
    if case.verdict == XDP_TX && r.output == case.output {
        // Second opinion on what the reference builder produced.
        let l2 = packet::l2_len(&r.output);
        if r.output[l2] >> 4 == 4 && case.counter == stats::TX_IPIP {
            assert!(packet::ipv4_header_csum_ok(&r.output[l2..l2 + 20]), "outer IPv4 checksum");
            assert!(packet::ipv4_header_csum_ok(&r.output[l2 + 20..l2 + 40]), "inner IPv4 checksum");
        }
    }
    if problems.is_empty() {
        return None;
    }
    Some(format!(
        "FAIL: {}\n  input ({} bytes):\n{}  {}\n  counters moved: [{}]",
        case.description,
        case.input.len(),
        indent(&packet::hex_dump(&case.input)),
        problems.join("\n  "),
        describe_deltas(&before, &after)
    ))
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("    {l}\n")).collect()
}

/// The backend a forwarded frame goes to: outer destination address of an
/// IP-in-IP frame, or the backend whose MAC is the destination of an l2dsr one.
fn forwarded_backend(_dp: &Dataplane, out: &[u8]) -> Option<IpAddr> {
    let l2 = packet::l2_len(out);
    let dst_mac: Mac = out.get(0..6)?.try_into().ok()?;
    if let Some(b) = base_vips().iter().flat_map(|v| v.backends.clone()).find(|b| b.mac == Some(dst_mac)) {
        return Some(b.addr);
    }
    let ip = packet::IpView::parse(out.get(l2..)?)?;
    Some(ip.dst)
}

#[test]
fn fixture_table() {
    let Some(dp) = dataplane("fixture_table") else { return };
    let cases = build_cases(&dp);
    assert!(cases.len() >= 35, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        match check_case(&dp, case) {
            None => {
                println!("ok   {} -> {} [{}]", case.description, verdict_name(case.verdict), stat_name(case.counter))
            }
            Some(report) => {
                println!("{report}");
                failures.push(case.description.clone());
            }
        }
    }
    println!("{} cases, {} passed, {} failed", cases.len(), cases.len() - failures.len(), failures.len());
    assert!(
        failures.is_empty(),
        "{} of {} fixture cases failed:\n  {}",
        failures.len(),
        cases.len(),
        failures.join("\n  ")
    );
}

#[test]
fn frames_shorter_than_ethernet_are_refused_by_the_kernel() {
    // BPF_PROG_TEST_RUN needs at least ETH_HLEN (14) bytes for XDP; shorter
    // frames never reach the program, so the table starts at 14.
    let Some(dp) = dataplane("frames_shorter_than_ethernet_are_refused_by_the_kernel") else { return };
    let frame = p4(V4).tcp(1, 80).syn().build();
    for len in [0usize, 1, 6, 12, 13] {
        let input = truncated(&frame, len);
        let mut out = vec![0u8; 256];
        let r = dp.balancer().test_run(TestRunOptions {
            data_in: Some(&input),
            data_out: Some(&mut out),
            ..Default::default()
        });
        assert!(r.is_err(), "a {len}-byte frame was accepted: {r:?}");
    }
    let r = run(dp.balancer(), &truncated(&frame, 14));
    assert_eq!(r.verdict, XDP_DROP, "14-byte IPv4-ethertype frame");
}

// ---------------------------------------------------------------------------
// The userspace copy of the flow hash predicts the kernel

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn userspace_prediction_matches_the_kernel_for_random_flows() {
    let Some(dp) = dataplane("userspace_prediction_matches_the_kernel_for_random_flows") else { return };
    let vips = base_vips();
    // (address, port, proto, l2dsr) of the VIPs under test, with their backends.
    let targets: Vec<&VipDef> = vips.iter().filter(|v| !v.backends.is_empty() && v.addr != IpAddr::V4(V4_CT)).collect();
    assert!(targets.len() >= 5);
    let nexthop = mac(NEXTHOP_MAC);
    let mut rng = Rng(0x6c62_2d74_6573_7473);
    let mut seen: BTreeMap<String, BTreeSet<IpAddr>> = BTreeMap::new();
    let mut mismatches = Vec::new();
    const FLOWS: usize = 2000;
    for i in 0..FLOWS {
        let v = targets[rng.below(targets.len() as u64) as usize];
        let sport = 1024 + rng.below(64512) as u16;
        let mut pkt = Packet::new();
        match rng.below(4) {
            0 => pkt = pkt.dot1q(rng.below(4094) as u16 + 1),
            1 => pkt = pkt.dot1ad(10).dot1q(rng.below(4094) as u16 + 1),
            _ => {}
        }
        pkt = match v.addr {
            IpAddr::V4(a) => {
                let r = rng.next();
                pkt.ipv4(Ipv4Addr::new(198, 19, (r >> 8) as u8, r as u8), a)
            }
            IpAddr::V6(a) => {
                let r = rng.next();
                let src = Ipv6Addr::new(
                    0x2001,
                    0xdb8,
                    0xffff,
                    (r >> 48) as u16,
                    (r >> 32) as u16,
                    (r >> 16) as u16,
                    r as u16,
                    i as u16,
                );
                pkt.ipv6(src, a)
            }
        };
        pkt = if v.proto == IPPROTO_TCP {
            let p = pkt.tcp(sport, v.port);
            if rng.below(2) == 0 { p.syn() } else { p.ack() }
        } else {
            pkt.udp(sport, v.port).payload(&[i as u8; 5])
        };
        let flow: FlowKey = pkt.flow_key();
        let frame = pkt.build();
        let predicted = dp.predict_backend(&flow).expect("predict_backend").expect("VIP has backends");
        let r = run(dp.balancer(), &frame);
        let expected = if v.l2dsr {
            l2dsr(&frame, backend_mac(&vips, predicted))
        } else {
            ipip_encap(&frame, pkt.l2_len(), nexthop, TUN_SRC_V4, TUN_SRC_V6, predicted)
        };
        let kernel = forwarded_backend(&dp, &r.output);
        if r.verdict != XDP_TX || r.output != expected {
            mismatches.push(format!(
                "flow {i} to {}:{} proto {}: verdict {}, kernel chose {kernel:?}, userspace predicted {predicted}\n{}",
                v.addr,
                v.port,
                v.proto,
                verdict_name(r.verdict),
                hex_diff(&expected, &r.output)
            ));
        }
        if let Some(k) = kernel {
            seen.entry(format!("{}:{}/{}", v.addr, v.port, v.proto)).or_default().insert(k);
        }
    }
    for m in mismatches.iter().take(5) {
        println!("{m}");
    }
    assert!(mismatches.is_empty(), "{} of {FLOWS} flows: kernel choice != userspace prediction", mismatches.len());
    // Every backend of every VIP got some of the flows (the test exercised the rings).
    for v in &targets {
        let name = format!("{}:{}/{}", v.addr, v.port, v.proto);
        let got = seen.get(&name).cloned().unwrap_or_default();
        let want: BTreeSet<IpAddr> = v.backends.iter().map(|b| b.addr).collect();
        assert_eq!(got, want, "backends reached for {name}");
        println!("{name}: {} backends reached", got.len());
    }
}

// ---------------------------------------------------------------------------
// Connection table across configuration changes

fn ct_vips(backends: Vec<BackendDef>) -> Vec<VipDef> {
    let mut vips = base_vips();
    for v in vips.iter_mut().filter(|v| v.addr == IpAddr::V4(V4_CT)) {
        v.backends = backends.clone();
    }
    vips
}

struct Sent {
    backend: Option<IpAddr>,
    deltas: Vec<u64>,
    verdict: u32,
}

/// Sends one packet, returns where it went and how the counters moved.
fn send(dp: &Dataplane, pkt: &Packet) -> Sent {
    let before = counts(dp);
    let frame = pkt.build();
    let r = run(dp.balancer(), &frame);
    let after = counts(dp);
    let backend = (r.verdict == XDP_TX).then(|| forwarded_backend(dp, &r.output)).flatten();
    if r.verdict == XDP_TX {
        let expected = ipip_encap(&frame, pkt.l2_len(), mac(NEXTHOP_MAC), TUN_SRC_V4, TUN_SRC_V6, backend.unwrap());
        assert_eq!(r.output, expected, "forwarded frame:\n{}", hex_diff(&expected, &r.output));
    }
    Sent { backend, deltas: (0..stats::COUNT).map(|i| delta(&before, &after, i)).collect(), verdict: r.verdict }
}

fn ct_flow(sport: u16, proto: u8) -> Packet {
    let p = Packet::new().ipv4(Ipv4Addr::new(198, 18, 2, 1), V4_CT);
    if proto == IPPROTO_TCP { p.tcp(sport, 443) } else { p.udp(sport, 443).payload(b"u") }
}

#[test]
fn connection_table_keeps_flows_across_config_changes() {
    let Some(mut dp) = dataplane("connection_table_keeps_flows_across_config_changes") else { return };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| conntrack_scenario(&mut dp)));
    // Leave the shared dataplane as the other tests expect it.
    dp.apply(&config(&base_vips())).expect("re-applying the base configuration");
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

fn conntrack_scenario(dp: &mut Dataplane) {
    let ring = |dp: &Dataplane, p: &Packet| dp.predict_backend(&p.flow_key()).unwrap();
    let table = |dp: &Dataplane, p: &Packet| dp.conntrack_backend(&p.flow_key()).unwrap();

    // 1. SYN, then ACK: same backend, the ACK hits the table.
    let mut established = Vec::new();
    for i in 0..64u16 {
        let sport = 30000 + i;
        let syn = send(dp, &ct_flow(sport, IPPROTO_TCP).syn());
        assert_eq!(syn.verdict, XDP_TX);
        assert_eq!(syn.deltas[stats::TX_IPIP as usize], 1);
        assert_eq!(syn.deltas[stats::CONNTRACK_MISS as usize], 1, "SYN: conntrack miss");
        assert_eq!(syn.backend, ring(dp, &ct_flow(sport, IPPROTO_TCP)), "SYN follows the ring");
        let ack = send(dp, &ct_flow(sport, IPPROTO_TCP).ack());
        assert_eq!(ack.verdict, XDP_TX);
        assert_eq!(ack.deltas[stats::CONNTRACK_HIT as usize], 1, "ACK: conntrack hit");
        assert_eq!(ack.deltas[stats::CONNTRACK_MISS as usize], 0);
        assert_eq!(ack.backend, syn.backend, "ACK goes where the SYN went");
        assert_eq!(table(dp, &ct_flow(sport, IPPROTO_TCP)), syn.backend, "conntrack_backend");
        established.push((ct_flow(sport, IPPROTO_TCP), syn.backend.unwrap()));
        // A UDP flow: first packet misses and is remembered, the next hits.
        let u1 = send(dp, &ct_flow(sport, IPPROTO_UDP));
        assert_eq!(u1.deltas[stats::CONNTRACK_MISS as usize], 1, "first UDP packet: miss");
        let u2 = send(dp, &ct_flow(sport, IPPROTO_UDP));
        assert_eq!(u2.deltas[stats::CONNTRACK_HIT as usize], 1, "second UDP packet: hit");
        assert_eq!(u2.backend, u1.backend);
        established.push((ct_flow(sport, IPPROTO_UDP), u1.backend.unwrap()));
    }

    // 2. Add a backend: some flows' ring entry now points elsewhere, but
    //    established flows stay; new flows follow the new ring.
    let mut grown = ct_backends();
    grown.push(be("198.18.0.44"));
    dp.apply(&config(&ct_vips(grown.clone()))).unwrap();
    let moved: Vec<(Packet, IpAddr)> =
        established.iter().filter(|(p, old)| ring(dp, p) != Some(*old)).cloned().collect();
    assert!(!moved.is_empty(), "adding a backend moved no ring entry of 128 flows");
    println!("{} of {} established flows have a new ring prediction", moved.len(), established.len());
    for (p, old) in &moved {
        assert_eq!(table(dp, p), Some(*old), "conntrack entry survives the config change");
        let pkt = if p.flow_key().proto == IPPROTO_TCP { p.clone().ack() } else { p.clone() };
        let s = send(dp, &pkt);
        assert_eq!(s.backend, Some(*old), "established flow {:?} stays on its backend", p.flow_key());
        assert_eq!(s.deltas[stats::CONNTRACK_HIT as usize], 1);
    }
    // A SYN of a new flow follows the new ring, including to the new backend.
    let new_backend: IpAddr = "198.18.0.44".parse().unwrap();
    let fresh = (40000..41000u16)
        .map(|sp| ct_flow(sp, IPPROTO_TCP).syn())
        .find(|p| ring(dp, p) == Some(new_backend))
        .expect("some new flow maps to the added backend");
    let s = send(dp, &fresh);
    assert_eq!(s.backend, Some(new_backend), "new SYN goes to the added backend");
    assert_eq!(s.deltas[stats::CONNTRACK_MISS as usize], 1);
    // A SYN reusing an established TCP 5-tuple takes the ring again.
    let (reused, _) = moved.iter().find(|(p, _)| p.flow_key().proto == IPPROTO_TCP).expect("a moved TCP flow").clone();
    let s = send(dp, &reused.clone().syn());
    assert_eq!(s.backend, ring(dp, &reused), "a SYN re-picks from the ring");
    assert_eq!(table(dp, &reused), s.backend, "and replaces the table entry");

    // 3. Remove the backend of an established flow: its next packet is
    //    re-picked to a live backend, then sticks there.
    let (flow, old) = moved
        .iter()
        .find(|(p, _)| p.flow_key() != reused.flow_key() && p.flow_key().proto == IPPROTO_TCP)
        .or_else(|| moved.iter().find(|(p, _)| p.flow_key() != reused.flow_key()))
        .expect("another moved flow")
        .clone();
    let shrunk: Vec<BackendDef> = grown.iter().filter(|b| b.addr != old).cloned().collect();
    dp.apply(&config(&ct_vips(shrunk.clone()))).unwrap();
    assert_eq!(table(dp, &flow), None, "conntrack_backend of a flow whose backend is gone");
    let now = ring(dp, &flow).expect("prediction after removal");
    assert_ne!(now, old);
    let pkt = if flow.flow_key().proto == IPPROTO_TCP { flow.clone().ack() } else { flow.clone() };
    let s = send(dp, &pkt);
    assert_eq!(s.verdict, XDP_TX);
    assert_eq!(s.deltas[stats::CONNTRACK_REPICK as usize], 1, "re-picked: {:?}", s.deltas);
    assert_eq!(s.backend, Some(now), "re-picked to the new prediction");
    assert!(shrunk.iter().any(|b| Some(b.addr) == s.backend), "re-picked to a live backend");
    assert_eq!(table(dp, &flow), Some(now), "table updated");
    let s = send(dp, &pkt);
    assert_eq!(s.deltas[stats::CONNTRACK_HIT as usize], 1);
    assert_eq!(s.backend, Some(now));
    // Flows on surviving backends are untouched by the removal.
    for (p, b) in established.iter().filter(|(p, b)| *b != old && p.flow_key() != reused.flow_key()) {
        let pkt = if p.flow_key().proto == IPPROTO_TCP { p.clone().ack() } else { p.clone() };
        let s = send(dp, &pkt);
        assert_eq!(s.backend, Some(*b), "flow on a surviving backend stays");
        assert_eq!(s.deltas[stats::CONNTRACK_HIT as usize], 1);
    }
}

/// An established flow is forwarded from its connection entry without the
/// VIP lookup: its backend's entry must follow the VIP's mode, and a removed
/// VIP must take its flows with it.
#[test]
fn established_flows_follow_the_vip_mode_and_its_removal() {
    let Some(mut dp) = dataplane("established_flows_follow_the_vip_mode_and_its_removal") else { return };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // Backends with MACs, so the same backends serve both modes.
        let backends = vec![be_mac("198.18.0.41", "02:00:00:00:04:41"), be_mac("198.18.0.42", "02:00:00:00:04:42")];
        let with_mode = |l2dsr: bool| {
            let mut vips = ct_vips(backends.clone());
            for v in vips.iter_mut().filter(|v| v.addr == IpAddr::V4(V4_CT)) {
                v.l2dsr = l2dsr;
            }
            vips
        };
        dp.apply(&config(&with_mode(false))).unwrap();
        let flow = ct_flow(31_000, IPPROTO_TCP);
        let syn = send(&dp, &flow.clone().syn());
        let backend = syn.backend.expect("SYN forwarded over IPIP");
        let ack = flow.clone().ack().build();
        assert_eq!(send(&dp, &flow.clone().ack()).backend, Some(backend), "ACK over IPIP");

        dp.apply(&config(&with_mode(true))).unwrap();
        let before = counts(&dp);
        let r = run(dp.balancer(), &ack);
        let after = counts(&dp);
        assert_eq!(r.verdict, XDP_TX);
        assert_eq!(delta(&before, &after, stats::CONNTRACK_HIT), 1, "still the table's flow");
        assert_eq!(delta(&before, &after, stats::TX_L2DSR), 1, "now in l2dsr mode");
        let mac_of = backends.iter().find(|b| b.addr == backend).and_then(|b| b.mac).expect("the backend's MAC");
        assert_eq!(r.output.len(), ack.len(), "not encapsulated");
        assert_eq!(r.output[0..6], mac_of, "to the backend's MAC");

        let without: Vec<VipDef> = base_vips().into_iter().filter(|v| v.addr != IpAddr::V4(V4_CT)).collect();
        dp.apply(&config(&without)).unwrap();
        let before = counts(&dp);
        let r = run(dp.balancer(), &ack);
        let after = counts(&dp);
        assert_eq!(r.verdict, XDP_PASS, "the VIP is gone");
        assert_eq!(delta(&before, &after, stats::PASS_NOT_VIP), 1);
        assert_eq!(delta(&before, &after, stats::CONNTRACK_HIT), 0);
    }));
    dp.apply(&config(&base_vips())).expect("re-applying the base configuration");
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

// ---------------------------------------------------------------------------
// Address-level drops follow the configuration

#[test]
fn address_level_drops_follow_vip_removal() {
    let Some(mut dp) = dataplane("address_level_drops_follow_vip_removal") else { return };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let frag = |dst: Ipv4Addr| p4(dst).mf().l4_raw(IPPROTO_UDP, &[0; 16]).build();
        let verdict_and_counter = |dp: &Dataplane, frame: &[u8]| {
            let before = counts(dp);
            let r = run(dp.balancer(), frame);
            let after = counts(dp);
            let moved: Vec<u32> = (0..stats::COUNT).filter(|&i| delta(&before, &after, i) != 0).collect();
            (r.verdict, moved)
        };
        assert_eq!(verdict_and_counter(&dp, &frag(V4_EMPTY)), (XDP_DROP, vec![stats::DROP_FRAGMENT]));
        // Remove the only VIP of 198.18.100.3 and tcp/80 of 198.18.100.1
        // (udp/53 stays on that address).
        let vips: Vec<VipDef> = base_vips()
            .into_iter()
            .filter(|v| v.addr != IpAddr::V4(V4_EMPTY) && !(v.addr == IpAddr::V4(V4) && v.proto == IPPROTO_TCP))
            .collect();
        dp.apply(&config(&vips)).unwrap();
        assert_eq!(
            verdict_and_counter(&dp, &frag(V4_EMPTY)),
            (XDP_PASS, vec![stats::PASS_NOT_VIP]),
            "fragment to an address that no longer carries a VIP"
        );
        assert_eq!(
            verdict_and_counter(&dp, &frag(V4)),
            (XDP_DROP, vec![stats::DROP_FRAGMENT]),
            "fragment to an address that still carries udp/53"
        );
        let syn = p4(V4).tcp(61000, 80).syn().build();
        assert_eq!(verdict_and_counter(&dp, &syn), (XDP_PASS, vec![stats::PASS_NOT_VIP]), "SYN to the removed tcp/80");
        // And back.
        dp.apply(&config(&base_vips())).unwrap();
        assert_eq!(verdict_and_counter(&dp, &frag(V4_EMPTY)), (XDP_DROP, vec![stats::DROP_FRAGMENT]));
        let (v, moved) = verdict_and_counter(&dp, &syn);
        assert_eq!((v, moved.contains(&stats::TX_IPIP)), (XDP_TX, true), "SYN to the re-added tcp/80");
    }));
    dp.apply(&config(&base_vips())).expect("re-applying the base configuration");
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
