//! Keys and values of the BPF maps. Addresses are stored as the raw wire
//! bytes read as native `u32` words, ports in network byte order: exactly what
//! the XDP program reads from a packet, so it never converts.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::consts::{FAMILY_V4, FAMILY_V6};

/// An IPv4 or IPv6 address in map form: IPv4 uses word 0 only.
pub type AddrWords = [u32; 4];

/// Wire-order words of an address (IPv4 in word 0, the rest zero).
pub fn addr_words(addr: IpAddr) -> AddrWords {
    match addr {
        IpAddr::V4(a) => [u32::from_ne_bytes(a.octets()), 0, 0, 0],
        IpAddr::V6(a) => {
            let o = a.octets();
            let w = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            [w(0), w(4), w(8), w(12)]
        }
    }
}

/// Inverse of [`addr_words`].
pub fn words_addr(words: AddrWords, family: u8) -> IpAddr {
    if family == FAMILY_V4 {
        IpAddr::V4(Ipv4Addr::from(words[0].to_ne_bytes()))
    } else {
        let mut o = [0u8; 16];
        for (i, w) in words.iter().enumerate() {
            o[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        IpAddr::V6(Ipv6Addr::from(o))
    }
}

/// Family constant of an address.
pub fn family_of(addr: IpAddr) -> u8 {
    if addr.is_ipv4() { FAMILY_V4 } else { FAMILY_V6 }
}

/// `VIPS` key: one service.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VipKey {
    pub addr: AddrWords,
    /// Network byte order.
    pub port: u16,
    /// IPPROTO_TCP or IPPROTO_UDP.
    pub proto: u8,
    pub family: u8,
}

impl VipKey {
    pub fn new(addr: IpAddr, port: u16, proto: u8) -> Self {
        VipKey { addr: addr_words(addr), port: port.to_be(), proto, family: family_of(addr) }
    }
}

/// `VIPS` value. Replaced as a whole (hash-map update), which is what makes
/// the ring generation flip atomic.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VipMeta {
    /// Index of the VIP's ring and counters, `0..MAX_VIPS`.
    pub slot: u32,
    /// Maglev ring size (prime, `<= MAX_RING_SIZE`).
    pub ring_size: u32,
    /// Which of the two ring buffers is live (0 or 1).
    pub ring_gen: u32,
    /// `VIP_F_*` bits.
    pub flags: u32,
    /// `ALGO_*`: how a new flow picks its backend.
    pub algorithm: u32,
}

/// A `VIP_TABLE` bucket: the VIP whose (address, port, protocol) hashes
/// here, with its `VipMeta` of both ring generations. The agent changes a
/// bucket so that every write changes either one byte a reader looks at
/// (`key.family`, `live`) or only bytes readers ignore at that moment (the
/// key and metadata of an empty or shared bucket, the idle generation's
/// metadata), which makes each change atomic for the program without a
/// lock: a VIP appears, disappears, becomes shared or flips its ring in
/// one byte.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VipBucket {
    /// The VIP; `family` 0: empty, `FAMILY_SHARED`: look `VIPS` up.
    pub key: VipKey,
    /// Which of `meta` is live (0 or 1): the VIP's `ring_gen`.
    pub live: u32,
    /// The VIP's metadata for ring generation 0 and 1.
    pub meta: [VipMeta; 2],
}

/// `VIP_ADDRS` key: an address that carries at least one VIP. Lets the program
/// recognise fragments and options aimed at a VIP before it knows the port.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct VipAddrKey {
    pub addr: AddrWords,
    pub family: u8,
    pub _pad: [u8; 3],
}

impl VipAddrKey {
    pub fn new(addr: IpAddr) -> Self {
        VipAddrKey { addr: addr_words(addr), family: family_of(addr), _pad: [0; 3] }
    }
}

/// `BACKENDS` value, indexed by backend id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backend {
    pub addr: AddrWords,
    /// Destination MAC for L2 direct server return.
    pub mac: [u8; 6],
    pub family: u8,
    /// `BACKEND_F_*` bits.
    pub state: u8,
    /// Bumped each time the id is given to a new backend, so a connection
    /// entry of the id's previous owner is recognised and re-picked.
    pub epoch: u32,
    /// Slot of the VIP this entry serves: a packet of an established flow
    /// is counted under it (and a restarted agent rebuilds its view from it).
    pub vip_slot: u32,
    /// Effective weight (least-connections divides active counts by it).
    pub weight: u32,
    /// `VIP_F_*` of that VIP: with `vip_slot`, all a packet of an
    /// established flow needs, so that path skips the VIP lookup.
    pub vip_flags: u32,
}

/// A flow's 5-tuple as seen on the wire (the connection table's key).
/// 8-aligned: keys are compared as five 64-bit words (`conn::same_flow`).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src: AddrWords,
    pub dst: AddrWords,
    /// Network byte order.
    pub sport: u16,
    /// Network byte order.
    pub dport: u16,
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}

impl FlowKey {
    pub fn new(src: IpAddr, sport: u16, dst: IpAddr, dport: u16, proto: u8) -> Self {
        FlowKey {
            src: addr_words(src),
            dst: addr_words(dst),
            sport: sport.to_be(),
            dport: dport.to_be(),
            proto,
            family: family_of(dst),
            _pad: [0; 2],
        }
    }
}

