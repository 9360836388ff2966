//! Every limit and flag of the data path, in one place.

/// Bumped whenever a map's key/value layout or a map's meaning changes; the
/// agent refuses to adopt pinned maps of another layout.
pub const LAYOUT_VERSION: u32 = 6;

/// VIPs that can be configured at once, i.e. slots of the ring array.
pub const MAX_VIPS: u32 = 512;
/// Backends over all VIPs; a backend id indexes `BACKENDS` and fits a ring lane (u16).
pub const MAX_BACKENDS: u32 = 4096;
/// `ConnEntry::seen` counts jiffies >> SEEN_JIFFY_SHIFT (units of 32
/// jiffies: 32 ms at HZ=1000, 128 ms at 250, 320 ms at 100). The program
/// reads the clock on every packet of an established flow: the verifier
/// inlines `bpf_jiffies64` into one load, where a clock helper is a call
/// (measured ~15 ns a packet here). The agent learns HZ by calibration.
pub const SEEN_JIFFY_SHIFT: u32 = 5;
/// Connection-table entries by default (`global.conntrack_capacity`, a
/// power of two, sets it when the agent creates the map): 64 bytes each,
/// 64 MiB by default. See `conn` for the table's layout.
pub const CONNTRACK_CAPACITY: u32 = 1 << 20;
/// Ways (slots) per set of the connection table. Four keep the table usable
/// past 90% full before a new flow must evict one, and a miss reads four
/// adjacent cache lines.
pub const CONN_WAYS: usize = 4;

/// Buckets of `VIP_TABLE`, the VIPs by `hash::vip_bucket` of their
/// (address, port, protocol): an array, so finding a packet's VIP is a
/// load and a compare instead of a hash-map lookup (a call, a hash and a
/// `memcmp` call: ~40 ns here). An empty bucket, or another VIP's, means
/// the packet is no VIP's; a bucket that several VIPs share sends the
/// lookup to the `VIPS` hash map. 4096 buckets of 64 bytes: with tens of
/// VIPs a shared bucket is rare, and only touched lines stay in cache.
pub const VIP_TABLE_BUCKETS: u32 = 4096;
/// `VipBucket::key.family` of a bucket that several VIPs hash to.
pub const FAMILY_SHARED: u8 = 0xff;

/// Maglev ring size used when a VIP does not set one (prime, as the paper asks).
pub const DEFAULT_RING_SIZE: u32 = 65537;
/// Largest ring a VIP may use: every VIP slot reserves this many entries.
pub const MAX_RING_SIZE: u32 = 65537;
/// Ring entries packed in one array element. BPF arrays round each value up to
/// 8 bytes, so one u16 per element would waste 75% of the memory and cost one
/// syscall per entry to write; 32 lanes make a 64-byte element.
pub const RING_LANES: u32 = 32;
/// Array elements one ring occupies.
pub const RING_CHUNKS: u32 = MAX_RING_SIZE.div_ceil(RING_LANES);
/// Two buffers per VIP: the agent writes the idle one, then flips `VipMeta::ring_gen`
/// in a single hash-map update, so a packet never sees a half-written table.
pub const RING_GENERATIONS: u32 = 2;
/// Elements of the `RINGS` array (about 134 MB at the limits above).
pub const RING_MAP_ENTRIES: u32 = MAX_VIPS * RING_GENERATIONS * RING_CHUNKS;
/// Ring lane value for "no backend" (a VIP with an empty backend set).
pub const NO_BACKEND: u16 = u16::MAX;

/// Ethernet VLAN tags (802.1Q / 802.1ad) the parser walks through; deeper
/// stacks are passed to the kernel untouched.
pub const MAX_VLAN_TAGS: usize = 2;

/// Address families as stored in keys.
pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

/// `VipMeta::flags`: forward by rewriting the destination MAC (L2 direct
/// server return) instead of IP-in-IP encapsulation.
pub const VIP_F_L2DSR: u32 = 1 << 0;

/// `VipMeta::algorithm`: how a new flow picks its backend.
/// Maglev: ring entry `flow_hash % ring_size` (the default).
pub const ALGO_MAGLEV: u32 = 0;
/// Source hash: ring entry `source_hash % ring_size` (the client address
/// only, so every port of a client reaches one backend).
pub const ALGO_SOURCE_HASH: u32 = 1;
/// Weighted round-robin: the ring holds one period of a smooth weighted
/// round-robin sequence; each CPU takes entry `RR_NEXT[slot] % ring_size`
/// and advances its own position (per instance, per CPU).
pub const ALGO_ROUND_ROBIN: u32 = 2;
/// Weighted least-connections: the ring holds the VIP's backend ids once
/// each (`ring_size` of them); a new flow goes to the one with the least
/// `BACKEND_ACTIVE / weight`, the scan starting at `flow_hash % ring_size`
/// so ties spread. Per instance.
pub const ALGO_LEAST_CONN: u32 = 3;
/// Backends a least-connections VIP may have: the program scans them all for
/// every new flow, in a loop the verifier must walk to its bound.
pub const LC_MAX_CANDIDATES: u32 = 256;

