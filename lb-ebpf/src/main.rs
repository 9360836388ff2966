//! `lb_balancer`: the XDP program on the load balancer's interface.
//!
//! parse -> VIP match -> connection table or Maglev ring -> IP-in-IP or L2
//! rewrite -> XDP_TX. Every packet is counted under exactly one verdict
//! reason in `STATS` (see `lb_common::stats`).
#![no_std]
#![no_main]
// Map keys go by reference: passing them by value would copy them onto the
// 512-byte BPF stack.
#![allow(clippy::needless_borrows_for_generic_args)]

mod balancer;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use balancer::{
    conntrack::{self, Lookup},
    counters,
    maps::{CONFIG, VIP_ADDRS, VIPS},
    select,
};
use lb_common::{
    Backend, FAMILY_V4, VIP_F_L2DSR, VipAddrKey, VipKey, VipMeta,
    hash::flow_hash,
    net::{IPPROTO_TCP, TCP_FLAG_ACK, TCP_FLAG_SYN},
    stats,
};
use lb_ebpf::{
    bounds::frame_len,
    encap::{self, SavedL2},
    parse::{self, Packet, Parsed},
};

#[xdp]
pub fn lb_balancer(ctx: XdpContext) -> u32 {
    let bytes = frame_len(&ctx) as u64;
    let (action, reason) = balance(&ctx, bytes);
    counters::stat(reason, bytes);
    action
}

/// The verdict and the `stats` reason it is counted under.
type Verdict = (u32, u32);

const PASS: u32 = xdp_action::XDP_PASS;
const DROP: u32 = xdp_action::XDP_DROP;
const TX: u32 = xdp_action::XDP_TX;

#[inline(always)]
fn balance(ctx: &XdpContext, bytes: u64) -> Verdict {
    let pkt = match parse::parse(ctx) {
        Parsed::Flow(pkt) => pkt,
        Parsed::NotIp => return (PASS, stats::PASS_NON_IP),
        Parsed::TooManyTags => return (PASS, stats::PASS_VLAN_DEPTH),
        Parsed::Malformed => return (DROP, stats::DROP_MALFORMED),
        Parsed::OtherProto => return (PASS, stats::PASS_NOT_VIP),
        Parsed::AddrOnly { addr, family, reason } => {
            let key = VipAddrKey { addr, family, _pad: [0; 3] };
            return match unsafe { VIP_ADDRS.get(&key) } {
                Some(_) => (DROP, reason),
                None => (PASS, stats::PASS_NOT_VIP),
            };
        }
    };
    let key = VipKey { addr: pkt.flow.dst, port: pkt.flow.dport, proto: pkt.flow.proto, family: pkt.flow.family };
    // Copied: the agent replaces the whole value when it flips generations.
    let Some(meta) = (unsafe { VIPS.get(&key) }).copied() else {
        return (PASS, stats::PASS_NOT_VIP);
    };
    counters::vip(meta.slot, bytes);
    let (id, backend, hash) = match choose(&pkt, &meta) {
        Ok(chosen) => chosen,
        Err(reason) => return (DROP, reason),
    };
    let verdict = forward(ctx, &pkt, &meta, backend, hash);
    if verdict.0 == TX {
        counters::backend(id, bytes);
    }
    verdict
}

/// The flow's backend: from the connection table when it has a live entry,
/// else from the ring (and then remembered). A TCP SYN always takes the ring,
/// so a reused 5-tuple follows the current backend set. The flow hash is
/// computed only when needed (a table hit of an IPv4 flow never needs it).
#[inline(always)]
fn choose(pkt: &Packet, meta: &VipMeta) -> Result<(u32, &'static Backend, Option<u32>), u32> {
    let syn = pkt.flow.proto == IPPROTO_TCP && pkt.tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK) == TCP_FLAG_SYN;
    if !syn {
        match conntrack::lookup(&pkt.flow) {
            Lookup::Hit(id, backend) => {
                counters::stat(stats::CONNTRACK_HIT, 0);
                return Ok((id, backend, None));
            }
            Lookup::Stale => counters::stat(stats::CONNTRACK_REPICK, 0),
            Lookup::Miss => counters::stat(stats::CONNTRACK_MISS, 0),
        }
    } else {
        counters::stat(stats::CONNTRACK_MISS, 0);
    }
    let hash = flow_hash(&pkt.flow);
    let id = select::ring_pick(meta, hash).ok_or(stats::DROP_NO_BACKEND)?;
    let backend = select::backend(id).ok_or(stats::DROP_BAD_BACKEND)?;
    if !conntrack::insert(&pkt.flow, id, backend) {
        counters::stat(stats::CONNTRACK_FULL, 0);
    }
    counters::backend_flow(id);
    Ok((id, backend, Some(hash)))
}

#[inline(always)]
fn forward(ctx: &XdpContext, pkt: &Packet, meta: &VipMeta, backend: &Backend, hash: Option<u32>) -> Verdict {
    let Some(l2) = SavedL2::read(ctx, &pkt.l2) else {
        return (DROP, stats::DROP_MALFORMED);
    };
    if meta.flags & VIP_F_L2DSR != 0 {
        return match encap::l2_rewrite(ctx, &l2, backend.mac) {
            Some(()) => (TX, stats::TX_L2DSR),
            None => (DROP, stats::DROP_ENCAP),
        };
    }
    if backend.family != pkt.flow.family {
        return (DROP, stats::DROP_BAD_BACKEND);
    }
    let Some(cfg) = CONFIG.get(0).copied() else {
        return (DROP, stats::DROP_ENCAP);
    };
    let done = if pkt.flow.family == FAMILY_V4 {
        encap::ipip_v4(ctx, &l2, cfg.nexthop_mac, cfg.tunnel_src_v4, backend.addr[0], pkt.ip_len, pkt.tos, pkt.df)
    } else {
        let label = hash.unwrap_or_else(|| flow_hash(&pkt.flow)) & 0xf_ffff;
        encap::ipip_v6(ctx, &l2, cfg.nexthop_mac, cfg.tunnel_src_v6, backend.addr, pkt.ip_len, pkt.tos, label)
    };
    match done {
        Some(()) => (TX, stats::TX_IPIP),
        None => (DROP, stats::DROP_ENCAP),
    }
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
