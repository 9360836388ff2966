//! VIP packets: the backend from the live maps, then encapsulation, L2 DSR, a too-big answer or an echo reply.

use std::net::IpAddr;

use lb::dataplane::Trace;
use lb_common::hash::flow_hash;
use lb_common::net::{ETH_P_IPV6, IPPROTO_IPV6, IPPROTO_TCP, IPV4_HDR_LEN, IPV6_HDR_LEN, TCP_FLAG_ACK, TCP_FLAG_SYN};
use lb_common::{ENCAP_TTL, FlowKey, VipKey, stats};

use super::answers::{echo_reply, frag_needed, l2_header, packet_too_big};
use super::parse::{ClientPacket, be16};
use super::{Expected, IPV6_MIN_MTU, LiveMaps, Model, ModelVip, XDP_DROP, XDP_PASS, XDP_TX};
use crate::packet::{Mac, ipip_encap_v4, ipip_encap_v6, l2dsr};

impl Model {
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
    pub(super) fn client(&self, p: ClientPacket, live: &dyn LiveMaps) -> Expected {
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
    pub(super) fn icmp_error(
        &self,
        frame: &[u8],
        l2: usize,
        flow: FlowKey,
        ip_len: usize,
        live: &dyn LiveMaps,
    ) -> Expected {
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
    pub(super) fn echo(&self, frame: &[u8], l2: usize, dst: IpAddr) -> Expected {
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
