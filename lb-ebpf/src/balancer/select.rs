//! Picking a backend for a flow from its VIP's Maglev ring.

use lb_common::{BACKEND_F_PRESENT, Backend, NO_BACKEND, RING_LANES, VipMeta, ring_chunk_index};

use super::maps::{BACKENDS, RINGS};

/// Backend id at ring entry `hash % ring_size` of the VIP's live ring.
#[inline(always)]
pub fn ring_pick(meta: &VipMeta, hash: u32) -> Option<u32> {
    let size = meta.ring_size;
    if size == 0 {
        return None;
    }
    let entry = hash % size;
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