/// A connection-table entry (`ConnSlot::entry`). A flow is *active* while its entry is current (its
/// backend id and epoch still valid), not closed, and seen within the idle
/// timeout of its protocol; the agent's reconciliation counts exactly that.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnEntry {
    pub backend: u32,
    /// `Backend::epoch` when the flow was assigned.
    pub epoch: u32,
    /// `CONN_F_*` bits, and an IPv6 flow's flow label from
    /// `CONN_LABEL_SHIFT` up.
    pub flags: u32,
    /// When the flow's last packet was seen, in [`seen_units`] of the
    /// kernel's jiffies; written only when the unit changed.
    pub seen: u32,
}

/// `ConnEntry::seen` of a jiffies reading (wraps after 2^32 units, years).
#[inline(always)]
pub fn seen_units(jiffies: u64) -> u32 {
    (jiffies >> crate::consts::SEEN_JIFFY_SHIFT) as u32
}

/// Units of `ConnEntry::seen` that cover `secs` seconds at `hz` jiffies a
/// second (rounded up).
pub fn units_covering(secs: u32, hz: u32) -> u32 {
    (secs as u64 * hz as u64).div_ceil(1 << crate::consts::SEEN_JIFFY_SHIFT) as u32
}

/// `CLOCK[0]`, written by `lb_clock`: the kernel's jiffies and
/// CLOCK_MONOTONIC_COARSE read together, so the agent can learn HZ.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClockSample {
    pub jiffies: u64,
    pub coarse_ns: u64,
}

/// `RINGS` value: `RING_LANES` consecutive Maglev entries (backend ids).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingChunk {
    pub lanes: [u16; crate::consts::RING_LANES as usize],
}

impl Default for RingChunk {
    fn default() -> Self {
        RingChunk { lanes: [crate::consts::NO_BACKEND; crate::consts::RING_LANES as usize] }
    }
}

/// Element index in `RINGS` of the chunk holding `entry` of a VIP's ring.
#[inline(always)]
pub fn ring_chunk_index(slot: u32, generation: u32, entry: u32) -> u32 {
    (generation * crate::consts::MAX_VIPS + slot) * crate::consts::RING_CHUNKS + entry / crate::consts::RING_LANES
}

/// `FLOW_GUARD[0]`, per CPU: the new-flow budget of the current window
/// (at least a second long; see the program's `conntrack::may_record`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowGuard {
    /// Start of the current window (bpf_ktime_get_coarse_ns).
    pub window_start_ns: u64,
    /// Flows recorded in this window.
    pub recorded: u32,
    /// Low 32 bits of the jiffy in which the clock was last read at the
    /// limit: a refused flow reads the clock at most once a jiffy.
    pub checked_jiffy: u32,
}

/// Per-CPU packet and byte counters (`STATS`, `VIP_STATS`, `BACKEND_STATS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub packets: u64,
    pub bytes: u64,
}

/// `CONFIG[0]`: global settings written by the agent.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GlobalConfig {
    /// Outer source address of IPv6-in-IPv6 packets.
    pub tunnel_src_v6: AddrWords,
    /// Outer source address of IPv4-in-IPv4 packets (wire order).
    pub tunnel_src_v4: u32,
    /// Destination MAC of encapsulated packets: the next-hop router.
    pub nexthop_mac: [u8; 6],
    /// Largest IP packet that may leave toward the backends (the path MTU);
    /// 0 disables the check.
    pub mtu: u16,
    /// `GLOBAL_F_*` bits.
    pub flags: u32,
    /// New flows each CPU records in the connection table per second; 0: no
    /// limit. Past it, new flows still go to their ring entry (the same
    /// backend on every instance) but are not recorded.
    pub new_flow_limit: u32,
    /// MAC of the interface the program is attached to: frames addressed to
    /// another host (flooded by a switch, or a promiscuous NIC) are passed,
    /// never forwarded. All zero: no check.
    pub own_mac: [u8; 6],
    pub _pad: [u8; 2],
}

const _: () = {
    assert!(core::mem::size_of::<VipKey>() == 20);
    assert!(core::mem::size_of::<VipMeta>() == 20);
    assert!(core::mem::size_of::<VipAddrKey>() == 20);
    assert!(core::mem::size_of::<VipBucket>() == 64);
    assert!(core::mem::size_of::<Backend>() == 40);
    assert!(core::mem::size_of::<FlowKey>() == 40);
    assert!(core::mem::size_of::<ConnEntry>() == 16);
    assert!(core::mem::size_of::<RingChunk>() == 64);
    assert!(core::mem::size_of::<Counters>() == 16);
    assert!(core::mem::size_of::<FlowGuard>() == 16);
    assert!(core::mem::size_of::<ClockSample>() == 16);
    assert!(core::mem::size_of::<GlobalConfig>() == 44);
    assert!(crate::consts::MAX_BACKENDS < crate::consts::NO_BACKEND as u32);
};

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all of these are repr(C), Copy, with explicit padding fields and
    // no bool/Option/pointer: every bit pattern is a valid value.
    unsafe impl aya::Pod for VipKey {}
    unsafe impl aya::Pod for VipMeta {}
    unsafe impl aya::Pod for VipBucket {}
    unsafe impl aya::Pod for VipAddrKey {}
    unsafe impl aya::Pod for Backend {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for ConnEntry {}
    unsafe impl aya::Pod for crate::ConnSlot {}
    unsafe impl aya::Pod for crate::ConnSet {}
    unsafe impl aya::Pod for crate::ConnTableKey {}
    unsafe impl aya::Pod for RingChunk {}
    unsafe impl aya::Pod for Counters {}
    unsafe impl aya::Pod for GlobalConfig {}
    unsafe impl aya::Pod for FlowGuard {}
    unsafe impl aya::Pod for ClockSample {}
}
