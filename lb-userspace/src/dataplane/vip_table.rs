//! `VIP_TABLE`: the VIPs by destination hash, which lets the program find a
//! packet's VIP without a hash-map lookup (`lb_common::VIP_TABLE_BUCKETS`).
//! The program reads a bucket while the agent may be writing it, and a map
//! write is a plain copy of the value. So every write here changes either a
//! single byte the program reads (`key.family`: a VIP appears, disappears or
//! becomes shared; `live`: its ring flips), or only bytes the program
//! ignores before and after the write (the key and metadata of an empty or
//! shared bucket, the idle generation's metadata). Each change is then
//! atomic for the program, like the `VIPS` update it mirrors.

use std::collections::HashMap;

use lb_common::{FAMILY_SHARED, VIP_TABLE_BUCKETS, VipBucket, VipKey, VipMeta, consts::maps, hash::vip_bucket};

use super::{Dataplane, Result, array, map_err};

/// The bucket of a VIP.
pub fn bucket_of(key: &VipKey) -> u32 {
    vip_bucket(&key.addr, key.port, key.proto)
}

/// Whether the bucket holds one VIP (whose key the program compares).
fn holds_one(b: &VipBucket) -> bool {
    b.key.family != 0 && b.key.family != FAMILY_SHARED
}

/// What bucket `cur` becomes with `live`, the VIPs in `VIPS` that hash to
/// it. Bytes the program will ignore are left as they are, so that fewer
/// bytes change.
fn desired(cur: &VipBucket, live: &[(VipKey, VipMeta)]) -> VipBucket {
    match live {
        [] => VipBucket { key: VipKey { family: 0, ..cur.key }, ..*cur },
        [(key, meta)] => {
            let mut b = VipBucket { key: *key, ..*cur };
            b.live = meta.ring_gen & 1;
            b.meta[b.live as usize] = *meta;
            b
        }
        _ => VipBucket { key: VipKey { family: FAMILY_SHARED, ..cur.key }, ..*cur },
    }
}

/// The writes that take a bucket from `cur` to `target`, in order, each
/// atomic for the program (see the module's doc).
fn steps(cur: &VipBucket, target: &VipBucket) -> Vec<VipBucket> {
    let mut out = Vec::new();
    let mut at = *cur;
    if holds_one(&at) && holds_one(target) && at.key != target.key {
        // Another VIP: the old one leaves first (family 0), so no packet
        // ever matches a key half of one VIP and half of the other.
        at.key.family = 0;
        out.push(at);
    }
    let staged = if holds_one(&at) {
        // The same VIP: only its idle generation may change unseen.
        let idle = 1 - (at.live as usize & 1);
        let mut s = at;
        s.meta[idle] = target.meta[idle];
        s
    } else {
        // Empty or shared: everything but the family is unseen.
        VipBucket { key: VipKey { family: at.key.family, ..target.key }, ..*target }
    };
    if staged != at {
        out.push(staged);
        at = staged;
    }
    // Now at most `family` or `live` differs.
    if *target != at {
        out.push(*target);
    }
    out
}

impl Dataplane {
    /// Brings every bucket in line with the VIPs that are in `VIPS`: writes
    /// nothing when each already is, and mends a bucket an earlier apply
    /// failed to write.
    pub(super) fn sync_buckets(&mut self) -> Result<()> {
        let mut live = self.live_by_bucket(None);
        for index in self.applied.buckets.keys() {
            live.entry(*index).or_default();
        }
        for (index, vips) in live {
            self.write_bucket(index, &vips)?;
        }
        Ok(())
    }

    /// Brings bucket `index` in line with the VIPs that are in `VIPS`.
    pub(super) fn sync_bucket(&mut self, index: u32) -> Result<()> {
        let vips = self.live_by_bucket(Some(index)).remove(&index).unwrap_or_default();
        self.write_bucket(index, &vips)
    }

    /// The VIPs in `VIPS` (applied, with a ring) by bucket; only bucket
    /// `only`'s if given.
    fn live_by_bucket(&self, only: Option<u32>) -> HashMap<u32, Vec<(VipKey, VipMeta)>> {
        let mut by_bucket: HashMap<u32, Vec<(VipKey, VipMeta)>> = HashMap::new();
        for (key, vip) in self.applied.vips.iter().filter(|(_, v)| v.meta.ring_size != 0) {
            let index = bucket_of(key);
            if only.is_none_or(|o| o == index) {
                by_bucket.entry(index).or_default().push((*key, vip.meta));
            }
        }
        by_bucket
    }

    /// Writes bucket `index` so that it holds `vips`, in atomic steps.
    fn write_bucket(&mut self, index: u32, vips: &[(VipKey, VipMeta)]) -> Result<()> {
        let cur = self.applied.buckets.get(&index).copied().unwrap_or_default();
        let target = desired(&cur, vips);
        let mut map = array::<VipBucket>(&mut self.ebpf, maps::VIP_TABLE)?;
        for step in steps(&cur, &target) {
            map.set(index, step, 0).map_err(map_err(maps::VIP_TABLE))?;
            self.applied.buckets.insert(index, step);
        }
        Ok(())
    }

