//! What a VIP's ring buffer holds, by algorithm: a Maglev table for
//! maglev and source-hash (the kernel indexes it with a hash), one period of
//! the smooth weighted round-robin sequence for round-robin (the kernel walks
//! it), the backend ids once each for least-connections (the kernel scans
//! them). Backends are taken in address order, so every instance given the
//! same backend set writes the same ring.

use std::net::IpAddr;

use lb_common::NO_BACKEND;

use crate::{
    config::{Algorithm, Vip},
    maglev, swrr,
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
                .map(|e| e.map_or(NO_BACKEND, |i| source[i as usize].2 as u16))
                .collect()
        }
        Algorithm::RoundRobin => {
            let order = by_address(source);
            let weights: Vec<u32> = order.iter().map(|&i| source[i].1).collect();
            let ring: Vec<u16> = swrr::sequence(&weights).into_iter().map(|k| source[order[k]].2 as u16).collect();
            if ring.is_empty() { vec![NO_BACKEND] } else { ring }
        }
        // The candidates, once each; their weights are in `BACKENDS`.
        Algorithm::LeastConnections => {
            let ring: Vec<u16> =
                by_address(source).into_iter().filter(|&i| source[i].1 > 0).map(|i| source[i].2 as u16).collect();
            if ring.is_empty() { vec![NO_BACKEND] } else { ring }
        }
    }
}

/// Indices of `source` in address order.
fn by_address(source: &[(IpAddr, u32, u32)]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..source.len()).collect();
    order.sort_by_key(|&i| source[i].0);
    order
}

/// Whether a ring of `applied_size` entries still has the size `vip` asks
/// for (the same backend input then gives the same ring).
pub(super) fn size_unchanged(vip: &Vip, applied_size: u32) -> bool {
    match vip.algorithm {
        Algorithm::Maglev | Algorithm::SourceHash => applied_size == vip.ring_size,
        // Sized by the weights alone: the same source gives the same ring.
        Algorithm::RoundRobin | Algorithm::LeastConnections => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn vip(algorithm: &str, weights: &[u32]) -> Vip {
        let mut text = format!(
            "[global]\nforwarding = \"l2dsr\"\n[[vip]]\naddress = \"198.18.100.1\"\nport = 80\nprotocol = \"tcp\"\n\
             algorithm = \"{algorithm}\"\nring_size = 13\n"
        );
        // Listed in reverse address order: the ring must not depend on it.
        for (i, w) in weights.iter().enumerate().rev() {
            text.push_str(&format!(
                "[[vip.backend]]\naddress = \"198.18.0.{}\"\nweight = {w}\nmac = \"02:00:00:00:00:01\"\n",
                i + 1
            ));
        }
        Config::from_toml_str(&text).unwrap().vips.remove(0)
    }

    /// (address, weight, id) as `apply` passes it; ids are 10 + the address's last byte.
    fn source(vip: &Vip) -> Vec<(IpAddr, u32, u32)> {
        vip.backends
            .iter()
            .map(|b| {
                let IpAddr::V4(a) = b.address else { unreachable!() };
                (b.address, b.weight, 10 + a.octets()[3] as u32)
            })
            .collect()
    }

    #[test]
    fn round_robin_ring_is_the_weighted_sequence_in_address_order() {
        let v = vip("round-robin", &[2, 1, 1]);
        assert_eq!(build(&v, &source(&v)), vec![11, 12, 13, 11]);
        let v = vip("round-robin", &[0, 3, 0]);
        assert_eq!(build(&v, &source(&v)), vec![12]);
        let v = vip("round-robin", &[0, 0]);
        assert_eq!(build(&v, &source(&v)), vec![NO_BACKEND]);
        assert!(size_unchanged(&v, 7), "a round-robin ring is sized by its weights");
    }

    #[test]
    fn least_connections_ring_lists_each_weighted_backend_once() {
        let v = vip("least-connections", &[5, 0, 1]);
        assert_eq!(build(&v, &source(&v)), vec![11, 13]);
        let v = vip("least-connections", &[0]);
        assert_eq!(build(&v, &source(&v)), vec![NO_BACKEND]);
    }

    #[test]
    fn hash_algorithms_share_the_maglev_table() {
        let (m, s) = (vip("maglev", &[1, 2, 3]), vip("source-hash", &[1, 2, 3]));
        let ring = build(&m, &source(&m));
        assert_eq!(ring.len(), 13);
        assert_eq!(ring, build(&s, &source(&s)));
        assert!(size_unchanged(&m, 13) && !size_unchanged(&m, 11));
    }
}
