//! Differential fuzzing of `lb_balancer` against the reference model
//! (`lb_tests::model`) through BPF_PROG_TEST_RUN: generated frames (valid
//! packets of every kind, the same truncated at every length, random bytes,
//! mutated packets, odd header lengths, VLAN stacks of 0-5 tags, IPv6
//! extension headers, ICMP errors quoting VIP flows, echo requests, packets
//! around the MTU) go through the real program one at a time, each run with
//! a fresh copy of its frame, and the verdict and output bytes must equal
//! the model's; the `STATS` counters are compared per batch (packets and
//! bytes of every reason), the per-VIP and per-backend counters per window,
//! and the connection table after every packet that must (or must not)
//! record a flow. Frames addressed to another MAC than the interface's
//! exercise `pass_other_host`. The configuration changes twice on the way (backends
//! removed, added, drained; the MTU lowered to 1280; `too_big = "drop"`;
//! VIPs removed and added), so the connection table holds entries that
//! disagree with the rings and entries whose backend is gone.
//!
//! Knobs (environment):
//! - `LB_FUZZ_CASES=N`: frames to run (default [`DEFAULT_CASES`], 8-10 s on
//!   the 2-core VM: ~45-55k frames/s end to end); `LB_FUZZ_CASES=5000000` is
//!   the long run (~95 s).
//! - `LB_FUZZ_SEED=S` (decimal or 0x-hex): the seed; default from the clock.
//!   The seed and `N` are printed: together they reproduce a run exactly.
//! - `LB_FUZZ_BATCH=N`: frames per `STATS` comparison (default 256); 1 ties
//!   a counter mismatch to its frame.
//! - `LB_FUZZ_SHOW=N`: mismatches printed in full (default 8).
//!
//! Frames the program reads differently from the spec in a known way (see
//! `lb_tests::model::Deviation`) are counted apart and fail the test at the
//! end with a `PRODUCT BUG` message and one example, after every other check.
//!
//! Also here, without root: every seed-corpus file of the cargo-fuzz
//! targets (`tests/fuzz-corpus/<target>/`) through the same target bodies
//! (`fuzz/src/lib.rs`), so CI covers the corpus without cargo-fuzz.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use aya::programs::{TestRun, TestRunOptions, Xdp};
use lb::config::Config;
use lb::dataplane::Dataplane;
use lb_common::net::{
    ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP,
    TCP_FLAG_ACK, TCP_FLAG_SYN,
};
use lb_common::{Counters, VipKey, stats};
use lb_tests::model::{Deviation, Expected, Model, XDP_ABORTED, stat_name, verdict_name};
use lb_tests::netns::is_root;
use lb_tests::packet::{
    DEFAULT_DST_MAC, Ipv6Ext, Packet, TCP_FLAG_FIN, TCP_FLAG_PSH, TCP_FLAG_RST, hex_diff, internet_checksum, l2_len,
    truncate_ip,
};

#[path = "../../fuzz/src/lib.rs"]
mod host_parsers;

/// Frames of the default slice (`cargo xtask test`).
const DEFAULT_CASES: u64 = 400_000;
const DEFAULT_BATCH: u64 = 256;
/// Batches between two comparisons of the per-VIP and per-backend counters.
const WINDOW_BATCHES: u64 = 32;

// ---------------------------------------------------------------------------
// Addresses and the three configurations

const NEXTHOP: &str = "02:00:00:00:00:fe";
const TUN4: &str = "198.18.0.2";
const TUN6: &str = "2001:db8::2";
const VIP4: &str = "198.18.100.1";
const VIP4_DSR: &str = "198.18.100.2";
const VIP4_EMPTY: &str = "198.18.100.3";
const VIP4_NEW: &str = "198.18.100.4";
const VIP6: &str = "2001:db8:100::1";
const VIP6_DSR: &str = "2001:db8:100::2";
const VIP6_EMPTY: &str = "2001:db8:100::3";
const OTHER4: Ipv4Addr = Ipv4Addr::new(198, 18, 200, 1);
const OTHER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x200, 0, 0, 0, 0, 1);
const ROUTER4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 254);
const ROUTER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xfe);

/// (address, port, protocol, forwarding, ring size, backends as (address, weight, MAC)).
type VipRow = (&'static str, u16, &'static str, &'static str, u32, &'static [(&'static str, u32, &'static str)]);

/// Phase A: MTU 1500, too-big answered.
const PHASE_A: &[VipRow] = &[
    (VIP4, 80, "tcp", "ipip", 251, &[("198.18.0.11", 1, ""), ("198.18.0.12", 2, ""), ("198.18.0.13", 1, "")]),
    (VIP4, 53, "udp", "ipip", 251, &[("198.18.0.21", 1, ""), ("198.18.0.22", 1, "")]),
    (
        VIP4_DSR,
        80,
        "tcp",
        "l2dsr",
        251,
        &[("198.18.0.31", 1, "02:00:00:00:01:31"), ("198.18.0.32", 1, "02:00:00:00:01:32")],
    ),
    (
        VIP4_DSR,
        443,
        "udp",
        "l2dsr",
        1021,
        &[("198.18.0.33", 1, "02:00:00:00:01:33"), ("198.18.0.34", 3, "02:00:00:00:01:34")],
    ),
    (VIP4_EMPTY, 80, "tcp", "ipip", 251, &[]),
    (VIP6, 80, "tcp", "ipip", 1021, &[("2001:db8::11", 1, ""), ("2001:db8::12", 1, ""), ("2001:db8::13", 1, "")]),
    (VIP6, 53, "udp", "ipip", 251, &[("2001:db8::21", 1, ""), ("2001:db8::22", 3, "")]),
    (
        VIP6_DSR,
        443,
        "tcp",
        "l2dsr",
        251,
        &[("2001:db8::31", 1, "02:00:00:00:02:31"), ("2001:db8::32", 1, "02:00:00:00:02:32")],
    ),
    (VIP6_EMPTY, 53, "udp", "ipip", 251, &[]),
];

/// Phase B: MTU 1280 (IPv6 packet-too-big advertises the 1280 floor);
/// backends removed (their flows re-picked), added, drained; the empty VIP
/// gets one.
const PHASE_B: &[VipRow] = &[
    (VIP4, 80, "tcp", "ipip", 251, &[("198.18.0.11", 1, ""), ("198.18.0.12", 2, ""), ("198.18.0.14", 1, "")]),
    (VIP4, 53, "udp", "ipip", 251, &[("198.18.0.21", 1, ""), ("198.18.0.22", 1, "")]),
    (
        VIP4_DSR,
        80,
        "tcp",
        "l2dsr",
        251,
        &[
            ("198.18.0.31", 1, "02:00:00:00:01:31"),
            ("198.18.0.32", 1, "02:00:00:00:01:32"),
            ("198.18.0.35", 1, "02:00:00:00:01:35"),
        ],
    ),
    (
        VIP4_DSR,
        443,
        "udp",
        "l2dsr",
        1021,
        &[("198.18.0.33", 1, "02:00:00:00:01:33"), ("198.18.0.34", 3, "02:00:00:00:01:34")],
    ),
    (VIP4_EMPTY, 80, "tcp", "ipip", 251, &[("198.18.0.41", 1, "")]),
    (VIP6, 80, "tcp", "ipip", 1021, &[("2001:db8::11", 1, ""), ("2001:db8::12", 1, "")]),
    (VIP6, 53, "udp", "ipip", 251, &[("2001:db8::21", 0, ""), ("2001:db8::22", 3, "")]),
    (
        VIP6_DSR,
        443,
        "tcp",
        "l2dsr",
        251,
        &[("2001:db8::31", 1, "02:00:00:00:02:31"), ("2001:db8::32", 1, "02:00:00:00:02:32")],
    ),
    (VIP6_EMPTY, 53, "udp", "ipip", 251, &[]),
];

