//! The connection table's layout and rules, shared by the program (which
//! looks flows up and records them) and the agent (which walks the table
//! and predicts where a flow's entry lives).
//!
//! `CONNTRACK` is an array of sets of `CONN_WAYS` slots, one 64-byte cache
//! line each; a flow lives in the set that `set_index` gives it, in any of
//! its ways. Why not the kernel's LRU hash map: each lookup there is a call,
//! a jhash of the 40-byte key and a `memcmp` call, and each insert takes a
//! free node from an LRU list under a lock and a bucket lock (measured:
//! ~600 ns per new flow in a 2^20 table on this kind of machine). Here a
//! lookup is a keyed multiply hash, an inlined array access and word
//! compares, and an insert is one compare-and-swap and a few stores.
//!
//! Concurrency: each slot has a sequence word, odd while a writer changes
//! the slot. A writer claims the slot by compare-and-swap from the even
//! value it read, writes key and entry, then adds one (a fetch-add: fully
//! ordered). A reader reads the word, then the key and entry, then the word
//! again, and trusts what it read only if both readings are the same even
//! value (this relies on loads not passing loads, as on x86-64). `seen` and
//! the closed flag change in place on a live entry: single aligned words.

use crate::{CONN_F_CLOSED, CONN_WAYS, ConnEntry, FlowKey};

/// One way of a set: a flow's key and entry behind a sequence word.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnSlot {
    /// Even while stable, odd while a writer changes the slot; 64 bits
    /// because BPF compare-and-swap on 32 bits needs alu32.
    pub seq: u64,
    /// `key.family` 0: an empty slot.
    pub key: FlowKey,
    pub entry: ConnEntry,
}

/// `CONNTRACK` value: one set.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnSet {
    pub slots: [ConnSlot; CONN_WAYS],
}

/// `CONNTRACK_KEY[0]`: how flows are placed in this instance's table.
/// Written once by the agent that creates the table (random `words` and
/// `mix`) and kept with it: a changed key would lose every entry. Each
/// instance's table is its own, so a per-instance key costs nothing behind
/// ECMP and stops anyone from crafting flows that fill one set.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnTableKey {
    /// Added to the ten 32-bit words of a flow before they are multiplied.
    pub words: [u32; 10],
    /// Odd multiplier that spreads the sum into the top bits.
    pub mix: u64,
    /// 64 - log2(sets): the index is the hash's top bits. 0 until the agent
    /// writes the key; the program then records nothing.
    pub set_shift: u32,
    /// Always 0. The program adds it to a way's index, which hides the
    /// index from the verifier (see the program's `conntrack::Set`).
    pub _pad: u32,
}

impl ConnTableKey {
    /// The key of a table of `sets` sets (a power of two) from 48 random
    /// bytes.
    pub fn new(random: [u8; 48], sets: u32) -> ConnTableKey {
        let word = |i: usize| u32::from_le_bytes([random[i], random[i + 1], random[i + 2], random[i + 3]]);
        let mut words = [0u32; 10];
        let mut i = 0;
        while i < 10 {
            words[i] = word(4 * i);
            i += 1;
        }
        let mix = (word(40) as u64) << 32 | word(44) as u64 | 1;
        ConnTableKey { words, mix, set_shift: 64 - sets.trailing_zeros(), _pad: 0 }
    }

    /// Sets of the table this key was made for (0: no key yet, or not a
    /// key this code could have made).
    pub fn sets(&self) -> u32 {
        if (33..=64).contains(&self.set_shift) { 1u32 << (64 - self.set_shift) } else { 0 }
    }

    /// Whether this could be a key `new` made: `mix` odd, `_pad` 0 (the
    /// program adds it to way indices), a size in range.
    pub fn is_well_formed(&self) -> bool {
        self.mix & 1 == 1 && self._pad == 0 && self.sets() != 0
    }
}

