//! ICMP and ICMPv6: what lb reads (echo requests to a VIP, errors about a
//! VIP flow) and what it writes itself (echo replies, and
//! fragmentation-needed / packet-too-big when encapsulation would exceed the
//! path MTU, so the client's path MTU discovery works through the tunnel).

use aya_ebpf::{helpers::bpf_xdp_adjust_tail, programs::XdpContext};
use lb_common::{
    ENCAP_TTL, FAMILY_V4, FAMILY_V6,
    net::{
        IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, IPV4_HDR_LEN, IPV6_HDR_LEN, csum_fold, ipv4_header_csum,
    },
};

use crate::{
    bounds::{MAX_L2_LEN, MAX_L4_OFFSET, bounded, copy_in, copy_out, csum_frame, frame_len, load},
    encap::SavedL2,
    headers::{Ipv4Hdr, Ipv6Hdr, to_w32, to_w128, w32, w128},
    parse::{Icmp, Packet, Parsed},
};

use lb_common::net::icmp::*;

/// ICMP header: type, code, checksum, and 4 bytes that depend on the type.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct IcmpHdr {
    pub kind: u8,
    pub code: u8,
    pub csum: u16,
    pub rest: [u8; 4],
}

/// The first bytes of the L4 header quoted in an ICMP error: the ports.
#[repr(C)]
#[derive(Clone, Copy)]
struct Ports {
    sport: u16,
    dport: u16,
}

/// An echo request, or an error quoting a TCP/UDP packet that a VIP sent:
/// the flow is the quoted packet's, turned around to the client's side.
#[inline(always)]
pub fn parse_v4(ctx: &XdpContext, mut pkt: Packet, l4: usize) -> Parsed {
    // Bounded by the IP packet, not just the frame: Ethernet padding is not
    // ICMP. (Checked after each load: done before, it lets LLVM drop the
    // frame check the verifier needs.)
    let ip_end = pkt.l2.len + pkt.ip_len as usize;
    let Some(icmp) = load::<IcmpHdr>(ctx, l4) else { return Parsed::OtherProto };
    if l4 + 8 > ip_end {
        return Parsed::OtherProto;
    }
    let kind = icmp.kind;
    if kind == ICMP_ECHO_REQUEST {
        pkt.flow.proto = IPPROTO_ICMP;
        return Parsed::Icmp(Icmp { pkt, echo_request: true, l4 });
    }
    if kind != ICMP_DEST_UNREACH && kind != ICMP_TIME_EXCEEDED {
        return Parsed::OtherProto;
    }
    let inner_off = l4 + 8;
    let Some(inner) = load::<Ipv4Hdr>(ctx, inner_off) else { return Parsed::OtherProto };
    if inner.ver_ihl != 0x45 || (inner.proto != IPPROTO_TCP && inner.proto != IPPROTO_UDP) {
        return Parsed::OtherProto;
    }
    let Some(ports) = load::<Ports>(ctx, inner_off + IPV4_HDR_LEN) else { return Parsed::OtherProto };
    if inner_off + IPV4_HDR_LEN + 4 > ip_end {
        return Parsed::OtherProto;
    }
    pkt.flow.src = [w32(inner.daddr), 0, 0, 0];
    pkt.flow.dst = [w32(inner.saddr), 0, 0, 0];
    pkt.flow.sport = ports.dport;
    pkt.flow.dport = ports.sport;
    pkt.flow.proto = inner.proto;
    Parsed::Icmp(Icmp { pkt, echo_request: false, l4 })
}

