//! Active connections per backend (`BACKEND_ACTIVE`): +1 when a new flow is
//! recorded in the connection table, -1 when its client sends the first FIN
//! or RST. One counter shared by all CPUs (least-connections compares
//! totals), so it is changed with BPF atomics. The agent overwrites it with
//! a count of the connection table at every reconciliation, which also
//! removes flows that ended silently (UDP, evictions, lost FINs).

use super::{atomic::add, maps::BACKEND_ACTIVE};

#[inline(always)]
pub fn opened(id: u32) {
    if let Some(c) = BACKEND_ACTIVE.get_ptr_mut(id) {
        add(c, 1);
    }
}

/// -1 unless already 0. Two CPUs racing at 1 may take it to -1 (read as 0
/// by [`get`]) until the next reconciliation.
#[inline(always)]
pub fn closed(id: u32) {
    if let Some(c) = BACKEND_ACTIVE.get_ptr_mut(id) {
        // SAFETY: as in `add`; a plain read of an aligned u64 is atomic.
        if unsafe { core::ptr::read_volatile(c) } as i64 > 0 {
            add(c, u64::MAX);
        }
    }
}

/// The count, negative values (see [`closed`]) read as 0.
#[inline(always)]
pub fn get(id: u32) -> u64 {
    match BACKEND_ACTIVE.get(id) {
        Some(&n) if (n as i64) > 0 => n,
        _ => 0,
    }
}
