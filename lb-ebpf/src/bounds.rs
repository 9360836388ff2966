//! The one place where packet memory is bounds-checked. Every header read or
//! write goes through [`ptr_at`], so the verifier sees the same
//! `data + off + size <= data_end` proof everywhere.

use aya_ebpf::programs::XdpContext;

/// Pointer to a `T` at `offset` bytes into the frame, or `None` if the frame
/// is too short to hold it.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *mut T)
}

/// Copies a `T` out of the frame at `offset`. `T` is one of the 2-byte
/// aligned header types ([`crate::headers`]) at an even offset: the frame
/// starts 2-byte aligned (XDP headroom; the programs move the head by even
/// amounts only), so the read is aligned and LLVM emits 16-bit loads
/// instead of byte loads.
#[inline(always)]
pub fn load<T: Copy>(ctx: &XdpContext, offset: usize) -> Option<T> {
    let p = ptr_at::<T>(ctx, offset)?;
    Some(unsafe { p.read() })
}

/// Writes a `T` into the frame at `offset` (aligned as for [`load`]).
#[inline(always)]
pub fn store<T>(ctx: &XdpContext, offset: usize, value: T) -> Option<()> {
    let p = ptr_at::<T>(ctx, offset)?;
    unsafe { p.write(value) };
    Some(())
}

/// Copies a `T` out of the frame with the bpf_xdp_load_bytes helper: for
/// cold paths, where a helper call is cheaper in stack than byte-wise loads.
#[inline(always)]
pub fn copy_out<T: Copy>(ctx: &XdpContext, offset: usize, into: &mut T) -> Option<()> {
    let rc = unsafe {
        aya_ebpf::helpers::bpf_xdp_load_bytes(
            ctx.ctx,
            offset as u32,
            into as *mut T as *mut _,
            core::mem::size_of::<T>() as u32,
        )
    };
    (rc == 0).then_some(())
}

/// Writes a `T` into the frame with the bpf_xdp_store_bytes helper.
#[inline(always)]
pub fn copy_in<T: Copy>(ctx: &XdpContext, offset: usize, from: &T) -> Option<()> {
    let rc = unsafe {
        aya_ebpf::helpers::bpf_xdp_store_bytes(
            ctx.ctx,
            offset as u32,
            from as *const T as *mut _,
            core::mem::size_of::<T>() as u32,
        )
    };
    (rc == 0).then_some(())
}

/// One's-complement 32-bit sum of `N` bytes of the frame (`N` a multiple of
/// 4) added to `seed`, by the bpf_csum_diff helper.
#[inline(always)]
pub fn csum_frame<const N: usize>(ctx: &XdpContext, offset: usize, seed: u32) -> Option<u32> {
    let p = ptr_at::<[u8; N]>(ctx, offset)?;
    let sum = unsafe { aya_ebpf::helpers::bpf_csum_diff(core::ptr::null_mut(), 0, p as *mut u32, N as u32, seed) };
    (sum >= 0).then_some(sum as u32)
}

/// Largest link-layer header the parser accepts: Ethernet and two tags.
pub const MAX_L2_LEN: usize = lb_common::net::ETH_HDR_LEN + lb_common::MAX_VLAN_TAGS * lb_common::net::VLAN_HDR_LEN;
/// Largest offset of an L4 header: behind the longest L2 and an IPv6 header.
pub const MAX_L4_OFFSET: usize = MAX_L2_LEN + lb_common::net::IPV6_HDR_LEN;

/// An offset re-checked against its known maximum. Functions kept out of
/// line receive offsets through the stack, where the verifier loses their
/// bounds; this restores them.
#[inline(always)]
pub fn bounded(offset: usize, max: usize) -> Option<usize> {
    if offset > max {
        return None;
    }
    Some(offset)
}

/// Length of the frame in bytes.
#[inline(always)]
pub fn frame_len(ctx: &XdpContext) -> usize {
    ctx.data_end() - ctx.data()
}
