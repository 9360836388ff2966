//! Header parsing: Ethernet with VLAN tags, IPv4, IPv6, TCP and UDP. Returns
//! what the balancer needs to decide, without touching any map.

use aya_ebpf::programs::XdpContext;
use lb_common::{FAMILY_V4, FAMILY_V6, FlowKey, MAX_VLAN_TAGS, net::*, stats, types::AddrWords};

use crate::{
    bounds::{frame_len, ptr_at},
    headers::{EthHdr, Ipv4Hdr, Ipv6Hdr, TcpHdrStart, UdpHdr, VlanHdr, w32, w128},
};

/// The link-layer header: its length (Ethernet + tags) and the ethertype
/// inside the last tag, in host order.
#[derive(Clone, Copy)]
pub struct L2 {
    pub len: usize,
    pub proto: u16,
}

pub enum L2Result {
    Ok(L2),
    Truncated,
    TooManyTags,
}

#[inline(always)]
fn is_vlan(proto: u16) -> bool {
    proto == ETH_P_8021Q || proto == ETH_P_8021AD
}

/// Walks Ethernet and up to `MAX_VLAN_TAGS` VLAN tags.
#[inline(always)]
pub fn parse_l2(ctx: &XdpContext) -> L2Result {
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return L2Result::Truncated;
    };
    let mut proto = u16::from_be(unsafe { (*eth).proto });
    let mut len = ETH_HDR_LEN;
    for _ in 0..MAX_VLAN_TAGS {
        if !is_vlan(proto) {
            break;
        }
        let Some(tag) = ptr_at::<VlanHdr>(ctx, len) else {
            return L2Result::Truncated;
        };
        proto = u16::from_be(unsafe { (*tag).proto });
        len += VLAN_HDR_LEN;
    }
    if is_vlan(proto) {
        return L2Result::TooManyTags;
    }
    L2Result::Ok(L2 { len, proto })
}

/// A TCP or UDP packet that may be for a VIP.
pub struct Packet {
    pub l2: L2,
    pub flow: FlowKey,
    pub tcp_flags: u8,
    /// Length of the whole IP packet (header included) per its header,
    /// which excludes any Ethernet padding after it.
    pub ip_len: u32,
    /// IPv4 TOS or IPv6 traffic class, copied to the outer header.
    pub tos: u8,
    /// IPv4 don't-fragment bit, copied to the outer header.
    pub df: bool,
}

pub enum Parsed {
    /// Not IPv4/IPv6: `stats::PASS_NON_IP`.
    NotIp,
    /// Deeper VLAN stack than we walk: `stats::PASS_VLAN_DEPTH`.
    TooManyTags,
    /// Broken L2/L3 header: nothing can be for us, drop.
    Malformed,
    /// Only the destination address is known (fragment, options, extension
    /// header, truncated L4): drop with `reason` if the address carries a
    /// VIP, pass otherwise.
    AddrOnly {
        addr: AddrWords,
        family: u8,
        reason: u32,
    },
    /// IP, but neither TCP nor UDP: `stats::PASS_NOT_VIP`.
    OtherProto,
    Flow(Packet),
    /// An ICMP echo request, or an ICMP error about a TCP/UDP flow.
    Icmp(Icmp),
}

/// An ICMP / ICMPv6 message lb may act on.
pub struct Icmp {
    /// The message as a packet: `flow` is the flow an error is about, as
    /// the client sends it (for an echo request: the request's addresses).
    pub pkt: Packet,
    pub echo_request: bool,
    /// Offset of the ICMP header.
    pub l4: usize,
}

#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Parsed {
    let l2 = match parse_l2(ctx) {
        L2Result::Ok(l2) => l2,
        L2Result::Truncated => return Parsed::Malformed,
        L2Result::TooManyTags => return Parsed::TooManyTags,
    };
    match l2.proto {
        ETH_P_IP => parse_ipv4(ctx, l2),
        ETH_P_IPV6 => parse_ipv6(ctx, l2),
        _ => Parsed::NotIp,
    }
}