/// Phase C: MTU 1500, `too_big = "drop"`; a backend re-added under a new id,
/// VIPs removed (one address no longer carries any) and one added.
const PHASE_C: &[VipRow] = &[
    (VIP4, 80, "tcp", "ipip", 251, &[("198.18.0.11", 1, ""), ("198.18.0.12", 1, ""), ("198.18.0.13", 1, "")]),
    (VIP4, 53, "udp", "ipip", 251, &[("198.18.0.21", 1, ""), ("198.18.0.22", 1, "")]),
    (VIP4_DSR, 80, "tcp", "l2dsr", 251, &[("198.18.0.31", 1, "02:00:00:00:01:31")]),
    (VIP4_EMPTY, 80, "tcp", "ipip", 251, &[]),
    (VIP4_NEW, 53, "udp", "ipip", 251, &[("198.18.0.51", 1, "")]),
    (VIP6, 80, "tcp", "ipip", 1021, &[("2001:db8::11", 1, ""), ("2001:db8::12", 1, ""), ("2001:db8::13", 1, "")]),
    (VIP6, 53, "udp", "ipip", 251, &[("2001:db8::21", 1, ""), ("2001:db8::22", 3, "")]),
    (
        VIP6_DSR,
        443,
        "tcp",
        "l2dsr",
        251,
        &[("2001:db8::31", 1, "02:00:00:00:02:31"), ("2001:db8::32", 1, "02:00:00:00:02:32")],
    ),
];

/// (name, share of the run it starts at, VIPs, mtu, too_big).
const PHASES: [(&str, f64, &[VipRow], u16, &str); 3] =
    [("A", 0.0, PHASE_A, 1500, "icmp"), ("B", 0.4, PHASE_B, 1280, "icmp"), ("C", 0.7, PHASE_C, 1500, "drop")];

fn config_toml(vips: &[VipRow], mtu: u16, too_big: &str, flow_limit: bool) -> String {
    let mut s = format!(
        "[global]\nnexthop_mac = \"{NEXTHOP}\"\ntunnel_source_v4 = \"{TUN4}\"\ntunnel_source_v6 = \"{TUN6}\"\n\
         mtu = {mtu}\ntoo_big = \"{too_big}\"\n"
    );
    if flow_limit {
        // The flood guard would make recording depend on the clock.
        s.push_str("new_flow_limit = 0\n");
    }
    for (addr, port, proto, fwd, ring, backends) in vips {
        let _ = writeln!(
            s,
            "[[vip]]\naddress = \"{addr}\"\nport = {port}\nprotocol = \"{proto}\"\nforwarding = \"{fwd}\"\nring_size = {ring}"
        );
        for (b, w, mac) in *backends {
            let _ = writeln!(s, "  [[vip.backend]]\n  address = \"{b}\"\n  weight = {w}");
            if !mac.is_empty() {
                let _ = writeln!(s, "  mac = \"{mac}\"");
            }
        }
    }
    s
}

/// The configuration of a phase, with the interface's MAC the agent reads
/// at start (frames to another MAC exercise `pass_other_host`).
fn config(vips: &[VipRow], mtu: u16, too_big: &str) -> Config {
    let mut cfg = parse_config(vips, mtu, too_big);
    cfg.global.interface_mac = Some(lb::config::Mac(DEFAULT_DST_MAC));
    cfg
}

fn parse_config(vips: &[VipRow], mtu: u16, too_big: &str) -> Config {
    let text = config_toml(vips, mtu, too_big, true);
    match Config::from_toml_str(&text) {
        Ok(c) => c,
        // A build without the flood guard's key: nothing to switch off.
        Err(e) if e.to_string().contains("new_flow_limit") => {
            Config::from_toml_str(&config_toml(vips, mtu, too_big, false)).unwrap()
        }
        Err(e) => panic!("config rejected: {e}\n{text}"),
    }
}

// ---------------------------------------------------------------------------
// Deterministic randomness

/// xorshift64*: small, deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15 | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below((hi - lo + 1) as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
    fn u8(&mut self) -> u8 {
        self.next() as u8
    }
    fn u16(&mut self) -> u16 {
        self.next() as u16
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.u8()).collect()
    }
}

// ---------------------------------------------------------------------------
// Frame generators

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Kind {
    Valid,
    AroundMtu,
    IcmpError,
    Echo,
    Ipv6Ext,
    V4FragmentOrOptions,
    NonIp,
    DeepVlan,
    Random,
    Mutated,
    OddLengths,
    Truncated,
    TruncatedL4,
}

/// Per 1000 draws; the truncation sweeps yield ~50-120 frames per draw.
const KINDS: [(Kind, u64); 13] = [
    (Kind::Valid, 250),
    (Kind::AroundMtu, 60),
    (Kind::IcmpError, 120),
    (Kind::Echo, 45),
    (Kind::Ipv6Ext, 50),
    (Kind::V4FragmentOrOptions, 50),
    (Kind::NonIp, 30),
    (Kind::DeepVlan, 20),
    (Kind::Random, 120),
    (Kind::Mutated, 150),
    (Kind::OddLengths, 100),
    (Kind::Truncated, 3),
    (Kind::TruncatedL4, 2),
];

#[derive(Clone, Copy, Debug)]
struct Target {
    addr: IpAddr,
    port: u16,
    proto: u8,
}

struct Gen {
    rng: Rng,
    /// Every VIP of every phase.
    vips: Vec<Target>,
    /// Addresses that carry a VIP in some phase.
    vip_addrs: Vec<IpAddr>,
    queue: VecDeque<(Kind, Vec<u8>)>,
}

const TCP_FLAGS: [u8; 9] = [
    TCP_FLAG_SYN,
    TCP_FLAG_SYN,
    TCP_FLAG_ACK,
    TCP_FLAG_ACK,
    TCP_FLAG_ACK | TCP_FLAG_PSH,
    TCP_FLAG_SYN | TCP_FLAG_ACK,
    TCP_FLAG_FIN | TCP_FLAG_ACK,
    TCP_FLAG_RST,
    0,
];

impl Gen {
    fn new(seed: u64) -> Gen {
        let mut vips = Vec::new();
        for (_, _, rows, _, _) in PHASES {
            for (addr, port, proto, ..) in rows {
                let t = Target {
                    addr: addr.parse().unwrap(),
                    port: *port,
                    proto: if *proto == "tcp" { IPPROTO_TCP } else { IPPROTO_UDP },
                };
                if !vips.iter().any(|v: &Target| v.addr == t.addr && v.port == t.port && v.proto == t.proto) {
                    vips.push(t);
                }
            }
        }
        let mut vip_addrs: Vec<IpAddr> = vips.iter().map(|v| v.addr).collect();
        vip_addrs.dedup();
        Gen { rng: Rng::new(seed), vips, vip_addrs, queue: VecDeque::new() }
    }

