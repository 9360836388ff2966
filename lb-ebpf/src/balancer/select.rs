//! Picking a backend for a new flow from its VIP's ring: by hash (Maglev,
//! source hash) or by position (round-robin).

use lb_common::{BACKEND_F_PRESENT, Backend, NO_BACKEND, RING_LANES, VipMeta, ring_chunk_index};

use super::maps::{BACKENDS, RINGS, RR_NEXT};

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
