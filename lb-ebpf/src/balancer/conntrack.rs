//! The connection table: an established flow keeps its backend whatever
//! happens to the rings, as long as the backend itself is still present.
//! Each entry also says whether its flow is still active (see `ConnEntry`).

use lb_common::{Backend, CONN_F_CLOSED, CONN_LABEL_SHIFT, ConnEntry, FLOW_LABEL_MASK, FlowKey, types::seen_units};

use aya_ebpf::helpers::{bpf_jiffies64, bpf_ktime_get_coarse_ns};

use super::{
    active, atomic,
    maps::{CONNTRACK, FLOW_GUARD},
    select,
};

/// Result of looking a flow up.
pub enum Lookup {
    /// Entry found and its backend is still the one it was assigned.
    Hit(u32, &'static Backend, *mut ConnEntry),
    /// No entry.
    Miss,
    /// Entry found but its backend was removed (or its id reused).
    Stale,
}

#[inline(always)]
pub fn lookup(flow: &FlowKey) -> Lookup {
    let Some(entry) = CONNTRACK.get_ptr_mut(flow) else {
        return Lookup::Miss;
    };
    // SAFETY: a map value, valid for the program run.
    let (id, epoch) = unsafe { ((*entry).backend, (*entry).epoch) };
    match select::backend(id) {
        Some(b) if b.epoch == epoch => Lookup::Hit(id, b, entry),
        _ => Lookup::Stale,
    }
}

/// Now on the clock of `ConnEntry::seen` (one load: the verifier inlines
/// `bpf_jiffies64`).
#[inline(always)]
pub fn now_units() -> u32 {
    seen_units(unsafe { bpf_jiffies64() })
}

/// The IPv6 flow label recorded with the flow (see `CONN_LABEL_SHIFT`).
#[inline(always)]
pub fn label(entry: *mut ConnEntry) -> u32 {
    // SAFETY: a map value, valid for the program run.
    unsafe { (*entry).flags >> CONN_LABEL_SHIFT }
}

/// Whether the flow has not been closed by a FIN or RST.
#[inline(always)]
pub fn is_open(entry: *mut ConnEntry) -> bool {
    // SAFETY: a map value, valid for the program run.
    unsafe { (*entry).flags & CONN_F_CLOSED == 0 }
}

/// A client packet of an established flow: records when it was seen
/// (a write at most once a unit, 32 jiffies, per flow), and closes the flow on FIN/RST.
#[inline(always)]
pub fn touch(entry: *mut ConnEntry, id: u32, fin_or_rst: bool) {
    let now = now_units();
    // SAFETY: a map value, valid for the program run; a racing writer on
    // another CPU writes the same unit (or one a tick later).
    unsafe {
        if (*entry).seen != now {
            (*entry).seen = now;
        }
    }
    if fin_or_rst {
        close(entry, id);
    }
}

/// Marks the flow closed; whoever sets the flag first takes it off its
/// backend's active count, so a FIN then a RST (or two CPUs) count once.
#[inline(always)]
pub fn close(entry: *mut ConnEntry, id: u32) {
    if !is_open(entry) {
        return;
    }
    // `flags` and `seen` share the 8-aligned second word of the entry;
    // `flags` is its low half (little endian), which is all this changes.
    const _: () = assert!(core::mem::offset_of!(ConnEntry, flags) == 8);
    // SAFETY: a map value (8-aligned), valid for the program run.
    let word = unsafe { core::ptr::addr_of_mut!((*entry).flags) } as *mut u64;
    let before = atomic::fetch_or(word, CONN_F_CLOSED as u64) as u32;
    if before & CONN_F_CLOSED == 0 {
        active::closed(id);
    }
}

/// Records the flow's backend (counted active) and its IPv6 flow label
/// (0 for IPv4); returns false if the table refused it.
#[inline(always)]
pub fn insert(flow: &FlowKey, id: u32, backend: &Backend, label: u32) -> bool {
    let flags = (label & FLOW_LABEL_MASK) << CONN_LABEL_SHIFT;
    let entry = ConnEntry { backend: id, epoch: backend.epoch, flags, seen: now_units() };
    let recorded = CONNTRACK.insert(flow, &entry, 0).is_ok();
    if recorded {
        active::opened(id);
    }
    recorded
}

/// The flood guard: whether this CPU may record one more new flow. At most
/// `limit` flows are recorded per window, and a window lasts at least a
/// second. Per CPU, so it needs no lock and no atomic. The clock is read
/// only once the budget is spent (a window ends when the limit is reached
/// a second or more after it began), and then at most once a jiffy: under
/// the limit a new flow reads no clock, and a flood's refused SYNs share
/// one reading per tick. Bursts are bounded as with fixed one-second
/// windows: at most `limit` at the end of one window and `limit` at the
/// start of the next.
#[inline(always)]
pub fn may_record(limit: u32) -> bool {
    if limit == 0 {
        return true;
    }
    let Some(guard) = FLOW_GUARD.get_ptr_mut(0) else { return true };
    // SAFETY: this CPU's map value, valid for the program run.
    let guard = unsafe { &mut *guard };
    if guard.recorded < limit {
        guard.recorded += 1;
        return true;
    }
    let jiffy = unsafe { bpf_jiffies64() } as u32;
    if guard.checked_jiffy == jiffy {
        return false;
    }
    guard.checked_jiffy = jiffy;
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if now.wrapping_sub(guard.window_start_ns) < 1_000_000_000 {
        return false;
    }
    guard.window_start_ns = now;
    guard.recorded = 1;
    true
}