    fn next(&mut self) -> (Kind, Vec<u8>) {
        loop {
            if let Some(f) = self.queue.pop_front() {
                return f;
            }
            let mut roll = self.rng.below(KINDS.iter().map(|k| k.1).sum());
            let mut kind = KINDS[0].0;
            for (k, w) in KINDS {
                if roll < w {
                    kind = k;
                    break;
                }
                roll -= w;
            }
            self.generate(kind);
        }
    }

    fn generate(&mut self, kind: Kind) {
        let frame = match kind {
            Kind::Valid => {
                let len = self.payload_len();
                let p = self.flow_packet(None, len);
                self.finish(p)
            }
            Kind::AroundMtu => self.around_mtu(),
            Kind::IcmpError => {
                let p = self.icmp_error(false);
                self.finish(p)
            }
            Kind::Echo => {
                let p = self.echo();
                self.finish(p)
            }
            Kind::Ipv6Ext => {
                let p = self.ipv6_ext();
                self.finish(p)
            }
            Kind::V4FragmentOrOptions => {
                let p = self.v4_fragment_or_options();
                self.finish(p)
            }
            Kind::NonIp => self.non_ip(),
            Kind::DeepVlan => {
                let mut p = self.flow_packet(None, 8);
                for _ in 0..self.rng.range(3, 5) - p.vlans.len() {
                    let tpid = self.rng.pick(&[ETH_P_8021Q, ETH_P_8021AD]);
                    p = p.vlan_tci(tpid, self.rng.u16());
                }
                p.build()
            }
            Kind::Random => self.random_bytes(),
            Kind::Mutated => self.mutated(),
            Kind::OddLengths => self.odd_lengths(),
            Kind::Truncated => {
                let base = self.small_frame();
                for n in 14..base.len() {
                    self.queue.push_back((kind, base[..n].to_vec()));
                }
                base
            }
            Kind::TruncatedL4 => {
                let len = self.rng.range(0, 12);
                let p = self.flow_packet(None, len);
                let base = p.build();
                let l2 = p.l2_len();
                let hdr = if matches!(p.l3, lb_tests::packet::L3::V4(_)) { 20 } else { 40 };
                for ip_len in hdr..base.len() - l2 {
                    self.queue.push_back((kind, truncate_ip(&base, l2, ip_len)));
                }
                base
            }
        };
        self.queue.push_back((kind, frame));
    }

    fn payload_len(&mut self) -> usize {
        match self.rng.below(100) {
            0..75 => self.rng.range(0, 48),
            75..90 => self.rng.range(49, 400),
            _ => self.rng.range(400, 1500),
        }
    }

