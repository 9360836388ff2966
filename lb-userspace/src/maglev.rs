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
/// `candidates`; `None` everywhere when no candidate has a weight.
pub fn build(candidates: &[Candidate], size: u32) -> Vec<Option<usize>> {
    let m = size as u64;
    let mut order: Vec<usize> = (0..candidates.len()).filter(|&i| candidates[i].weight > 0).collect();
    order.sort_by_key(|&i| candidates[i].address);
    order.dedup_by_key(|i| candidates[*i].address);
    let mut table = vec![None; size as usize];
    if order.is_empty() || size == 0 {
        return table;
    }
    struct Turn {
        index: usize,
        offset: u64,
        skip: u64,
        next: u64,
        weight: u64,
        credit: u64,
    }
    let mut turns: Vec<Turn> = order
        .iter()
        .map(|&index| {
            let words = addr_words(candidates[index].address);
            let offset = hash_words4(&words, MAGLEV_OFFSET_SEED) as u64 % m;
            let skip = if m > 1 { hash_words4(&words, MAGLEV_SKIP_SEED) as u64 % (m - 1) + 1 } else { 1 };
            Turn { index, offset, skip, next: 0, weight: candidates[index].weight as u64, credit: 0 }
        })
        .collect();
    let max_weight = turns.iter().map(|t| t.weight).max().unwrap_or(1);
    let mut filled = 0u64;
    loop {
        for t in turns.iter_mut() {
            t.credit += t.weight;
            while t.credit >= max_weight {
                t.credit -= max_weight;
                // Walk the permutation to the first free entry. `next` never
                // exceeds M: a permutation visits every entry once.
                let mut entry = (t.offset + t.next * t.skip) % m;
                while table[entry as usize].is_some() {
                    t.next += 1;
                    entry = (t.offset + t.next * t.skip) % m;
                }
                table[entry as usize] = Some(t.index);
                t.next += 1;
                filled += 1;
                if filled == m {
                    return table;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
