//! The flow hash, compiled into both the XDP program and userspace so a test
//! (or `lb trace`) can predict which ring entry a packet lands on.
//! MurmurHash3 (x86_32) over fixed-size words: no loops the verifier must
//! bound, good avalanche, and cheap in BPF (no 64-bit multiplies).

use crate::types::FlowKey;

const C1: u32 = 0xcc9e_2d51;
const C2: u32 = 0x1b87_3593;

/// Seed of the flow hash. Changing it moves every flow: it is part of the
/// layout version.
pub const FLOW_SEED: u32 = 0x4c42_0001;
/// Seeds of the two Maglev hashes of a backend's identity (offset, skip).
pub const MAGLEV_OFFSET_SEED: u32 = 0x4d41_0001;
pub const MAGLEV_SKIP_SEED: u32 = 0x4d41_0002;

#[inline(always)]
fn round(h: u32, k: u32) -> u32 {
    let k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
    (h ^ k).rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64)
}

#[inline(always)]
fn finish(mut h: u32, len: u32) -> u32 {
    h ^= len;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// MurmurHash3 of four words, e.g. an address.
#[inline(always)]
pub fn hash_words4(words: &[u32; 4], seed: u32) -> u32 {
    let mut h = seed;
    h = round(h, words[0]);
    h = round(h, words[1]);
    h = round(h, words[2]);
    h = round(h, words[3]);
    finish(h, 16)
}

/// `VIP_TABLE` bucket of a destination (address words, port in network
/// order, protocol): one multiply, cheap enough for every packet. VIPs that
/// share a bucket only cost a hash-map lookup, so it needs no seed or
/// avalanche.
#[inline(always)]
pub fn vip_bucket(addr: &[u32; 4], port: u16, proto: u8) -> u32 {
    let folded = addr[0] ^ addr[1].rotate_left(8) ^ addr[2].rotate_left(16) ^ addr[3].rotate_left(24);
    let h = (folded ^ ((port as u32) << 8) ^ proto as u32).wrapping_mul(0x9e37_79b1);
    h >> (32 - crate::consts::VIP_TABLE_BUCKETS.trailing_zeros())
}

/// Hash of a 5-tuple; the Maglev entry is `flow_hash(key) % ring_size`.
#[inline(always)]
pub fn flow_hash(key: &FlowKey) -> u32 {
    tuple_hash(key, (key.sport as u32) | ((key.dport as u32) << 16))
}

/// `flow_hash` of the 5-tuple with both ports zeroed: the source-hash
/// algorithm's entry is `source_hash(key) % ring_size`, the same for every
/// connection of one client address to one VIP.
#[inline(always)]
pub fn source_hash(key: &FlowKey) -> u32 {
    tuple_hash(key, 0)
}

/// `flow_hash` with the ports word given (no copy of the key on the BPF stack).
#[inline(always)]
fn tuple_hash(key: &FlowKey, ports: u32) -> u32 {
    let mut h = FLOW_SEED;
    h = round(h, key.src[0]);
    h = round(h, key.src[1]);
    h = round(h, key.src[2]);
    h = round(h, key.src[3]);
    h = round(h, key.dst[0]);
    h = round(h, key.dst[1]);
    h = round(h, key.dst[2]);
    h = round(h, key.dst[3]);
    h = round(h, ports);
    h = round(h, (key.proto as u32) | ((key.family as u32) << 8));
    finish(h, 40)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_hash_is_the_flow_hash_without_ports() {
        let key = |sport: u16, dport: u16, src: u32| FlowKey {
            src: [src, 0, 0, 0],
            dst: [7, 0, 0, 0],
            sport,
            dport,
            proto: 6,
            family: 4,
            _pad: [0; 2],
        };
        assert_eq!(source_hash(&key(1234, 80, 1)), flow_hash(&key(0, 0, 1)));
        assert_eq!(source_hash(&key(1234, 80, 1)), source_hash(&key(4321, 80, 1)));
        assert_ne!(flow_hash(&key(1234, 80, 1)), flow_hash(&key(4321, 80, 1)));
        assert_ne!(source_hash(&key(1234, 80, 1)), source_hash(&key(1234, 80, 2)));
    }

    #[test]
    fn vip_buckets_spread_typical_vip_sets() {
        extern crate std;
        use crate::consts::VIP_TABLE_BUCKETS;
        use std::{collections::HashSet, vec::Vec};
        // 256 consecutive IPv4 addresses (wire order) x ports 80 and 443, and
        // 256 IPv6 addresses differing in the last word.
        let mut keys = Vec::new();
        for i in 0..256u32 {
            for port in [80u16, 443] {
                keys.push(([u32::from_be_bytes([198, 18, 0, i as u8]), 0, 0, 0], port.to_be(), 6));
            }
            keys.push(([0x0db8_0120, 0, 0, (i + 1).to_be()], 443u16.to_be(), 17));
        }
        let buckets: Vec<u32> = keys.iter().map(|(a, p, proto)| vip_bucket(a, *p, *proto)).collect();
        assert!(buckets.iter().all(|b| *b < VIP_TABLE_BUCKETS));
        let distinct = |b: &[u32]| b.iter().collect::<HashSet<_>>().len();
        // Random placement would give ~700 distinct buckets for 768 keys.
        assert!(distinct(&buckets) >= 700, "{} distinct buckets of 768", distinct(&buckets));
        // A block of 64 consecutive IPv4 VIPs on one port shares none.
        let block: Vec<u32> = buckets.iter().step_by(3).take(64).copied().collect();
        assert_eq!(distinct(&block), 64);
    }

    #[test]
    fn murmur3_reference_vector() {
        // MurmurHash3_x86_32 of the 16 bytes 00 01 .. 0f, seed 0, as the
        // reference implementation computes it (Python's mmh3 package).
        let bytes: [u8; 16] = core::array::from_fn(|i| i as u8);
        let w = |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        assert_eq!(hash_words4(&[w(0), w(4), w(8), w(12)], 0), 0x1915_73dd);
    }
}