    /// A client: one of a small pool (so flows repeat and hit the table),
    /// or anyone.
    fn client(&mut self, v6: bool) -> (IpAddr, u16) {
        let pool = self.rng.chance(85);
        let (host, port) = if pool {
            (self.rng.below(24) as u16 + 1, 40_000 + self.rng.below(12) as u16)
        } else {
            (self.rng.u16(), self.rng.u16())
        };
        let addr = if v6 {
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, if pool { 0 } else { self.rng.u16() }, host))
        } else {
            IpAddr::V4(Ipv4Addr::new(198, 19, (host >> 8) as u8, host as u8))
        };
        (addr, port)
    }

    /// A destination: mostly a VIP, sometimes a VIP's address with another
    /// port or protocol, or another address.
    fn target(&mut self, v6: Option<bool>) -> Target {
        let v6 = v6.unwrap_or_else(|| self.rng.chance(50));
        let vips: Vec<Target> = self.vips.iter().copied().filter(|t| t.addr.is_ipv6() == v6).collect();
        let mut t = self.rng.pick(&vips);
        match self.rng.below(100) {
            0..78 => {}
            78..86 => {
                let any = self.rng.u16();
                t.port = self.rng.pick(&[t.port.wrapping_add(1), 0, 8080, any]);
            }
            86..92 => t.proto = if t.proto == IPPROTO_TCP { IPPROTO_UDP } else { IPPROTO_TCP },
            _ => t.addr = if v6 { OTHER6.into() } else { OTHER4.into() },
        }
        t
    }

    fn vip_addr(&mut self, v6: bool) -> IpAddr {
        let addrs: Vec<IpAddr> = self.vip_addrs.iter().copied().filter(|a| a.is_ipv6() == v6).collect();
        if self.rng.chance(80) {
            self.rng.pick(&addrs)
        } else if v6 {
            OTHER6.into()
        } else {
            OTHER4.into()
        }
    }

    /// Ethernet: 0-2 VLAN tags, now and then other MACs.
    fn l2(&mut self) -> Packet {
        let mut p = Packet::new();
        if self.rng.chance(5) {
            let (d, s) = (self.rng.bytes(6), self.rng.bytes(6));
            p = p.macs(d.try_into().unwrap(), s.try_into().unwrap());
        }
        let tags = match self.rng.below(100) {
            0..65 => 0,
            65..85 => 1,
            _ => 2,
        };
        for _ in 0..tags {
            let tpid = self.rng.pick(&[ETH_P_8021Q, ETH_P_8021AD]);
            p = p.vlan_tci(tpid, self.rng.u16());
        }
        p
    }

    /// IPv4/IPv6 header fields that ride along (TOS, TTL, DF, id, label).
    fn ip(&mut self, p: Packet, src: IpAddr, dst: IpAddr) -> Packet {
        let mut p = p.ip(src, dst);
        if self.rng.chance(30) {
            p = p.tos(self.rng.u8());
        }
        if self.rng.chance(20) {
            p = p.ttl(self.rng.u8());
        }
        if src.is_ipv4() {
            p = p.ip_id(self.rng.u16());
            if self.rng.chance(50) {
                p = p.df();
            }
        } else if self.rng.chance(30) {
            p = p.flow_label(self.rng.next() as u32 & 0xfffff);
        }
        p
    }

    /// A client's TCP or UDP packet with `len` bytes of payload.
    fn flow_packet(&mut self, v6: Option<bool>, len: usize) -> Packet {
        let t = self.target(v6);
        let (src, sport) = self.client(t.addr.is_ipv6());
        let p = self.l2();
        let p = self.ip(p, src, t.addr);
        self.l4(p, t.proto, sport, t.port, len)
    }

    fn l4(&mut self, p: Packet, proto: u8, sport: u16, dport: u16, len: usize) -> Packet {
        let payload = self.rng.bytes(len);
        if proto == IPPROTO_TCP {
            let mut p = p.tcp(sport, dport).flags(self.rng.pick(&TCP_FLAGS)).seq(self.rng.next() as u32);
            if self.rng.chance(5) {
                p = p.flags(self.rng.u8());
            }
            if self.rng.chance(15) {
                let n = self.rng.range(1, 40);
                p = p.tcp_options(&self.rng.bytes(n));
            }
            p.payload(&payload)
        } else {
            p.udp(sport, dport).payload(&payload)
        }
    }

    /// Builds, with Ethernet padding or a trailer now and then.
    fn finish(&mut self, mut p: Packet) -> Vec<u8> {
        if self.rng.chance(20) {
            p = p.pad_to(60);
        }
        if self.rng.chance(8) {
            let n = self.rng.range(1, 16);
            p = p.trailer(&self.rng.bytes(n));
        }
        p.build()
    }

    /// A packet whose encapsulation lands around an MTU of some phase.
    fn around_mtu(&mut self) -> Vec<u8> {
        let v6 = self.rng.chance(50);
        let mtu = self.rng.pick(&[1280usize, 1500]);
        let (ip_hdr, outer) = if v6 { (40, 40) } else { (20, 20) };
        let ip_len = (mtu - outer).saturating_add_signed(self.rng.range(0, 8) as isize - 4);
        let ip_len = if self.rng.chance(10) { self.rng.range(1300, 2000) } else { ip_len };
        let mut p = self.flow_packet(Some(v6), 0);
        let l4_hdr = match &p.l4 {
            lb_tests::packet::L4::Tcp(t) => 20 + t.options.len(),
            _ => 8,
        };
        let len = ip_len.saturating_sub(ip_hdr + l4_hdr);
        let data = self.rng.bytes(len);
        p = p.payload(&data);
        self.finish(p)
    }

    /// An ICMP/ICMPv6 error from a router, quoting a packet a VIP (mostly)
    /// sent to a client of the pool. `small`: a short quote, for sweeps.
    fn icmp_error(&mut self, small: bool) -> Packet {
        let v6 = self.rng.chance(50);
        let t = self.target(Some(v6));
        let (client, cport) = self.client(v6);
        let quoted_pkt = Packet::new().ip(t.addr, client);
        let quoted_pkt =
            if t.proto == IPPROTO_TCP { quoted_pkt.tcp(t.port, cport).ack() } else { quoted_pkt.udp(t.port, cport) };
        let n = self.rng.range(0, 64);
        let mut quoted = quoted_pkt.payload(&self.rng.bytes(n)).build_l3();
        match self.rng.below(100) {
            // Quoted header with options, another version, another protocol.
            0..4 if !v6 => quoted[0] = 0x46,
            4..7 => quoted[0] = (self.rng.u8() & 0xf0) | (quoted[0] & 0x0f),
            7..10 => {
                let any = self.rng.u8();
                quoted[if v6 { 6 } else { 9 }] = self.rng.pick(&[IPPROTO_ICMP, 47, any]);
            }
            _ => {}
        }
        let typical = if v6 { 48 } else { 28 };
        let qlen = match self.rng.below(100) {
            _ if small => typical,
            0..60 => typical,
            60..80 => quoted.len(),
            _ => self.rng.range(0, quoted.len()),
        };
        quoted.truncate(qlen);
        let (ty, code, rest) = if v6 {
            match self.rng.below(100) {
                0..30 => (1, self.rng.range(0, 7) as u8, vec![0; 4]),
                30..60 => (2, 0, self.rng.pick(&[1280u32, 1400, 1500]).to_be_bytes().to_vec()),
                60..80 => (3, self.rng.range(0, 1) as u8, vec![0; 4]),
                _ => (self.rng.u8(), self.rng.u8(), self.rng.bytes(4)),
            }
        } else {
            match self.rng.below(100) {
                0..60 => {
                    let code = self.rng.range(0, 15) as u8;
                    (3, code, vec![0, 0, 0x05, 0xc8])
                }
                60..80 => (11, self.rng.range(0, 1) as u8, vec![0; 4]),
                _ => (self.rng.u8(), self.rng.u8(), self.rng.bytes(4)),
            }
        };
        let mut body = rest;
        body.extend_from_slice(&quoted);
        if !small && self.rng.chance(6) {
            // Around the MTU: an error lb cannot encapsulate is dropped.
            let mtu = self.rng.pick(&[1280usize, 1500]);
            let want = mtu + self.rng.range(0, 8) - 4 - if v6 { 80 } else { 48 };
            body.resize(want.max(body.len()), 0xee);
        }
        let dst = if self.rng.chance(88) { t.addr } else { self.vip_addr(v6) };
        let src: IpAddr = if v6 { ROUTER6.into() } else { ROUTER4.into() };
        let p = self.l2();
        let p = self.ip(p, src, dst);
        p.icmp(ty, code, &body)
    }

    /// An echo request (or another informational message) to a VIP's
    /// address, mostly.
    fn echo(&mut self) -> Packet {
        let v6 = self.rng.chance(50);
        let dst = self.vip_addr(v6);
        let (src, _) = self.client(v6);
        let p = self.l2();
        let p = self.ip(p, src, dst);
        let n = self.rng.range(0, 64);
        let data = self.rng.bytes(n);
        if self.rng.chance(85) {
            p.icmp_echo(self.rng.u16(), self.rng.u16()).payload(&data)
        } else {
            let any = self.rng.u8();
            let ty = self.rng.pick(&[0u8, 13, 129, 133, 135, any]);
            p.icmp(ty, 0, &data)
        }
    }

    fn ipv6_ext(&mut self) -> Packet {
        let t = self.target(Some(true));
        let (src, sport) = self.client(true);
        let p = self.l2();
        let mut p = self.ip(p, src, t.addr);
        for _ in 0..self.rng.range(1, 3) {
            let ext = match self.rng.below(4) {
                0 => {
                    let n = self.rng.range(0, 14);
                    Ipv6Ext::HopByHop(self.rng.bytes(n))
                }
                1 => {
                    let n = self.rng.range(0, 20);
                    Ipv6Ext::Routing {
                        routing_type: self.rng.u8(),
                        segments_left: self.rng.u8(),
                        data: self.rng.bytes(n),
                    }
                }
                2 => {
                    let n = self.rng.range(0, 14);
                    Ipv6Ext::DestOpts(self.rng.bytes(n))
                }
                _ => Ipv6Ext::Fragment {
                    offset: self.rng.u16() & 0x1fff,
                    more: self.rng.chance(50),
                    id: self.rng.next() as u32,
                },
            };
            p = p.ext(ext);
        }
        if self.rng.chance(20) { p.icmp_echo(1, 1) } else { self.l4(p, t.proto, sport, t.port, 16) }
    }

    fn v4_fragment_or_options(&mut self) -> Packet {
        let mut p = if self.rng.chance(80) {
            let len = self.payload_len().min(200);
            self.flow_packet(Some(false), len)
        } else if self.rng.chance(50) {
            self.echo_v4()
        } else {
            self.icmp_error_v4()
        };
        match self.rng.below(3) {
            0 => {
                if self.rng.chance(60) {
                    p = p.mf();
                }
                if self.rng.chance(60) {
                    p = p.frag_offset(self.rng.u16() & 0x1fff);
                }
            }
            1 => {
                let n = self.rng.range(1, 40);
                p = p.ipv4_options(&self.rng.bytes(n));
            }
            _ => {
                let n = self.rng.range(1, 40);
                p = p.mf().ipv4_options(&self.rng.bytes(n));
            }
        }
        p
    }

    fn echo_v4(&mut self) -> Packet {
        loop {
            let p = self.echo();
            if matches!(p.l3, lb_tests::packet::L3::V4(_)) {
                return p;
            }
        }
    }

    fn icmp_error_v4(&mut self) -> Packet {
        loop {
            let p = self.icmp_error(false);
            if matches!(p.l3, lb_tests::packet::L3::V4(_)) {
                return p;
            }
        }
    }

    fn non_ip(&mut self) -> Vec<u8> {
        let p = self.l2();
        let p = match self.rng.below(4) {
            0 => p.arp_request([2, 0, 0, 0, 0, 9], Ipv4Addr::new(198, 18, 0, 9), Ipv4Addr::new(198, 18, 100, 1)),
            1 => {
                let n = self.rng.range(0, 60);
                p.raw_l3(0x88cc, &self.rng.bytes(n))
            }
            2 => {
                let et = loop {
                    let et = self.rng.u16();
                    if ![ETH_P_IP, ETH_P_IPV6, ETH_P_8021Q, ETH_P_8021AD].contains(&et) {
                        break et;
                    }
                };
                let n = self.rng.range(0, 80);
                p.raw_l3(et, &self.rng.bytes(n))
            }
            // An IP packet behind a tag the parser does not walk.
            _ => {
                let inner = self.flow_packet(None, 4).build();
                let l2 = l2_len(&inner);
                let mut f = inner[..12].to_vec();
                f.extend_from_slice(&[0x91, 0x00, 0x00, 0x05]);
                f.extend_from_slice(&inner[l2 - 2..]);
                return f;
            }
        };
        p.build()
    }

    /// Random bytes, mostly behind an ethertype (and first IP bytes) that
    /// lead the parser in.
    fn random_bytes(&mut self) -> Vec<u8> {
        let n = self.rng.range(14, 160);
        let mut f = self.rng.bytes(n);
        if self.rng.chance(80) {
            let mut off = 12;
            for _ in 0..self.rng.range(0, 3) {
                if off + 4 > f.len() {
                    break;
                }
                let tpid = self.rng.pick(&[ETH_P_8021Q, ETH_P_8021AD]);
                f[off..off + 2].copy_from_slice(&tpid.to_be_bytes());
                off += 4;
            }
            let v6 = self.rng.chance(50);
            if off + 2 <= f.len() {
                f[off..off + 2].copy_from_slice(&(if v6 { ETH_P_IPV6 } else { ETH_P_IP }).to_be_bytes());
            }
            let ip = off + 2;
            let rest = f.len().saturating_sub(ip);
            if rest >= 20 && !v6 {
                if self.rng.chance(70) {
                    f[ip] = 0x45;
                    f[ip + 6] &= if self.rng.chance(70) { 0x40 } else { 0xff };
                    f[ip + 7] = if f[ip + 6] & 0x3f == 0 { 0 } else { f[ip + 7] };
                }
                if self.rng.chance(70) {
                    f[ip + 2..ip + 4]
                        .copy_from_slice(&(rest as u16).saturating_sub(self.rng.below(4) as u16).to_be_bytes());
                }
                f[ip + 9] = self.rng.pick(&[IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP, f[ip + 9]]);
                if self.rng.chance(50) {
                    let dst = self.vip_addr(false);
                    let IpAddr::V4(d) = dst else { unreachable!() };
                    f[ip + 16..ip + 20].copy_from_slice(&d.octets());
                }
            }
            if rest >= 40 && v6 {
                if self.rng.chance(70) {
                    f[ip] = 0x60 | (f[ip] & 0x0f);
                }
                if self.rng.chance(70) {
                    f[ip + 4..ip + 6]
                        .copy_from_slice(&(rest as u16 - 40).saturating_sub(self.rng.below(4) as u16).to_be_bytes());
                }
                f[ip + 6] = self.rng.pick(&[IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMPV6, 0, 43, 44, 60, f[ip + 6]]);
                if self.rng.chance(50) {
                    let IpAddr::V6(d) = self.vip_addr(true) else { unreachable!() };
                    f[ip + 24..ip + 40].copy_from_slice(&d.octets());
                }
            }
        }
        f
    }

    /// A valid frame of some kind, for mutation.
    fn any_valid(&mut self, small: bool) -> Vec<u8> {
        let p = match self.rng.below(100) {
            0..45 => {
                let len = if small { self.rng.range(0, 24) } else { self.payload_len().min(200) };
                self.flow_packet(None, len)
            }
            45..75 => self.icmp_error(small),
            75..85 => self.echo(),
            85..93 => self.ipv6_ext(),
            _ => self.v4_fragment_or_options(),
        };
        if small { p.build() } else { self.finish(p) }
    }

    fn small_frame(&mut self) -> Vec<u8> {
        loop {
            let f = self.any_valid(true);
            if f.len() <= 130 {
                return f;
            }
        }
    }

    /// Bit flips and byte changes in the headers of a valid frame.
    fn mutated(&mut self) -> Vec<u8> {
        let mut f = self.any_valid(false);
        for _ in 0..self.rng.range(1, 4) {
            let at = self.rng.range(12, f.len().min(110) - 1);
            if self.rng.chance(70) {
                f[at] ^= 1 << self.rng.below(8);
            } else {
                f[at] = self.rng.u8();
            }
        }
        if self.rng.chance(50) && f.len() >= 34 && f[12..14] == ETH_P_IP.to_be_bytes() && f[14] >> 4 == 4 {
            refresh_ipv4_csum(&mut f, 14);
        }
        f
    }

    /// Valid frames with one length field changed: IHL, total length,
    /// payload length, TCP data offset, UDP length.
    fn odd_lengths(&mut self) -> Vec<u8> {
        let mut f = self.any_valid(false);
        let l2 = l2_len(&f);
        if l2 + 20 > f.len() {
            return f;
        }
        let ip = l2;
        let v4 = f[ip] >> 4 == 4;
        let (hdr, proto) = if v4 { ((f[ip] & 0x0f) as usize * 4, f[ip + 9]) } else { (40, f[ip + 6]) };
        match self.rng.below(4) {
            0 if v4 => {
                f[ip] = 0x40 | self.rng.below(16) as u8;
                refresh_ipv4_csum(&mut f, ip);
            }
            1 if v4 => {
                let total = self.rng.range(0, f.len() - l2 + 24) as u16;
                f[ip + 2..ip + 4].copy_from_slice(&total.to_be_bytes());
                refresh_ipv4_csum(&mut f, ip);
            }
            1 | 0 => {
                let plen = self.rng.range(0, (f.len() - l2).saturating_sub(40) + 24) as u16;
                f[ip + 4..ip + 6].copy_from_slice(&plen.to_be_bytes());
            }
            _ => {
                let l4 = ip + hdr;
                if proto == IPPROTO_TCP && l4 + 13 <= f.len() {
                    f[l4 + 12] = (self.rng.below(16) as u8) << 4 | (f[l4 + 12] & 0x0f);
                } else if proto == IPPROTO_UDP && l4 + 6 <= f.len() {
                    f[l4 + 4..l4 + 6].copy_from_slice(&self.rng.u16().to_be_bytes());
                }
            }
        }
        f
    }
}