/// ICMPv6 counterpart of [`parse_v4`].
#[inline(always)]
pub fn parse_v6(ctx: &XdpContext, mut pkt: Packet, l4: usize) -> Parsed {
    // Bounded by the IP packet, not just the frame: Ethernet padding is not
    // ICMP. (Checked after each load: done before, it lets LLVM drop the
    // frame check the verifier needs.)
    let ip_end = pkt.l2.len + pkt.ip_len as usize;
    let Some(icmp) = load::<IcmpHdr>(ctx, l4) else { return Parsed::OtherProto };
    if l4 + 8 > ip_end {
        return Parsed::OtherProto;
    }
    let kind = icmp.kind;
    if kind == ICMPV6_ECHO_REQUEST {
        pkt.flow.proto = IPPROTO_ICMPV6;
        return Parsed::Icmp(Icmp { pkt, echo_request: true, l4 });
    }
    if kind != ICMPV6_DEST_UNREACH && kind != ICMPV6_PKT_TOO_BIG && kind != ICMPV6_TIME_EXCEEDED {
        return Parsed::OtherProto;
    }
    let inner_off = l4 + 8;
    let Some(inner) = load::<Ipv6Hdr>(ctx, inner_off) else { return Parsed::OtherProto };
    if inner.vtc_flow[0] >> 4 != 6 || (inner.nexthdr != IPPROTO_TCP && inner.nexthdr != IPPROTO_UDP) {
        return Parsed::OtherProto;
    }
    let Some(ports) = load::<Ports>(ctx, inner_off + IPV6_HDR_LEN) else { return Parsed::OtherProto };
    if inner_off + IPV6_HDR_LEN + 4 > ip_end {
        return Parsed::OtherProto;
    }
    pkt.flow.src = w128(inner.daddr);
    pkt.flow.dst = w128(inner.saddr);
    pkt.flow.sport = ports.dport;
    pkt.flow.dport = ports.sport;
    pkt.flow.proto = inner.nexthdr;
    Parsed::Icmp(Icmp { pkt, echo_request: false, l4 })
}

/// RFC 1624 incremental update of a checksum (wire order) for one 16-bit
/// word changing from `old` to `new` (host order values of wire words).
#[inline(always)]
fn csum_replace(csum: u16, old: u16, new: u16) -> u16 {
    let sum = (!u16::from_be(csum) as u32) + (!old as u32) + new as u32;
    csum_fold(sum).to_be()
}

/// Answers an echo request in place: addresses and MACs swapped, type
/// turned into a reply, checksums updated.
// Cold path (its own tail-called program); headers go through the copy helpers.
#[inline(always)]
pub fn echo_reply(ctx: &XdpContext, msg: &Icmp) -> Option<()> {
    let l2 = SavedL2::read(ctx, &msg.pkt.l2)?;
    let l3 = bounded(msg.pkt.l2.len, MAX_L2_LEN)?;
    let l4 = bounded(msg.l4, MAX_L4_OFFSET)?;
    let (request, reply) = if msg.pkt.flow.family == FAMILY_V4 {
        let mut hdr = Ipv4Hdr::default();
        copy_out(ctx, l3, &mut hdr)?;
        (hdr.saddr, hdr.daddr) = (hdr.daddr, hdr.saddr);
        hdr.ttl = ENCAP_TTL;
        hdr.check = 0;
        let words: [u16; 10] = unsafe { core::mem::transmute(hdr) };
        hdr.check = ipv4_header_csum(&words);
        copy_in(ctx, l3, &hdr)?;
        (ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY)
    } else {
        let mut hdr = Ipv6Hdr::default();
        copy_out(ctx, l3, &mut hdr)?;
        (hdr.saddr, hdr.daddr) = (hdr.daddr, hdr.saddr);
        hdr.hop_limit = ENCAP_TTL;
        copy_in(ctx, l3, &hdr)?;
        (ICMPV6_ECHO_REQUEST, ICMPV6_ECHO_REPLY)
    };
    let mut icmp = IcmpHdr::default();
    copy_out(ctx, l4, &mut icmp)?;
    let code = icmp.code as u16;
    icmp.kind = reply;
    icmp.csum = csum_replace(icmp.csum, (request as u16) << 8 | code, (reply as u16) << 8 | code);
    copy_in(ctx, l4, &icmp)?;
    l2.write_reply(ctx)
}

/// Shrinks the frame to `len` bytes.
#[inline(always)]
fn truncate(ctx: &XdpContext, len: usize) -> Option<()> {
    let delta = len as i32 - frame_len(ctx) as i32;
    if delta > 0 || unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } != 0 {
        return None;
    }
    Some(())
}

