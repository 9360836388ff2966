//! Programs for the other hosts of a deployment:
//! - `lb_decap`, on a backend's interface: strips the IPv4-in-IPv4 or
//!   IPv6-in-IPv6 header the balancer added and passes the client's packet
//!   to the kernel (for kernels without the ipip / ip6_tunnel modules);
//! - `lb_pass` and `lb_drop`: reference programs (a veth peer that receives
//!   XDP_TX frames needs an XDP program; benchmarks measure the drop floor).
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::PerCpuArray,
    programs::XdpContext,
};
use lb_common::{
    Counters,
    net::{ETH_P_IP, ETH_P_IPV6, IPPROTO_IPIP, IPPROTO_IPV6, IPV4_HDR_LEN, IPV6_HDR_LEN},
    stats::decap,
};
use lb_ebpf::{
    bounds::{frame_len, ptr_at},
    encap::{self, SavedL2},
    headers::{Ipv4Hdr, Ipv6Hdr},
    parse::{L2Result, parse_l2},
};

#[map(name = "DECAP_STATS")]
static DECAP_STATS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(decap::COUNT, 0);

#[xdp]
pub fn lb_decap(ctx: XdpContext) -> u32 {
    let bytes = frame_len(&ctx) as u64;
    let (action, reason) = decapsulate(&ctx);
    if let Some(c) = DECAP_STATS.get_ptr_mut(reason) {
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
    action
}

#[inline(always)]
fn decapsulate(ctx: &XdpContext) -> (u32, u32) {
    const PASS: (u32, u32) = (xdp_action::XDP_PASS, decap::PASS);
    const MALFORMED: (u32, u32) = (xdp_action::XDP_DROP, decap::DROP_MALFORMED);
    let L2Result::Ok(l2) = parse_l2(ctx) else { return PASS };
    let (outer_len, reason) = match l2.proto {
        ETH_P_IP => {
            let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, l2.len) else { return PASS };
            let (ver_ihl, proto) = unsafe { ((*ip).ver_ihl, (*ip).proto) };
            // Only a plain 20-byte outer header, as lb writes it.
            if ver_ihl != 0x45 || proto != IPPROTO_IPIP {
                return PASS;
            }
            let outer_len = u16::from_be(unsafe { (*ip).tot_len }) as usize;
            if ptr_at::<Ipv4Hdr>(ctx, l2.len + IPV4_HDR_LEN).is_none()
                || outer_len < 2 * IPV4_HDR_LEN
                || l2.len + outer_len > frame_len(ctx)
            {
                return MALFORMED;
            }
            (IPV4_HDR_LEN, decap::IPIP)
        }
        ETH_P_IPV6 => {
            let Some(ip) = ptr_at::<Ipv6Hdr>(ctx, l2.len) else { return PASS };
            if unsafe { (*ip).nexthdr } != IPPROTO_IPV6 {
                return PASS;
            }
            let payload = u16::from_be(unsafe { (*ip).payload_len }) as usize;
            if ptr_at::<Ipv6Hdr>(ctx, l2.len + IPV6_HDR_LEN).is_none()
                || payload < IPV6_HDR_LEN
                || l2.len + IPV6_HDR_LEN + payload > frame_len(ctx)
            {
                return MALFORMED;
            }
            (IPV6_HDR_LEN, decap::IP6IP6)
        }
        _ => return PASS,
    };
    let Some(saved) = SavedL2::read(ctx, &l2) else { return MALFORMED };
    match encap::strip_tunnel(ctx, &saved, outer_len as i32) {
        Some(()) => (xdp_action::XDP_PASS, reason),
        None => MALFORMED,
    }
}

#[xdp]
pub fn lb_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[xdp]
pub fn lb_drop(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_DROP
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
