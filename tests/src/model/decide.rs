//! The decision for one frame: Ethernet and VLAN tags, then IPv4 or IPv6, down to the packet kind lb acts on.

use std::net::IpAddr;

use lb_common::net::{
    ETH_P_IP, ETH_P_IPV6, IPPROTO_DSTOPTS, IPPROTO_FRAGMENT, IPPROTO_HOPOPTS, IPPROTO_ICMP, IPPROTO_ICMPV6,
    IPPROTO_ROUTING, IPPROTO_TCP, IPPROTO_UDP, IPV4_DF, IPV4_HDR_LEN, IPV4_MF, IPV4_OFFSET_MASK, IPV6_HDR_LEN,
};
use lb_common::{FlowKey, stats};

use super::parse::{
    ClientPacket, IcmpKind, L2Error, PRODUCT, Rules, SPEC, be16, icmp_kind_v4, icmp_kind_v6, ports, v4_at, v6_at,
    walk_l2,
};
use super::{Deviation, Expected, LiveMaps, Model, XDP_DROP, XDP_PASS};

impl Model {
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
}
