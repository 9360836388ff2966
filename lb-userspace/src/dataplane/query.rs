//! Reading the live maps: predictions, connection entries, counters.

use std::net::IpAddr;

use aya::maps::{MapData, MapError, PerCpuArray};
use lb_common::{
    BACKEND_F_PRESENT, Backend, CONN_F_CLOSED, Counters, FlowKey, MAX_VIPS, NO_BACKEND, RING_LANES, RingChunk, VipKey,
    VipMeta,
    consts::maps,
    hash::{flow_hash, source_hash},
    ring_chunk_index, stats,
    types::words_addr,
};

use super::{Dataplane, DataplaneError, Result, map_err};
use crate::config::Algorithm;

/// `Dataplane::trace`: how the program decides for one 5-tuple (also what
/// `lb trace` reads back from the API).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Trace {
    /// How the VIP picks a new flow's backend.
    #[serde(default)]
    pub algorithm: Algorithm,
    pub vip_slot: u32,
    pub ring_size: u32,
    /// Which of the VIP's two ring buffers is live.
    pub ring_generation: u32,
    /// `flow_hash` of the 5-tuple (`source_hash` for source-hash).
    pub hash: u32,
    /// `hash % ring_size`: the ring entry a new flow takes.
    pub entry: u32,
    /// The backend at that entry (a SYN, or a flow not in the table, goes
    /// there); always `None` for a per-instance algorithm (no prediction).
    pub ring_backend: Option<IpAddr>,
    /// The backend of the flow's connection-table entry: established
    /// packets of the flow go there.
    pub conntrack_backend: Option<IpAddr>,
    /// The flow has an entry whose backend is gone: its next packet is re-picked.
    pub conntrack_stale: bool,
    /// The flow's valid entry is open (no FIN or RST seen): a SYN that
    /// picks the entry's backend again leaves it as it is.
    #[serde(default)]
    pub conntrack_open: bool,
}

/// What one backend of one VIP received.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendTraffic {
    pub packets: u64,
    pub bytes: u64,
    /// New flows the ring gave it (including re-picks of others' flows).
    pub new_flows: u64,
    /// Active connections (`BACKEND_ACTIVE`: kept by the program, recounted
    /// by the agent; a transient negative value reads as 0).
    pub active: u64,
}

impl Dataplane {
    /// The backend the live maps send a new flow to: the userspace copy of
    /// the program's hash and ring lookup.
    pub fn predict_backend(&self, flow: &FlowKey) -> Result<Option<IpAddr>> {
        Ok(self.trace(flow)?.and_then(|t| t.ring_backend))
    }

    /// Where the program sends this 5-tuple now, and why: the connection
    /// table's entry (if any) and the ring entry a new flow would take.
    /// `None` when the destination is not a VIP.
    pub fn trace(&self, flow: &FlowKey) -> Result<Option<Trace>> {
        let key = VipKey { addr: flow.dst, port: flow.dport, proto: flow.proto, family: flow.family };
        let vips = self.hash_map_ro::<VipKey, VipMeta>(maps::VIPS)?;
        let meta = match vips.get(&key, 0) {
            Ok(m) => m,
            Err(MapError::KeyNotFound) => return Ok(None),
            Err(e) => return Err(map_err(maps::VIPS)(e)),
        };
        let algorithm = Algorithm::from_code(meta.algorithm);
        let hash = if algorithm == Algorithm::SourceHash { source_hash(flow) } else { flow_hash(flow) };
        let entry = hash.checked_rem(meta.ring_size).unwrap_or(0);
        let rings = self.array_ro::<RingChunk>(maps::RINGS)?;
        let chunk =
            rings.get(&ring_chunk_index(meta.slot, meta.ring_gen & 1, entry), 0).map_err(map_err(maps::RINGS))?;
        let id = chunk.lanes[(entry % RING_LANES) as usize];
        // Round-robin and least-connections pick from this instance's live
        // state (per-CPU positions, active counts): no prediction.
        let ring_backend = if id == NO_BACKEND || meta.ring_size == 0 || algorithm.per_instance() {
            None
        } else {
            self.present_backend(id as u32, None)?
        };
        let (conntrack_backend, conntrack_stale, conntrack_open) = match self.conntrack_entry(flow)? {
            Some(e) => match self.present_backend(e.backend, Some(e.epoch))? {
                Some(addr) => (Some(addr), false, e.flags & CONN_F_CLOSED == 0),
                None => (None, true, false),
            },
            None => (None, false, false),
        };
        Ok(Some(Trace {
            algorithm,
            vip_slot: meta.slot,
            ring_size: meta.ring_size,
            ring_generation: meta.ring_gen,
            hash,
            entry,
            ring_backend,
            conntrack_backend,
            conntrack_stale,
            conntrack_open,
        }))
    }

