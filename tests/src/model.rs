//! A plain-Rust reference model of `lb_balancer`: for one input frame and
//! the configuration, the verdict, the `lb_common::stats` reason, the backend
//! and the exact output bytes, written from the README's table ("What the
//! data path does with each packet") rather than from the eBPF code.
//!
//! What the model shares with the program: the flow hash, the map types and
//! the constants (`lb_common`), and the backend choice, which it reads from
//! the live maps (`Dataplane::trace`: the VIP's ring entry and the flow's
//! connection-table entry), so it stays exact while the kernel inserts
//! entries. It decides "connection table or ring" itself, as the README says:
//! a TCP SYN (SYN without ACK) always takes the ring and is recorded; other
//! TCP/UDP packets take a valid connection-table entry if any, else the ring
//! and are recorded; ICMP errors about a VIP flow use the flow's valid entry,
//! else its ring entry, and are never recorded. Output bytes come from
//! `crate::packet`'s reference functions (encapsulation, L2 DSR) or are
//! written here (echo replies, fragmentation-needed, packet-too-big, and
//! IPv6-in-IPv6 of an ICMPv6 error, whose flow label is the quoted flow's).
//!
//! Where the program knowingly deviates from the spec, [`Expected::product`]
//! carries what the program does instead, with a [`Deviation`] naming it, so
//! a harness can tell a known product bug from a new mismatch.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb::config::{Config, Forwarding, NextHop, TooBig};
use lb::dataplane::{Dataplane, Trace};
use lb_common::hash::flow_hash;
use lb_common::net::icmp::*;
use lb_common::net::{
    ETH_HDR_LEN, ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, IPPROTO_DSTOPTS, IPPROTO_FRAGMENT, IPPROTO_HOPOPTS,
    IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_IPV6, IPPROTO_ROUTING, IPPROTO_TCP, IPPROTO_UDP, IPV4_DF, IPV4_HDR_LEN,
    IPV4_MF, IPV4_OFFSET_MASK, IPV6_HDR_LEN, TCP_FLAG_ACK, TCP_FLAG_SYN, TCP_HDR_LEN, UDP_HDR_LEN, VLAN_HDR_LEN,
};
use lb_common::{ENCAP_TTL, FlowKey, MAX_VLAN_TAGS, VipKey, stats};

use crate::packet::{Mac, internet_checksum, ipip_encap_v4, ipip_encap_v6, l2dsr};

/// XDP verdicts (enum xdp_action).
pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;

pub fn verdict_name(v: u32) -> &'static str {
    match v {
        XDP_ABORTED => "XDP_ABORTED",
        XDP_DROP => "XDP_DROP",
        XDP_PASS => "XDP_PASS",
        XDP_TX => "XDP_TX",
        4 => "XDP_REDIRECT",
        _ => "unknown",
    }
}

pub fn stat_name(i: u32) -> &'static str {
    stats::LABELS.get(i as usize).copied().unwrap_or("?")
}

/// IPv6's minimum MTU: a packet-too-big never advertises less (RFC 8200).
pub const IPV6_MIN_MTU: u32 = 1280;

/// A known way in which the program departed from the spec the model follows
/// (both found by the differential fuzzer and fixed; kept so that a
/// regression is named as such).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Deviation {
    /// ICMP/ICMPv6 headers (and the header quoted in an error) are read up to
    /// the end of the frame instead of the end of the IP packet (its total /
    /// payload length): bytes of the Ethernet padding or trailer are taken as
    /// part of the message. TCP/UDP headers are bounded by the IP length.
    IcmpBeyondIpLength,
    /// The IPv6 header quoted in an ICMPv6 error is used whatever its version
    /// nibble; the IPv4 side requires a quoted 0x45.
    Icmpv6QuotedVersion,
}

impl Deviation {
    pub fn describe(self) -> &'static str {
        match self {
            Deviation::IcmpBeyondIpLength => {
                "ICMP/ICMPv6 parsing reads past the IP packet's length into the Ethernet padding/trailer \
                 (lb-ebpf/src/icmp.rs parse_v4/parse_v6 bound their loads by the frame, not by the IP \
                 total/payload length as parse_l4 does for TCP/UDP); fix: give them the end of the IP \
                 packet (l2 + ip_len) and treat a message or quote that does not fit before it as not lb's"
            }
            Deviation::Icmpv6QuotedVersion => {
                "an ICMPv6 error quoting a header whose version is not 6 is taken as being about a VIP flow \
                 (lb-ebpf/src/icmp.rs parse_v6 checks only the quoted next header; parse_v4 requires 0x45); \
                 fix: also require inner.vtc_flow[0] >> 4 == 6"
            }
        }
    }
}

/// What the model expects the program to do with one frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    pub verdict: u32,
    /// The one `stats` reason the packet is counted under (bytes: frame length).
    pub reason: u32,
    /// The frame as the program leaves it (the input itself on PASS/DROP).
    pub output: Vec<u8>,
    /// The README rule that decided, for messages.
    pub rule: &'static str,
    /// The VIP whose `VIP_STATS` count the packet (a VIP (address, port,
    /// protocol) was matched, by the packet's flow or an ICMP error's).
    pub vip: Option<VipKey>,
    /// `CONNTRACK_HIT`, `CONNTRACK_MISS` or `CONNTRACK_REPICK` when a backend
    /// was looked for.
    pub conntrack: Option<u32>,
    /// The backend the packet goes to (XDP_TX through a backend).
    pub backend: Option<IpAddr>,
    /// The backend the ring gave a client's flow; its `BACKEND_FLOWS` goes up
    /// and the flow is recorded with it (also when then answered too-big).
    pub new_flow: Option<IpAddr>,
    /// The flow the connection table must map to `new_flow` afterwards.
    pub record: Option<FlowKey>,
    /// The flow of an ICMP error about a VIP flow: it must not be recorded.
    pub icmp_error_flow: Option<FlowKey>,
    /// `ICMP_ERROR_FORWARDED` goes up too.
    pub icmp_error_forwarded: bool,
    /// What the program does instead, where a known deviation applies.
    pub product: Option<(Deviation, Box<Expected>)>,
}

