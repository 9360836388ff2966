//! `VIP_FILTER`: the bitmap that lets the program pass a packet that is no
//! VIP's without a lookup (`lb_common::VIP_FILTER_BITS`). A bit is set
//! before its VIP is added and cleared only after every VIP on it is gone,
//! so a packet of a live VIP never finds its bit clear.

use lb_common::{VIP_FILTER_WORDS, VipKey, consts::maps, hash::vip_filter_bit};

use super::{Dataplane, Result, array, map_err};

/// The bitmap with the bit of every VIP in `keys`.
pub fn words<'a>(keys: impl IntoIterator<Item = &'a VipKey>) -> Vec<u64> {
    let mut words = vec![0u64; VIP_FILTER_WORDS as usize];
    for key in keys {
        let bit = vip_filter_bit(&key.addr, key.port, key.proto);
        words[(bit / 64) as usize] |= 1 << (bit % 64);
    }
    words
}

impl Dataplane {
    /// Writes the words of `VIP_FILTER` that differ from `desired`.
    pub(super) fn write_filter(&mut self, desired: Vec<u64>) -> Result<()> {
        let mut map = array::<u64>(&mut self.ebpf, maps::VIP_FILTER)?;
        for (i, &word) in desired.iter().enumerate() {
            if self.applied.filter.get(i) != Some(&word) {
                map.set(i as u32, word, 0).map_err(map_err(maps::VIP_FILTER))?;
            }
        }
        self.applied.filter = desired;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_vip_has_its_bit() {
        let keys: Vec<VipKey> = (0..300u32)
            .map(|i| VipKey { addr: [i.to_be(), 0, 0, 0], port: 80u16.to_be(), proto: 6, family: 4 })
            .collect();
        let w = words(&keys);
        for k in &keys {
            let bit = vip_filter_bit(&k.addr, k.port, k.proto);
            assert_ne!(w[(bit / 64) as usize] & (1 << (bit % 64)), 0);
        }
        let set: u32 = w.iter().map(|w| w.count_ones()).sum();
        assert!((290..=300).contains(&set), "{set} bits for 300 VIPs");
        assert!(words([].iter()).iter().all(|&w| w == 0));
    }
}
