//! What lb outputs for a given input: the reference transformations the
//! fixtures compare the kernel's bytes with.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_common::net::{ETH_P_IP, ETH_P_IPV6, IPPROTO_IPIP, IPPROTO_IPV6, IPV4_DF, IPV4_HDR_LEN, IPV6_HDR_LEN};
use lb_common::{ENCAP_TTL, hash::flow_hash};

use super::*;

/// Ethernet + VLAN part of an output frame: new MACs, the input's tags kept,
/// the innermost ethertype replaced.
pub(crate) fn rewrite_l2(frame_in: &[u8], l2_len: usize, dst: Mac, src: &[u8], ethertype: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(frame_in.len() + IPV6_HDR_LEN);
    out.extend_from_slice(&dst);
    out.extend_from_slice(&src[..6]);
    out.extend_from_slice(&frame_in[12..l2_len - 2]);
    out.extend_from_slice(&ethertype.to_be_bytes());
    out
}

/// lb's IPv4-in-IPv4 output for `frame_in` (IP packet at `l2_len`).
///
/// Ethernet dst = `nexthop_mac`, src = the input's destination MAC, VLAN tags
/// kept, ethertype 0x0800; outer IPv4: 0x45, TOS = inner TOS, total length =
/// inner total length + 20, id 0, DF iff the inner has DF, offset 0, TTL
/// `ENCAP_TTL`, protocol 4, valid checksum, `tunnel_src` -> `backend`; then the
/// rest of the input frame (inner packet and trailing bytes) unchanged.
pub fn ipip_encap_v4(
    frame_in: &[u8],
    l2_len: usize,
    nexthop_mac: Mac,
    tunnel_src: Ipv4Addr,
    backend: Ipv4Addr,
) -> Vec<u8> {
    let inner = &frame_in[l2_len..];
    let mut out = rewrite_l2(frame_in, l2_len, nexthop_mac, &frame_in[0..6], ETH_P_IP);
    let inner_total = u16::from_be_bytes([inner[2], inner[3]]);
    let inner_frag = u16::from_be_bytes([inner[6], inner[7]]);
    let mut h = [0u8; IPV4_HDR_LEN];
    h[0] = 0x45;
    h[1] = inner[1];
    h[2..4].copy_from_slice(&(inner_total + IPV4_HDR_LEN as u16).to_be_bytes());
    // id 0
    h[6..8].copy_from_slice(&(inner_frag & IPV4_DF).to_be_bytes());
    h[8] = ENCAP_TTL;
    h[9] = IPPROTO_IPIP;
    h[12..16].copy_from_slice(&tunnel_src.octets());
    h[16..20].copy_from_slice(&backend.octets());
    let c = internet_checksum(&h, 0);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(inner);
    out
}

/// lb's IPv6-in-IPv6 output: outer version 6, traffic class = inner traffic
/// class, flow label = `flow_hash(inner 5-tuple) & 0xfffff`, payload length =
/// inner payload length + 40, next header 41, hop limit `ENCAP_TTL`,
/// `tunnel_src` -> `backend`; MACs/VLANs as for [`ipip_encap_v4`].
/// The inner packet must be TCP/UDP without extension headers.
pub fn ipip_encap_v6(
    frame_in: &[u8],
    l2_len: usize,
    nexthop_mac: Mac,
    tunnel_src: Ipv6Addr,
    backend: Ipv6Addr,
) -> Vec<u8> {
    let inner = &frame_in[l2_len..];
    let view = IpView::parse(inner).expect("ipip_encap_v6: inner packet does not parse");
    let flow = view.flow_key().expect("ipip_encap_v6: inner packet is not TCP/UDP");
    let mut out = rewrite_l2(frame_in, l2_len, nexthop_mac, &frame_in[0..6], ETH_P_IPV6);
    let inner_plen = u16::from_be_bytes([inner[4], inner[5]]);
    let tc = u32::from(view.tos);
    let label = flow_hash(&flow) & 0xfffff;
    let mut h = [0u8; IPV6_HDR_LEN];
    h[0..4].copy_from_slice(&((6u32 << 28) | (tc << 20) | label).to_be_bytes());
    h[4..6].copy_from_slice(&(inner_plen + IPV6_HDR_LEN as u16).to_be_bytes());
    h[6] = IPPROTO_IPV6;
    h[7] = ENCAP_TTL;
    h[8..24].copy_from_slice(&tunnel_src.octets());
    h[24..40].copy_from_slice(&backend.octets());
    out.extend_from_slice(&h);
    out.extend_from_slice(inner);
    out
}

/// lb's encapsulated output for either family (backend family = inner family).
pub fn ipip_encap(
    frame_in: &[u8],
    l2_len: usize,
    nexthop_mac: Mac,
    tunnel_src_v4: Ipv4Addr,
    tunnel_src_v6: Ipv6Addr,
    backend: IpAddr,
) -> Vec<u8> {
    match backend {
        IpAddr::V4(b) => ipip_encap_v4(frame_in, l2_len, nexthop_mac, tunnel_src_v4, b),
        IpAddr::V6(b) => ipip_encap_v6(frame_in, l2_len, nexthop_mac, tunnel_src_v6, b),
    }
}

/// lb's L2 direct-server-return output: dst MAC = backend MAC, src MAC = the
/// input's dst MAC, everything else unchanged.
pub fn l2dsr(frame_in: &[u8], backend_mac: Mac) -> Vec<u8> {
    let mut out = frame_in.to_vec();
    out[0..6].copy_from_slice(&backend_mac);
    out[6..12].copy_from_slice(&frame_in[0..6]);
    out
}

/// What `lb_decap` outputs for a tunnel frame: the same MACs and VLAN tags,
/// the innermost ethertype set to the inner family's, then everything after
/// the outer IP header (inner packet and trailing bytes). The outer header
/// must be IPv4 (no options) or IPv6 without extension headers.
pub fn ipip_decap(frame_in: &[u8], l2_len: usize) -> Vec<u8> {
    let outer_len = match frame_in[l2_len] >> 4 {
        4 => usize::from(frame_in[l2_len] & 0x0f) * 4,
        6 => IPV6_HDR_LEN,
        v => panic!("ipip_decap: outer IP version {v}"),
    };
    let inner = &frame_in[l2_len + outer_len..];
    let ethertype = if inner[0] >> 4 == 6 { ETH_P_IPV6 } else { ETH_P_IP };
    let mut out = rewrite_l2(frame_in, l2_len, frame_in[0..6].try_into().unwrap(), &frame_in[6..12], ethertype);
    out.extend_from_slice(inner);
    out
}
