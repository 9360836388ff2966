//! `lb_balancer`: the XDP program on the load balancer's interface.
//!
//! parse -> VIP match -> connection table or Maglev ring -> IP-in-IP or L2
//! rewrite -> XDP_TX. Every packet is counted under exactly one verdict
//! reason in `STATS` (see `lb_common::stats`).
#![no_std]
#![no_main]
// Inline asm for BPF: the capture's atomic counters (aya-ebpf uses it too).
#![feature(asm_experimental_arch)]
// Map keys go by reference: passing them by value would copy them onto the
// 512-byte BPF stack.
#![allow(clippy::needless_borrows_for_generic_args)]

mod balancer;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use balancer::{
    capture,
    conntrack::{self, Found, Lookup, Recorded},
    counters,
    maps::{CONFIG, ICMP_PROGS, VIP_ADDRS},
    select, vips,
};
use lb_common::{
    ALGO_LEAST_CONN, ALGO_ROUND_ROBIN, ALGO_SOURCE_HASH, Backend, FAMILY_V4, FLOW_LABEL_MASK, GLOBAL_F_TOO_BIG_DROP,
    VIP_F_L2DSR, VipAddrKey, VipMeta,
    capture::CAPTURE_NO_BACKEND,
    hash::{flow_hash, source_hash},
    net::{IPPROTO_TCP, IPV4_HDR_LEN, IPV6_HDR_LEN, TCP_FLAG_ACK, TCP_FLAG_FIN, TCP_FLAG_RST, TCP_FLAG_SYN},
    stats,
};
use lb_ebpf::{
    bounds::frame_len,
    encap::{self, SavedL2},
    icmp,
    parse::{self, Icmp, Packet, Parsed},
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
            return match is_vip_addr(addr, family) {
                true => (DROP, reason),
                false => (PASS, stats::PASS_NOT_VIP),
            };
        }
        // Handled by `lb_icmp`, tail-called so the cold ICMP code never
        // shares the hot path's 512-byte stack.
        Parsed::Icmp(_) => return tail_call(ctx, TAIL_ICMP),
    };
    balance_flow::<true>(ctx, &pkt, bytes)
}

/// `ICMP_PROGS` indices.
const TAIL_ICMP: u32 = 0;
const TAIL_TOO_BIG: u32 = 1;

/// Jumps to a program of `ICMP_PROGS`; returns only if the slot is empty
/// (the agent fills it at load), which counts as a drop.
#[inline(always)]
fn tail_call(ctx: &XdpContext, index: u32) -> Verdict {
    unsafe { ICMP_PROGS.tail_call(ctx, index) };
    (DROP, stats::DROP_ENCAP)
}

/// ICMP and ICMPv6 aimed at a VIP address: echo requests answered, errors
/// about a VIP flow sent to its backend. Entered by tail call only.
#[xdp]
pub fn lb_icmp(ctx: XdpContext) -> u32 {
    let bytes = frame_len(&ctx) as u64;
    let (action, reason) = match parse::parse(&ctx) {
        Parsed::Icmp(msg) => icmp_verdict(&ctx, &msg, bytes),
        _ => (PASS, stats::PASS_NOT_VIP),
    };
    counters::stat(reason, bytes);
    action
}

/// A client packet that encapsulation would push over the MTU: answered
/// with fragmentation-needed / packet-too-big. Entered by tail call only.
#[xdp]
pub fn lb_too_big(ctx: XdpContext) -> u32 {
    let bytes = frame_len(&ctx) as u64;
    let (action, reason) = match (parse::parse(&ctx), CONFIG.get(0)) {
        (Parsed::Flow(pkt), Some(cfg)) => too_big(&ctx, &pkt, cfg),
        _ => (DROP, stats::DROP_TOO_BIG),
    };
    counters::stat(reason, bytes);
    action
}

