//! The owner of the balancer's kernel state. `apply` turns a validated
//! configuration into map writes, writing only what changed, in an order
//! that never lets a packet see a half-written table:
//! new backends first, then each changed ring into its VIP's idle buffer
//! followed by the `VIPS` update and the one-byte flip of its `VIP_TABLE`
//! bucket (the program reads one or the other), and only then the removal
//! of backends nothing points to any more.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
};

use aya::{
    Ebpf,
    maps::{Array, HashMap as BpfHashMap, MapData, MapError},
    programs::{ProgramError, Xdp, XdpMode},
};
use lb_common::{
    BACKEND_F_PRESENT, Backend, GLOBAL_F_TOO_BIG_DROP, GlobalConfig, MAX_BACKENDS, MAX_VIPS, RING_LANES, RingChunk,
    VIP_F_L2DSR, VipAddrKey, VipBucket, VipKey, VipMeta,
    consts::{maps, progs},
    ring_chunk_index,
    types::{addr_words, words_addr},
};

mod active;
mod capture;
mod clock;
mod conntrack;
mod pin;
mod query;
mod tables;
mod vip_table;

use vip_table::bucket_of;

pub use active::{ActiveReport, Counted, IdleTimeouts, IdleUnits, Recount};
pub use conntrack::ConnTable;
pub use pin::{PinError, pin_dir};
pub use query::{BackendTraffic, Trace};

