//! Wire layouts of the headers the programs touch. `packed` because IP headers
//! sit at 2-byte-aligned offsets behind Ethernet; fields are raw wire values
//! (multi-byte fields in network byte order).

#[repr(C, packed)]
#[derive(Clone, Copy)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub proto: u16,
}

/// One 802.1Q/802.1ad tag as it follows the MACs: TCI, then the next ethertype.
#[repr(C, packed)]
#[derive(Clone, Copy)]
pub struct VlanHdr {
    pub tci: u16,
    pub proto: u16,
}

#[repr(C, packed)]
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
    pub saddr: u32,
    pub daddr: u32,
}

#[repr(C, packed)]
#[derive(Clone, Copy, Default)]
pub struct Ipv6Hdr {
    /// Version (4 bits), traffic class (8), flow label (20).
    pub vtc_flow: [u8; 4],
    pub payload_len: u16,
    pub nexthdr: u8,
    pub hop_limit: u8,
    pub saddr: [u32; 4],
    pub daddr: [u32; 4],
}

/// The first 14 bytes of a TCP header: all the balancer reads.
#[repr(C, packed)]
#[derive(Clone, Copy)]
pub struct TcpHdrStart {
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub doff: u8,
    pub flags: u8,
}

#[repr(C, packed)]
#[derive(Clone, Copy)]
pub struct UdpHdr {
    pub sport: u16,
    pub dport: u16,
    pub len: u16,
    pub check: u16,
}

const _: () = {
    assert!(core::mem::size_of::<EthHdr>() == lb_common::net::ETH_HDR_LEN);
    assert!(core::mem::size_of::<VlanHdr>() == lb_common::net::VLAN_HDR_LEN);
    assert!(core::mem::size_of::<Ipv4Hdr>() == lb_common::net::IPV4_HDR_LEN);
    assert!(core::mem::size_of::<Ipv6Hdr>() == lb_common::net::IPV6_HDR_LEN);
    assert!(core::mem::size_of::<UdpHdr>() == lb_common::net::UDP_HDR_LEN);
};
