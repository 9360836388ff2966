//! Finding a packet's VIP in `VIP_TABLE` (an array: loads and compares, no
//! call), falling back to the `VIPS` hash map only for a bucket that several
//! VIPs share. A packet whose bucket is empty or holds another VIP is no
//! VIP's and passes without any hash-map lookup; an established flow looks
//! its connection entry up before it needs the VIP's metadata.

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
    let key = &bucket.key;
    let ours = key.family == FAMILY_SHARED
        || (key.family == flow.family
            && key.port == flow.dport
            && key.proto == flow.proto
            && key.addr[0] == flow.dst[0]
            && key.addr[1] == flow.dst[1]
            && key.addr[2] == flow.dst[2]
            && key.addr[3] == flow.dst[3]);
    if ours { bucket } else { core::ptr::null() }
}

/// The metadata of the flow's VIP, given its non-null bucket from [`find`]:
/// the live generation's from the bucket, or, for a shared bucket, the
/// `VIPS` entry. Copied: the agent rewrites a bucket's idle generation and
/// replaces `VIPS` values as a whole.
#[inline(always)]
pub fn meta(bucket: *const VipBucket, flow: &FlowKey) -> Option<VipMeta> {
    // SAFETY: non-null pointers from `find` point to a map value, valid for
    // the program run.
    let bucket = unsafe { &*bucket };
    if bucket.key.family == FAMILY_SHARED {
        let key = VipKey { addr: flow.dst, port: flow.dport, proto: flow.proto, family: flow.family };
        return unsafe { VIPS.get(&key) }.copied();
    }
    // `live` is 0 or 1; tested rather than used as an index, so no bounds
    // check is needed.
    Some(if bucket.live == 0 { bucket.meta[0] } else { bucket.meta[1] })
}
