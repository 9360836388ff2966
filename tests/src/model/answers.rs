//! The frames lb writes itself: echo replies, fragmentation-needed and packet-too-big, and their Ethernet headers.

use lb_common::ENCAP_TTL;
use lb_common::net::icmp::*;
use lb_common::net::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPV4_HDR_LEN, IPV6_HDR_LEN};

use super::parse::be16;
use crate::packet::{Mac, internet_checksum};

/// IPv6's minimum MTU: a packet-too-big never advertises less (RFC 8200).
pub const IPV6_MIN_MTU: u32 = 1280;

/// Ethernet + VLAN tags of an output frame: `dst`, `src`, the input's tags,
/// `ethertype` innermost.
pub(super) fn l2_header(frame: &[u8], l2: usize, dst: Mac, src: Mac, ethertype: u16) -> Vec<u8> {
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