impl Expected {
    fn untouched(verdict: u32, reason: u32, frame: &[u8], rule: &'static str) -> Expected {
        Expected {
            verdict,
            reason,
            output: frame.to_vec(),
            rule,
            vip: None,
            conntrack: None,
            backend: None,
            new_flow: None,
            record: None,
            icmp_error_flow: None,
            icmp_error_forwarded: false,
            product: None,
        }
    }

    fn sent(reason: u32, output: Vec<u8>, rule: &'static str) -> Expected {
        Expected { output, ..Expected::untouched(XDP_TX, reason, &[], rule) }
    }

    /// Every `STATS` index that goes up by one packet, with its byte count
    /// (the reason counts the frame's bytes, the extra counters none).
    pub fn stats(&self, frame_len: u64) -> Vec<(u32, u64)> {
        let mut v = vec![(self.reason, frame_len)];
        if let Some(c) = self.conntrack {
            v.push((c, 0));
        }
        if self.icmp_error_forwarded {
            v.push((stats::ICMP_ERROR_FORWARDED, 0));
        }
        v
    }

    pub fn summary(&self) -> String {
        let mut s = format!("{} {} ({})", verdict_name(self.verdict), stat_name(self.reason), self.rule);
        if let Some(b) = self.backend {
            s.push_str(&format!(" -> backend {b}"));
        }
        if let Some(c) = self.conntrack {
            s.push_str(&format!(", {}", stat_name(c)));
        }
        s
    }
}

/// The live maps, as far as the model needs them: `Dataplane::trace`.
pub trait LiveMaps {
    /// `None` when (dst, dport, proto) is not a VIP.
    fn trace(&self, flow: &FlowKey) -> Option<Trace>;
}

impl LiveMaps for Dataplane {
    fn trace(&self, flow: &FlowKey) -> Option<Trace> {
        Dataplane::trace(self, flow).expect("reading the live maps")
    }
}

#[derive(Clone, Debug)]
struct ModelVip {
    l2dsr: bool,
    /// Backend MACs (l2dsr), by address.
    macs: HashMap<IpAddr, Mac>,
}

/// The configuration, as the data path sees it.
#[derive(Clone, Debug)]
pub struct Model {
    vips: HashMap<VipKey, ModelVip>,
    vip_addrs: HashSet<IpAddr>,
    nexthop: Mac,
    tunnel_v4: Ipv4Addr,
    tunnel_v6: Ipv6Addr,
    /// 0: no limit.
    mtu: u16,
    too_big_drop: bool,
    /// The interface's MAC: VIP packets in frames addressed to another are
    /// passed. `None`: no check (the agent did not say).
    own_mac: Option<Mac>,
}

/// How the model reads ICMP: as the spec says, or as the program does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Rules {
    /// Bound ICMP reads by the IP packet's length (spec) or the frame's.
    icmp_within_ip_length: bool,
    /// Require version 6 in a header quoted by an ICMPv6 error.
    icmpv6_quoted_version: bool,
}

const SPEC: Rules = Rules { icmp_within_ip_length: true, icmpv6_quoted_version: true };
/// The program's reading (see [`Deviation`]).
const PRODUCT: Rules = Rules { icmp_within_ip_length: false, icmpv6_quoted_version: false };

/// What an ICMP message is to lb.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IcmpKind {
    Echo,
    /// An error about this flow (as the client sends it).
    Error(FlowKey),
    /// Anything else: not lb's.
    Other,
}

/// The fields of a client's TCP/UDP packet the decision needs.
struct ClientPacket<'a> {
    frame: &'a [u8],
    l2: usize,
    flow: FlowKey,
    /// IP packet length by its header (IPv6: 40 + payload length).
    ip_len: usize,
    df: bool,
    tcp_flags: u8,
}

fn be16(b: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([b[off], b[off + 1]])
}

fn v4_at(b: &[u8], off: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[off], b[off + 1], b[off + 2], b[off + 3])
}

fn v6_at(b: &[u8], off: usize) -> Ipv6Addr {
    Ipv6Addr::from(<[u8; 16]>::try_from(&b[off..off + 16]).unwrap())
}

fn is_vlan(ethertype: u16) -> bool {
    ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD
}

impl Model {
    /// The model of a configuration as `Dataplane::apply` writes it (with
    /// `nexthop_mac` and `mtu` resolved).
    pub fn new(cfg: &Config) -> Model {
        let g = &cfg.global;
        let nexthop = match g.nexthop_mac {
            Some(NextHop::Mac(m)) => m.0,
            _ => [0; 6],
        };
        let vips = cfg
            .vips
            .iter()
            .map(|v| {
                let macs = v.backends.iter().filter_map(|b| Some((b.address, b.mac?.0))).collect();
                (v.key(), ModelVip { l2dsr: v.forwarding == Forwarding::L2dsr, macs })
            })
            .collect();
        Model {
            vips,
            vip_addrs: cfg.vips.iter().map(|v| v.address).collect(),
            nexthop,
            tunnel_v4: g.tunnel_source_v4.unwrap_or(Ipv4Addr::UNSPECIFIED),
            tunnel_v6: g.tunnel_source_v6.unwrap_or(Ipv6Addr::UNSPECIFIED),
            mtu: g.mtu.unwrap_or(0),
            too_big_drop: g.too_big == TooBig::Drop,
            own_mac: g.interface_mac.map(|m| m.0).filter(|m| *m != [0; 6]),
        }
    }