/// Recomputes the IPv4 header checksum over as much of the header (by IHL)
/// as the frame holds.
fn refresh_ipv4_csum(f: &mut [u8], ip: usize) {
    if f.len() < ip + 20 {
        return;
    }
    let end = (ip + (f[ip] & 0x0f) as usize * 4).clamp(ip + 20, f.len());
    f[ip + 10..ip + 12].copy_from_slice(&[0, 0]);
    let c = internet_checksum(&f[ip..end], 0);
    f[ip + 10..ip + 12].copy_from_slice(&c.to_be_bytes());
}

// ---------------------------------------------------------------------------
// Running and comparing

fn run(prog: &Xdp, frame: &[u8], out: &mut Vec<u8>) -> u32 {
    out.clear();
    out.resize(frame.len() + 256, 0);
    let r = prog
        .test_run(TestRunOptions { data_in: Some(frame), data_out: Some(out), ..Default::default() })
        .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN failed ({} bytes): {e}", frame.len()));
    out.truncate(r.data_size_out as usize);
    r.return_value
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim().replace('_', "");
    let parsed = match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => v.parse(),
    };
    Some(parsed.unwrap_or_else(|e| panic!("{name}={v}: {e}")))
}

/// Expected counter increments, summed.
#[derive(Default)]
struct Sums {
    stats: HashMap<u32, (u64, u64)>,
    vips: HashMap<VipKey, (u64, u64)>,
    /// (packets, bytes, new flows) per (VIP, backend).
    backends: HashMap<(VipKey, IpAddr), (u64, u64, u64)>,
}