/// `ConnEntry::flags`: the client sent a FIN or RST; the flow no longer
/// counts as active (set once, atomically, so it is uncounted once).
pub const CONN_F_CLOSED: u32 = 1 << 0;
/// `ConnEntry::flags` bits from this one up hold an IPv6 flow's flow label
/// (its flow hash & 0xfffff, written at insert): an established IPv6 packet
/// takes the outer header's label from its entry instead of hashing its
/// 5-tuple again (a chain of ten dependent multiply rounds).
pub const CONN_LABEL_SHIFT: u32 = 8;
/// IPv6 flow labels are 20 bits.
pub const FLOW_LABEL_MASK: u32 = 0xf_ffff;

/// `Backend::state` bit: the backend exists; connection-table entries that
/// point to it stay valid. Cleared when the backend is removed, so its flows
/// are re-picked from the ring.
pub const BACKEND_F_PRESENT: u8 = 1 << 0;

/// `GlobalConfig::flags`: drop packets too big to encapsulate instead of
/// answering with ICMP fragmentation-needed / packet-too-big.
pub const GLOBAL_F_TOO_BIG_DROP: u32 = 1 << 0;

/// TTL / hop limit of the outer header we add, and of ICMP messages we send.
pub const ENCAP_TTL: u8 = 64;

/// Names of the maps, as userspace finds them in the object and pins them.
pub mod maps {
    pub const VIPS: &str = "VIPS";
    pub const VIP_ADDRS: &str = "VIP_ADDRS";
    pub const BACKENDS: &str = "BACKENDS";
    pub const RINGS: &str = "RINGS";
    pub const CONNTRACK: &str = "CONNTRACK";
    /// The connection table's per-instance hash key and size (`conn`).
    pub const CONNTRACK_KEY: &str = "CONNTRACK_KEY";
    pub const CONFIG: &str = "CONFIG";
    pub const ICMP_PROGS: &str = "ICMP_PROGS";
    pub const FLOW_GUARD: &str = "FLOW_GUARD";
    pub const STATS: &str = "STATS";
    pub const VIP_STATS: &str = "VIP_STATS";
    pub const BACKEND_STATS: &str = "BACKEND_STATS";
    pub const BACKEND_FLOWS: &str = "BACKEND_FLOWS";
    /// Per CPU, per VIP slot: the next round-robin ring entry.
    pub const RR_NEXT: &str = "RR_NEXT";
    /// Active connections per backend id (see `ConnEntry`), shared by CPUs.
    pub const BACKEND_ACTIVE: &str = "BACKEND_ACTIVE";
    pub const DECAP_STATS: &str = "DECAP_STATS";
    /// `lb capture`: the records, the switch and the program's bookkeeping.
    pub const CAPTURE: &str = "CAPTURE";
    pub const CAPTURE_CONFIG: &str = "CAPTURE_CONFIG";
    pub const CAPTURE_STATE: &str = "CAPTURE_STATE";
    /// `lb_clock`'s output: jiffies next to CLOCK_MONOTONIC_COARSE.
    pub const CLOCK: &str = "CLOCK";
    /// The VIPs by (address, port, protocol) hash: see `VIP_TABLE_BUCKETS`.
    pub const VIP_TABLE: &str = "VIP_TABLE";
}

/// Names of the programs in the object.
pub mod progs {
    pub const BALANCER: &str = "lb_balancer";
    /// Tail-called by the balancer: ICMP to a VIP, slot 0 of `ICMP_PROGS`.
    pub const ICMP: &str = "lb_icmp";
    /// Tail-called by the balancer: too-big answers, slot 1 of `ICMP_PROGS`.
    pub const TOO_BIG: &str = "lb_too_big";
    /// Run by the agent (BPF_PROG_TEST_RUN) to read the kernel's jiffies.
    pub const CLOCK: &str = "lb_clock";
    pub const DECAP: &str = "lb_decap";
    pub const PASS: &str = "lb_pass";
    pub const DROP: &str = "lb_drop";
}