/// The set of a flow: NH (sums of products of key-offset word pairs, an
/// almost-universal hash) folded by a keyed multiply and a fixed one with
/// xor-shifts between (without them, grids of clients x ports land on
/// lattices: some sets overflow while others stay empty), the index taken
/// from the top bits. Five independent multiplies and two dependent ones:
/// far cheaper than the flow hash's chain of dependent rounds, and keyed,
/// which the flow hash cannot be (it must be the same on every instance).
/// Callers check `set_shift >= 32`.
#[inline(always)]
pub fn set_index(flow: &FlowKey, key: &ConnTableKey) -> u32 {
    let k = &key.words;
    let term = |a: u32, ka: u32, b: u32, kb: u32| (a as u64 + ka as u64).wrapping_mul(b as u64 + kb as u64);
    let ports = (flow.sport as u32) | ((flow.dport as u32) << 16);
    let kind = (flow.proto as u32) | ((flow.family as u32) << 8);
    let sum = term(flow.src[0], k[0], flow.dst[0], k[1])
        .wrapping_add(term(flow.src[1], k[2], flow.dst[1], k[3]))
        .wrapping_add(term(flow.src[2], k[4], flow.dst[2], k[5]))
        .wrapping_add(term(flow.src[3], k[6], flow.dst[3], k[7]))
        .wrapping_add(term(ports, k[8], kind, k[9]));
    let h = (sum ^ (sum >> 32)).wrapping_mul(key.mix);
    let h = (h ^ (h >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    ((h ^ (h >> 32)) >> key.set_shift) as u32
}

/// Whether two keys are the same flow: five 64-bit compares (a derived `==`
/// would compare field by field, or call `memcmp`, which BPF lacks).
#[inline(always)]
pub fn same_flow(a: &FlowKey, b: &FlowKey) -> bool {
    let (a, b) = (a as *const FlowKey as *const u64, b as *const FlowKey as *const u64);
    // SAFETY: FlowKey is 40 bytes and 8-aligned (asserted in `types`).
    unsafe {
        *a == *b && *a.add(1) == *b.add(1) && *a.add(2) == *b.add(2) && *a.add(3) == *b.add(3) && *a.add(4) == *b.add(4)
    }
}

/// How much a way of a full set deserves to be overwritten by a new flow
/// (the highest rank is taken; 0: never): the flow's own old entry first,
/// then an empty way, then the closed flow idle longest, then the open flow
/// idle longest. `now` and `entry.seen` are in `seen_units`; an entry seen
/// after `now` (another CPU, a tick ahead) counts as just seen.
#[inline(always)]
pub fn eviction_rank(same: bool, key_family: u8, entry: &ConnEntry, now: u32) -> u64 {
    if same {
        return u64::MAX;
    }
    if key_family == 0 {
        return u64::MAX - 1;
    }
    let age = now.wrapping_sub(entry.seen);
    let age = if age > i32::MAX as u32 { 0 } else { age as u64 };
    if entry.flags & CONN_F_CLOSED != 0 { (1 << 33) + age } else { 1 + age }
}

/// Whether overwriting a way of this rank drops an open flow.
#[inline(always)]
pub fn evicts_open_flow(rank: u64) -> bool {
    rank < 1 << 33
}

const _: () = {
    assert!(core::mem::size_of::<ConnSlot>() == 64);
    assert!(core::mem::size_of::<ConnSet>() == 64 * CONN_WAYS);
    assert!(core::mem::size_of::<ConnTableKey>() == 56);
    assert!(core::mem::align_of::<FlowKey>() == 8);
    assert!(core::mem::offset_of!(ConnSlot, key) == 8);
};

#[cfg(test)]
mod tests {
    extern crate std;
    use std::{collections::HashMap, vec::Vec};

    use super::*;
    use crate::{FAMILY_V4, FAMILY_V6};

    fn key(seed: u8, sets: u32) -> ConnTableKey {
        let mut random = [0u8; 48];
        let mut x = (seed as u32).wrapping_mul(2_654_435_761) | 1;
        for b in random.iter_mut() {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = x as u8;
        }
        ConnTableKey::new(random, sets)
    }

    fn v4(src: u32, sport: u16) -> FlowKey {
        FlowKey {
            src: [src.to_be(), 0, 0, 0],
            dst: [u32::from_be_bytes([198, 18, 0, 10]), 0, 0, 0],
            sport: sport.to_be(),
            dport: 80u16.to_be(),
            proto: 6,
            family: FAMILY_V4,
            _pad: [0; 2],
        }
    }

    /// Sets of the fullest set and the average when `flows` fill a table.
    fn spread(flows: &[FlowKey], key: &ConnTableKey) -> (usize, f64) {
        let mut per_set: HashMap<u32, usize> = HashMap::new();
        for f in flows {
            let i = set_index(f, key);
            assert!(i < key.sets());
            *per_set.entry(i).or_default() += 1;
        }
        (per_set.values().copied().max().unwrap(), flows.len() as f64 / key.sets() as f64)
    }

    /// Flows beyond CONN_WAYS in their set (each would evict another).
    fn overflow(flows: &[FlowKey], key: &ConnTableKey) -> usize {
        let mut per_set: HashMap<u32, usize> = HashMap::new();
        for f in flows {
            *per_set.entry(set_index(f, key)).or_default() += 1;
        }
        per_set.values().map(|n| n.saturating_sub(CONN_WAYS)).sum()
    }

    /// Expected `overflow` of `n` random flows into `sets` sets (Poisson).
    fn random_overflow(n: usize, sets: u32) -> f64 {
        let lambda = n as f64 / sets as f64;
        let (mut p, mut expected) = ((-lambda).exp(), 0.0);
        for k in 1..64 {
            p *= lambda / k as f64;
            if k > CONN_WAYS {
                expected += p * (k - CONN_WAYS) as f64;
            }
        }
        expected * sets as f64
    }

    /// Clients x ports grids fill the sets like random flows: no more flows
    /// beyond the ways than random ones would bring (a lattice-prone hash
    /// overflowed up to 4x more, or far less, depending on the key).
    #[test]
    fn structured_fills_overflow_like_random_ones() {
        let sets = 1 << 18;
        let walk = |n: u32| -> Vec<FlowKey> {
            (0..n)
                .map(|i| v4(u32::from_be_bytes([198, 19, (i >> 12) as u8, (i >> 4) as u8]), 1024 + (i & 15) as u16))
                .collect()
        };
        let clients =
            |n: u32| -> Vec<FlowKey> { (0..n).map(|i| v4(0xc612_0000 + (i >> 6), 32768 + (i & 63) as u16)).collect() };
        for seed in 0..6 {
            let key = key(seed, sets);
            for n in [250_000u32, 500_000] {
                let expected = random_overflow(n as usize, sets);
                for (name, flows) in [("walk", walk(n)), ("clients", clients(n))] {
                    let got = overflow(&flows, &key) as f64;
                    assert!(got < expected * 1.2 + 50.0, "{name}, {n} flows, key {seed}: {got} (random {expected:.0})");
                }
            }
        }
    }

    #[test]
    fn structured_flows_spread_like_random_ones() {
        // 2^14 sets, 2^16 flows (4 per set on average, a full table): a
        // client's sequential ports, sequential clients, IPv6 clients in
        // one /64. Balls into bins: the fullest set of 16384 at 4 per set
        // is about 12-13; a structured weakness would show as far more.
        let sets = 1 << 14;
        for seed in 0..4 {
            let key = key(seed, sets);
            let ports: Vec<FlowKey> = (0..1u32 << 16).map(|p| v4(0xc612_0001, p as u16)).collect();
            let clients: Vec<FlowKey> = (0..1u32 << 16).map(|c| v4(0xc612_0000 + c, 40000)).collect();
            let grid: Vec<FlowKey> =
                (0..256u32).flat_map(|c| (0..256u32).map(move |p| v4(c, 1024 + p as u16))).collect();
            let v6: Vec<FlowKey> = (0..1u32 << 16)
                .map(|c| FlowKey {
                    src: [0x0db8_0120, 0, 0, (c * 7919).to_be()],
                    dst: [0x0db8_0120, 0, 0, 1u32.to_be()],
                    family: FAMILY_V6,
                    ..v4(0, 443)
                })
                .collect();
            // The recount test's fill: 16 ports of each of 4096 addresses
            // counted in the third and fourth bytes.
            let walk: Vec<FlowKey> = (0..1u32 << 16)
                .map(|i| v4(u32::from_be_bytes([198, 19, (i >> 12) as u8, (i >> 4) as u8]), 1024 + (i & 15) as u16))
                .collect();
            for (name, flows) in
                [("ports", &ports), ("clients", &clients), ("grid", &grid), ("v6", &v6), ("walk", &walk)]
            {
                let (max, avg) = spread(flows, &key);
                assert!(avg == 4.0 && max <= 16, "{name} with key {seed}: fullest set {max}");
            }
        }
    }

    #[test]
    fn the_key_moves_flows_and_the_size_sets_the_range() {
        let (a, b) = (key(1, 1 << 18), key(2, 1 << 18));
        let flows: Vec<FlowKey> = (0..1000).map(|p| v4(0xc612_0001, p)).collect();
        let same = flows.iter().filter(|f| set_index(f, &a) == set_index(f, &b)).count();
        assert!(same < 5, "{same} of 1000 flows in the same set under two keys");
        assert_eq!((a.sets(), ConnTableKey::default().sets()), (1 << 18, 0));
        assert_eq!(key(3, 256).set_shift, 56);
        assert!(a.mix & 1 == 1);
        // What the agent accepts from a pinned table.
        assert!(a.is_well_formed() && !ConnTableKey::default().is_well_formed());
        assert!(!ConnTableKey { _pad: 1, ..a }.is_well_formed(), "a non-zero pad would shift way indices");
        assert!(!ConnTableKey { mix: a.mix & !1, ..a }.is_well_formed());
        for shift in [1, 14, 32, 65] {
            assert_eq!(ConnTableKey { set_shift: shift, ..a }.sets(), 0, "set_shift {shift}");
        }
    }

    #[test]
    fn same_flow_compares_every_word() {
        let f = v4(1, 2);
        assert!(same_flow(&f, &f.clone()));
        for changed in [
            FlowKey { sport: 3u16.to_be(), ..f },
            FlowKey { dst: [1, 0, 0, 1], ..f },
            FlowKey { src: [1u32.to_be(), 0, 1, 0], ..f },
            FlowKey { proto: 17, ..f },
            FlowKey { family: FAMILY_V6, ..f },
        ] {
            assert!(!same_flow(&f, &changed), "{changed:?}");
        }
    }

    #[test]
    fn eviction_takes_the_flow_itself_then_free_then_closed_then_idlest() {
        let open = |seen| ConnEntry { backend: 1, epoch: 0, flags: 0, seen };
        let closed = |seen| ConnEntry { flags: CONN_F_CLOSED, ..open(seen) };
        let now = 1000;
        let ranks = [
            eviction_rank(true, FAMILY_V4, &open(now), now),
            eviction_rank(false, 0, &ConnEntry::default(), now),
            eviction_rank(false, FAMILY_V4, &closed(900), now),
            eviction_rank(false, FAMILY_V4, &closed(999), now),
            eviction_rank(false, FAMILY_V4, &open(10), now),
            eviction_rank(false, FAMILY_V4, &open(500), now),
            eviction_rank(false, FAMILY_V4, &open(now), now),
        ];
        assert!(ranks.windows(2).all(|w| w[0] > w[1]), "{ranks:?}");
        assert!(ranks[6] > 0, "a live set can always take a new flow");
        assert_eq!(eviction_rank(false, FAMILY_V4, &open(now + 1), now), ranks[6], "seen a tick ahead");
        assert_eq!(ranks.map(evicts_open_flow), [false, false, false, false, true, true, true]);
        // Across the clock's wrap.
        assert!(eviction_rank(false, FAMILY_V4, &open(u32::MAX - 5), 10) > ranks[6]);
    }
}
