//! Reading a frame as the data path does: VLAN tags, ports, ICMP messages, and ICMP read by the spec or the program.

use std::net::{Ipv4Addr, Ipv6Addr};

use lb_common::net::icmp::*;
use lb_common::net::{
    ETH_HDR_LEN, ETH_P_8021AD, ETH_P_8021Q, IPPROTO_TCP, IPPROTO_UDP, IPV4_HDR_LEN, IPV6_HDR_LEN, TCP_HDR_LEN,
    UDP_HDR_LEN, VLAN_HDR_LEN,
};
use lb_common::{FlowKey, MAX_VLAN_TAGS};

/// How the model reads ICMP: as the spec says, or as the program does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Rules {
    /// Bound ICMP reads by the IP packet's length (spec) or the frame's.
    pub(super) icmp_within_ip_length: bool,
    /// Require version 6 in a header quoted by an ICMPv6 error.
    pub(super) icmpv6_quoted_version: bool,
}

pub(super) const SPEC: Rules = Rules { icmp_within_ip_length: true, icmpv6_quoted_version: true };
/// The program's reading (see [`Deviation`](super::Deviation)).
pub(super) const PRODUCT: Rules = Rules { icmp_within_ip_length: false, icmpv6_quoted_version: false };

/// What an ICMP message is to lb.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum IcmpKind {
    Echo,
    /// An error about this flow (as the client sends it).
    Error(FlowKey),
    /// Anything else: not lb's.
    Other,
}

/// The fields of a client's TCP/UDP packet the decision needs.
pub(super) struct ClientPacket<'a> {
    pub(super) frame: &'a [u8],
    pub(super) l2: usize,
    pub(super) flow: FlowKey,
    /// IP packet length by its header (IPv6: 40 + payload length).
    pub(super) ip_len: usize,
    pub(super) df: bool,
    pub(super) tcp_flags: u8,
}

pub(super) fn be16(b: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([b[off], b[off + 1]])
}

pub(super) fn v4_at(b: &[u8], off: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[off], b[off + 1], b[off + 2], b[off + 3])
}

pub(super) fn v6_at(b: &[u8], off: usize) -> Ipv6Addr {
    Ipv6Addr::from(<[u8; 16]>::try_from(&b[off..off + 16]).unwrap())
}

fn is_vlan(ethertype: u16) -> bool {
    ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD
}

pub(super) enum L2Error {
    Truncated,
    TooManyTags,
}

/// Length of the Ethernet header and VLAN tags, and the innermost ethertype.
pub(super) fn walk_l2(frame: &[u8]) -> Result<(usize, u16), L2Error> {
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
pub(super) fn ports(proto: u8, l4: &[u8]) -> Option<(u16, u16, u8)> {
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
pub(super) fn icmp_kind_v4(ip: &[u8], total: usize, rules: Rules) -> IcmpKind {
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
pub(super) fn icmp_kind_v6(ip: &[u8], total: usize, rules: Rules) -> IcmpKind {
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