    /// The backend of a flow's connection-table entry, if it is still valid.
    pub fn conntrack_backend(&self, flow: &FlowKey) -> Result<Option<IpAddr>> {
        match self.conntrack_entry(flow)? {
            Some(e) => self.present_backend(e.backend, Some(e.epoch)),
            None => Ok(None),
        }
    }

    fn present_backend(&self, id: u32, epoch: Option<u32>) -> Result<Option<IpAddr>> {
        let b = self.array_ro::<Backend>(maps::BACKENDS)?.get(&id, 0).map_err(map_err(maps::BACKENDS))?;
        let valid = b.state & BACKEND_F_PRESENT != 0 && epoch.is_none_or(|e| e == b.epoch);
        Ok(valid.then(|| words_addr(b.addr, b.family)))
    }

    /// `STATS`, summed over CPUs, indexed by `lb_common::stats`.
    pub fn stats(&self) -> Result<Vec<Counters>> {
        self.sum_counters(maps::STATS, stats::COUNT)
    }

    /// Per-VIP counters, indexed by VIP slot.
    pub fn vip_counters(&self) -> Result<Vec<(VipKey, Counters)>> {
        let all = self.sum_counters(maps::VIP_STATS, MAX_VIPS)?;
        Ok(self.applied.vips.iter().map(|(k, v)| (*k, all[v.meta.slot as usize])).collect())
    }

    /// Traffic of the backends currently configured, per VIP.
    pub fn backend_counters(&self) -> Result<Vec<(VipKey, IpAddr, BackendTraffic)>> {
        let stats = self.per_cpu::<Counters>(maps::BACKEND_STATS)?;
        let flows = self.per_cpu::<u64>(maps::BACKEND_FLOWS)?;
        let active = self.array_ro::<u64>(maps::BACKEND_ACTIVE)?;
        let mut out = Vec::with_capacity(self.applied.backends.len());
        for ((vip, addr, _), id) in &self.applied.backends {
            let c = stats.get(id, 0).map_err(map_err(maps::BACKEND_STATS))?;
            let f = flows.get(id, 0).map_err(map_err(maps::BACKEND_FLOWS))?;
            let a = active.get(id, 0).map_err(map_err(maps::BACKEND_ACTIVE))?;
            out.push((
                *vip,
                *addr,
                BackendTraffic {
                    packets: c.iter().map(|c| c.packets).sum(),
                    bytes: c.iter().map(|c| c.bytes).sum(),
                    new_flows: f.iter().sum(),
                    active: (a as i64).max(0) as u64,
                },
            ));
        }
        out.sort_by_key(|(v, a, _)| (*v, *a));
        Ok(out)
    }

    fn per_cpu<V: aya::Pod>(&self, name: &'static str) -> Result<PerCpuArray<&MapData, V>> {
        let map = self.ebpf.map(name).ok_or(DataplaneError::MissingMap(name))?;
        PerCpuArray::try_from(map).map_err(map_err(name))
    }

    fn sum_counters(&self, name: &'static str, count: u32) -> Result<Vec<Counters>> {
        let array = self.per_cpu::<Counters>(name)?;
        (0..count)
            .map(|i| {
                let per_cpu = array.get(&i, 0).map_err(map_err(name))?;
                Ok(per_cpu.iter().fold(Counters::default(), |acc, c| Counters {
                    packets: acc.packets + c.packets,
                    bytes: acc.bytes + c.bytes,
                }))
            })
            .collect()
    }

    /// FNV-1a digest of a VIP's live Maglev table, as backend addresses:
    /// instances holding the same backend set print the same value.
    pub fn fingerprint(&self, vip: &VipKey) -> Option<u64> {
        let state = self.applied.vips.get(vip).filter(|v| v.meta.ring_size != 0)?;
        let ring = &state.rings[state.meta.ring_gen as usize & 1];
        if ring.is_empty() {
            return None;
        }
        let addrs: std::collections::HashMap<u32, [u8; 16]> = self
            .applied
            .backends
            .iter()
            .map(|((_, addr, _), id)| {
                let bytes = match addr {
                    IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
                    IpAddr::V6(a) => a.octets(),
                };
                (*id, bytes)
            })
            .collect();
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for b in bytes {
                h ^= *b as u64;
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        };
        eat(&state.meta.ring_size.to_le_bytes());
        for id in ring {
            eat(&addrs.get(&(*id as u32)).copied().unwrap_or([0; 16]));
        }
        Some(h)
    }
}