impl Sums {
    fn add(&mut self, e: &Expected, len: u64) {
        for (i, bytes) in e.stats(len) {
            let s = self.stats.entry(i).or_default();
            s.0 += 1;
            s.1 += bytes;
        }
        if let Some(vip) = e.vip {
            let v = self.vips.entry(vip).or_default();
            v.0 += 1;
            v.1 += len;
            if let Some(b) = e.backend.filter(|_| e.verdict == lb_tests::model::XDP_TX) {
                let c = self.backends.entry((vip, b)).or_default();
                c.0 += 1;
                c.1 += len;
            }
            if let Some(b) = e.new_flow {
                self.backends.entry((vip, b)).or_default().2 += 1;
            }
        }
    }
}

struct Snapshot {
    stats: Vec<Counters>,
    vips: HashMap<VipKey, Counters>,
    backends: HashMap<(VipKey, IpAddr), (u64, u64, u64)>,
}

fn snapshot_stats(dp: &Dataplane) -> Vec<Counters> {
    dp.stats().expect("reading STATS")
}

/// Per-VIP counters and (packets, bytes, new flows) per (VIP, backend).
type Window = (HashMap<VipKey, Counters>, HashMap<(VipKey, IpAddr), (u64, u64, u64)>);

fn snapshot_window(dp: &Dataplane) -> Window {
    let vips = dp.vip_counters().expect("reading VIP_STATS").into_iter().collect();
    let backends = dp
        .backend_counters()
        .expect("reading BACKEND_STATS")
        .into_iter()
        .map(|(v, a, t)| ((v, a), (t.packets, t.bytes, t.new_flows)))
        .collect();
    (vips, backends)
}

struct Fuzz {
    show: usize,
    mismatches: Vec<String>,
    mismatch_count: u64,
    counter_mismatches: Vec<String>,
    table_mismatches: u64,
    aborted: u64,
    known: BTreeMap<Deviation, (u64, String)>,
    by_kind: BTreeMap<Kind, u64>,
    by_reason: BTreeMap<u32, u64>,
    by_rule: BTreeMap<&'static str, u64>,
    extra: BTreeMap<u32, u64>,
    test_run_time: Duration,
    // The current batch and window.
    batch_sums: Sums,
    batch_frames: Vec<(u64, Kind, u32)>,
    /// Inputs of the batch, kept when batches are tiny (LB_FUZZ_BATCH <= 4).
    batch_inputs: Option<Vec<String>>,
    batch_dirty: bool,
    window_sums: Sums,
    window_dirty: bool,
    base: Snapshot,
}

impl Fuzz {
    fn new(dp: &Dataplane, show: usize, batch: u64) -> Self {
        let (vips, backends) = snapshot_window(dp);
        Fuzz {
            show,
            mismatches: Vec::new(),
            mismatch_count: 0,
            counter_mismatches: Vec::new(),
            table_mismatches: 0,
            aborted: 0,
            known: BTreeMap::new(),
            by_kind: BTreeMap::new(),
            by_reason: BTreeMap::new(),
            by_rule: BTreeMap::new(),
            extra: BTreeMap::new(),
            test_run_time: Duration::ZERO,
            batch_sums: Sums::default(),
            batch_frames: Vec::new(),
            batch_inputs: (batch <= 4).then(Vec::new),
            batch_dirty: false,
            window_sums: Sums::default(),
            window_dirty: false,
            base: Snapshot { stats: snapshot_stats(dp), vips, backends },
        }
    }

    /// New baselines (after a configuration change).
    fn rebase(&mut self, dp: &Dataplane) {
        let (vips, backends) = snapshot_window(dp);
        self.base = Snapshot { stats: snapshot_stats(dp), vips, backends };
        self.batch_sums = Sums::default();
        self.window_sums = Sums::default();
        self.batch_frames.clear();
        self.batch_dirty = false;
        self.window_dirty = false;
    }

    fn mismatch(&mut self, text: String) {
        self.mismatch_count += 1;
        self.batch_dirty = true;
        self.window_dirty = true;
        if self.mismatches.len() < self.show {
            println!("MISMATCH {text}");
            self.mismatches.push(text);
        }
    }