/// Sends a packet of a VIP flow to its backend. `CLIENT`: a client's own
/// packet (a new flow is recorded, a too-big one answered); otherwise an
/// ICMP error about the flow (never learned, never answered with ICMP).
#[inline(always)]
fn balance_flow<const CLIENT: bool>(ctx: &XdpContext, pkt: &Packet, bytes: u64) -> Verdict {
    let bucket = vips::find(&pkt.flow);
    if bucket.is_null() {
        return (PASS, stats::PASS_NOT_VIP);
    }
    let tcp = pkt.flow.proto == IPPROTO_TCP;
    let syn = tcp && pkt.tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK) == TCP_FLAG_SYN;
    // An established flow first: its entry names the backend, whose own
    // entry holds its VIP's slot and mode, so the VIP's metadata is not read (a
    // removed VIP's backends are gone, which makes the entry stale). A SYN
    // is decided with its VIP's algorithm, in `choose`.
    // The flow's set in the table, found when first needed.
    let set = if syn { conntrack::Set::NONE } else { conntrack::set_of(&pkt.flow) };
    let found = if syn { Lookup::Miss } else { conntrack::lookup(set, &pkt.flow) };
    if let Lookup::Hit(id, backend, hit) = found {
        if !for_this_host(ctx) {
            return (PASS, stats::PASS_OTHER_HOST);
        }
        if CLIENT {
            conntrack::touch(hit, id, tcp && pkt.tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST) != 0);
        }
        counters::stat(stats::CONNTRACK_HIT, 0);
        let label = Some(hit.label());
        return send::<CLIENT>(ctx, pkt, bytes, backend.vip_slot, backend.vip_flags, Ok((id, backend, label)));
    }
    let Some(meta) = vips::meta(bucket, &pkt.flow) else {
        return (PASS, stats::PASS_NOT_VIP);
    };
    if !for_this_host(ctx) {
        return (PASS, stats::PASS_OTHER_HOST);
    }
    let chosen = choose(pkt, &meta, CLIENT, syn, found, set);
    send::<CLIENT>(ctx, pkt, bytes, meta.slot, meta.flags, chosen)
}