    pub fn is_vip_addr(&self, addr: IpAddr) -> bool {
        self.vip_addrs.contains(&addr)
    }

    /// What `lb_balancer` does with `frame`, reading the live maps for the
    /// backend choice. Call it before running the frame: the run may record
    /// the flow.
    pub fn predict(&self, frame: &[u8], live: &dyn LiveMaps) -> Expected {
        let mut spec = self.decide(frame, live, SPEC);
        if self.icmp_rules_matter(frame, PRODUCT) {
            let product = self.decide(frame, live, PRODUCT);
            if product != spec {
                let length_only = Rules { icmp_within_ip_length: false, ..SPEC };
                let deviation = if self.decide(frame, live, length_only) != spec {
                    Deviation::IcmpBeyondIpLength
                } else {
                    Deviation::Icmpv6QuotedVersion
                };
                spec.product = Some((deviation, Box::new(product)));
            }
        }
        spec
    }

    /// Whether `rules` read this frame's ICMP message differently from the
    /// spec (cheap pre-check: most frames are not ICMP).
    fn icmp_rules_matter(&self, frame: &[u8], rules: Rules) -> bool {
        let Some((l2, ethertype)) = walk_l2(frame).ok() else { return false };
        let ip = &frame[l2..];
        match ethertype {
            ETH_P_IP => {
                ip.len() >= IPV4_HDR_LEN
                    && ip[0] == 0x45
                    && ip[9] == IPPROTO_ICMP
                    && be16(ip, 2) as usize >= IPV4_HDR_LEN
                    && (be16(ip, 2) as usize) <= ip.len()
                    && icmp_kind_v4(ip, be16(ip, 2) as usize, SPEC) != icmp_kind_v4(ip, be16(ip, 2) as usize, rules)
            }
            ETH_P_IPV6 => {
                ip.len() >= IPV6_HDR_LEN
                    && ip[0] >> 4 == 6
                    && ip[6] == IPPROTO_ICMPV6
                    && IPV6_HDR_LEN + be16(ip, 4) as usize <= ip.len()
                    && icmp_kind_v6(ip, IPV6_HDR_LEN + be16(ip, 4) as usize, SPEC)
                        != icmp_kind_v6(ip, IPV6_HDR_LEN + be16(ip, 4) as usize, rules)
            }
            _ => false,
        }
    }

    fn decide(&self, frame: &[u8], live: &dyn LiveMaps, rules: Rules) -> Expected {
        let pass = |reason, rule| Expected::untouched(XDP_PASS, reason, frame, rule);
        let drop = |reason, rule| Expected::untouched(XDP_DROP, reason, frame, rule);
        let (l2, ethertype) = match walk_l2(frame) {
            Ok(x) => x,
            Err(L2Error::Truncated) => return drop(stats::DROP_MALFORMED, "truncated Ethernet/VLAN header"),
            Err(L2Error::TooManyTags) => return pass(stats::PASS_VLAN_DEPTH, "more than two VLAN tags"),
        };
        match ethertype {
            ETH_P_IP => self.ipv4(frame, l2, live, rules),
            ETH_P_IPV6 => self.ipv6(frame, l2, live, rules),
            _ => pass(stats::PASS_NON_IP, "not IPv4/IPv6"),
        }
    }

    /// A packet whose ports are unknown: dropped with `reason` when its
    /// destination carries a VIP, else passed.
    fn addr_only(&self, frame: &[u8], dst: IpAddr, reason: u32, rule: &'static str) -> Expected {
        if self.is_vip_addr(dst) {
            Expected::untouched(XDP_DROP, reason, frame, rule)
        } else {
            Expected::untouched(XDP_PASS, stats::PASS_NOT_VIP, frame, "not to a VIP address")
        }
    }

