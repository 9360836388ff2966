//! The connection table (`lb_common::conn`): an established flow keeps its
//! backend whatever happens to the rings, as long as the backend itself is
//! still present. Each entry also says whether its flow is still active
//! (see `ConnEntry`).

use core::ptr::{addr_of, addr_of_mut, null_mut, read_volatile};

use lb_common::{
    Backend, CONN_F_CLOSED, CONN_LABEL_SHIFT, CONN_WAYS, ConnEntry, ConnSet, ConnSlot, FLOW_LABEL_MASK, FlowKey,
    conn::{eviction_rank, evicts_open_flow, same_flow, set_index},
    types::seen_units,
};

use aya_ebpf::helpers::{bpf_jiffies64, bpf_ktime_get_coarse_ns};

use super::{
    active, atomic,
    maps::{CONNTRACK, CONNTRACK_KEY, FLOW_GUARD},
    select,
};

/// Result of looking a flow up.
pub enum Lookup {
    /// Entry found and its backend is still the one it was assigned.
    Hit(u32, &'static Backend, Found),
    /// No entry (or one a writer is changing at this moment).
    Miss,
    /// Entry found but its backend was removed (or its id reused).
    Stale,
}

/// A flow's entry as `lookup` found it: its slot, and the slot's sequence
/// word then. What changes the entry as a whole (`close`, `replace`) claims
/// the slot from that value, so it does nothing once another CPU has given
/// the slot to another flow. Reads after the lookup (`label`, `is_open`)
/// and `touch`'s write of `seen` are not checked again: a slot given away
/// in between costs one packet a wrong label, or the new flow a fresher
/// `seen`.
#[derive(Clone, Copy)]
pub struct Found {
    slot: *mut ConnSlot,
    seq: u64,
}

impl Found {
    /// No entry.
    pub const NONE: Found = Found { slot: null_mut(), seq: 0 };

    #[inline(always)]
    pub fn is_none(self) -> bool {
        self.slot.is_null()
    }

    #[inline(always)]
    fn entry(self) -> *mut ConnEntry {
        // SAFETY: a map value, valid for the program run.
        unsafe { addr_of_mut!((*self.slot).entry) }
    }

    /// The IPv6 flow label recorded with the flow (see `CONN_LABEL_SHIFT`).
    #[inline(always)]
    pub fn label(self) -> u32 {
        // SAFETY: a map value, valid for the program run.
        unsafe { (*self.entry()).flags >> CONN_LABEL_SHIFT }
    }

    /// Whether the flow has not been closed by a FIN or RST.
    #[inline(always)]
    pub fn is_open(self) -> bool {
        // SAFETY: a map value, valid for the program run.
        unsafe { (*self.entry()).flags & CONN_F_CLOSED == 0 }
    }
}

/// What `insert` did.
pub enum Recorded {
    Yes,
    /// Recorded in place of an open flow, the one idle longest in its set.
    EvictedOpen,
    /// Not recorded: another CPU is writing a way of the set (perhaps this
    /// flow's: recording it elsewhere would leave two), or no key yet.
    No,
}

/// A flow's set in the table.
#[derive(Clone, Copy)]
pub struct Set {
    /// Null: the agent has not written the table's key (or not looked yet).
    ptr: *mut ConnSet,
    /// `ConnTableKey::_pad`: always 0, unknown to the verifier (see `opaque`).
    zero: usize,
}

impl Set {
    /// No set (yet).
    pub const NONE: Set = Set { ptr: null_mut(), zero: 0 };

