//! Per-CPU packet and byte counters.

use aya_ebpf::maps::PerCpuArray;
use lb_common::Counters;

use super::maps::{BACKEND_FLOWS, BACKEND_STATS, STATS, VIP_STATS};

#[inline(always)]
fn bump(map: &PerCpuArray<Counters>, index: u32, bytes: u64) {
    if let Some(c) = map.get_ptr_mut(index) {
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
}

/// Counts one packet under a `lb_common::stats` reason.
#[inline(always)]
pub fn stat(reason: u32, bytes: u64) {
    bump(&STATS, reason, bytes);
}

#[inline(always)]
pub fn vip(slot: u32, bytes: u64) {
    bump(&VIP_STATS, slot, bytes);
}

#[inline(always)]
pub fn backend(id: u32, bytes: u64) {
    bump(&BACKEND_STATS, id, bytes);
}

/// Counts a new flow given to a backend.
#[inline(always)]
pub fn backend_flow(id: u32) {
    if let Some(n) = BACKEND_FLOWS.get_ptr_mut(id) {
        unsafe { *n += 1 };
    }
}