    fn ipv4(&self, frame: &[u8], l2: usize, live: &dyn LiveMaps, rules: Rules) -> Expected {
        let malformed = |rule| Expected::untouched(XDP_DROP, stats::DROP_MALFORMED, frame, rule);
        let ip = &frame[l2..];
        if ip.len() < IPV4_HDR_LEN {
            return malformed("truncated IPv4 header");
        }
        let (version, ihl) = (ip[0] >> 4, (ip[0] & 0x0f) as usize);
        if version != 4 {
            return malformed("IPv4 version != 4");
        }
        if ihl < 5 {
            return malformed("IPv4 IHL < 5");
        }
        let total = be16(ip, 2) as usize;
        if total < ihl * 4 {
            return malformed("IPv4 total length shorter than the header");
        }
        if total > ip.len() {
            return malformed("IPv4 total length longer than the frame");
        }
        let dst = IpAddr::V4(v4_at(ip, 16));
        let frag = be16(ip, 6);
        if frag & (IPV4_MF | IPV4_OFFSET_MASK) != 0 {
            return self.addr_only(frame, dst, stats::DROP_FRAGMENT, "IPv4 fragment to a VIP address");
        }
        if ihl != 5 {
            return self.addr_only(frame, dst, stats::DROP_IP_OPTIONS, "IPv4 options to a VIP address");
        }
        let src = IpAddr::V4(v4_at(ip, 12));
        let proto = ip[9];
        let l4 = &ip[IPV4_HDR_LEN..total];
        match proto {
            IPPROTO_TCP | IPPROTO_UDP => {
                let Some((sport, dport, tcp_flags)) = ports(proto, l4) else {
                    return self.addr_only(
                        frame,
                        dst,
                        stats::DROP_MALFORMED,
                        "truncated or malformed TCP/UDP header to a VIP address",
                    );
                };
                let flow = FlowKey::new(src, sport, dst, dport, proto);
                self.client(ClientPacket { frame, l2, flow, ip_len: total, df: frag & IPV4_DF != 0, tcp_flags }, live)
            }
            IPPROTO_ICMP => match icmp_kind_v4(ip, total, rules) {
                IcmpKind::Echo => self.echo(frame, l2, dst),
                IcmpKind::Error(flow) => self.icmp_error(frame, l2, flow, total, live),
                IcmpKind::Other => Expected::untouched(XDP_PASS, stats::PASS_NOT_VIP, frame, "ICMP lb does not act on"),
            },
            _ => Expected::untouched(XDP_PASS, stats::PASS_NOT_VIP, frame, "neither TCP, UDP nor ICMP"),
        }
    }