    /// A way's index as the verifier cannot know it. A scan that ends on
    /// way 0, 1, 2 or 3 would otherwise leave a different verifier state
    /// for each, and everything after the scan would be verified once per
    /// way (it multiplied the instructions the verifier walks by five).
    #[inline(always)]
    fn opaque(self, w: usize) -> usize {
        (w + self.zero) & (CONN_WAYS - 1)
    }
}

/// The flow's set (`Set::NONE` without a key).
#[inline(always)]
pub fn set_of(flow: &FlowKey) -> Set {
    let Some(key) = CONNTRACK_KEY.get(0) else { return Set::NONE };
    // 0 until the agent writes the key; under 32 the index would not fit.
    if key.set_shift < 32 {
        return Set::NONE;
    }
    Set { ptr: CONNTRACK.get_ptr_mut(set_index(flow, key)).unwrap_or_default(), zero: key._pad as usize }
}

/// Way `w` (< CONN_WAYS) of a set.
#[inline(always)]
fn way(set: *mut ConnSet, w: usize) -> *mut ConnSlot {
    // SAFETY: `set` is a map value of CONN_WAYS slots and `w` is below that.
    unsafe { addr_of_mut!((*set).slots).cast::<ConnSlot>().add(w) }
}

/// Keeps the compiler from moving the slot's plain reads across a reading
/// of its sequence word (an asm block may touch any memory).
#[inline(always)]
fn barrier() {
    // SAFETY: an empty asm block.
    unsafe { core::arch::asm!("", options(nostack, preserves_flags)) };
}

#[inline(always)]
pub fn lookup(set: Set, flow: &FlowKey) -> Lookup {
    if set.ptr.is_null() {
        return Lookup::Miss;
    }
    let (mut hit, mut hit_seq) = (CONN_WAYS, 0u64);
    for w in 0..CONN_WAYS {
        let slot = way(set.ptr, w);
        // SAFETY (this block): a map value, valid for the program run; the
        // sequence word says whether the reads up to its second reading
        // were consistent.
        let seq = unsafe { read_volatile(addr_of!((*slot).seq)) };
        barrier();
        if same_flow(unsafe { &(*slot).key }, flow) {
            (hit, hit_seq) = (w, seq);
            break;
        }
    }
    if hit >= CONN_WAYS {
        return Lookup::Miss;
    }
    let slot = way(set.ptr, set.opaque(hit));
    let (id, epoch) = unsafe { ((*slot).entry.backend, (*slot).entry.epoch) };
    barrier();
    if hit_seq & 1 != 0 || unsafe { read_volatile(addr_of!((*slot).seq)) } != hit_seq {
        return Lookup::Miss;
    }
    match select::backend(id) {
        Some(b) if b.epoch == epoch => Lookup::Hit(id, b, Found { slot, seq: hit_seq }),
        _ => Lookup::Stale,
    }
}

/// Now on the clock of `ConnEntry::seen` (one load: the verifier inlines
/// `bpf_jiffies64`).
#[inline(always)]
pub fn now_units() -> u32 {
    seen_units(unsafe { bpf_jiffies64() })
}

/// A client packet of an established flow: records when it was seen
/// (a write at most once a unit, 32 jiffies, per flow), and closes the flow on FIN/RST.
#[inline(always)]
pub fn touch(found: Found, id: u32, fin_or_rst: bool) {
    let now = now_units();
    let entry = found.entry();
    // SAFETY: a map value, valid for the program run; a racing writer on
    // another CPU writes the same unit (or one a tick later).
    unsafe {
        if (*entry).seen != now {
            (*entry).seen = now;
        }
    }
    if fin_or_rst {
        close(found, id);
    }
}

/// Runs `write` while this CPU holds the slot: claimed from `seq`, the even
/// value read before deciding to write (fails if the slot changed since,
/// or a writer holds it), released with a fully ordered add.
#[inline(always)]
fn claimed(slot: *mut ConnSlot, seq: u64, write: impl FnOnce()) -> bool {
    // SAFETY: a map value (8-aligned), valid for the program run.
    let word = unsafe { addr_of_mut!((*slot).seq) };
    if seq & 1 != 0 || !atomic::compare_exchange(word, seq, seq + 1) {
        return false;
    }
    write();
    atomic::fetch_add(word, 1);
    true
}

/// Marks the flow closed and takes it off its backend's active count, once:
/// a FIN then a RST, or two CPUs, close it once (the second claim fails or
/// finds it closed), and an entry given to another flow since the lookup
/// is left alone.
#[inline(always)]
pub fn close(found: Found, id: u32) {
    if !found.is_open() {
        return;
    }
    let entry = found.entry();
    // SAFETY: a map value; this CPU holds the slot while it writes. `seen`
    // (touched in place by other CPUs) is another word.
    if claimed(found.slot, found.seq, || unsafe { (*entry).flags |= CONN_F_CLOSED }) {
        active::closed(id);
    }
}

/// A SYN that picked another backend than its flow's open entry: the
/// entry is rewritten for the new flow in place (the old one stops counting,
/// the new one counts), so no packet ever sees the old backend closed but
/// still named. False if the slot changed since the lookup (then record it
/// with `insert`).
#[inline(always)]
pub fn replace(found: Found, old_id: u32, id: u32, backend: &Backend, label: u32) -> bool {
    let entry = found.entry();
    let new = ConnEntry { backend: id, epoch: backend.epoch, flags: label_flags(label), seen: now_units() };
    // SAFETY: a map value; this CPU holds the slot while it writes.
    if !claimed(found.slot, found.seq, || unsafe { *entry = new }) {
        return false;
    }
    active::closed(old_id);
    active::opened(id);
    true
}

/// `ConnEntry::flags` of a new entry: open, with its IPv6 flow label.
#[inline(always)]
fn label_flags(label: u32) -> u32 {
    (label & FLOW_LABEL_MASK) << CONN_LABEL_SHIFT
}

/// Records the flow's backend (counted active) and its IPv6 flow label
/// (0 for IPv4) in the way of its set that `eviction_rank` ranks first. An
/// evicted open flow is not uncounted here: the agent's recount drops it
/// (an idle one was already dropped).
#[inline(always)]
pub fn insert(set: Set, flow: &FlowKey, id: u32, backend: &Backend, label: u32) -> Recorded {
    if set.ptr.is_null() {
        return Recorded::No;
    }
    let now = now_units();
    // Every way ranks at least 1 (or the insert gives up), so way 0 is
    // taken unless a later one ranks higher.
    let (mut best, mut best_rank, mut best_seq) = (0, 0u64, 0u64);
    for w in 0..CONN_WAYS {
        let slot = way(set.ptr, w);
        // SAFETY (this block): a map value, valid for the program run; the
        // claim below fails if the slot changed since `seq` was read.
        let seq = unsafe { read_volatile(addr_of!((*slot).seq)) };
        barrier();
        if seq & 1 != 0 {
            return Recorded::No;
        }
        let (key, entry) = unsafe { (&(*slot).key, &(*slot).entry) };
        let rank = eviction_rank(same_flow(key, flow), key.family, entry, now);
        if rank > best_rank {
            (best, best_rank, best_seq) = (w, rank, seq);
        }
    }
    let best = way(set.ptr, set.opaque(best));
    let new = ConnEntry { backend: id, epoch: backend.epoch, flags: label_flags(label), seen: now };
    // SAFETY: a map value; this CPU holds the slot while it writes.
    let written = claimed(best, best_seq, || unsafe {
        (*best).key = *flow;
        (*best).entry = new;
    });
    if !written {
        return Recorded::No;
    }
    active::opened(id);
    if evicts_open_flow(best_rank) { Recorded::EvictedOpen } else { Recorded::Yes }
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