/// Turns the frame into an ICMP fragmentation-needed answer to its sender,
/// advertising `mtu` as the next-hop MTU: the quoted header (and 8 bytes)
/// moves behind the new IPv4 and ICMP headers, the frame is cut after it.
// Cold path (its own tail-called program), built with the copy helpers.
#[inline(always)]
pub fn too_big_v4(ctx: &XdpContext, pkt: &Packet, mtu: u16) -> Option<()> {
    const ICMP: usize = IPV4_HDR_LEN;
    const QUOTE: usize = ICMP + 8;
    const LEN: usize = QUOTE + IPV4_HDR_LEN + 8;
    let l2 = SavedL2::read(ctx, &pkt.l2)?;
    let l3 = bounded(pkt.l2.len, MAX_L2_LEN)?;
    let mut quote = [0u32; (IPV4_HDR_LEN + 8) / 4];
    copy_out(ctx, l3, &mut quote)?;
    truncate(ctx, l3 + LEN)?;
    copy_in(ctx, l3 + QUOTE, &quote)?;
    let mut ip = Ipv4Hdr {
        ver_ihl: 0x45,
        tos: 0,
        tot_len: (LEN as u16).to_be(),
        id: 0,
        frag_off: 0,
        ttl: ENCAP_TTL,
        proto: IPPROTO_ICMP,
        check: 0,
        // From the original destination back to the original source.
        saddr: to_w32(quote[4]),
        daddr: to_w32(quote[3]),
    };
    let words: [u16; 10] = unsafe { core::mem::transmute(ip) };
    ip.check = ipv4_header_csum(&words);
    copy_in(ctx, l3, &ip)?;
    let mut icmp =
        IcmpHdr { kind: ICMP_DEST_UNREACH, code: ICMP_FRAG_NEEDED, csum: 0, rest: [0, 0, (mtu >> 8) as u8, mtu as u8] };
    copy_in(ctx, l3 + ICMP, &icmp)?;
    icmp.csum = csum_fold(csum_frame::<{ LEN - ICMP }>(ctx, l3 + ICMP, 0)?);
    copy_in(ctx, l3 + ICMP, &icmp)?;
    l2.write_reply(ctx)
}

/// Turns the frame into an ICMPv6 packet-too-big answer to its sender.
// Cold path (its own tail-called program), built with the copy helpers.
#[inline(always)]
pub fn too_big_v6(ctx: &XdpContext, pkt: &Packet, mtu: u32) -> Option<()> {
    const ICMP: usize = IPV6_HDR_LEN;
    const QUOTE: usize = ICMP + 8;
    const LEN: usize = QUOTE + IPV6_HDR_LEN + 8;
    const ICMP_LEN: usize = LEN - ICMP;
    let l2 = SavedL2::read(ctx, &pkt.l2)?;
    let l3 = bounded(pkt.l2.len, MAX_L2_LEN)?;
    let mut quote = [0u32; (IPV6_HDR_LEN + 8) / 4];
    copy_out(ctx, l3, &mut quote)?;
    truncate(ctx, l3 + LEN)?;
    copy_in(ctx, l3 + QUOTE, &quote)?;
    let ip = Ipv6Hdr {
        vtc_flow: [0x60, 0, 0, 0],
        payload_len: (ICMP_LEN as u16).to_be(),
        nexthdr: IPPROTO_ICMPV6,
        hop_limit: ENCAP_TTL,
        saddr: to_w128([quote[6], quote[7], quote[8], quote[9]]),
        daddr: to_w128([quote[2], quote[3], quote[4], quote[5]]),
    };
    copy_in(ctx, l3, &ip)?;
    let mut icmp = IcmpHdr { kind: ICMPV6_PKT_TOO_BIG, code: 0, csum: 0, rest: mtu.to_be_bytes() };
    copy_in(ctx, l3 + ICMP, &icmp)?;
    // Pseudo-header: both addresses, the ICMPv6 length, the next header.
    let pseudo = (ICMP_LEN as u16).to_be() as u32 + (IPPROTO_ICMPV6 as u16).to_be() as u32;
    let sum = csum_frame::<32>(ctx, l3 + 8, pseudo)?;
    let sum = csum_frame::<ICMP_LEN>(ctx, l3 + ICMP, sum)?;
    icmp.csum = csum_fold(sum);
    copy_in(ctx, l3 + ICMP, &icmp)?;
    l2.write_reply(ctx)
}

/// Whether `pkt`, encapsulated, fits `mtu` (0: no limit).
#[inline(always)]
pub fn fits(pkt: &Packet, mtu: u16) -> bool {
    let outer = if pkt.flow.family == FAMILY_V6 { IPV6_HDR_LEN } else { IPV4_HDR_LEN } as u32;
    mtu == 0 || pkt.ip_len + outer <= mtu as u32
}