use crate::config::{Config, Forwarding, Mac, NextHop, TooBig, XdpModeSetting};

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("program {name}: {source}")]
    Program { name: &'static str, source: ProgramError },
    #[error("map {name}: {source}")]
    Map { name: &'static str, source: MapError },
    #[error("map {0} is missing from the eBPF object")]
    MissingMap(&'static str),
    #[error("no free {what} slot (limit {limit})")]
    Full { what: &'static str, limit: u32 },
    #[error(transparent)]
    Pin(#[from] PinError),
    #[error(
        "a connection table of {0} entries: it must be a power of two from 1024 to 16777216 (global.conntrack_capacity)"
    )]
    Capacity(u32),
}

pub(crate) type Result<T> = std::result::Result<T, DataplaneError>;

/// `VIP_F_*` of a configured VIP (in its `VipMeta` and its backends' entries).
fn vip_flags(vip: &crate::config::Vip) -> u32 {
    if vip.forwarding == Forwarding::L2dsr { VIP_F_L2DSR } else { 0 }
}

pub(crate) fn map_err(name: &'static str) -> impl FnOnce(MapError) -> DataplaneError {
    move |source| DataplaneError::Map { name, source }
}

impl From<XdpModeSetting> for XdpMode {
    fn from(m: XdpModeSetting) -> XdpMode {
        match m {
            XdpModeSetting::Native => XdpMode::Driver,
            XdpModeSetting::Skb => XdpMode::Skb,
        }
    }
}

/// A backend as the data path knows it: one id per (VIP, address, MAC), so
/// removing a backend from one VIP re-picks that VIP's flows even when the
/// same host still serves another VIP, and counters are per VIP and backend.
type BackendIdentity = (VipKey, IpAddr, Option<Mac>);

/// What the maps hold for one VIP.
#[derive(Clone, Debug)]
struct AppliedVip {
    meta: VipMeta,
    /// Contents of the two ring buffers (empty: unknown, written in full).
    rings: [Vec<u16>; 2],
    /// The Maglev input the live ring was built from: skips rebuilding
    /// unchanged tables (65537 entries each) on every apply.
    source: Vec<(IpAddr, u32, u32)>,
}

#[derive(Default)]
struct Applied {
    config: Option<GlobalConfig>,
    backends: HashMap<BackendIdentity, u32>,
    /// Last epoch given out per backend id.
    epochs: BTreeMap<u32, u32>,
    /// Each present backend's entry as last written.
    entries: HashMap<u32, Backend>,
    /// `VIP_TABLE`'s non-empty buckets as written.
    buckets: HashMap<u32, VipBucket>,
    vips: HashMap<VipKey, AppliedVip>,
}

/// What an `apply` changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    pub vips_added: usize,
    pub vips_removed: usize,
    pub rings_swapped: usize,
    pub ring_chunks_written: usize,
    pub backends_added: usize,
    pub backends_removed: usize,
}

pub struct Dataplane {
    ebpf: Ebpf,
    applied: Applied,
    /// Where maps and the link are pinned, for agents that outlive a restart.
    pins: Option<pin::Pins>,
    /// The clocks when the data path was loaded: the first reading of the
    /// HZ calibration (see `clock`).
    clock_origin: Option<lb_common::ClockSample>,
    /// The connection table, mapped on first use (see `conntrack`).
    conn_table: std::sync::OnceLock<std::sync::Arc<ConnTable>>,
}

impl Dataplane {
    /// Loads the balancer object and its program (the verifier runs here);
    /// nothing is attached yet.
    pub fn load() -> Result<Dataplane> {
        Self::load_object(crate::objects::BALANCER)
    }

    /// [`Dataplane::load`] with a connection table of `conntrack_capacity`
    /// entries (`global.conntrack_capacity`, a power of two; the benchmark
    /// compares sizes).
    pub fn load_sized(conntrack_capacity: u32) -> Result<Dataplane> {
        if !(conntrack_capacity.is_power_of_two()
            && crate::config::CONNTRACK_CAPACITY_RANGE.contains(&conntrack_capacity))
        {
            return Err(DataplaneError::Capacity(conntrack_capacity));
        }
        let ebpf = aya::EbpfLoader::new()
            .map_max_entries(maps::CONNTRACK, conntrack_capacity / lb_common::CONN_WAYS as u32)
            .load(crate::objects::BALANCER)?;
        Self::from_loaded(ebpf, None)
    }

    /// [`Dataplane::load`] with another build of the balancer object (the
    /// benchmark compares builds side by side).
    pub fn load_object(object: &[u8]) -> Result<Dataplane> {
        Self::from_loaded(Ebpf::load(object)?, None)
    }

    /// Loads the programs of a loaded object, gives a new connection table
    /// its key and takes the first reading of the HZ calibration (see
    /// `clock`); nothing applied yet.
    fn from_loaded(mut ebpf: Ebpf, pins: Option<pin::Pins>) -> Result<Dataplane> {
        load_programs(&mut ebpf)?;
        let mut dp =
            Dataplane { ebpf, applied: Applied::default(), pins, clock_origin: None, conn_table: Default::default() };
        dp.ensure_conntrack_key()?;
        Ok(dp.with_clock_origin())
    }

    /// Attaches the balancer to an interface; detached when `self` is dropped.
    pub fn attach(&mut self, iface: &str, mode: XdpModeSetting) -> Result<()> {
        let prog: &mut Xdp = program(&mut self.ebpf, progs::BALANCER)?;
        prog.attach(iface, mode.into()).map_err(|source| DataplaneError::Program { name: progs::BALANCER, source })?;
        Ok(())
    }

    /// The balancer program, e.g. for BPF_PROG_TEST_RUN.
    pub fn balancer(&self) -> &Xdp {
        self.ebpf.program(progs::BALANCER).and_then(|p| p.try_into().ok()).expect("loaded in Dataplane::load")
    }

    /// Makes the maps match `cfg`.
    pub fn apply(&mut self, cfg: &Config) -> Result<ApplyReport> {
        let mut report = ApplyReport::default();
        self.write_global(cfg)?;
        let ids = self.add_backends(cfg, &mut report)?;
        let desired: HashMap<VipKey, &crate::config::Vip> = cfg.vips.iter().map(|v| (v.key(), v)).collect();
        for vip in &cfg.vips {
            self.apply_vip(vip, &ids, &mut report)?;
        }
        let gone: Vec<VipKey> = self.applied.vips.keys().filter(|k| !desired.contains_key(k)).copied().collect();
        for key in gone {
            self.remove_vip(key)?;
            report.vips_removed += 1;
        }
        self.remove_unused_backends(&ids, &mut report)?;
        self.sync_buckets()?;
        Ok(report)
    }

    fn write_global(&mut self, cfg: &Config) -> Result<()> {
        let g = &cfg.global;
        let global = GlobalConfig {
            tunnel_src_v6: g.tunnel_source_v6.map(|a| addr_words(a.into())).unwrap_or_default(),
            tunnel_src_v4: g.tunnel_source_v4.map(|a| addr_words(a.into())[0]).unwrap_or_default(),
            nexthop_mac: match g.nexthop_mac {
                Some(NextHop::Mac(m)) => m.0,
                // Unresolved "auto" never reaches here: the agent resolves it first.
                Some(NextHop::Auto) | None => [0; 6],
            },
            mtu: g.mtu.unwrap_or(0),
            flags: if g.too_big == TooBig::Drop { GLOBAL_F_TOO_BIG_DROP } else { 0 },
            new_flow_limit: g.new_flow_limit,
            own_mac: g.interface_mac.map(|m| m.0).unwrap_or_default(),
            _pad: [0; 2],
        };
        if self.applied.config != Some(global) {
            array::<GlobalConfig>(&mut self.ebpf, maps::CONFIG)?.set(0, global, 0).map_err(map_err(maps::CONFIG))?;
            self.applied.config = Some(global);
        }
        Ok(())
    }

    /// Gives every backend of `cfg` an id, writing the new ones.
    fn add_backends(&mut self, cfg: &Config, report: &mut ApplyReport) -> Result<HashMap<BackendIdentity, u32>> {
        let mut ids = HashMap::new();
        let mut in_use: std::collections::HashSet<u32> = self.applied.backends.values().copied().collect();
        let mut next_free = 0..MAX_BACKENDS;
        for (v, b) in cfg.vips.iter().flat_map(|v| v.backends.iter().map(move |b| (v, b))) {
            let (vip, vip_flags) = (v.key(), vip_flags(v));
            let identity = (vip, b.address, b.mac);
            if ids.contains_key(&identity) {
                continue;
            }
            let id = match self.applied.backends.get(&identity) {
                Some(&id) => {
                    self.sync_backend(id, b.weight, vip_flags)?;
                    id
                }
                None => {
                    let id = next_free
                        .find(|id| !in_use.contains(id))
                        .ok_or(DataplaneError::Full { what: "backend", limit: MAX_BACKENDS })?;
                    in_use.insert(id);
                    let epoch = self.applied.epochs.get(&id).map_or(1, |e| e.wrapping_add(1));
                    let vip_slot = match self.applied.vips.get(&vip) {
                        Some(v) => v.meta.slot,
                        None => self.reserve_vip_slot(vip)?,
                    };
                    let entry = Backend {
                        addr: addr_words(b.address),
                        mac: b.mac.map(|m| m.0).unwrap_or_default(),
                        family: lb_common::types::family_of(b.address),
                        state: BACKEND_F_PRESENT,
                        epoch,
                        vip_slot,
                        weight: b.weight,
                        vip_flags,
                    };
                    // The id's count restarts with its new owner.
                    array::<u64>(&mut self.ebpf, maps::BACKEND_ACTIVE)?
                        .set(id, 0, 0)
                        .map_err(map_err(maps::BACKEND_ACTIVE))?;
                    array::<Backend>(&mut self.ebpf, maps::BACKENDS)?
                        .set(id, entry, 0)
                        .map_err(map_err(maps::BACKENDS))?;
                    self.applied.entries.insert(id, entry);
                    self.applied.epochs.insert(id, epoch);
                    self.applied.backends.insert(identity, id);
                    report.backends_added += 1;
                    id
                }
            };
            ids.insert(identity, id);
        }
        Ok(ids)
    }

    /// Rewrites a backend's entry when its effective weight (read by
    /// least-connections) or its VIP's mode (read by established flows)
    /// changed; the other fields are written unchanged, so a packet reading
    /// the entry meanwhile sees a valid backend either way.
    fn sync_backend(&mut self, id: u32, weight: u32, vip_flags: u32) -> Result<()> {
        // Every id of `applied.backends` has its entry here (added, adopted
        // and removed together).
        let Some(&written) = self.applied.entries.get(&id) else { return Ok(()) };
        let entry = Backend { weight, vip_flags, ..written };
        if entry == written {
            return Ok(());
        }
        array::<Backend>(&mut self.ebpf, maps::BACKENDS)?.set(id, entry, 0).map_err(map_err(maps::BACKENDS))?;
        self.applied.entries.insert(id, entry);
        Ok(())
    }

    fn apply_vip(
        &mut self,
        vip: &crate::config::Vip,
        ids: &HashMap<BackendIdentity, u32>,
        report: &mut ApplyReport,
    ) -> Result<()> {
        let key = vip.key();
        let flags = vip_flags(vip);
        let algorithm = vip.algorithm.code();
        let source: Vec<(IpAddr, u32, u32)> =
            vip.backends.iter().map(|b| (b.address, b.weight, ids[&(key, b.address, b.mac)])).collect();
        let existing = self.applied.vips.get(&key).filter(|v| v.meta.ring_size != 0);
        if existing.is_some_and(|old| {
            old.source == source
                && old.meta.flags == flags
                && old.meta.algorithm == algorithm
                && tables::size_unchanged(vip, old.meta.ring_size)
        }) {
            return Ok(());
        }
        let ring = tables::build(vip, &source);
        let ring_size = ring.len() as u32;
        let slot = match self.applied.vips.get(&key) {
            Some(v) => v.meta.slot,
            None => self.reserve_vip_slot(key)?,
        };
        let mut state = self.applied.vips.get(&key).cloned().expect("reserved above");
        let is_new = state.meta.ring_size == 0;
        if !is_new {
            let live = state.meta.ring_gen as usize;
            let m = &state.meta;
            if state.rings[live] == ring && m.flags == flags && m.algorithm == algorithm && m.ring_size == ring_size {
                state.source = source;
                self.applied.vips.insert(key, state);
                return Ok(());
            }
        }
        let generation = if is_new { 0 } else { 1 - state.meta.ring_gen };
        report.ring_chunks_written += self.write_ring(slot, generation, &ring, &state.rings[generation as usize])?;
        state.rings[generation as usize] = ring;
        state.meta = VipMeta { slot, ring_size, ring_gen: generation, flags, algorithm };
        state.source = source;
        // The updates that make the new ring live: `VIPS` (what the program
        // reads for a shared bucket, and userspace's record), then the
        // bucket (a one-byte flip for a VIP alone in it). `applied` changes
        // only once `VIPS` is written, so a failed write is redone by the
        // next apply; a failed bucket write is mended by `sync_buckets`.
        self.write_vip_meta(key, state.meta)?;
        self.applied.vips.insert(key, state);
        self.sync_bucket(bucket_of(&key))?;
        if is_new {
            report.vips_added += 1;
            self.sync_vip_addr(vip.address)?;
        } else {
            report.rings_swapped += 1;
        }
        Ok(())
    }

    /// Gives a VIP a slot; its map entry is written once its ring is.
    fn reserve_vip_slot(&mut self, key: VipKey) -> Result<u32> {
        let slot = self.free_vip_slot()?;
        let meta = VipMeta { slot, ring_size: 0, ring_gen: 0, flags: 0, algorithm: 0 };
        self.applied.vips.insert(key, AppliedVip { meta, rings: [Vec::new(), Vec::new()], source: Vec::new() });
        Ok(slot)
    }

    fn free_vip_slot(&self) -> Result<u32> {
        let used: std::collections::HashSet<u32> = self.applied.vips.values().map(|v| v.meta.slot).collect();
        (0..MAX_VIPS).find(|s| !used.contains(s)).ok_or(DataplaneError::Full { what: "VIP", limit: MAX_VIPS })
    }

    /// Writes the chunks of `ring` that differ from what the buffer holds.
    fn write_ring(&mut self, slot: u32, generation: u32, ring: &[u16], old: &[u16]) -> Result<usize> {
        let mut rings = array::<RingChunk>(&mut self.ebpf, maps::RINGS)?;
        let mut written = 0;
        for (c, lanes) in ring.chunks(RING_LANES as usize).enumerate() {
            let start = c * RING_LANES as usize;
            if old.get(start..start + lanes.len()) == Some(lanes) {
                continue;
            }
            let mut chunk = RingChunk::default();
            chunk.lanes[..lanes.len()].copy_from_slice(lanes);
            let index = ring_chunk_index(slot, generation, start as u32);
            rings.set(index, chunk, 0).map_err(map_err(maps::RINGS))?;
            written += 1;
        }
        Ok(written)
    }

    fn write_vip_meta(&mut self, key: VipKey, meta: VipMeta) -> Result<()> {
        hash_map::<VipKey, VipMeta>(&mut self.ebpf, maps::VIPS)?.insert(key, meta, 0).map_err(map_err(maps::VIPS))
    }

    fn remove_vip(&mut self, key: VipKey) -> Result<()> {
        self.applied.vips.remove(&key);
        // Out of its bucket first: then no packet finds it.
        self.sync_bucket(bucket_of(&key))?;
        match hash_map::<VipKey, VipMeta>(&mut self.ebpf, maps::VIPS)?.remove(&key) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(e) => return Err(map_err(maps::VIPS)(e)),
        }
        self.sync_vip_addr(words_addr(key.addr, key.family))
    }

    /// Sets `VIP_ADDRS[addr]` to the number of VIPs on that address.
    fn sync_vip_addr(&mut self, addr: IpAddr) -> Result<()> {
        let key = VipAddrKey::new(addr);
        let count = self
            .applied
            .vips
            .iter()
            .filter(|(k, v)| {
                v.meta.ring_size != 0 && VipAddrKey { addr: k.addr, family: k.family, _pad: [0; 3] } == key
            })
            .count();
        let mut map = hash_map::<VipAddrKey, u32>(&mut self.ebpf, maps::VIP_ADDRS)?;
        if count == 0 {
            match map.remove(&key) {
                Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
                Err(e) => Err(map_err(maps::VIP_ADDRS)(e)),
            }
        } else {
            map.insert(key, count as u32, 0).map_err(map_err(maps::VIP_ADDRS))
        }
    }

    /// Marks backends that no VIP lists any more as gone: their connection
    /// entries are then re-picked by the program.
    fn remove_unused_backends(&mut self, keep: &HashMap<BackendIdentity, u32>, report: &mut ApplyReport) -> Result<()> {
        let gone: Vec<(BackendIdentity, u32)> =
            self.applied.backends.iter().filter(|(k, _)| !keep.contains_key(k)).map(|(k, v)| (*k, *v)).collect();
        for (identity, id) in gone {
            let epoch = self.applied.epochs.get(&id).copied().unwrap_or_default();
            let entry = Backend { epoch, vip_slot: u32::MAX, ..Backend::default() };
            array::<Backend>(&mut self.ebpf, maps::BACKENDS)?.set(id, entry, 0).map_err(map_err(maps::BACKENDS))?;
            self.applied.backends.remove(&identity);
            self.applied.entries.remove(&id);
            report.backends_removed += 1;
        }
        Ok(())
    }

    fn hash_map_ro<K: aya::Pod, V: aya::Pod>(&self, name: &'static str) -> Result<BpfHashMap<&MapData, K, V>> {
        let map = self.ebpf.map(name).ok_or(DataplaneError::MissingMap(name))?;
        BpfHashMap::try_from(map).map_err(map_err(name))
    }

    fn array_ro<V: aya::Pod>(&self, name: &'static str) -> Result<Array<&MapData, V>> {
        let map = self.ebpf.map(name).ok_or(DataplaneError::MissingMap(name))?;
        Array::try_from(map).map_err(map_err(name))
    }
}