/// Forwards to the chosen backend (or drops with the reason), counting
/// under the VIP's slot and capturing when asked.
#[inline(always)]
fn send<const CLIENT: bool>(
    ctx: &XdpContext,
    pkt: &Packet,
    bytes: u64,
    vip_slot: u32,
    vip_flags: u32,
    chosen: Result<(u32, &'static Backend, Option<u32>), u32>,
) -> Verdict {
    counters::vip(vip_slot, bytes);
    let (id, verdict) = match chosen {
        Ok((id, backend, hash)) => (id, forward::<CLIENT>(ctx, pkt, vip_flags, backend, hash)),
        Err(reason) => (CAPTURE_NO_BACKEND, (DROP, reason)),
    };
    if verdict.0 == TX {
        counters::backend(id, bytes);
    }
    capture::frame(ctx, vip_slot, id, verdict);
    verdict
}

/// Whether the frame is addressed to this interface (when the agent told
/// the program its MAC).
#[inline(always)]
fn for_this_host(ctx: &XdpContext) -> bool {
    let Some(cfg) = CONFIG.get(0) else { return true };
    if cfg.own_mac == [0; 6] {
        return true;
    }
    match lb_ebpf::bounds::ptr_at::<[u8; 6]>(ctx, 0) {
        Some(dst) => (unsafe { *dst }) == cfg.own_mac,
        None => false,
    }
}

#[inline(always)]
fn is_vip_addr(addr: lb_common::types::AddrWords, family: u8) -> bool {
    let key = VipAddrKey { addr, family, _pad: [0; 3] };
    unsafe { VIP_ADDRS.get(&key) }.is_some()
}

/// Echo requests to a VIP address are answered here (the VIP is not a host
/// the kernel knows); an error about a VIP flow goes to that flow's backend,
/// whose TCP stack is the one that needs it (path MTU, unreachable).
#[inline(always)]
fn icmp_verdict(ctx: &XdpContext, msg: &Icmp, bytes: u64) -> Verdict {
    if msg.echo_request {
        if !is_vip_addr(msg.pkt.flow.dst, msg.pkt.flow.family) {
            return (PASS, stats::PASS_NOT_VIP);
        }
        // Like a flow: a frame bridged to us for another host is not ours
        // to answer.
        if !for_this_host(ctx) {
            return (PASS, stats::PASS_OTHER_HOST);
        }
        return match icmp::echo_reply(ctx, msg) {
            Some(()) => (TX, stats::TX_ICMP_ECHO_REPLY),
            None => (DROP, stats::DROP_MALFORMED),
        };
    }
    let verdict = balance_flow::<false>(ctx, &msg.pkt, bytes);
    if verdict.0 == TX {
        counters::stat(stats::ICMP_ERROR_FORWARDED, 0);
    }
    verdict
}

/// The backend of a SYN, or of a flow without a live entry (`found`, the
/// caller's lookup of a non-SYN): picked by the VIP's algorithm (and then
/// remembered). A TCP SYN is
/// re-picked, so a reused 5-tuple follows the current backend set; except,
/// under a per-instance algorithm, the SYN of a flow still open: that is a
/// retransmission, and the backend that got the first SYN may have answered
/// it. Under Maglev and source hash a SYN looks its entry up only when the
/// flood guard lets it record (under a flood the lookup is skipped), and an
/// open entry that already names the picked backend is kept as it is: a
/// retransmitted SYN costs a lookup instead of a table update. The flow
/// hash is computed only when needed (a table hit of an IPv4 flow never
/// needs it); the third value returned is what `label` takes as known.
#[inline(always)]
fn choose(
    pkt: &Packet,
    meta: &VipMeta,
    learn: bool,
    syn: bool,
    found: Lookup,
    mut set: conntrack::Set,
) -> Result<(u32, &'static Backend, Option<u32>), u32> {
    let per_instance = meta.algorithm == ALGO_ROUND_ROBIN || meta.algorithm == ALGO_LEAST_CONN;
    // The flood guard is asked at most once per packet: here for such a SYN,
    // before the insert for any other new flow. (Plain values rather than
    // Options: LLVM spills an Option's unset payload as an undefined
    // register, which the verifier refuses.)
    let hashed_syn = syn && !per_instance;
    let guard_allows = hashed_syn && learn && conntrack::may_record(new_flow_limit());
    let found = match (syn, hashed_syn && !guard_allows) {
        (false, _) => found,
        (true, true) => Lookup::Miss,
        (true, false) => {
            set = conntrack::set_of(&pkt.flow);
            conntrack::lookup(set, &pkt.flow)
        }
    };
    // An open entry the SYN may replace.
    let mut replaced = Found::NONE;
    let mut replaced_id = 0;
    match found {
        // Only a SYN gets here with a live entry.
        Lookup::Hit(id, backend, hit) => {
            if per_instance && hit.is_open() {
                if learn {
                    conntrack::touch(hit, id, pkt.tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST) != 0);
                }
                counters::stat(stats::CONNTRACK_HIT, 0);
                return Ok((id, backend, Some(hit.label())));
            }
            if hit.is_open() {
                (replaced, replaced_id) = (hit, id);
            }
            counters::stat(stats::CONNTRACK_MISS, 0);
        }
        Lookup::Stale if !syn => counters::stat(stats::CONNTRACK_REPICK, 0),
        Lookup::Stale | Lookup::Miss => counters::stat(stats::CONNTRACK_MISS, 0),
    }
    // The flow hash is kept for the IPv6 flow label; a source hash is not
    // (all of a client's flows would share one label).
    let (hash, flow) = if meta.algorithm == ALGO_SOURCE_HASH {
        (source_hash(&pkt.flow), None)
    } else {
        let h = flow_hash(&pkt.flow);
        (h, Some(h))
    };
    let id = match meta.algorithm {
        ALGO_ROUND_ROBIN => select::round_robin(meta),
        ALGO_LEAST_CONN => select::least_connections(meta, hash),
        _ => select::ring_pick(meta, hash),
    };
    let id = id.ok_or(stats::DROP_NO_BACKEND)?;
    let backend = select::backend(id).ok_or(stats::DROP_BAD_BACKEND)?;
    if !learn {
        return Ok((id, backend, flow));
    }
    if !replaced.is_none() && replaced_id == id {
        // The same SYN again: its open entry already says this backend.
        conntrack::touch(replaced, id, false);
        return Ok((id, backend, Some(replaced.label())));
    }
    // Computed once, recorded and then put in the outer header.
    let label = label(pkt, flow);
    // (An entry to replace was found by a lookup the guard allowed.)
    let allowed = if hashed_syn { guard_allows } else { conntrack::may_record(new_flow_limit()) };
    if !allowed {
        counters::stat(stats::CONNTRACK_GUARDED, 0);
    } else {
        // The SYN replaces the flow's open entry in place if it still can.
        let in_place = !replaced.is_none() && conntrack::replace(replaced, replaced_id, id, backend, label);
        let recorded = if in_place { Recorded::Yes } else { conntrack::insert(set, &pkt.flow, id, backend, label) };
        match recorded {
            Recorded::Yes => {}
            Recorded::EvictedOpen => counters::stat(stats::CONNTRACK_EVICTED, 0),
            Recorded::No => counters::stat(stats::CONNTRACK_FULL, 0),
        }
    }
    counters::backend_flow(id);
    Ok((id, backend, Some(label)))
}

