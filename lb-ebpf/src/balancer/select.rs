//! Picking a backend for a new flow from its VIP's ring: by hash (Maglev,
//! source hash) or by position (round-robin).

use core::ffi::c_void;

use aya_ebpf::helpers::bpf_loop;
use lb_common::{BACKEND_F_PRESENT, Backend, LC_MAX_CANDIDATES, NO_BACKEND, RING_LANES, VipMeta, ring_chunk_index};

use super::{
    active,
    maps::{BACKENDS, RINGS, RR_NEXT},
};

/// Backend id at ring entry `hash % ring_size` of the VIP's live ring.
#[inline(always)]
pub fn ring_pick(meta: &VipMeta, hash: u32) -> Option<u32> {
    let size = meta.ring_size;
    if size == 0 {
        return None;
    }
    ring_entry(meta, hash % size)
}

/// Backend id at this CPU's next round-robin entry, which it then advances.
#[inline(always)]
pub fn round_robin(meta: &VipMeta) -> Option<u32> {
    let size = meta.ring_size;
    let next = RR_NEXT.get_ptr_mut(meta.slot)?;
    if size == 0 {
        return None;
    }
    // SAFETY: this CPU's own element; nothing else writes it meanwhile.
    let entry = unsafe { *next } % size;
    unsafe { *next = entry + 1 };
    ring_entry(meta, entry)
}

/// Least-connections: of the ring's backends (each listed once), the one
/// with the smallest active count per unit of weight; the scan starts at
/// `hash % ring_size`, so ties go to different backends for different flows.
/// The scan runs under bpf_loop: the verifier checks its body once instead
/// of every iteration on every path.
#[inline(always)]
pub fn least_connections(meta: &VipMeta, hash: u32) -> Option<u32> {
    let n = meta.ring_size;
    if n == 0 {
        return None;
    }
    let mut scan = Scan { meta: *meta, start: hash % n, best: NO_BACKEND as u32, best_active: 0, best_weight: 0 };
    let loops = if n < LC_MAX_CANDIDATES { n } else { LC_MAX_CANDIDATES };
    // SAFETY: the callback has the signature bpf_loop calls, and `scan`
    // outlives the call.
    unsafe { bpf_loop(loops, scan_one as *mut c_void, &mut scan as *mut Scan as *mut c_void, 0) };
    (scan.best != NO_BACKEND as u32).then_some(scan.best)
}

/// The state of a least-connections scan, on the caller's stack.
#[repr(C)]
struct Scan {
    meta: VipMeta,
    start: u32,
    best: u32,
    best_active: u64,
    best_weight: u64,
}

/// One candidate of the scan: `i`-th entry from `start`. Returns 0 (go on).
extern "C" fn scan_one(i: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop hands back the `Scan` given to it.
    let scan = unsafe { &mut *(ctx as *mut Scan) };
    let n = scan.meta.ring_size;
    if n == 0 {
        return 1;
    }
    let entry = (scan.start as u64 + i) % n as u64;
    let Some(id) = ring_entry(&scan.meta, entry as u32) else { return 0 };
    let Some(b) = backend(id) else { return 0 };
    let weight = b.weight as u64;
    if weight == 0 {
        return 0;
    }
    let active = active::get(id);
    // active / weight < best_active / best_weight, without division.
    if scan.best == NO_BACKEND as u32 || active * scan.best_weight < scan.best_active * weight {
        scan.best = id;
        scan.best_active = active;
        scan.best_weight = weight;
    }
    0
}

/// Backend id at `entry` (< ring_size) of the VIP's live ring.
#[inline(always)]
fn ring_entry(meta: &VipMeta, entry: u32) -> Option<u32> {
    let chunk = RINGS.get(ring_chunk_index(meta.slot, meta.ring_gen & 1, entry))?;
    let id = chunk.lanes[(entry % RING_LANES) as usize];
    if id == NO_BACKEND {
        return None;
    }
    Some(id as u32)
}

/// The backend behind an id, if it is still present.
#[inline(always)]
pub fn backend(id: u32) -> Option<&'static Backend> {
    let b = BACKENDS.get(id)?;
    if b.state & BACKEND_F_PRESENT == 0 {
        return None;
    }
    Some(b)
}
