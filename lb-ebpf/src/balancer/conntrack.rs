//! The connection table: an established flow keeps its backend whatever
//! happens to the rings, as long as the backend itself is still present.

use lb_common::{Backend, ConnEntry, FlowKey};

use super::{maps::CONNTRACK, select};

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