/// A flow's IPv6 flow label (0 for IPv4): `known` (its flow hash, or a label
/// already recorded or computed), else its flow hash, computed here (the
/// source-hash algorithm does not compute it).
#[inline(always)]
fn label(pkt: &Packet, known: Option<u32>) -> u32 {
    if pkt.flow.family == FAMILY_V4 {
        return 0;
    }
    known.unwrap_or_else(|| flow_hash(&pkt.flow)) & FLOW_LABEL_MASK
}

/// `GlobalConfig::new_flow_limit` (0, no limit, before the agent wrote it).
#[inline(always)]
fn new_flow_limit() -> u32 {
    CONFIG.get(0).map_or(0, |c| c.new_flow_limit)
}

#[inline(always)]
fn forward<const CLIENT: bool>(
    ctx: &XdpContext,
    pkt: &Packet,
    vip_flags: u32,
    backend: &Backend,
    hash: Option<u32>,
) -> Verdict {
    let Some(l2) = SavedL2::read(ctx, &pkt.l2) else {
        return (DROP, stats::DROP_MALFORMED);
    };
    if vip_flags & VIP_F_L2DSR != 0 {
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
    if !icmp::fits(pkt, cfg.mtu) {
        // ICMP is never sent about ICMP errors (RFC 1122 3.2.2).
        return if CLIENT { tail_call(ctx, TAIL_TOO_BIG) } else { (DROP, stats::DROP_TOO_BIG) };
    }
    let done = if pkt.flow.family == FAMILY_V4 {
        encap::ipip_v4(ctx, &l2, cfg.nexthop_mac, cfg.tunnel_src_v4, backend.addr[0], pkt.ip_len, pkt.tos, pkt.df)
    } else {
        // A flow hash or a label already computed, if any.
        let label = label(pkt, hash);
        encap::ipip_v6(ctx, &l2, cfg.nexthop_mac, cfg.tunnel_src_v6, backend.addr, pkt.ip_len, pkt.tos, label)
    };
    match done {
        Some(()) => (TX, stats::TX_IPIP),
        None => (DROP, stats::DROP_ENCAP),
    }
}

/// Answers a packet that encapsulation would make too big with the ICMP
/// message that makes its sender lower its packet size (IPv4 only when DF
/// is set: without it the sender would not listen, and XDP cannot fragment).
#[inline(always)]
fn too_big(ctx: &XdpContext, pkt: &Packet, cfg: &lb_common::GlobalConfig) -> Verdict {
    if cfg.flags & GLOBAL_F_TOO_BIG_DROP != 0 {
        return (DROP, stats::DROP_TOO_BIG);
    }
    let sent = if pkt.flow.family == FAMILY_V4 {
        if !pkt.df {
            return (DROP, stats::DROP_TOO_BIG);
        }
        icmp::too_big_v4(ctx, pkt, cfg.mtu - IPV4_HDR_LEN as u16)
    } else {
        icmp::too_big_v6(ctx, pkt, (cfg.mtu as u32 - IPV6_HDR_LEN as u32).max(IPV6_MIN_MTU))
    };
    match sent {
        Some(()) => (TX, stats::TX_ICMP_TOO_BIG),
        None => (DROP, stats::DROP_TOO_BIG),
    }
}

/// The smallest MTU IPv6 allows; a packet-too-big never advertises less.
const IPV6_MIN_MTU: u32 = 1280;

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