    /// One frame: model, run, compare, then the connection table.
    #[allow(clippy::too_many_arguments)]
    fn case(
        &mut self,
        dp: &Dataplane,
        index: u64,
        phase: &str,
        model: &Model,
        kind: Kind,
        frame: &[u8],
        out: &mut Vec<u8>,
    ) {
        *self.by_kind.entry(kind).or_default() += 1;
        let expected = model.predict(frame, dp);
        // A known deviation that changes only the counter: this frame's
        // counters are read on their own to tell which reading the program took.
        let counter_only = expected
            .product
            .as_ref()
            .is_some_and(|(_, p)| p.verdict == expected.verdict && p.output == expected.output);
        if counter_only {
            self.end_batch(dp);
        }
        let t = Instant::now();
        let verdict = run(dp.balancer(), frame, out);
        self.test_run_time += t.elapsed();
        if verdict == XDP_ABORTED {
            self.aborted += 1;
        }
        let describe = |e: &Expected, out: &[u8]| {
            format!(
                "frame {index} ({kind:?}, phase {phase}), {} bytes:\n  input  {}\n  model  {}\n  kernel {}\n{}",
                frame.len(),
                hex(frame),
                e.summary(),
                verdict_name(verdict),
                hex_diff(&e.output, out)
            )
        };
        let matched = if verdict == expected.verdict && *out == expected.output {
            match &expected.product {
                Some((dev, product)) if counter_only => {
                    let now = snapshot_stats(dp);
                    let counted = |r: u32| now[r as usize].packets - self.base.stats[r as usize].packets;
                    if counted(expected.reason) == 0 && counted(product.reason) == 1 {
                        let example =
                            format!("{} (counted as {})", describe(&expected, out), stat_name(product.reason));
                        self.known.entry(*dev).or_insert_with(|| (0, example)).0 += 1;
                        product.as_ref()
                    } else {
                        &expected
                    }
                }
                _ => &expected,
            }
        } else if let Some((dev, product)) = &expected.product
            && verdict == product.verdict
            && *out == product.output
        {
            let entry = self.known.entry(*dev).or_insert_with(|| (0, describe(&expected, out)));
            entry.0 += 1;
            product.as_ref()
        } else {
            let text = describe(&expected, out);
            self.mismatch(text);
            return;
        };
        *self.by_reason.entry(matched.reason).or_default() += 1;
        *self.by_rule.entry(matched.rule).or_default() += 1;
        for (i, _) in matched.stats(0).into_iter().skip(1) {
            *self.extra.entry(i).or_default() += 1;
        }
        self.batch_sums.add(matched, frame.len() as u64);
        self.window_sums.add(matched, frame.len() as u64);
        self.batch_frames.push((index, kind, matched.reason));
        if let Some(inputs) = &mut self.batch_inputs {
            inputs.push(hex(frame));
        }
        self.check_table(dp, index, frame, matched);
        if counter_only {
            self.end_batch(dp);
        }
    }

    /// The connection table after the run: a flow taken from the ring is
    /// recorded with its backend; an ICMP error creates no entry.
    fn check_table(&mut self, dp: &Dataplane, index: u64, frame: &[u8], e: &Expected) {
        if let (Some(flow), Some(backend)) = (e.record, e.new_flow) {
            let got = dp.conntrack_backend(&flow).expect("reading CONNTRACK");
            if got != Some(backend) {
                self.table_mismatches += 1;
                let text = format!(
                    "frame {index}: flow {flow:?} should now be recorded with {backend}, the table has {got:?}\n  input {}",
                    hex(frame)
                );
                self.mismatch(text);
            }
        }
        if let Some(flow) = e.icmp_error_flow
            && e.conntrack == Some(stats::CONNTRACK_MISS)
        {
            let t = dp.trace(&flow).expect("trace").expect("a VIP flow");
            if t.conntrack_backend.is_some() || t.conntrack_stale {
                self.table_mismatches += 1;
                let text =
                    format!("frame {index}: an ICMP error created an entry for {flow:?}\n  input {}", hex(frame));
                self.mismatch(text);
            }
        }
    }

    /// Compares `STATS` with the batch's expected increments.
    fn end_batch(&mut self, dp: &Dataplane) {
        let now = snapshot_stats(dp);
        if !self.batch_dirty {
            let mut diffs = Vec::new();
            for i in 0..stats::COUNT {
                let (p, b) = self.batch_sums.stats.get(&i).copied().unwrap_or_default();
                let got = (
                    now[i as usize].packets - self.base.stats[i as usize].packets,
                    now[i as usize].bytes - self.base.stats[i as usize].bytes,
                );
                if got != (p, b) {
                    diffs.push(format!(
                        "{}: expected +{p} packets/+{b} bytes, got +{}/+{}",
                        stat_name(i),
                        got.0,
                        got.1
                    ));
                }
            }
            if !diffs.is_empty() {
                let (first, last) = (self.batch_frames.first().map(|f| f.0), self.batch_frames.last().map(|f| f.0));
                let mut text = format!("STATS after frames {first:?}..={last:?}: {}", diffs.join("; "));
                if self.batch_frames.len() <= 4 {
                    let _ = write!(text, " (frames: {:?})", self.batch_frames);
                }
                if let Some(inputs) = &self.batch_inputs {
                    let _ = write!(text, "\n  input {}", inputs.join("\n  input "));
                }
                if self.counter_mismatches.len() < self.show {
                    println!("COUNTER MISMATCH {text}");
                }
                self.counter_mismatches.push(text);
            }
        }
        self.base.stats = now;
        self.batch_sums = Sums::default();
        self.batch_frames.clear();
        if let Some(inputs) = &mut self.batch_inputs {
            inputs.clear();
        }
        self.batch_dirty = false;
    }

    /// Compares the per-VIP and per-backend counters with the window's.
    fn end_window(&mut self, dp: &Dataplane) {
        let (vips, backends) = snapshot_window(dp);
        if !self.window_dirty {
            let mut diffs = Vec::new();
            for (key, c) in &vips {
                let base = self.base.vips.get(key).copied().unwrap_or_default();
                let want = self.window_sums.vips.get(key).copied().unwrap_or_default();
                if (c.packets - base.packets, c.bytes - base.bytes) != want {
                    diffs.push(format!(
                        "VIP {key:?}: expected {want:?}, got +{}/+{}",
                        c.packets - base.packets,
                        c.bytes - base.bytes
                    ));
                }
            }
            for (key, c) in &backends {
                let base = self.base.backends.get(key).copied().unwrap_or_default();
                let want = self.window_sums.backends.get(key).copied().unwrap_or_default();
                let got = (c.0 - base.0, c.1 - base.1, c.2 - base.2);
                if got != want {
                    diffs.push(format!(
                        "backend {} of {:?}: expected (packets, bytes, new flows) {want:?}, got {got:?}",
                        key.1, key.0
                    ));
                }
            }
            for key in self.window_sums.vips.keys().filter(|k| !vips.contains_key(k)) {
                diffs.push(format!("VIP {key:?} counted by the model is not configured"));
            }
            if !diffs.is_empty() {
                let text = format!("per-VIP/backend counters: {}", diffs.join("; "));
                if self.counter_mismatches.len() < self.show {
                    println!("COUNTER MISMATCH {text}");
                }
                self.counter_mismatches.push(text);
            }
        }
        self.base.vips = vips;
        self.base.backends = backends;
        self.window_sums = Sums::default();
        self.window_dirty = false;
    }
}

/// Verdict reasons a run of the default size must reach (the generators'
/// coverage); the others (`drop_encap`, `drop_bad_backend`, insert
/// failures, the flood guard) cannot happen with this configuration.
const MUST_SEE: [u32; 18] = [
    stats::PASS_NON_IP,
    stats::PASS_OTHER_HOST,
    stats::PASS_NOT_VIP,
    stats::PASS_VLAN_DEPTH,
    stats::DROP_MALFORMED,
    stats::DROP_FRAGMENT,
    stats::DROP_IP_OPTIONS,
    stats::DROP_IPV6_EXT,
    stats::DROP_NO_BACKEND,
    stats::CONNTRACK_HIT,
    stats::CONNTRACK_MISS,
    stats::CONNTRACK_REPICK,
    stats::TX_IPIP,
    stats::TX_L2DSR,
    stats::TX_ICMP_TOO_BIG,
    stats::DROP_TOO_BIG,
    stats::TX_ICMP_ECHO_REPLY,
    stats::ICMP_ERROR_FORWARDED,
];

