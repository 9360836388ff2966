//! Maglev consistent hashing (Eisenbud et al., NSDI 2016, section 3.4), with
//! weights.
//!
//! Each backend gets a permutation of the table from two hashes of its
//! identity (its address): `offset = h1 % M`, `skip = h2 % (M - 1) + 1`,
//! entry j of the permutation is `(offset + j * skip) % M`. Backends then take
//! turns claiming their next free preferred entry until the table is full.
//! Weights change how many turns a backend gets per round: each round a
//! backend earns its weight in credit and claims one entry per `max_weight`
//! of credit, so entry counts follow the weights.
//!
//! The result depends only on the set of (address, weight): backends are
//! ordered by address before filling, so every lb instance given the same set
//! builds the same table whatever order the backends were added in.

use std::net::IpAddr;

use lb_common::{
    hash::{MAGLEV_OFFSET_SEED, MAGLEV_SKIP_SEED, hash_words4},
    types::addr_words,
};

/// One candidate for the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub address: IpAddr,
    /// 0 = takes no entry.
    pub weight: u32,
}

/// Builds a table of `size` entries (`size` prime). Each entry is an index into
/// `candidates`; `None` everywhere when no candidate has a weight. 2-byte
/// indices (4 bytes with the `Option`) keep the randomly written table in L2,
/// so at most 65536 candidates (a VIP has at most `MAX_BACKENDS`, 4096).
pub fn build(candidates: &[Candidate], size: u32) -> Vec<Option<u16>> {
    assert!(candidates.len() <= 1 << 16, "{} Maglev candidates, at most 65536", candidates.len());
    let m = size as u64;
    let mut order: Vec<usize> = (0..candidates.len()).filter(|&i| candidates[i].weight > 0).collect();
    order.sort_by_key(|&i| candidates[i].address);
    order.dedup_by_key(|i| candidates[*i].address);
    let mut table = vec![None; size as usize];
    if order.is_empty() || size == 0 {
        return table;
    }
    // Each backend walks its permutation with `position`, advanced by `skip`
    // modulo M by a branch-free conditional subtraction (no division). The
    // probe test reads an occupancy bitmap (8 KiB for M = 65537, it stays in
    // L1) rather than the table: the walk is almost all of the build's time.
    let mut turns: Vec<Turn> = order
        .iter()
        .map(|&index| {
            let words = addr_words(candidates[index].address);
            let offset = hash_words4(&words, MAGLEV_OFFSET_SEED) as u64 % m;
            let skip = if m > 1 { hash_words4(&words, MAGLEV_SKIP_SEED) as u64 % (m - 1) + 1 } else { 1 };
            let skip2 = next_position(skip, skip, m);
            let weight = candidates[index].weight as u64;
            Turn { index: index as u16, position: offset, skip, skip2, inverse: None, weight, credit: 0 }
        })
        .collect();
    let max_weight = turns.iter().map(|t| t.weight).max().unwrap_or(1);
    let mut taken = vec![0u64; (size as usize).div_ceil(64)];
    // Entries still free once fewer than `LATE_FREE` are left.
    let mut late: Option<Vec<u64>> = None;
    let mut filled = 0u64;
    loop {
        for t in turns.iter_mut() {
            t.credit += t.weight;
            while t.credit >= max_weight {
                t.credit -= max_weight;
                let entry = match late.as_mut() {
                    Some(free) => t.nearest_free(free, m),
                    None => t.walk(&taken, m),
                };
                taken[(entry / 64) as usize] |= 1 << (entry % 64);
                table[entry as usize] = Some(t.index);
                t.position = next_position(entry, t.skip, m);
                filled += 1;
                if filled == m {
                    return table;
                }
                if late.is_none() && m - filled <= LATE_FREE && crate::config::is_prime(size) {
                    late = Some((0..m).filter(|&e| !is_taken(&taken, e)).collect());
                }
            }
        }
    }
}

/// Below this many free entries, walking a permutation costs about `M / free`
/// probes per claim; computing every free entry's distance along the
/// permutation costs `free` multiplications, and wins. The switch changes how
/// the entry is found, never which one.
const LATE_FREE: u64 = 128;

/// A backend's progress through its permutation.
struct Turn {
    index: u16,
    /// The next entry of its permutation it has not looked at.
    position: u64,
    skip: u64,
    /// `2 * skip % M`.
    skip2: u64,
    /// `skip`'s inverse modulo M, computed when first needed.
    inverse: Option<u64>,
    weight: u64,
    credit: u64,
}

/// Whether entry `e` is taken in the occupancy bitmap.
fn is_taken(taken: &[u64], e: u64) -> bool {
    taken[(e / 64) as usize] & (1 << (e % 64)) != 0
}

impl Turn {
    /// The first free entry of the permutation from `position` on. Two
    /// probes per step, both computed from `p` (`skip` and `2 * skip`), halve
    /// the chain of dependent additions. A permutation visits every entry
    /// once, so a free one is always found while the table is not full.
    fn walk(&self, taken: &[u64], m: u64) -> u64 {
        let mut p = self.position;
        loop {
            if !is_taken(taken, p) {
                return p;
            }
            let q = next_position(p, self.skip, m);
            if !is_taken(taken, q) {
                return q;
            }
            p = next_position(p, self.skip2, m);
        }
    }

    /// Removes and returns the free entry the walk from `position` would
    /// reach first: the one fewest `skip` steps away. Entries it passed
    /// earlier were taken when it passed them and stay taken, so every free
    /// entry lies ahead; `(e - position) * skip^-1 mod M` is its distance.
    fn nearest_free(&mut self, free: &mut Vec<u64>, m: u64) -> u64 {
        let inverse = *self.inverse.get_or_insert_with(|| mod_inverse(self.skip, m));
        let position = self.position;
        let distance = |e: u64| if e >= position { e - position } else { e + m - position } * inverse % m;
        let (at, _) = free.iter().enumerate().min_by_key(|&(_, &e)| distance(e)).expect("the table is not full");
        free.swap_remove(at)
    }
}

/// `a^-1 mod m` for a prime `m` and `0 < a < m` (extended Euclid).
fn mod_inverse(a: u64, m: u64) -> u64 {
    let (mut r0, mut r1) = (m as i64, a as i64);
    let (mut t0, mut t1) = (0i64, 1i64);
    while r1 != 0 {
        let q = r0 / r1;
        (r0, r1) = (r1, r0 - q * r1);
        (t0, t1) = (t1, t0 - q * t1);
    }
    t0.rem_euclid(m as i64) as u64
}

/// `(position + skip) % m` for `position < m`, `skip < m`.
#[inline(always)]
fn next_position(position: u64, skip: u64, m: u64) -> u64 {
    // Branch-free: whether a step wraps is a coin toss for large skips, and
    // a branch here was mispredicted about once per probe.
    let back = m - skip;
    std::hint::select_unpredictable(position >= back, position.wrapping_sub(back), position + skip)
}

#[cfg(test)]
mod tests;
