//! The fuzzer's addresses and its three configurations (phases A, B, C).

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use lb::config::Config;
use lb_tests::packet::DEFAULT_DST_MAC;

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
pub(super) const OTHER4: Ipv4Addr = Ipv4Addr::new(198, 18, 200, 1);
pub(super) const OTHER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x200, 0, 0, 0, 0, 1);
pub(super) const ROUTER4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 254);
pub(super) const ROUTER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xfe);

/// (address, port, protocol, forwarding, ring size, backends as (address, weight, MAC)).
pub(super) type VipRow =
    (&'static str, u16, &'static str, &'static str, u32, &'static [(&'static str, u32, &'static str)]);

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
pub(super) const PHASES: [(&str, f64, &[VipRow], u16, &str); 3] =
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
pub(super) fn config(vips: &[VipRow], mtu: u16, too_big: &str) -> Config {
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
