//! Rewriting the frame for forwarding: IP-in-IP (IPv4 in IPv4, IPv6 in IPv6),
//! L2 MAC rewrite, and stripping a tunnel header on backends. Each writer
//! keeps the VLAN tags of the frame as they came in.

use aya_ebpf::{helpers::bpf_xdp_adjust_head, programs::XdpContext};
use lb_common::{
    ENCAP_TTL,
    net::{IPPROTO_IPIP, IPPROTO_IPV6, IPV4_DF, IPV4_HDR_LEN, IPV6_HDR_LEN, ipv4_header_csum},
    types::AddrWords,
};

use crate::{
    bounds::{MAX_L2_LEN, bounded, load, store},
    headers::{EthHdr, Ipv4Hdr, Ipv6Hdr, VlanHdr, to_w32, to_w128},
    parse::L2,
};

/// The link-layer header of a frame, saved before `bpf_xdp_adjust_head`
/// moves the start of the frame.
#[derive(Clone, Copy)]
pub struct SavedL2 {
    eth: EthHdr,
    tags: [VlanHdr; 2],
    len: usize,
}

impl SavedL2 {
    #[inline(always)]
    pub fn read(ctx: &XdpContext, l2: &L2) -> Option<SavedL2> {
        let eth = load::<EthHdr>(ctx, 0)?;
        let mut saved = SavedL2 { eth, tags: [VlanHdr { tci: 0, proto: 0 }; 2], len: l2.len };
        if l2.len >= 18 {
            saved.tags[0] = load::<VlanHdr>(ctx, 14)?;
        }
        if l2.len >= 22 {
            saved.tags[1] = load::<VlanHdr>(ctx, 18)?;
        }
        Some(saved)
    }

    /// The frame's destination MAC: ours, so the source MAC of what we send.
    #[inline(always)]
    pub fn our_mac(&self) -> [u8; 6] {
        self.eth.dst
    }

    /// Writes the saved header with the MACs swapped: an answer to the sender.
    #[inline(always)]
    pub fn write_reply(&self, ctx: &XdpContext) -> Option<()> {
        self.write(ctx, self.eth.src, self.eth.dst)
    }

    /// Writes the saved header at the start of the frame with new MACs.
    #[inline(always)]
    pub fn write(&self, ctx: &XdpContext, dst: [u8; 6], src: [u8; 6]) -> Option<()> {
        store(ctx, 0, EthHdr { dst, src, proto: self.eth.proto })?;
        if self.len >= 18 {
            store(ctx, 14, self.tags[0])?;
        }
        if self.len >= 22 {
            store(ctx, 18, self.tags[1])?;
        }
        Some(())
    }
}

#[inline(always)]
fn adjust_head(ctx: &XdpContext, delta: i32) -> Option<()> {
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, delta) } != 0 {
        return None;
    }
    Some(())
}

/// Wraps the IPv4 packet in an outer IPv4 header (`src` -> `dst`, protocol 4).
/// `ip_len` is the inner packet's total length, `tos`/`df` are copied out.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn ipip_v4(
    ctx: &XdpContext,
    l2: &SavedL2,
    mac_dst: [u8; 6],
    src: u32,
    dst: u32,
    ip_len: u32,
    tos: u8,
    df: bool,
) -> Option<()> {
    let outer_len = ip_len + IPV4_HDR_LEN as u32;
    if outer_len > u16::MAX as u32 {
        return None;
    }
    adjust_head(ctx, -(IPV4_HDR_LEN as i32))?;
    l2.write(ctx, mac_dst, l2.our_mac())?;
    let mut hdr = Ipv4Hdr {
        ver_ihl: 0x45,
        tos,
        tot_len: (outer_len as u16).to_be(),
        id: 0,
        frag_off: if df { IPV4_DF.to_be() } else { 0 },
        ttl: ENCAP_TTL,
        proto: IPPROTO_IPIP,
        check: 0,
        saddr: to_w32(src),
        daddr: to_w32(dst),
    };
    let words: [u16; 10] = unsafe { core::mem::transmute(hdr) };
    hdr.check = ipv4_header_csum(&words);
    store(ctx, bounded(l2.len, MAX_L2_LEN)?, hdr)
}

/// Wraps the IPv6 packet in an outer IPv6 header (next header 41). The flow
/// label carries the flow hash so routers and backend NICs can spread tunnels.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn ipip_v6(
    ctx: &XdpContext,
    l2: &SavedL2,
    mac_dst: [u8; 6],
    src: AddrWords,
    dst: AddrWords,
    ip_len: u32,
    tclass: u8,
    flow_label: u32,
) -> Option<()> {
    if ip_len > u16::MAX as u32 {
        return None;
    }
    adjust_head(ctx, -(IPV6_HDR_LEN as i32))?;
    l2.write(ctx, mac_dst, l2.our_mac())?;
    let hdr = Ipv6Hdr {
        vtc_flow: [
            0x60 | (tclass >> 4),
            (tclass << 4) | ((flow_label >> 16) as u8 & 0x0f),
            (flow_label >> 8) as u8,
            flow_label as u8,
        ],
        payload_len: (ip_len as u16).to_be(),
        nexthdr: IPPROTO_IPV6,
        hop_limit: ENCAP_TTL,
        saddr: to_w128(src),
        daddr: to_w128(dst),
    };
    store(ctx, bounded(l2.len, MAX_L2_LEN)?, hdr)
}

/// L2 direct server return: only the MACs change.
#[inline(always)]
pub fn l2_rewrite(ctx: &XdpContext, l2: &SavedL2, mac_dst: [u8; 6]) -> Option<()> {
    store(ctx, 0, EthHdr { dst: mac_dst, src: l2.our_mac(), proto: l2.eth.proto })
}

/// Removes `outer_len` bytes of tunnel header behind the link-layer header.
/// Only 4-in-4 and 6-in-6 are stripped, so the ethertype stays as it is.
#[inline(always)]
pub fn strip_tunnel(ctx: &XdpContext, l2: &SavedL2, outer_len: i32) -> Option<()> {
    adjust_head(ctx, outer_len)?;
    l2.write(ctx, l2.eth.dst, l2.eth.src)
}