#[inline(always)]
fn parse_ipv4(ctx: &XdpContext, l2: L2) -> Parsed {
    let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, l2.len) else {
        return Parsed::Malformed;
    };
    let ip = unsafe { *ip };
    let ihl = (ip.ver_ihl & 0x0f) as usize;
    if ip.ver_ihl >> 4 != 4 || ihl < 5 {
        return Parsed::Malformed;
    }
    let ip_len = u16::from_be(ip.tot_len) as usize;
    if ip_len < ihl * 4 || l2.len + ip_len > frame_len(ctx) {
        return Parsed::Malformed;
    }
    let addr = [w32(ip.daddr), 0, 0, 0];
    let frag = u16::from_be(ip.frag_off);
    if frag & (IPV4_MF | IPV4_OFFSET_MASK) != 0 {
        return Parsed::AddrOnly { addr, family: FAMILY_V4, reason: stats::DROP_FRAGMENT };
    }
    if ihl != 5 {
        return Parsed::AddrOnly { addr, family: FAMILY_V4, reason: stats::DROP_IP_OPTIONS };
    }
    if ip.proto == IPPROTO_ICMP {
        let pkt = Packet {
            l2,
            flow: FlowKey { src: [w32(ip.saddr), 0, 0, 0], dst: addr, family: FAMILY_V4, ..FlowKey::default() },
            tcp_flags: 0,
            ip_len: ip_len as u32,
            tos: ip.tos,
            df: frag & IPV4_DF != 0,
        };
        return crate::icmp::parse_v4(ctx, pkt, l2.len + IPV4_HDR_LEN);
    }
    if ip.proto != IPPROTO_TCP && ip.proto != IPPROTO_UDP {
        return Parsed::OtherProto;
    }
    let mut flow = FlowKey { src: [w32(ip.saddr), 0, 0, 0], dst: addr, family: FAMILY_V4, ..FlowKey::default() };
    let l4_room = ip_len - IPV4_HDR_LEN;
    parse_l4(ctx, l2, l2.len + IPV4_HDR_LEN, l4_room, ip.proto, &mut flow, ip_len, ip.tos, frag & IPV4_DF != 0)
}

#[inline(always)]
fn parse_ipv6(ctx: &XdpContext, l2: L2) -> Parsed {
    let Some(ip) = ptr_at::<Ipv6Hdr>(ctx, l2.len) else {
        return Parsed::Malformed;
    };
    let ip = unsafe { *ip };
    if ip.vtc_flow[0] >> 4 != 6 {
        return Parsed::Malformed;
    }
    let payload = u16::from_be(ip.payload_len) as usize;
    if l2.len + IPV6_HDR_LEN + payload > frame_len(ctx) {
        return Parsed::Malformed;
    }
    let addr = w128(ip.daddr);
    let tclass = (ip.vtc_flow[0] << 4) | (ip.vtc_flow[1] >> 4);
    match ip.nexthdr {
        IPPROTO_TCP | IPPROTO_UDP => {}
        IPPROTO_ICMPV6 => {
            let pkt = Packet {
                l2,
                flow: FlowKey { src: w128(ip.saddr), dst: addr, family: FAMILY_V6, ..FlowKey::default() },
                tcp_flags: 0,
                ip_len: (IPV6_HDR_LEN + payload) as u32,
                tos: tclass,
                df: false,
            };
            return crate::icmp::parse_v6(ctx, pkt, l2.len + IPV6_HDR_LEN);
        }
        IPPROTO_FRAGMENT => {
            return Parsed::AddrOnly { addr, family: FAMILY_V6, reason: stats::DROP_FRAGMENT };
        }
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
            return Parsed::AddrOnly { addr, family: FAMILY_V6, reason: stats::DROP_IPV6_EXT };
        }
        _ => return Parsed::OtherProto,
    }
    let mut flow = FlowKey { src: w128(ip.saddr), dst: addr, family: FAMILY_V6, ..FlowKey::default() };
    parse_l4(ctx, l2, l2.len + IPV6_HDR_LEN, payload, ip.nexthdr, &mut flow, IPV6_HDR_LEN + payload, tclass, false)
}

/// Reads the ports (and TCP flags) at `off`; `room` is what the IP header
/// says the L4 part holds.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn parse_l4(
    ctx: &XdpContext,
    l2: L2,
    off: usize,
    room: usize,
    proto: u8,
    flow: &mut FlowKey,
    ip_len: usize,
    tos: u8,
    df: bool,
) -> Parsed {
    let truncated = Parsed::AddrOnly { addr: flow.dst, family: flow.family, reason: stats::DROP_MALFORMED };
    let mut tcp_flags = 0;
    if proto == IPPROTO_TCP {
        let Some(tcp) = ptr_at::<TcpHdrStart>(ctx, off) else { return truncated };
        let tcp = unsafe { *tcp };
        // A data offset below 5 words, or a header longer than the IP
        // payload, is a malformed header no TCP stack accepts (RFC 9293
        // 3.1): dropped like a truncated one, not sent to a backend.
        let hdr_len = usize::from(tcp.doff >> 4) * 4;
        if room < TCP_HDR_LEN || hdr_len < TCP_HDR_LEN || hdr_len > room {
            return truncated;
        }
        flow.sport = tcp.sport;
        flow.dport = tcp.dport;
        tcp_flags = tcp.flags;
    } else {
        let Some(udp) = ptr_at::<UdpHdr>(ctx, off) else { return truncated };
        if room < UDP_HDR_LEN {
            return truncated;
        }
        let udp = unsafe { *udp };
        flow.sport = udp.sport;
        flow.dport = udp.dport;
    }
    flow.proto = proto;
    Parsed::Flow(Packet { l2, flow: *flow, tcp_flags, ip_len: ip_len as u32, tos, df })
}