    fn ipv6(&self, frame: &[u8], l2: usize, live: &dyn LiveMaps, rules: Rules) -> Expected {
        let malformed = |rule| Expected::untouched(XDP_DROP, stats::DROP_MALFORMED, frame, rule);
        let ip = &frame[l2..];
        if ip.len() < IPV6_HDR_LEN {
            return malformed("truncated IPv6 header");
        }
        if ip[0] >> 4 != 6 {
            return malformed("IPv6 version != 6");
        }
        let total = IPV6_HDR_LEN + be16(ip, 4) as usize;
        if total > ip.len() {
            return malformed("IPv6 payload length longer than the frame");
        }
        let src = IpAddr::V6(v6_at(ip, 8));
        let dst = IpAddr::V6(v6_at(ip, 24));
        let next = ip[6];
        let l4 = &ip[IPV6_HDR_LEN..total];
        match next {
            IPPROTO_TCP | IPPROTO_UDP => {
                let Some((sport, dport, tcp_flags)) = ports(next, l4) else {
                    return self.addr_only(
                        frame,
                        dst,
                        stats::DROP_MALFORMED,
                        "truncated or malformed TCP/UDP header to a VIP address",
                    );
                };
                let flow = FlowKey::new(src, sport, dst, dport, next);
                self.client(ClientPacket { frame, l2, flow, ip_len: total, df: false, tcp_flags }, live)
            }
            IPPROTO_ICMPV6 => match icmp_kind_v6(ip, total, rules) {
                IcmpKind::Echo => self.echo(frame, l2, dst),
                IcmpKind::Error(flow) => self.icmp_error(frame, l2, flow, total, live),
                IcmpKind::Other => {
                    Expected::untouched(XDP_PASS, stats::PASS_NOT_VIP, frame, "ICMPv6 lb does not act on")
                }
            },
            IPPROTO_FRAGMENT => {
                self.addr_only(frame, dst, stats::DROP_FRAGMENT, "IPv6 fragment header to a VIP address")
            }
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                self.addr_only(frame, dst, stats::DROP_IPV6_EXT, "IPv6 extension header to a VIP address")
            }
            _ => Expected::untouched(XDP_PASS, stats::PASS_NOT_VIP, frame, "neither TCP, UDP nor ICMPv6"),
        }
    }

    /// Whether a VIP packet in this frame is for this host (its destination
    /// MAC is the interface's).
    fn for_this_host(&self, frame: &[u8]) -> bool {
        self.own_mac.is_none_or(|m| frame[0..6] == m)
    }

    /// The VIP's trace for `flow`, checked against the configuration.
    fn vip_trace(&self, flow: &FlowKey, live: &dyn LiveMaps) -> Option<(VipKey, &ModelVip, Trace)> {
        let key = VipKey { addr: flow.dst, port: flow.dport, proto: flow.proto, family: flow.family };
        let trace = live.trace(flow);
        let vip = self.vips.get(&key);
        assert_eq!(
            trace.is_some(),
            vip.is_some(),
            "the live VIPS map and the configuration disagree about {key:?} (model/harness error)"
        );
        Some((key, vip?, trace?))
    }

    /// A client's TCP/UDP packet.
    fn client(&self, p: ClientPacket, live: &dyn LiveMaps) -> Expected {
        let Some((key, vip, trace)) = self.vip_trace(&p.flow, live) else {
            return Expected::untouched(XDP_PASS, stats::PASS_NOT_VIP, p.frame, "not a VIP (address, port, protocol)");
        };
        if !self.for_this_host(p.frame) {
            return Expected::untouched(XDP_PASS, stats::PASS_OTHER_HOST, p.frame, "VIP packet for another MAC");
        }
        let syn = p.flow.proto == IPPROTO_TCP && p.tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK) == TCP_FLAG_SYN;
        // A SYN whose open entry already names the ring's backend keeps it:
        // no new flow, nothing recorded anew.
        let kept = syn
            && trace.conntrack_open
            && trace.ring_backend.is_some()
            && trace.conntrack_backend == trace.ring_backend;
        let (conntrack, backend, from_ring) = match (syn, trace.conntrack_backend) {
            (true, _) if kept => (stats::CONNTRACK_MISS, trace.ring_backend, false),
            (true, _) => (stats::CONNTRACK_MISS, trace.ring_backend, true),
            (false, Some(b)) => (stats::CONNTRACK_HIT, Some(b), false),
            (false, None) if trace.conntrack_stale => (stats::CONNTRACK_REPICK, trace.ring_backend, true),
            (false, None) => (stats::CONNTRACK_MISS, trace.ring_backend, true),
        };
        let base = Expected {
            vip: Some(key),
            conntrack: Some(conntrack),
            ..Expected::untouched(XDP_DROP, stats::DROP_NO_BACKEND, p.frame, "VIP with no backend")
        };
        let Some(backend) = backend else { return base };
        let base = Expected { new_flow: from_ring.then_some(backend), record: from_ring.then_some(p.flow), ..base };
        if vip.l2dsr {
            return Expected {
                verdict: XDP_TX,
                reason: stats::TX_L2DSR,
                output: l2dsr(p.frame, self.backend_mac(vip, backend)),
                rule: "VIP in l2dsr mode",
                backend: Some(backend),
                ..base
            };
        }
        let outer = if p.flow.family == lb_common::FAMILY_V4 { IPV4_HDR_LEN } else { IPV6_HDR_LEN };
        if self.mtu != 0 && p.ip_len + outer > self.mtu as usize {
            let drop = |rule| Expected { verdict: XDP_DROP, reason: stats::DROP_TOO_BIG, rule, ..base.clone() };
            if self.too_big_drop {
                return drop("larger than global.mtu once encapsulated, too_big = \"drop\"");
            }
            return match backend {
                IpAddr::V4(_) if !p.df => drop("larger than global.mtu once encapsulated, IPv4 without DF"),
                IpAddr::V4(_) => Expected {
                    verdict: XDP_TX,
                    reason: stats::TX_ICMP_TOO_BIG,
                    output: frag_needed(p.frame, p.l2, self.mtu - IPV4_HDR_LEN as u16),
                    rule: "larger than global.mtu once encapsulated, IPv4 with DF: fragmentation-needed",
                    ..base
                },
                IpAddr::V6(_) => Expected {
                    verdict: XDP_TX,
                    reason: stats::TX_ICMP_TOO_BIG,
                    output: packet_too_big(p.frame, p.l2, (self.mtu as u32 - IPV6_HDR_LEN as u32).max(IPV6_MIN_MTU)),
                    rule: "larger than global.mtu once encapsulated, IPv6: packet-too-big",
                    ..base
                },
            };
        }
        Expected {
            verdict: XDP_TX,
            reason: stats::TX_IPIP,
            output: self.encap(p.frame, p.l2, backend, &p.flow, true),
            rule: "VIP in ipip mode",
            backend: Some(backend),
            ..base
        }
    }

    /// An ICMP/ICMPv6 error about `flow` (the quoted packet turned around).
    fn icmp_error(&self, frame: &[u8], l2: usize, flow: FlowKey, ip_len: usize, live: &dyn LiveMaps) -> Expected {
        let Some((key, vip, trace)) = self.vip_trace(&flow, live) else {
            return Expected::untouched(
                XDP_PASS,
                stats::PASS_NOT_VIP,
                frame,
                "ICMP error about a flow that is no VIP's",
            );
        };
        if !self.for_this_host(frame) {
            return Expected::untouched(
                XDP_PASS,
                stats::PASS_OTHER_HOST,
                frame,
                "ICMP error about a VIP flow, for another MAC",
            );
        }
        let (conntrack, backend) = match trace.conntrack_backend {
            Some(b) => (stats::CONNTRACK_HIT, Some(b)),
            None if trace.conntrack_stale => (stats::CONNTRACK_REPICK, trace.ring_backend),
            None => (stats::CONNTRACK_MISS, trace.ring_backend),
        };
        let base = Expected {
            vip: Some(key),
            conntrack: Some(conntrack),
            icmp_error_flow: Some(flow),
            ..Expected::untouched(
                XDP_DROP,
                stats::DROP_NO_BACKEND,
                frame,
                "ICMP error about a flow of a VIP with no backend",
            )
        };
        let Some(backend) = backend else { return base };
        let sent = |reason, output, rule| Expected {
            verdict: XDP_TX,
            reason,
            output,
            rule,
            backend: Some(backend),
            icmp_error_forwarded: true,
            ..base.clone()
        };
        if vip.l2dsr {
            return sent(
                stats::TX_L2DSR,
                l2dsr(frame, self.backend_mac(vip, backend)),
                "ICMP error to the flow's backend, l2dsr",
            );
        }
        let outer = if flow.family == lb_common::FAMILY_V4 { IPV4_HDR_LEN } else { IPV6_HDR_LEN };
        if self.mtu != 0 && ip_len + outer > self.mtu as usize {
            // No ICMP about an ICMP error (RFC 1122 3.2.2): dropped.
            return Expected {
                reason: stats::DROP_TOO_BIG,
                rule: "ICMP error larger than global.mtu once encapsulated",
                ..base
            };
        }
        sent(stats::TX_IPIP, self.encap(frame, l2, backend, &flow, false), "ICMP error to the flow's backend, ipip")
    }

    /// An echo request: answered when its destination carries a VIP.
    fn echo(&self, frame: &[u8], l2: usize, dst: IpAddr) -> Expected {
        if !self.is_vip_addr(dst) {
            return Expected::untouched(XDP_PASS, stats::PASS_NOT_VIP, frame, "echo request to another address");
        }
        if !self.for_this_host(frame) {
            return Expected::untouched(XDP_PASS, stats::PASS_OTHER_HOST, frame, "echo request for another host's MAC");
        }
        Expected::sent(stats::TX_ICMP_ECHO_REPLY, echo_reply(frame, l2), "echo request to a VIP address")
    }

    fn backend_mac(&self, vip: &ModelVip, backend: IpAddr) -> Mac {
        *vip.macs.get(&backend).unwrap_or_else(|| panic!("no MAC configured for l2dsr backend {backend}"))
    }

    /// IP-in-IP of the packet at `l2` to `backend`. `client`: a client's own
    /// TCP/UDP packet (the reference functions parse it); otherwise an ICMP
    /// error, whose IPv6 flow label is the hash of the flow it is about.
    fn encap(&self, frame: &[u8], l2: usize, backend: IpAddr, flow: &FlowKey, client: bool) -> Vec<u8> {
        match backend {
            IpAddr::V4(b) => ipip_encap_v4(frame, l2, self.nexthop, self.tunnel_v4, b),
            IpAddr::V6(b) if client => ipip_encap_v6(frame, l2, self.nexthop, self.tunnel_v6, b),
            IpAddr::V6(b) => {
                let inner = &frame[l2..];
                let mut out = l2_header(frame, l2, self.nexthop, frame[0..6].try_into().unwrap(), ETH_P_IPV6);
                let tclass = ((be16(inner, 0) >> 4) & 0xff) as u32;
                let label = flow_hash(flow) & 0xf_ffff;
                out.extend_from_slice(&((6u32 << 28) | (tclass << 20) | label).to_be_bytes());
                out.extend_from_slice(&(be16(inner, 4) + IPV6_HDR_LEN as u16).to_be_bytes());
                out.extend_from_slice(&[IPPROTO_IPV6, ENCAP_TTL]);
                out.extend_from_slice(&self.tunnel_v6.octets());
                out.extend_from_slice(&b.octets());
                out.extend_from_slice(inner);
                out
            }
        }
    }
}

