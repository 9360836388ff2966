//! Finding a packet's VIP in `VIP_TABLE` (an array: loads and compares, no
//! call), falling back to the `VIPS` hash map only for a bucket that several
//! VIPs share. A packet whose bucket is empty or holds another VIP is no
//! VIP's and passes without any hash-map lookup; an established flow looks
//! its connection entry up before it needs the VIP's metadata.
//!
//! The agent may rewrite a bucket while a packet reads it; each of its
//! writes changes one byte that is read (`key.family`, `live`) or only bytes
//! that are not (see `lb_common::VipBucket`). Those bytes are read first,
//! with volatile loads so the compiler keeps that order (x86 keeps loads in
//! order), and the key is checked again after the metadata is read: a
//! bucket handed from one VIP to another between the two reads (through an
//! empty state) no longer holds this flow's key.

use lb_common::{FAMILY_SHARED, FlowKey, VipBucket, VipKey, VipMeta, hash::vip_bucket};

use super::maps::{VIP_TABLE, VIPS};

/// The flow's bucket if it may hold the flow's VIP: one holding exactly that
/// VIP, or a shared one. Null: the destination is no VIP. (A raw pointer
/// rather than an Option: LLVM spills an Option's unset payload as an
/// undefined register, which the verifier refuses.)
#[inline(always)]
pub fn find(flow: &FlowKey) -> *const VipBucket {
    let index = vip_bucket(&flow.dst, flow.dport, flow.proto);
    let Some(bucket) = VIP_TABLE.get(index) else { return core::ptr::null() };
    match family(bucket) {
        FAMILY_SHARED => bucket,
        f if holds(bucket, f, flow) => bucket,
        _ => core::ptr::null(),
    }
}

/// The metadata of the flow's VIP, given its non-null bucket from [`find`]:
/// the live generation's from the bucket, or, for a shared bucket, the
/// `VIPS` entry. None: the bucket no longer holds the flow's VIP (it was
/// removed meanwhile). Copied: the agent rewrites a bucket's idle generation
/// and replaces `VIPS` values as a whole.
#[inline(always)]
pub fn meta(bucket: *const VipBucket, flow: &FlowKey) -> Option<VipMeta> {
    // SAFETY: non-null pointers from `find` point to a map value, valid for
    // the program run.
    let bucket = unsafe { &*bucket };
    let f = family(bucket);
    if f == FAMILY_SHARED {
        let key = VipKey { addr: flow.dst, port: flow.dport, proto: flow.proto, family: flow.family };
        return unsafe { VIPS.get(&key) }.copied();
    }
    if !holds(bucket, f, flow) {
        return None;
    }
    // `live` is 0 or 1; tested rather than used as an index, so no bounds
    // check is needed.
    let live = unsafe { core::ptr::read_volatile(&bucket.live) };
    let chosen = if live == 0 { &bucket.meta[0] } else { &bucket.meta[1] };
    let meta = unsafe { core::ptr::read_volatile(chosen) };
    if !holds(bucket, family(bucket), flow) {
        return None;
    }
    Some(meta)
}

/// The byte that says how to read the rest of the bucket.
#[inline(always)]
fn family(bucket: &VipBucket) -> u8 {
    unsafe { core::ptr::read_volatile(&bucket.key.family) }
}

/// Whether the bucket, whose family was read as `family`, holds the flow's
/// VIP. The key is read again on every call (volatile): the check after
/// the metadata must not reuse the first one's loads.
#[inline(always)]
fn holds(bucket: &VipBucket, family: u8, flow: &FlowKey) -> bool {
    let key = unsafe { core::ptr::read_volatile(&bucket.key) };
    family == flow.family
        && key.port == flow.dport
        && key.proto == flow.proto
        && key.addr[0] == flow.dst[0]
        && key.addr[1] == flow.dst[1]
        && key.addr[2] == flow.dst[2]
        && key.addr[3] == flow.dst[3]
}
