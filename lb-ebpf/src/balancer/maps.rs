//! The balancer's maps. Sizes come from `lb_common::consts`; userspace finds
//! them by these names (`lb_common::maps`).

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray, ProgramArray},
};
use lb_common::{
    Backend, CONN_WAYS, CONNTRACK_CAPACITY, ConnSet, ConnTableKey, Counters, FlowGuard, GlobalConfig, MAX_BACKENDS,
    MAX_VIPS, RING_MAP_ENTRIES, RingChunk, VIP_TABLE_BUCKETS, VipAddrKey, VipBucket, VipKey, VipMeta, stats,
};

/// The agent maps the connection table into its memory to walk it.
const BPF_F_MMAPABLE: u32 = 1 << 10;

/// Every VIP: what the program reads for a VIP of a shared `VIP_TABLE`
/// bucket, and what userspace reads back.
#[map(name = "VIPS")]
pub static VIPS: HashMap<VipKey, VipMeta> = HashMap::with_max_entries(MAX_VIPS, 0);

/// The VIPs by destination hash (`lb_common::VIP_TABLE_BUCKETS`).
#[map(name = "VIP_TABLE")]
pub static VIP_TABLE: Array<VipBucket> = Array::with_max_entries(VIP_TABLE_BUCKETS, 0);

/// Addresses that carry a VIP (value: number of VIPs on it).
#[map(name = "VIP_ADDRS")]
pub static VIP_ADDRS: HashMap<VipAddrKey, u32> = HashMap::with_max_entries(MAX_VIPS, 0);

#[map(name = "BACKENDS")]
pub static BACKENDS: Array<Backend> = Array::with_max_entries(MAX_BACKENDS, 0);

/// Maglev rings: `RING_GENERATIONS` x `MAX_VIPS` rings of `RING_CHUNKS` chunks.
#[map(name = "RINGS")]
pub static RINGS: Array<RingChunk> = Array::with_max_entries(RING_MAP_ENTRIES, 0);

/// The connection table (`lb_common::conn`): sets of `CONN_WAYS` slots.
/// One table shared by all CPUs rather than one per CPU: a flow whose
/// packets change RX queue (RSS re-steering, a NIC reconfigured, an ECMP
/// rehash upstream) still finds its entry, and the agent reads a single
/// map for status and tracing. Mappable, which also page-aligns it: each
/// slot is one cache line.
#[map(name = "CONNTRACK")]
pub static CONNTRACK: Array<ConnSet> = Array::with_max_entries(CONNTRACK_CAPACITY / CONN_WAYS as u32, BPF_F_MMAPABLE);

/// The table's hash key and size, written by the agent that created it.
#[map(name = "CONNTRACK_KEY")]
pub static CONNTRACK_KEY: Array<ConnTableKey> = Array::with_max_entries(1, 0);

/// Cold paths entered by tail call (ICMP, too-big answers): each gets its
/// own 512-byte stack. Filled by the agent when it loads the programs.
#[map(name = "ICMP_PROGS")]
pub static ICMP_PROGS: ProgramArray = ProgramArray::with_max_entries(2, 0);

/// Per-CPU new-flow budget of the current second (the flood guard).
#[map(name = "FLOW_GUARD")]
pub static FLOW_GUARD: PerCpuArray<FlowGuard> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "CONFIG")]
pub static CONFIG: Array<GlobalConfig> = Array::with_max_entries(1, 0);

#[map(name = "STATS")]
pub static STATS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(stats::COUNT, 0);

#[map(name = "VIP_STATS")]
pub static VIP_STATS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(MAX_VIPS, 0);

#[map(name = "BACKEND_STATS")]
pub static BACKEND_STATS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(MAX_BACKENDS, 0);

/// New flows given to each backend from its VIP's ring (re-picks included):
/// the share a backend gets of new flows, for status and hot-spot checks.
#[map(name = "BACKEND_FLOWS")]
pub static BACKEND_FLOWS: PerCpuArray<u64> = PerCpuArray::with_max_entries(MAX_BACKENDS, 0);

/// Round-robin position per VIP slot, per CPU: no atomics, and each CPU
/// walks the whole weighted sequence on its own.
#[map(name = "RR_NEXT")]
pub static RR_NEXT: PerCpuArray<u32> = PerCpuArray::with_max_entries(MAX_VIPS, 0);

/// Active connections per backend id (see `active`).
#[map(name = "BACKEND_ACTIVE")]
pub static BACKEND_ACTIVE: Array<u64> = Array::with_max_entries(MAX_BACKENDS, 0);