enum L2Error {
    Truncated,
    TooManyTags,
}

/// Length of the Ethernet header and VLAN tags, and the innermost ethertype.
fn walk_l2(frame: &[u8]) -> Result<(usize, u16), L2Error> {
    if frame.len() < ETH_HDR_LEN {
        return Err(L2Error::Truncated);
    }
    let mut l2 = ETH_HDR_LEN;
    let mut ethertype = be16(frame, 12);
    let mut tags = 0;
    while is_vlan(ethertype) {
        if tags == MAX_VLAN_TAGS {
            return Err(L2Error::TooManyTags);
        }
        if frame.len() < l2 + VLAN_HDR_LEN {
            return Err(L2Error::Truncated);
        }
        ethertype = be16(frame, l2 + 2);
        l2 += VLAN_HDR_LEN;
        tags += 1;
    }
    Ok((l2, ethertype))
}

/// (source port, destination port, TCP flags) if the L4 part (by the IP
/// length) holds the whole TCP/UDP header and, for TCP, its data offset is
/// 5 words or more and within that part.
fn ports(proto: u8, l4: &[u8]) -> Option<(u16, u16, u8)> {
    let need = if proto == IPPROTO_TCP { TCP_HDR_LEN } else { UDP_HDR_LEN };
    if l4.len() < need {
        return None;
    }
    // TCP: a data offset below 5 words or beyond the IP payload is malformed.
    if proto == IPPROTO_TCP && !(TCP_HDR_LEN..=l4.len()).contains(&(usize::from(l4[12] >> 4) * 4)) {
        return None;
    }
    let flags = if proto == IPPROTO_TCP { l4[13] } else { 0 };
    Some((be16(l4, 0), be16(l4, 2), flags))
}

/// The ICMP message of the IPv4 packet `ip` (header without options) whose
/// total length is `total`.
fn icmp_kind_v4(ip: &[u8], total: usize, rules: Rules) -> IcmpKind {
    let end = if rules.icmp_within_ip_length { total } else { ip.len() };
    let msg = &ip[IPV4_HDR_LEN..end];
    if msg.len() < 8 {
        return IcmpKind::Other;
    }
    match msg[0] {
        ICMP_ECHO_REQUEST => IcmpKind::Echo,
        ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED => {
            let quoted = &msg[8..];
            if quoted.len() < IPV4_HDR_LEN + 4
                || quoted[0] != 0x45
                || (quoted[9] != IPPROTO_TCP && quoted[9] != IPPROTO_UDP)
            {
                return IcmpKind::Other;
            }
            // The quoted packet went from the VIP to the client.
            let (vip, client) = (v4_at(quoted, 12), v4_at(quoted, 16));
            let (vport, cport) = (be16(quoted, 20), be16(quoted, 22));
            IcmpKind::Error(FlowKey::new(client.into(), cport, vip.into(), vport, quoted[9]))
        }
        _ => IcmpKind::Other,
    }
}

