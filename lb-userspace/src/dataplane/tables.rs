//! What a VIP's ring buffer holds, by algorithm: a Maglev table for
//! maglev and source-hash (the kernel indexes it with a hash).

use std::net::IpAddr;

use lb_common::NO_BACKEND;

use crate::{
    config::{Algorithm, Vip},
    maglev,
};

/// The ring of `vip`; `source` is (address, weight, backend id) per backend,
/// in the VIP's order. Its length is the VIP's `ring_size` in the map.
pub(super) fn build(vip: &Vip, source: &[(IpAddr, u32, u32)]) -> Vec<u16> {
    match vip.algorithm {
        Algorithm::Maglev | Algorithm::SourceHash => {
            let candidates: Vec<maglev::Candidate> =
                source.iter().map(|&(address, weight, _)| maglev::Candidate { address, weight }).collect();
            maglev::build(&candidates, vip.ring_size)
                .into_iter()
                .map(|e| e.map_or(NO_BACKEND, |i| source[i].2 as u16))
                .collect()
        }
    }
}

/// Whether a ring of `applied_size` entries still has the size `vip` asks
/// for (the same backend input then gives the same ring).
pub(super) fn size_unchanged(vip: &Vip, applied_size: u32) -> bool {
    match vip.algorithm {
        Algorithm::Maglev | Algorithm::SourceHash => applied_size == vip.ring_size,
    }
}