    /// `VIP_TABLE`'s non-empty buckets as the maps hold them (adopting
    /// pinned maps).
    pub(super) fn read_buckets(&self) -> Result<HashMap<u32, VipBucket>> {
        let map = self.array_ro::<VipBucket>(maps::VIP_TABLE)?;
        let mut buckets = HashMap::new();
        for index in 0..VIP_TABLE_BUCKETS {
            let b = map.get(&index, 0).map_err(map_err(maps::VIP_TABLE))?;
            if b != VipBucket::default() {
                buckets.insert(index, b);
            }
        }
        Ok(buckets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ops::Range;

    fn key(i: u8) -> VipKey {
        VipKey { addr: [u32::from_be_bytes([198, 18, 0, i]), 0, 0, 0], port: 80u16.to_be(), proto: 6, family: 4 }
    }

    fn meta(slot: u32, ring_gen: u32, ring_size: u32) -> VipMeta {
        VipMeta { slot, ring_size, ring_gen, flags: slot, algorithm: ring_gen }
    }

    fn bytes(b: &VipBucket) -> [u8; 64] {
        // SAFETY: VipBucket is 64 bytes of plain integers (size asserted in lb-common).
        unsafe { std::mem::transmute::<VipBucket, [u8; 64]>(*b) }
    }

    /// Byte ranges the program reads in this bucket state.
    fn seen(b: &VipBucket) -> Vec<Range<usize>> {
        const FAMILY: usize = std::mem::offset_of!(VipKey, family);
        if !holds_one(b) {
            return [FAMILY..FAMILY + 1, 0..0].into();
        }
        let meta = std::mem::offset_of!(VipBucket, meta) + 20 * (b.live as usize & 1);
        [0..24, meta..meta + 20].into()
    }

    /// A program reading during the write sees any mix of the two states'
    /// bytes: safe if a single byte changes, or none that either state reads.
    fn atomic(prev: &VipBucket, next: &VipBucket) -> bool {
        let (a, b) = (bytes(prev), bytes(next));
        let changed: Vec<usize> = (0..64).filter(|i| a[*i] != b[*i]).collect();
        let read = |i: &usize| seen(prev).iter().chain(seen(next).iter()).any(|r| r.contains(i));
        changed.len() <= 1 || !changed.iter().any(read)
    }

    /// Applies a change of the bucket's live VIPs: every write atomic, the
    /// end state the one the program must see.
    fn change(cur: &mut VipBucket, live: &[(VipKey, VipMeta)]) -> usize {
        let target = desired(cur, live);
        let writes = steps(cur, &target);
        let mut at = *cur;
        for w in &writes {
            assert!(atomic(&at, w), "write not atomic: {at:?} -> {w:?}");
            at = *w;
        }
        assert_eq!(at, target);
        match live {
            [] => assert_eq!(at.key.family, 0),
            [(k, m)] => {
                assert_eq!(at.key, *k);
                assert_eq!(at.meta[at.live as usize], *m);
            }
            _ => assert_eq!(at.key.family, FAMILY_SHARED),
        }
        *cur = at;
        writes.len()
    }

    #[test]
    fn every_bucket_change_is_one_atomic_step_for_the_program() {
        let (a, b, c) = (key(1), key(2), key(3));
        let mut bucket = VipBucket::default();
        let a0 = meta(1, 0, 251);
        assert_eq!(change(&mut bucket, &[(a, a0)]), 2, "staged, then the family byte");
        assert_eq!(change(&mut bucket, &[(a, meta(1, 1, 251))]), 2, "idle generation, then live");
        assert_eq!(change(&mut bucket, &[(a, meta(1, 0, 257))]), 2, "and back, with a new ring size");
        assert_eq!(change(&mut bucket, &[(a, meta(1, 0, 257))]), 0, "nothing to write");
        assert_eq!(change(&mut bucket, &[(a, meta(1, 1, 257))]), 2);
        assert_eq!(change(&mut bucket, &[(a, a0)]), 2, "the old generation again");
        assert_eq!(change(&mut bucket, &[(a, a0), (b, meta(2, 0, 251))]), 1, "shared: the family byte");
        assert_eq!(change(&mut bucket, &[(a, meta(1, 1, 251)), (b, meta(2, 0, 251))]), 0, "shared VIPs flip in VIPS");
        assert_eq!(change(&mut bucket, &[(b, meta(2, 1, 251))]), 2, "b alone: staged, then the family byte");
        // b replaced by c in one apply: b leaves before c arrives.
        assert_eq!(change(&mut bucket, &[(c, meta(3, 0, 251))]), 3);
        assert_eq!(change(&mut bucket, &[]), 1, "removed: the family byte");
        assert_eq!(change(&mut bucket, &[(c, meta(3, 1, 251))]), 2, "back, with another generation live");
    }

    #[test]
    fn a_vip_is_found_in_its_bucket() {
        let keys: Vec<VipKey> = (0..=255).map(key).collect();
        assert!(keys.iter().all(|k| bucket_of(k) < VIP_TABLE_BUCKETS));
        let distinct: std::collections::HashSet<u32> = keys.iter().map(bucket_of).collect();
        assert_eq!(distinct.len(), keys.len(), "256 consecutive VIPs on one port share no bucket");
    }
}