/// The ICMPv6 message of the IPv6 packet `ip` (no extension header) whose
/// length (40 + payload length) is `total`.
fn icmp_kind_v6(ip: &[u8], total: usize, rules: Rules) -> IcmpKind {
    let end = if rules.icmp_within_ip_length { total } else { ip.len() };
    let msg = &ip[IPV6_HDR_LEN..end];
    if msg.len() < 8 {
        return IcmpKind::Other;
    }
    match msg[0] {
        ICMPV6_ECHO_REQUEST => IcmpKind::Echo,
        ICMPV6_DEST_UNREACH | ICMPV6_PKT_TOO_BIG | ICMPV6_TIME_EXCEEDED => {
            let quoted = &msg[8..];
            if quoted.len() < IPV6_HDR_LEN + 4
                || (rules.icmpv6_quoted_version && quoted[0] >> 4 != 6)
                || (quoted[6] != IPPROTO_TCP && quoted[6] != IPPROTO_UDP)
            {
                return IcmpKind::Other;
            }
            let (vip, client) = (v6_at(quoted, 8), v6_at(quoted, 24));
            let (vport, cport) = (be16(quoted, 40), be16(quoted, 42));
            IcmpKind::Error(FlowKey::new(client.into(), cport, vip.into(), vport, quoted[6]))
        }
        _ => IcmpKind::Other,
    }
}

/// Ethernet + VLAN tags of an output frame: `dst`, `src`, the input's tags,
/// `ethertype` innermost.
fn l2_header(frame: &[u8], l2: usize, dst: Mac, src: Mac, ethertype: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(frame.len() + IPV6_HDR_LEN);
    out.extend_from_slice(&dst);
    out.extend_from_slice(&src);
    out.extend_from_slice(&frame[12..l2 - 2]);
    out.extend_from_slice(&ethertype.to_be_bytes());
    out
}

/// MACs swapped: the answer goes back to whoever sent the frame.
fn reply_l2(frame: &[u8], l2: usize) -> Vec<u8> {
    let ethertype = be16(frame, l2 - 2);
    l2_header(frame, l2, frame[6..12].try_into().unwrap(), frame[0..6].try_into().unwrap(), ethertype)
}

