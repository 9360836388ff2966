//! Wire layouts of the headers the programs touch. Fields are raw wire values
//! (multi-byte fields in network byte order).
//!
//! Every type is 2-byte aligned (no `packed`): behind Ethernet (14 bytes)
//! and VLAN tags (4 bytes each) the IP and L4 headers sit at even but not
//! 4-byte-aligned offsets, and the BPF target splits any load it cannot
//! prove aligned into byte loads and shifts. With 2-byte alignment LLVM
//! emits 16-bit loads; 32-bit fields are kept as two 16-bit halves
//! ([`W32`]) and joined in registers.

/// A 32-bit wire field as two 16-bit halves in memory order.
pub type W32 = [u16; 2];
/// An IPv6 address as eight 16-bit halves in memory order.
pub type W128 = [u16; 8];

/// The value of a [`W32`] as the u32 with the same bytes in memory
/// (network order, like the other raw wire values).
#[inline(always)]
pub fn w32(v: W32) -> u32 {
    // SAFETY: same size, every bit pattern valid.
    unsafe { core::mem::transmute(v) }
}

/// A u32 (same bytes as on the wire) as a [`W32`].
#[inline(always)]
pub fn to_w32(v: u32) -> W32 {
    // SAFETY: same size, every bit pattern valid.
    unsafe { core::mem::transmute(v) }
}

/// An IPv6 address from the wire as the four words lb keeps addresses in.
#[inline(always)]
pub fn w128(v: W128) -> lb_common::types::AddrWords {
    // SAFETY: same size, every bit pattern valid.
    unsafe { core::mem::transmute(v) }
}

/// Address words as a [`W128`] to write on the wire.
#[inline(always)]
pub fn to_w128(v: lb_common::types::AddrWords) -> W128 {
    // SAFETY: same size, every bit pattern valid.
    unsafe { core::mem::transmute(v) }
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub proto: u16,
}

/// One 802.1Q/802.1ad tag as it follows the MACs: TCI, then the next ethertype.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct VlanHdr {
    pub tci: u16,
    pub proto: u16,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct Ipv4Hdr {
    pub ver_ihl: u8,
    pub tos: u8,
    pub tot_len: u16,
    pub id: u16,
    pub frag_off: u16,
    pub ttl: u8,
    pub proto: u8,
    pub check: u16,
    pub saddr: W32,
    pub daddr: W32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct Ipv6Hdr {
    /// Version (4 bits), traffic class (8), flow label (20).
    pub vtc_flow: [u8; 4],
    pub payload_len: u16,
    pub nexthdr: u8,
    pub hop_limit: u8,
    pub saddr: W128,
    pub daddr: W128,
}

/// The first 14 bytes of a TCP header: all the balancer reads.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TcpHdrStart {
    pub sport: u16,
    pub dport: u16,
    pub seq: W32,
    pub ack: W32,
    pub doff: u8,
    pub flags: u8,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct UdpHdr {
    pub sport: u16,
    pub dport: u16,
    pub len: u16,
    pub check: u16,
}

const _: () = {
    use core::mem::{align_of, size_of};
    assert!(size_of::<EthHdr>() == lb_common::net::ETH_HDR_LEN);
    assert!(size_of::<VlanHdr>() == lb_common::net::VLAN_HDR_LEN);
    assert!(size_of::<Ipv4Hdr>() == lb_common::net::IPV4_HDR_LEN);
    assert!(size_of::<Ipv6Hdr>() == lb_common::net::IPV6_HDR_LEN);
    assert!(size_of::<TcpHdrStart>() == 14);
    assert!(size_of::<UdpHdr>() == lb_common::net::UDP_HDR_LEN);
    // At most 2: every header starts at an even offset of the frame.
    assert!(align_of::<EthHdr>() == 2 && align_of::<VlanHdr>() == 2);
    assert!(align_of::<Ipv4Hdr>() == 2 && align_of::<Ipv6Hdr>() == 2);
    assert!(align_of::<TcpHdrStart>() == 2 && align_of::<UdpHdr>() == 2);
};
