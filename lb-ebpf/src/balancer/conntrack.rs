//! The connection table: an established flow keeps its backend whatever
//! happens to the rings, as long as the backend itself is still present.

use lb_common::{Backend, ConnEntry, FlowKey};

use aya_ebpf::helpers::bpf_ktime_get_ns;

use super::{
    maps::{CONNTRACK, FLOW_GUARD},
    select,
};

/// Result of looking a flow up.
pub enum Lookup {
    /// Entry found and its backend is still the one it was assigned.
    Hit(u32, &'static Backend),
    /// No entry.
    Miss,
    /// Entry found but its backend was removed (or its id reused).
    Stale,
}

#[inline(always)]
pub fn lookup(flow: &FlowKey) -> Lookup {
    let Some(entry) = (unsafe { CONNTRACK.get(flow) }) else {
        return Lookup::Miss;
    };
    let (id, epoch) = (entry.backend, entry.epoch);
    match select::backend(id) {
        Some(b) if b.epoch == epoch => Lookup::Hit(id, b),
        _ => Lookup::Stale,
    }
}

/// Records the flow's backend; returns false if the table refused it.
#[inline(always)]
pub fn insert(flow: &FlowKey, id: u32, backend: &Backend) -> bool {
    CONNTRACK.insert(flow, &ConnEntry { backend: id, epoch: backend.epoch }, 0).is_ok()
}

/// The flood guard: whether this CPU may record one more new flow in the
/// current second. Per CPU, so it needs no lock and no atomic.
#[inline(always)]
pub fn may_record(limit: u32) -> bool {
    if limit == 0 {
        return true;
    }
    let Some(guard) = FLOW_GUARD.get_ptr_mut(0) else { return true };
    let now = unsafe { bpf_ktime_get_ns() };
    unsafe {
        if now.wrapping_sub((*guard).window_start_ns) >= 1_000_000_000 {
            (*guard).window_start_ns = now;
            (*guard).recorded = 0;
        }
        if (*guard).recorded >= limit as u64 {
            return false;
        }
        (*guard).recorded += 1;
    }
    true
}
