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

/// Length of the frame in bytes.
#[inline(always)]
pub fn frame_len(ctx: &XdpContext) -> usize {
    ctx.data_end() - ctx.data()
}