/// Loads the balancer, the programs it tail-calls and `lb_clock`, and fills
/// the tail-call table (not pinned: each load fills its own).
pub(crate) fn load_programs(ebpf: &mut Ebpf) -> Result<()> {
    let mut fds = Vec::new();
    for (slot, name) in
        [(None, progs::BALANCER), (Some(0), progs::ICMP), (Some(1), progs::TOO_BIG), (None, progs::CLOCK)]
    {
        let prog: &mut Xdp = program(ebpf, name)?;
        prog.load().map_err(|source| DataplaneError::Program { name, source })?;
        if let Some(slot) = slot {
            let fd = prog.fd().map_err(|source| DataplaneError::Program { name, source })?;
            fds.push((slot, fd.try_clone().map_err(|e| DataplaneError::Program { name, source: e.into() })?));
        }
    }
    let map = ebpf.map_mut(maps::ICMP_PROGS).ok_or(DataplaneError::MissingMap(maps::ICMP_PROGS))?;
    let mut table = aya::maps::ProgramArray::try_from(map).map_err(map_err(maps::ICMP_PROGS))?;
    for (slot, fd) in &fds {
        table.set(*slot, fd, 0).map_err(map_err(maps::ICMP_PROGS))?;
    }
    Ok(())
}

pub(crate) fn program<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Xdp> {
    ebpf.program_mut(name)
        .ok_or(DataplaneError::Program { name, source: ProgramError::NotLoaded })?
        .try_into()
        .map_err(|source| DataplaneError::Program { name, source })
}

fn array<'a, V: aya::Pod>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<Array<&'a mut MapData, V>> {
    let map = ebpf.map_mut(name).ok_or(DataplaneError::MissingMap(name))?;
    Array::try_from(map).map_err(map_err(name))
}

fn hash_map<'a, K: aya::Pod, V: aya::Pod>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<BpfHashMap<&'a mut MapData, K, V>> {
    let map = ebpf.map_mut(name).ok_or(DataplaneError::MissingMap(name))?;
    BpfHashMap::try_from(map).map_err(map_err(name))
}