/// RFC 1624 (eqn. 3) update of a checksum for one 16-bit word `old` -> `new`.
fn csum_update(csum: u16, old: u16, new: u16) -> u16 {
    let mut sum = (!csum as u32) + (!old as u32) + new as u32;
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// lb's answer to an echo request (IPv4 header without options, or IPv6
/// without extension headers, at `l2`): MACs and addresses swapped, TTL /
/// hop limit `ENCAP_TTL`, IPv4 header checksum recomputed, type turned into
/// a reply with the ICMP checksum updated incrementally (RFC 1624), the rest
/// of the frame (payload, padding) unchanged.
pub fn echo_reply(frame: &[u8], l2: usize) -> Vec<u8> {
    let mut out = reply_l2(frame, l2);
    out.extend_from_slice(&frame[l2..]);
    let ip = l2;
    let (icmp, request, reply) = if frame[ip] >> 4 == 4 {
        out.copy_within(ip + 12..ip + 16, ip + 16);
        out[ip + 12..ip + 16].copy_from_slice(&frame[ip + 16..ip + 20]);
        out[ip + 8] = ENCAP_TTL;
        out[ip + 10..ip + 12].copy_from_slice(&[0, 0]);
        let c = internet_checksum(&out[ip..ip + IPV4_HDR_LEN], 0);
        out[ip + 10..ip + 12].copy_from_slice(&c.to_be_bytes());
        (ip + IPV4_HDR_LEN, ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY)
    } else {
        out[ip + 8..ip + 24].copy_from_slice(&frame[ip + 24..ip + 40]);
        out[ip + 24..ip + 40].copy_from_slice(&frame[ip + 8..ip + 24]);
        out[ip + 7] = ENCAP_TTL;
        (ip + IPV6_HDR_LEN, ICMPV6_ECHO_REQUEST, ICMPV6_ECHO_REPLY)
    };
    let code = out[icmp + 1] as u16;
    out[icmp] = reply;
    let csum = csum_update(be16(&out, icmp + 2), (request as u16) << 8 | code, (reply as u16) << 8 | code);
    out[icmp + 2..icmp + 4].copy_from_slice(&csum.to_be_bytes());
    out
}

/// lb's fragmentation-needed answer to the IPv4 packet at `l2` (no options),
/// advertising `mtu`: 56 bytes of IP, from its destination to its source,
/// quoting its first 28 bytes.
pub fn frag_needed(frame: &[u8], l2: usize, mtu: u16) -> Vec<u8> {
    let ip = &frame[l2..];
    let mut out = reply_l2(frame, l2);
    let mut hdr = vec![0x45, 0, 0, 56, 0, 0, 0, 0, ENCAP_TTL, IPPROTO_ICMP, 0, 0];
    hdr.extend_from_slice(&ip[16..20]);
    hdr.extend_from_slice(&ip[12..16]);
    let c = internet_checksum(&hdr, 0);
    hdr[10..12].copy_from_slice(&c.to_be_bytes());
    let mut icmp = vec![ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, 0, 0, 0, 0];
    icmp.extend_from_slice(&mtu.to_be_bytes());
    icmp.extend_from_slice(&ip[..IPV4_HDR_LEN + 8]);
    let c = internet_checksum(&icmp, 0);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    out.extend(hdr);
    out.extend(icmp);
    out
}

/// lb's packet-too-big answer to the IPv6 packet at `l2`, advertising `mtu`:
/// 96 bytes of IP, quoting its first 48 bytes.
pub fn packet_too_big(frame: &[u8], l2: usize, mtu: u32) -> Vec<u8> {
    let ip = &frame[l2..];
    let (src, dst) = (&ip[8..24], &ip[24..40]);
    let mut out = reply_l2(frame, l2);
    out.extend_from_slice(&[0x60, 0, 0, 0, 0, 56, IPPROTO_ICMPV6, ENCAP_TTL]);
    out.extend_from_slice(dst);
    out.extend_from_slice(src);
    let mut icmp = vec![ICMPV6_PKT_TOO_BIG, 0, 0, 0];
    icmp.extend_from_slice(&mtu.to_be_bytes());
    icmp.extend_from_slice(&ip[..IPV6_HDR_LEN + 8]);
    let mut pseudo = dst.to_vec();
    pseudo.extend_from_slice(src);
    pseudo.extend_from_slice(&[0, 0, 0, 56, 0, 0, 0, IPPROTO_ICMPV6]);
    pseudo.extend_from_slice(&icmp);
    let c = internet_checksum(&pseudo, 0);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    out.extend(icmp);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::Packet;

    /// Live maps of a test: one VIP with a fixed ring backend, no table entries.
    struct Fixed(Option<IpAddr>);

    impl LiveMaps for Fixed {
        fn trace(&self, flow: &FlowKey) -> Option<Trace> {
            let vip: IpAddr = "198.18.100.1".parse().unwrap();
            (flow.dst == lb_common::types::addr_words(vip) && flow.dport == 80u16.to_be()).then_some(Trace {
                algorithm: Default::default(),
                vip_slot: 0,
                ring_size: 7,
                ring_generation: 0,
                hash: 0,
                entry: 0,
                ring_backend: self.0,
                conntrack_backend: None,
                conntrack_stale: false,
                conntrack_open: false,
            })
        }
    }

    fn model() -> Model {
        let cfg = Config::from_toml_str(
            r#"
[global]
nexthop_mac = "02:00:00:00:00:fe"
tunnel_source_v4 = "198.18.0.2"
tunnel_source_v6 = "2001:db8::2"
mtu = 1500
[[vip]]
address = "198.18.100.1"
port = 80
protocol = "tcp"
ring_size = 7
  [[vip.backend]]
  address = "198.18.0.11"
"#,
        )
        .unwrap();
        Model::new(&cfg)
    }

    #[test]
    fn rfc1624_update_equals_a_full_recomputation() {
        let req = Packet::new().ipv4("198.18.1.1".parse().unwrap(), "198.18.100.1".parse().unwrap()).icmp_echo(7, 1);
        let frame = req.payload(b"abc").build();
        let out = echo_reply(&frame, 14);
        assert_eq!(internet_checksum(&out[34..], 0), 0, "ICMP checksum of the reply");
        assert_eq!(internet_checksum(&out[14..34], 0), 0, "IPv4 header checksum of the reply");
    }

    #[test]
    fn decisions_follow_the_readme_table() {
        let m = model();
        let live = Fixed(Some("198.18.0.11".parse().unwrap()));
        let c: Ipv4Addr = "198.18.1.1".parse().unwrap();
        let vip: Ipv4Addr = "198.18.100.1".parse().unwrap();
        let syn = Packet::new().ipv4(c, vip).df().tcp(1000, 80).syn().build();
        let e = m.predict(&syn, &live);
        assert_eq!((e.verdict, e.reason, e.conntrack), (XDP_TX, stats::TX_IPIP, Some(stats::CONNTRACK_MISS)));
        assert!(e.record.is_some());
        let frag = Packet::new().ipv4(c, vip).mf().tcp(1000, 80).build();
        assert_eq!(m.predict(&frag, &live).reason, stats::DROP_FRAGMENT);
        let big = Packet::new().ipv4(c, vip).df().tcp(1000, 80).ack().payload(&[0; 1441]).build();
        assert_eq!(m.predict(&big, &live).reason, stats::TX_ICMP_TOO_BIG);
        let e = m.predict(&big, &Fixed(None));
        assert_eq!((e.verdict, e.reason), (XDP_DROP, stats::DROP_NO_BACKEND));
        let three = Packet::new().dot1q(1).dot1q(2).dot1q(3).ipv4(c, vip).tcp(1, 80).build();
        assert_eq!(m.predict(&three, &live).reason, stats::PASS_VLAN_DEPTH);
        // An echo request whose ICMP header is only in the Ethernet trailer.
        let mut short = Packet::new().ipv4(c, vip).l4_raw(IPPROTO_ICMP, &[]).build();
        short.extend_from_slice(&[8, 0, 0xf7, 0xff, 0, 0, 0, 0]);
        let e = m.predict(&short, &live);
        assert_eq!(e.reason, stats::PASS_NOT_VIP);
        let (dev, product) = e.product.expect("a known deviation");
        assert_eq!((dev, product.reason), (Deviation::IcmpBeyondIpLength, stats::TX_ICMP_ECHO_REPLY));
    }

    #[test]
    fn vip_packets_for_another_mac_are_passed() {
        let mut m = model();
        m.own_mac = Some(crate::packet::DEFAULT_DST_MAC);
        let live = Fixed(Some("198.18.0.11".parse().unwrap()));
        let (c, vip): (Ipv4Addr, Ipv4Addr) = ("198.18.1.1".parse().unwrap(), "198.18.100.1".parse().unwrap());
        let ours = Packet::new().ipv4(c, vip).tcp(1000, 80).syn();
        assert_eq!(m.predict(&ours.build(), &live).reason, stats::TX_IPIP);
        let other = ours.macs([2, 0, 0, 0, 0, 0x99], crate::packet::DEFAULT_SRC_MAC).build();
        let e = m.predict(&other, &live);
        assert_eq!((e.verdict, e.reason, e.vip), (XDP_PASS, stats::PASS_OTHER_HOST, None));
    }
}
