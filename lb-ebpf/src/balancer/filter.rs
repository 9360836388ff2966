//! The VIP filter: lets a packet that is no VIP's pass without a hash-map
//! lookup, so the established-flow path can look the connection table up
//! before the VIP (see `lb_common::VIP_FILTER_BITS`).

use lb_common::{FlowKey, hash::vip_filter_bit};

use super::maps::VIP_FILTER;

/// Whether the flow's destination may be a VIP (its bit is set).
#[inline(always)]
pub fn may_be_vip(flow: &FlowKey) -> bool {
    let bit = vip_filter_bit(&flow.dst, flow.dport, flow.proto);
    match VIP_FILTER.get(bit / 64) {
        Some(word) => word & (1 << (bit % 64)) != 0,
        None => false,
    }
}