#[test]
fn the_kernel_matches_the_model() {
    if !is_root() {
        eprintln!("SKIP the_kernel_matches_the_model: BPF_PROG_TEST_RUN of XDP programs needs root");
        return;
    }
    let cases = env_u64("LB_FUZZ_CASES").unwrap_or(DEFAULT_CASES);
    let seed = env_u64("LB_FUZZ_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    let batch = env_u64("LB_FUZZ_BATCH").unwrap_or(DEFAULT_BATCH).max(1);
    let show = env_u64("LB_FUZZ_SHOW").unwrap_or(8) as usize;
    println!(
        "model_fuzz: seed {seed:#x}, {cases} frames, STATS compared every {batch} frames\n\
         model_fuzz: reproduce with LB_FUZZ_SEED={seed:#x} LB_FUZZ_CASES={cases} \
         cargo test -p lb-tests --test model_fuzz -- --nocapture"
    );

    let mut dp = Dataplane::load().expect("loading the balancer");
    let mut frames = Gen::new(seed);
    let mut out = Vec::with_capacity(4096);
    let started = Instant::now();
    let mut f = Fuzz::new(&dp, show, batch);
    let mut summary = Vec::new();
    for (p, (name, start, rows, mtu, too_big)) in PHASES.iter().enumerate() {
        let end = PHASES.get(p + 1).map_or(cases, |next| (cases as f64 * next.1) as u64);
        let first = (cases as f64 * start) as u64;
        let cfg = config(rows, *mtu, too_big);
        dp.apply(&cfg).expect("applying the configuration");
        let model = Model::new(&cfg);
        // Counters are compared within a phase (backends come and go between).
        f.rebase(&dp);
        for i in first..end {
            let (kind, frame) = frames.next();
            f.case(&dp, i, name, &model, kind, &frame, &mut out);
            if (i - first + 1).is_multiple_of(batch) {
                f.end_batch(&dp);
                if (i - first + 1).is_multiple_of(batch * WINDOW_BATCHES) {
                    f.end_window(&dp);
                }
            }
        }
        f.end_batch(&dp);
        f.end_window(&dp);
        summary.push(format!("phase {name} (mtu {mtu}, too_big {too_big}): frames {first}..{end}"));
    }
    let elapsed = started.elapsed();
    let per_sec = |n: u64, d: Duration| n as f64 / d.as_secs_f64().max(1e-9);

    println!("model_fuzz: {}", summary.join(", "));
    println!(
        "model_fuzz: {cases} frames in {:.1} s: {:.0} frames/s end to end (model, map reads, counters); \
         BPF_PROG_TEST_RUN alone {:.0} runs/s ({:.2} us each)",
        elapsed.as_secs_f64(),
        per_sec(cases, elapsed),
        per_sec(cases, f.test_run_time),
        f.test_run_time.as_secs_f64() * 1e6 / cases.max(1) as f64
    );
    let kinds: Vec<String> = f.by_kind.iter().map(|(k, n)| format!("{k:?} {n}")).collect();
    println!("model_fuzz: frames by generator: {}", kinds.join(", "));
    let reasons: Vec<String> = f.by_reason.iter().map(|(r, n)| format!("{} {n}", stat_name(*r))).collect();
    println!("model_fuzz: verdict reasons: {}", reasons.join(", "));
    let extra: Vec<String> = f.extra.iter().map(|(r, n)| format!("{} {n}", stat_name(*r))).collect();
    println!("model_fuzz: also counted: {}", extra.join(", "));
    let rules: Vec<String> = f.by_rule.iter().map(|(r, n)| format!("{r}: {n}")).collect();
    println!("model_fuzz: README rules reached ({}):\n  {}", rules.len(), rules.join("\n  "));
    let known: u64 = f.known.values().map(|k| k.0).sum();
    println!(
        "model_fuzz: {} mismatches (verdict/output/table: {}, of which table {}), {} counter mismatches, \
         {} XDP_ABORTED, {known} frames hit a known product deviation",
        f.mismatch_count + f.counter_mismatches.len() as u64,
        f.mismatch_count,
        f.table_mismatches,
        f.counter_mismatches.len(),
        f.aborted
    );

    assert_eq!(f.aborted, 0, "XDP_ABORTED returned {} times (seed {seed:#x})", f.aborted);
    assert!(
        f.mismatch_count == 0,
        "{} frames where the kernel and the model disagree (seed {seed:#x}, {cases} frames); the first:\n{}",
        f.mismatch_count,
        f.mismatches.join("\n")
    );
    assert!(
        f.counter_mismatches.is_empty(),
        "{} counter mismatches (seed {seed:#x}; LB_FUZZ_BATCH=1 ties one to its frame); the first:\n{}",
        f.counter_mismatches.len(),
        f.counter_mismatches.iter().take(show).cloned().collect::<Vec<_>>().join("\n")
    );
    if cases >= 50_000 {
        let missing: Vec<&str> = MUST_SEE
            .iter()
            .filter(|r| f.by_reason.get(r).or(f.extra.get(r)).copied().unwrap_or(0) == 0)
            .map(|r| stat_name(*r))
            .collect();
        assert!(missing.is_empty(), "the generators never reached: {missing:?} (seed {seed:#x})");
    }
    // Known product bugs: the model states the spec; these fail until the
    // program is fixed, each with one example.
    let bugs: Vec<String> = f
        .known
        .iter()
        .map(|(d, (n, example))| format!("PRODUCT BUG ({n} frames): {}\n  example {example}", d.describe()))
        .collect();
    assert!(bugs.is_empty(), "{}", bugs.join("\n"));
}

// ---------------------------------------------------------------------------
// The seed corpus of the cargo-fuzz targets

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz-corpus")
}

#[test]
fn the_seed_corpus_goes_through_the_host_parsers() {
    let (mut total, mut failures) = (0, Vec::new());
    for (name, target) in host_parsers::TARGETS {
        let dir = corpus_dir().join(name);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no seed corpus for {name} in {}", dir.display());
        for file in &files {
            let data = std::fs::read(file).unwrap();
            if let Err(panic) = std::panic::catch_unwind(|| target(&data)) {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failures.push(format!("{name} {}: {message}", file.display()));
            }
        }
        total += files.len();
    }
    println!("seed corpus: {total} files through {} targets", host_parsers::TARGETS.len());
    assert!(failures.is_empty(), "seed-corpus inputs that make a target fail:\n{}", failures.join("\n"));
}

#[test]
fn the_seed_corpus_has_valid_configurations() {
    // The corpus must reach past the parsers into validation: some files
    // are accepted, some rejected with a message naming the key.
    let dir = corpus_dir().join("config_toml");
    let (mut ok, mut rejected) = (0, 0);
    for file in std::fs::read_dir(&dir).unwrap() {
        let text = std::fs::read_to_string(file.unwrap().path()).unwrap_or_default();
        match Config::from_toml_str(&text) {
            Ok(_) => ok += 1,
            Err(_) => rejected += 1,
        }
    }
    assert!(ok >= 3 && rejected >= 3, "config corpus: {ok} accepted, {rejected} rejected");
}
