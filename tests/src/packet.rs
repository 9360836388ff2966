//! Byte-exact frame builders for the BPF_PROG_TEST_RUN fixtures, and the
//! reference transformations: what lb must output for a given input, so a
//! fixture states its expected bytes exactly.
//!
//! ```
//! use lb_tests::packet::Packet;
//! let frame = Packet::new()
//!     .vlan(0x8100, 10)
//!     .ipv4("198.18.1.1".parse().unwrap(), "198.18.100.1".parse().unwrap())
//!     .df()
//!     .tcp(40000, 80)
//!     .syn()
//!     .build();
//! assert_eq!(frame.len(), 14 + 4 + 20 + 20);
//! ```
//!
//! Everything here is plain Rust: headers are written field by field in wire
//! order, checksums are computed last, and deliberate defects (wrong lengths,
//! versions, IHL, checksums) are opt-in.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_common::net::{
    ETH_HDR_LEN, ETH_P_8021AD, ETH_P_8021Q, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, IPPROTO_DSTOPTS,
    IPPROTO_FRAGMENT, IPPROTO_HOPOPTS, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_IPIP, IPPROTO_IPV6,
    IPPROTO_ROUTING, IPPROTO_TCP, IPPROTO_UDP, IPV4_DF, IPV4_HDR_LEN, IPV4_MF, IPV4_OFFSET_MASK,
    IPV6_HDR_LEN, TCP_FLAG_ACK, TCP_FLAG_SYN, TCP_HDR_LEN, UDP_HDR_LEN, VLAN_HDR_LEN, csum_fold,
};
use lb_common::{ENCAP_TTL, FlowKey, hash::flow_hash};

/// An Ethernet address.
pub type Mac = [u8; 6];

/// Destination MAC of built frames unless set: the balancer's own interface.
pub const DEFAULT_DST_MAC: Mac = [0x02, 0, 0, 0, 0, 0x01];
/// Source MAC of built frames unless set: the router that delivered them.
pub const DEFAULT_SRC_MAC: Mac = [0x02, 0, 0, 0, 0, 0x02];

/// TCP flag bits not in `lb_common::net` (FIN, RST, PSH, URG).
pub const TCP_FLAG_FIN: u8 = 0x01;
pub const TCP_FLAG_RST: u8 = 0x04;
pub const TCP_FLAG_PSH: u8 = 0x08;

/// ICMP / ICMPv6 echo request types.
pub const ICMP_ECHO_REQUEST: u8 = 8;
pub const ICMPV6_ECHO_REQUEST: u8 = 128;

/// One VLAN tag: TPID (0x8100 802.1Q, 0x88a8 802.1ad, or anything) and TCI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VlanTag {
    pub tpid: u16,
    pub tci: u16,
}

/// An IPv6 extension header, in chain order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ipv6Ext {
    /// Hop-by-hop options (next header 0): option bytes, padded with Pad1/PadN
    /// to a multiple of 8 bytes together with the 2-byte header.
    HopByHop(Vec<u8>),
    /// Routing header (43): type, segments left, and type-specific data after
    /// the 4 fixed bytes, zero-padded to a multiple of 8 bytes.
    Routing { routing_type: u8, segments_left: u8, data: Vec<u8> },
    /// Destination options (60), like hop-by-hop.
    DestOpts(Vec<u8>),
    /// Fragment header (44): offset in 8-byte units, M flag, identification.
    Fragment { offset: u16, more: bool, id: u32 },
}

impl Ipv6Ext {
    /// The "next header" value that announces this header.
    pub fn protocol(&self) -> u8 {
        match self {
            Ipv6Ext::HopByHop(_) => IPPROTO_HOPOPTS,
            Ipv6Ext::Routing { .. } => IPPROTO_ROUTING,
            Ipv6Ext::DestOpts(_) => IPPROTO_DSTOPTS,
            Ipv6Ext::Fragment { .. } => IPPROTO_FRAGMENT,
        }
    }

    fn encode(&self, next: u8) -> Vec<u8> {
        match self {
            Ipv6Ext::HopByHop(opts) | Ipv6Ext::DestOpts(opts) => {
                let mut h = vec![next, 0];
                h.extend_from_slice(opts);
                let pad = (8 - h.len() % 8) % 8;
                match pad {
                    0 => {}
                    1 => h.push(0), // Pad1
                    n => {
                        h.push(1); // PadN
                        h.push((n - 2) as u8);
                        h.extend(std::iter::repeat_n(0, n - 2));
                    }
                }
                h[1] = (h.len() / 8 - 1) as u8;
                h
            }
            Ipv6Ext::Routing { routing_type, segments_left, data } => {
                let mut h = vec![next, 0, *routing_type, *segments_left];
                h.extend_from_slice(data);
                if h.len() < 8 {
                    h.resize(8, 0);
                }
                h.resize(h.len().div_ceil(8) * 8, 0);
                h[1] = (h.len() / 8 - 1) as u8;
                h
            }
            Ipv6Ext::Fragment { offset, more, id } => {
                let mut h = vec![next, 0];
                let word = (offset << 3) | u16::from(*more);
                h.extend_from_slice(&word.to_be_bytes());
                h.extend_from_slice(&id.to_be_bytes());
                h
            }
        }
    }
}

/// IPv4 header fields, including deliberate defects.
#[derive(Clone, Debug)]
pub struct Ipv4Spec {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub tos: u8,
    pub ttl: u8,
    pub id: u16,
    pub df: bool,
    pub mf: bool,
    /// Fragment offset in 8-byte units.
    pub frag_offset: u16,
    /// Option bytes, zero-padded (EOL) to a multiple of 4: IHL = 5 + len/4.
    pub options: Vec<u8>,
    /// Protocol field; default: from the L4 part.
    pub protocol: Option<u8>,
    /// Version nibble (4 unless testing a bad version).
    pub version: u8,
    /// IHL override (the bytes written are still 20 + options).
    pub ihl: Option<u8>,
    /// Total length override.
    pub total_len: Option<u16>,
    /// Write a wrong header checksum.
    pub bad_csum: bool,
}

/// IPv6 header fields and extension chain.
#[derive(Clone, Debug)]
pub struct Ipv6Spec {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub traffic_class: u8,
    /// 20 bits.
    pub flow_label: u32,
    pub hop_limit: u8,
    pub ext: Vec<Ipv6Ext>,
    /// Next header of the last header in the chain; default: from the L4 part.
    pub next_header: Option<u8>,
    pub version: u8,
    /// Payload length override.
    pub payload_len: Option<u16>,
}

/// ARP request/reply body (Ethernet/IPv4).
#[derive(Clone, Debug)]
pub struct ArpSpec {
    pub oper: u16,
    pub sha: Mac,
    pub spa: Ipv4Addr,
    pub tha: Mac,
    pub tpa: Ipv4Addr,
}

#[derive(Clone, Debug)]
pub struct TcpSpec {
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    pub urgent: u16,
    /// Option bytes, zero-padded to a multiple of 4.
    pub options: Vec<u8>,
    pub payload: Vec<u8>,
    pub bad_csum: bool,
}

#[derive(Clone, Debug)]
pub struct UdpSpec {
    pub sport: u16,
    pub dport: u16,
    pub payload: Vec<u8>,
    /// Length field override.
    pub length: Option<u16>,
    pub bad_csum: bool,
}

#[derive(Clone, Debug)]
pub enum L3 {
    None,
    V4(Ipv4Spec),
    V6(Ipv6Spec),
    Arp(ArpSpec),
    /// Any ethertype with opaque payload.
    Raw { ethertype: u16, payload: Vec<u8> },
}

#[derive(Clone, Debug)]
pub enum L4 {
    None,
    Tcp(TcpSpec),
    Udp(UdpSpec),
    /// ICMP for IPv4, ICMPv6 for IPv6 (checksum with pseudo-header).
    Icmp { ty: u8, code: u8, rest: Vec<u8> },
    /// Opaque upper-layer bytes with a given protocol number.
    Raw { proto: u8, payload: Vec<u8> },
}

/// A frame under construction. Every setter consumes and returns the builder;
/// setters of a layer panic if that layer is not the current one (a test bug).
#[derive(Clone, Debug)]
pub struct Packet {
    pub dst_mac: Mac,
    pub src_mac: Mac,
    pub vlans: Vec<VlanTag>,
    /// Innermost ethertype override; default: from the L3 part.
    pub ethertype: Option<u16>,
    pub l3: L3,
    pub l4: L4,
    /// Zero padding appended until the frame is at least this long.
    pub pad_to: usize,
    /// Bytes appended after everything (before `pad_to` applies).
    pub trailer: Vec<u8>,
}

impl Default for Packet {
    fn default() -> Self {
        Self::new()
    }
}

impl Packet {
    pub fn new() -> Self {
        Packet {
            dst_mac: DEFAULT_DST_MAC,
            src_mac: DEFAULT_SRC_MAC,
            vlans: Vec::new(),
            ethertype: None,
            l3: L3::None,
            l4: L4::None,
            pad_to: 0,
            trailer: Vec::new(),
        }
    }

    // ---- Ethernet ----

    pub fn macs(mut self, dst: Mac, src: Mac) -> Self {
        self.dst_mac = dst;
        self.src_mac = src;
        self
    }

    /// Adds a VLAN tag (outermost first) with VLAN id `vid` and priority 0.
    pub fn vlan(self, tpid: u16, vid: u16) -> Self {
        self.vlan_tci(tpid, vid & 0x0fff)
    }

    /// Adds a VLAN tag with a full TCI (PCP, DEI, VID).
    pub fn vlan_tci(mut self, tpid: u16, tci: u16) -> Self {
        self.vlans.push(VlanTag { tpid, tci });
        self
    }

    /// 802.1Q tag.
    pub fn dot1q(self, vid: u16) -> Self {
        self.vlan(ETH_P_8021Q, vid)
    }

    /// 802.1ad (service) tag.
    pub fn dot1ad(self, vid: u16) -> Self {
        self.vlan(ETH_P_8021AD, vid)
    }

    /// Overrides the innermost ethertype.
    pub fn ethertype(mut self, ethertype: u16) -> Self {
        self.ethertype = Some(ethertype);
        self
    }

    /// Ethernet bytes before the L3 header: 14 + 4 per VLAN tag.
    pub fn l2_len(&self) -> usize {
        ETH_HDR_LEN + VLAN_HDR_LEN * self.vlans.len()
    }

    // ---- L3 ----

    pub fn ipv4(mut self, src: Ipv4Addr, dst: Ipv4Addr) -> Self {
        self.l3 = L3::V4(Ipv4Spec {
            src,
            dst,
            tos: 0,
            ttl: 64,
            id: 0x1234,
            df: false,
            mf: false,
            frag_offset: 0,
            options: Vec::new(),
            protocol: None,
            version: 4,
            ihl: None,
            total_len: None,
            bad_csum: false,
        });
        self
    }

    pub fn ipv6(mut self, src: Ipv6Addr, dst: Ipv6Addr) -> Self {
        self.l3 = L3::V6(Ipv6Spec {
            src,
            dst,
            traffic_class: 0,
            flow_label: 0,
            hop_limit: 64,
            ext: Vec::new(),
            next_header: None,
            version: 6,
            payload_len: None,
        });
        self
    }

    /// IPv4 or IPv6 by the addresses' family (which must match).
    pub fn ip(self, src: IpAddr, dst: IpAddr) -> Self {
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => self.ipv4(s, d),
            (IpAddr::V6(s), IpAddr::V6(d)) => self.ipv6(s, d),
            _ => panic!("Packet::ip: mixed address families {src} -> {dst}"),
        }
    }

    /// ARP request `who-has tpa tell spa` from `sha`.
    pub fn arp_request(mut self, sha: Mac, spa: Ipv4Addr, tpa: Ipv4Addr) -> Self {
        self.l3 = L3::Arp(ArpSpec { oper: 1, sha, spa, tha: [0; 6], tpa });
        self
    }

    /// Any ethertype with opaque payload (LLDP, MPLS, ...).
    pub fn raw_l3(mut self, ethertype: u16, payload: &[u8]) -> Self {
        self.l3 = L3::Raw { ethertype, payload: payload.to_vec() };
        self
    }

    fn v4(&mut self) -> &mut Ipv4Spec {
        match &mut self.l3 {
            L3::V4(h) => h,
            _ => panic!("not an IPv4 packet"),
        }
    }

    fn v6(&mut self) -> &mut Ipv6Spec {
        match &mut self.l3 {
            L3::V6(h) => h,
            _ => panic!("not an IPv6 packet"),
        }
    }

    /// IPv4 TOS or IPv6 traffic class.
    pub fn tos(mut self, tos: u8) -> Self {
        match &mut self.l3 {
            L3::V4(h) => h.tos = tos,
            L3::V6(h) => h.traffic_class = tos,
            _ => panic!("tos on a non-IP packet"),
        }
        self
    }

    /// IPv4 TTL or IPv6 hop limit.
    pub fn ttl(mut self, ttl: u8) -> Self {
        match &mut self.l3 {
            L3::V4(h) => h.ttl = ttl,
            L3::V6(h) => h.hop_limit = ttl,
            _ => panic!("ttl on a non-IP packet"),
        }
        self
    }

    /// IP version nibble (to build a bad version).
    pub fn ip_version(mut self, version: u8) -> Self {
        match &mut self.l3 {
            L3::V4(h) => h.version = version,
            L3::V6(h) => h.version = version,
            _ => panic!("ip_version on a non-IP packet"),
        }
        self
    }

    /// IPv4 protocol / IPv6 last next header, overriding the L4 part's.
    pub fn ip_protocol(mut self, proto: u8) -> Self {
        match &mut self.l3 {
            L3::V4(h) => h.protocol = Some(proto),
            L3::V6(h) => h.next_header = Some(proto),
            _ => panic!("ip_protocol on a non-IP packet"),
        }
        self
    }

    pub fn ip_id(mut self, id: u16) -> Self {
        self.v4().id = id;
        self
    }

    /// Sets the IPv4 don't-fragment flag.
    pub fn df(mut self) -> Self {
        self.v4().df = true;
        self
    }

    /// Sets the IPv4 more-fragments flag.
    pub fn mf(mut self) -> Self {
        self.v4().mf = true;
        self
    }

    /// IPv4 fragment offset in 8-byte units.
    pub fn frag_offset(mut self, offset: u16) -> Self {
        assert!(offset <= IPV4_OFFSET_MASK);
        self.v4().frag_offset = offset;
        self
    }

    /// IPv4 option bytes (padded to 4): IHL becomes 5 + ceil(len/4).
    pub fn ipv4_options(mut self, options: &[u8]) -> Self {
        let mut o = options.to_vec();
        o.resize(o.len().div_ceil(4) * 4, 0);
        assert!(o.len() <= 40, "IPv4 options are at most 40 bytes");
        self.v4().options = o;
        self
    }

    /// Writes this IHL instead of the real header length.
    pub fn ihl(mut self, ihl: u8) -> Self {
        self.v4().ihl = Some(ihl);
        self
    }

    /// Writes this IPv4 total length instead of the real one.
    pub fn ipv4_total_len(mut self, len: u16) -> Self {
        self.v4().total_len = Some(len);
        self
    }

    /// Writes a wrong IPv4 header checksum (the correct one + 1).
    pub fn corrupt_ipv4_csum(mut self) -> Self {
        self.v4().bad_csum = true;
        self
    }

    pub fn traffic_class(mut self, tc: u8) -> Self {
        self.v6().traffic_class = tc;
        self
    }

    pub fn flow_label(mut self, label: u32) -> Self {
        assert!(label <= 0xfffff);
        self.v6().flow_label = label;
        self
    }

    pub fn hop_limit(mut self, hl: u8) -> Self {
        self.v6().hop_limit = hl;
        self
    }

    /// Appends an IPv6 extension header to the chain.
    pub fn ext(mut self, ext: Ipv6Ext) -> Self {
        self.v6().ext.push(ext);
        self
    }

    /// Writes this IPv6 payload length instead of the real one.
    pub fn ipv6_payload_len(mut self, len: u16) -> Self {
        self.v6().payload_len = Some(len);
        self
    }

    // ---- L4 ----

    pub fn tcp(mut self, sport: u16, dport: u16) -> Self {
        self.l4 = L4::Tcp(TcpSpec {
            sport,
            dport,
            seq: 0x1000_0000,
            ack: 0,
            flags: TCP_FLAG_ACK,
            window: 64240,
            urgent: 0,
            options: Vec::new(),
            payload: Vec::new(),
            bad_csum: false,
        });
        self
    }

    pub fn udp(mut self, sport: u16, dport: u16) -> Self {
        self.l4 = L4::Udp(UdpSpec { sport, dport, payload: Vec::new(), length: None, bad_csum: false });
        self
    }

    /// Echo request (ICMP for IPv4, ICMPv6 for IPv6).
    pub fn icmp_echo(mut self, id: u16, seq: u16) -> Self {
        let ty = match self.l3 {
            L3::V6(_) => ICMPV6_ECHO_REQUEST,
            _ => ICMP_ECHO_REQUEST,
        };
        let mut rest = id.to_be_bytes().to_vec();
        rest.extend_from_slice(&seq.to_be_bytes());
        self.l4 = L4::Icmp { ty, code: 0, rest };
        self
    }

    /// Any ICMP/ICMPv6 message: type, code, the bytes after the checksum.
    pub fn icmp(mut self, ty: u8, code: u8, rest: &[u8]) -> Self {
        self.l4 = L4::Icmp { ty, code, rest: rest.to_vec() };
        self
    }

    /// Opaque upper-layer bytes (GRE, SCTP, IPIP, ...).
    pub fn l4_raw(mut self, proto: u8, payload: &[u8]) -> Self {
        self.l4 = L4::Raw { proto, payload: payload.to_vec() };
        self
    }

    fn tcp_mut(&mut self) -> &mut TcpSpec {
        match &mut self.l4 {
            L4::Tcp(t) => t,
            _ => panic!("not a TCP packet"),
        }
    }

    pub fn seq(mut self, seq: u32) -> Self {
        self.tcp_mut().seq = seq;
        self
    }

    pub fn ack_num(mut self, ack: u32) -> Self {
        self.tcp_mut().ack = ack;
        self
    }

    pub fn flags(mut self, flags: u8) -> Self {
        self.tcp_mut().flags = flags;
        self
    }

    /// A connection's first packet: SYN only.
    pub fn syn(self) -> Self {
        self.flags(TCP_FLAG_SYN)
    }

    /// An established connection's packet: ACK only.
    pub fn ack(self) -> Self {
        self.flags(TCP_FLAG_ACK)
    }

    pub fn window(mut self, window: u16) -> Self {
        self.tcp_mut().window = window;
        self
    }

    /// TCP option bytes (padded to 4).
    pub fn tcp_options(mut self, options: &[u8]) -> Self {
        let mut o = options.to_vec();
        o.resize(o.len().div_ceil(4) * 4, 0);
        assert!(o.len() <= 40);
        self.tcp_mut().options = o;
        self
    }

    /// Writes this UDP length field instead of the real one.
    pub fn udp_length(mut self, len: u16) -> Self {
        match &mut self.l4 {
            L4::Udp(u) => u.length = Some(len),
            _ => panic!("not a UDP packet"),
        }
        self
    }

    /// Payload of the TCP/UDP/ICMP/raw part.
    pub fn payload(mut self, data: &[u8]) -> Self {
        match &mut self.l4 {
            L4::Tcp(t) => t.payload = data.to_vec(),
            L4::Udp(u) => u.payload = data.to_vec(),
            L4::Icmp { rest, .. } => rest.extend_from_slice(data),
            L4::Raw { payload, .. } => *payload = data.to_vec(),
            L4::None => panic!("payload without an L4 part"),
        }
        self
    }

    /// Writes a wrong TCP/UDP/ICMP checksum (the correct one + 1).
    pub fn corrupt_l4_csum(mut self) -> Self {
        match &mut self.l4 {
            L4::Tcp(t) => t.bad_csum = true,
            L4::Udp(u) => u.bad_csum = true,
            _ => panic!("corrupt_l4_csum needs TCP or UDP"),
        }
        self
    }

    // ---- trailer ----

    /// Zero-pads the frame to at least `len` bytes (Ethernet minimum: 60).
    pub fn pad_to(mut self, len: usize) -> Self {
        self.pad_to = len;
        self
    }

    /// Appends bytes after the IP packet (inside the frame, outside IP).
    pub fn trailer(mut self, bytes: &[u8]) -> Self {
        self.trailer = bytes.to_vec();
        self
    }

    /// The flow 5-tuple of an IP + TCP/UDP packet, as lb keys it.
    pub fn flow_key(&self) -> FlowKey {
        let (sport, dport, proto) = match &self.l4 {
            L4::Tcp(t) => (t.sport, t.dport, IPPROTO_TCP),
            L4::Udp(u) => (u.sport, u.dport, IPPROTO_UDP),
            _ => panic!("flow_key needs TCP or UDP"),
        };
        match &self.l3 {
            L3::V4(h) => FlowKey::new(h.src.into(), sport, h.dst.into(), dport, proto),
            L3::V6(h) => FlowKey::new(h.src.into(), sport, h.dst.into(), dport, proto),
            _ => panic!("flow_key needs IP"),
        }
    }

    fn l4_proto(&self) -> u8 {
        match &self.l4 {
            L4::Tcp(_) => IPPROTO_TCP,
            L4::Udp(_) => IPPROTO_UDP,
            L4::Icmp { .. } => match self.l3 {
                L3::V6(_) => IPPROTO_ICMPV6,
                _ => IPPROTO_ICMP,
            },
            L4::Raw { proto, .. } => *proto,
            L4::None => 59, // IPv6 "no next header"; IPv4: reserved-ish, only if asked
        }
    }

    /// L4 bytes with a correct checksum (given the pseudo-header sum).
    fn l4_bytes(&self, pseudo: Option<&dyn Fn(u8, usize) -> u32>) -> Vec<u8> {
        let proto = self.l4_proto();
        let pseudo_sum = |len: usize| pseudo.map_or(0, |p| p(proto, len));
        match &self.l4 {
            L4::None => Vec::new(),
            L4::Raw { payload, .. } => payload.clone(),
            L4::Tcp(t) => {
                let mut b = Vec::with_capacity(TCP_HDR_LEN + t.options.len() + t.payload.len());
                b.extend_from_slice(&t.sport.to_be_bytes());
                b.extend_from_slice(&t.dport.to_be_bytes());
                b.extend_from_slice(&t.seq.to_be_bytes());
                b.extend_from_slice(&t.ack.to_be_bytes());
                let doff = ((TCP_HDR_LEN + t.options.len()) / 4) as u8;
                b.push(doff << 4);
                b.push(t.flags);
                b.extend_from_slice(&t.window.to_be_bytes());
                b.extend_from_slice(&[0, 0]);
                b.extend_from_slice(&t.urgent.to_be_bytes());
                b.extend_from_slice(&t.options);
                b.extend_from_slice(&t.payload);
                let mut c = internet_checksum(&b, pseudo_sum(b.len()));
                if t.bad_csum {
                    c = c.wrapping_add(1);
                }
                b[16..18].copy_from_slice(&c.to_be_bytes());
                b
            }
            L4::Udp(u) => {
                let len = UDP_HDR_LEN + u.payload.len();
                let mut b = Vec::with_capacity(len);
                b.extend_from_slice(&u.sport.to_be_bytes());
                b.extend_from_slice(&u.dport.to_be_bytes());
                b.extend_from_slice(&u.length.unwrap_or(len as u16).to_be_bytes());
                b.extend_from_slice(&[0, 0]);
                b.extend_from_slice(&u.payload);
                let mut c = internet_checksum(&b, pseudo_sum(b.len()));
                if c == 0 {
                    c = 0xffff; // RFC 768: zero means "no checksum"
                }
                if u.bad_csum {
                    c = c.wrapping_add(1);
                }
                b[6..8].copy_from_slice(&c.to_be_bytes());
                b
            }
            L4::Icmp { ty, code, rest } => {
                let mut b = vec![*ty, *code, 0, 0];
                b.extend_from_slice(rest);
                // ICMPv4 has no pseudo-header; ICMPv6 does.
                let init = if proto == IPPROTO_ICMPV6 { pseudo_sum(b.len()) } else { 0 };
                let c = internet_checksum(&b, init);
                b[2..4].copy_from_slice(&c.to_be_bytes());
                b
            }
        }
    }

    /// The IP packet (header + payload), without Ethernet.
    pub fn build_l3(&self) -> Vec<u8> {
        match &self.l3 {
            L3::None => Vec::new(),
            L3::Raw { payload, .. } => payload.clone(),
            L3::Arp(a) => {
                let mut b = Vec::with_capacity(28);
                b.extend_from_slice(&1u16.to_be_bytes()); // Ethernet
                b.extend_from_slice(&ETH_P_IP.to_be_bytes());
                b.push(6);
                b.push(4);
                b.extend_from_slice(&a.oper.to_be_bytes());
                b.extend_from_slice(&a.sha);
                b.extend_from_slice(&a.spa.octets());
                b.extend_from_slice(&a.tha);
                b.extend_from_slice(&a.tpa.octets());
                b
            }
            L3::V4(h) => {
                let (src, dst) = (h.src.octets(), h.dst.octets());
                let pseudo = move |proto: u8, len: usize| -> u32 {
                    sum_words(&src) + sum_words(&dst) + u32::from(proto) + len as u32
                };
                let l4 = self.l4_bytes(Some(&pseudo));
                let hlen = IPV4_HDR_LEN + h.options.len();
                let mut b = Vec::with_capacity(hlen + l4.len());
                let ihl = h.ihl.unwrap_or((hlen / 4) as u8);
                b.push((h.version << 4) | (ihl & 0x0f));
                b.push(h.tos);
                let total = h.total_len.unwrap_or((hlen + l4.len()) as u16);
                b.extend_from_slice(&total.to_be_bytes());
                b.extend_from_slice(&h.id.to_be_bytes());
                let mut frag = h.frag_offset & IPV4_OFFSET_MASK;
                if h.df {
                    frag |= IPV4_DF;
                }
                if h.mf {
                    frag |= IPV4_MF;
                }
                b.extend_from_slice(&frag.to_be_bytes());
                b.push(h.ttl);
                b.push(h.protocol.unwrap_or(self.l4_proto()));
                b.extend_from_slice(&[0, 0]);
                b.extend_from_slice(&src);
                b.extend_from_slice(&dst);
                b.extend_from_slice(&h.options);
                let mut c = internet_checksum(&b[..hlen], 0);
                if h.bad_csum {
                    c = c.wrapping_add(1);
                }
                b[10..12].copy_from_slice(&c.to_be_bytes());
                b.extend_from_slice(&l4);
                b
            }
            L3::V6(h) => {
                let (src, dst) = (h.src.octets(), h.dst.octets());
                let pseudo = move |proto: u8, len: usize| -> u32 {
                    sum_words(&src) + sum_words(&dst) + len as u32 + u32::from(proto)
                };
                let l4 = self.l4_bytes(Some(&pseudo));
                let last = h.next_header.unwrap_or(self.l4_proto());
                let mut exts = Vec::new();
                for (i, e) in h.ext.iter().enumerate() {
                    let next = h.ext.get(i + 1).map_or(last, Ipv6Ext::protocol);
                    exts.extend_from_slice(&e.encode(next));
                }
                let first = h.ext.first().map_or(last, Ipv6Ext::protocol);
                let mut b = Vec::with_capacity(IPV6_HDR_LEN + exts.len() + l4.len());
                let word = (u32::from(h.version) << 28)
                    | (u32::from(h.traffic_class) << 20)
                    | (h.flow_label & 0xfffff);
                b.extend_from_slice(&word.to_be_bytes());
                let plen = h.payload_len.unwrap_or((exts.len() + l4.len()) as u16);
                b.extend_from_slice(&plen.to_be_bytes());
                b.push(first);
                b.push(h.hop_limit);
                b.extend_from_slice(&src);
                b.extend_from_slice(&dst);
                b.extend_from_slice(&exts);
                b.extend_from_slice(&l4);
                b
            }
        }
    }

    /// The whole frame.
    pub fn build(&self) -> Vec<u8> {
        let l3 = self.build_l3();
        let ethertype = self.ethertype.unwrap_or(match &self.l3 {
            L3::V4(_) => ETH_P_IP,
            L3::V6(_) => ETH_P_IPV6,
            L3::Arp(_) => ETH_P_ARP,
            L3::Raw { ethertype, .. } => *ethertype,
            L3::None => 0x88b5, // IEEE local experimental
        });
        let mut f = Vec::with_capacity(self.l2_len() + l3.len() + self.trailer.len());
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&self.src_mac);
        for t in &self.vlans {
            f.extend_from_slice(&t.tpid.to_be_bytes());
            f.extend_from_slice(&t.tci.to_be_bytes());
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(&l3);
        f.extend_from_slice(&self.trailer);
        if f.len() < self.pad_to {
            f.resize(self.pad_to, 0);
        }
        f
    }
}

// ---------------------------------------------------------------------------
// Checksums

/// Sum of big-endian 16-bit words (odd length: last byte is the high half).
fn sum_words(data: &[u8]) -> u32 {
    let mut sum = 0u64;
    for c in data.chunks(2) {
        let w = if c.len() == 2 { u16::from_be_bytes([c[0], c[1]]) } else { u16::from(c[0]) << 8 };
        sum += u64::from(w);
    }
    // Pre-fold to 32 bits without losing carries.
    while sum >> 32 != 0 {
        sum = (sum & 0xffff_ffff) + (sum >> 32);
    }
    sum as u32
}

fn add_ones(a: u32, b: u32) -> u32 {
    let (s, carry) = a.overflowing_add(b);
    s + u32::from(carry)
}

/// RFC 1071 Internet checksum of `data` plus an initial (pseudo-header) sum,
/// as a host-order value to be written big-endian.
pub fn internet_checksum(data: &[u8], initial: u32) -> u16 {
    csum_fold(add_ones(sum_words(data), initial))
}

/// True if an IPv4 header (IHL*4 bytes, checksum included) sums to zero.
pub fn ipv4_header_csum_ok(header: &[u8]) -> bool {
    internet_checksum(header, 0) == 0
}

/// True if the TCP/UDP (or ICMP/ICMPv6) checksum of the IP packet at `l2_len`
/// is correct, using the packet's own lengths. IPv6 extension headers are
/// walked. A UDP checksum of zero (none) counts as correct over IPv4.
pub fn l4_csum_ok(frame: &[u8], l2_len: usize) -> bool {
    let Some(ip) = IpView::parse(&frame[l2_len..]) else { return false };
    let l4 = ip.l4;
    let init = match ip.src {
        IpAddr::V4(s) => {
            let IpAddr::V4(d) = ip.dst else { unreachable!() };
            if ip.proto == IPPROTO_ICMP {
                0
            } else {
                sum_words(&s.octets()) + sum_words(&d.octets()) + u32::from(ip.proto) + l4.len() as u32
            }
        }
        IpAddr::V6(s) => {
            let IpAddr::V6(d) = ip.dst else { unreachable!() };
            sum_words(&s.octets()) + sum_words(&d.octets()) + u32::from(ip.proto) + l4.len() as u32
        }
    };
    if ip.proto == IPPROTO_UDP && ip.src.is_ipv4() && l4.len() >= 8 && l4[6..8] == [0, 0] {
        return true;
    }
    internet_checksum(l4, init) == 0
}

/// A parsed IP packet (for validators and reference outputs).
#[derive(Clone, Debug)]
pub struct IpView<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Upper-layer protocol after any IPv6 extension headers.
    pub proto: u8,
    /// IPv4 TOS / IPv6 traffic class.
    pub tos: u8,
    /// IP header length (IPv4: IHL*4; IPv6: 40 + extension headers).
    pub header_len: usize,
    /// The whole IP packet by its length field (excludes trailing padding).
    pub packet: &'a [u8],
    /// Upper-layer bytes by the IP length field.
    pub l4: &'a [u8],
}

impl<'a> IpView<'a> {
    /// Parses an IPv4 or IPv6 packet; None if truncated or inconsistent.
    pub fn parse(ip: &'a [u8]) -> Option<Self> {
        match ip.first()? >> 4 {
            4 => {
                if ip.len() < IPV4_HDR_LEN {
                    return None;
                }
                let hlen = usize::from(ip[0] & 0x0f) * 4;
                let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
                if hlen < IPV4_HDR_LEN || total < hlen || total > ip.len() {
                    return None;
                }
                let packet = &ip[..total];
                Some(IpView {
                    src: Ipv4Addr::from(<[u8; 4]>::try_from(&ip[12..16]).unwrap()).into(),
                    dst: Ipv4Addr::from(<[u8; 4]>::try_from(&ip[16..20]).unwrap()).into(),
                    proto: ip[9],
                    tos: ip[1],
                    header_len: hlen,
                    packet,
                    l4: &packet[hlen..],
                })
            }
            6 => {
                if ip.len() < IPV6_HDR_LEN {
                    return None;
                }
                let total = IPV6_HDR_LEN + usize::from(u16::from_be_bytes([ip[4], ip[5]]));
                if total > ip.len() {
                    return None;
                }
                let packet = &ip[..total];
                let mut next = ip[6];
                let mut off = IPV6_HDR_LEN;
                loop {
                    match next {
                        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                            if off + 2 > total {
                                return None;
                            }
                            let len = (usize::from(packet[off + 1]) + 1) * 8;
                            next = packet[off];
                            off += len;
                        }
                        IPPROTO_FRAGMENT => {
                            if off + 8 > total {
                                return None;
                            }
                            next = packet[off];
                            off += 8;
                        }
                        _ => break,
                    }
                    if off > total {
                        return None;
                    }
                }
                let tc = ((u16::from_be_bytes([ip[0], ip[1]]) >> 4) & 0xff) as u8;
                Some(IpView {
                    src: Ipv6Addr::from(<[u8; 16]>::try_from(&ip[8..24]).unwrap()).into(),
                    dst: Ipv6Addr::from(<[u8; 16]>::try_from(&ip[24..40]).unwrap()).into(),
                    proto: next,
                    tos: tc,
                    header_len: off,
                    packet,
                    l4: &packet[off..],
                })
            }
            _ => None,
        }
    }

    /// (source port, destination port) of TCP/UDP, if the header is there.
    pub fn ports(&self) -> Option<(u16, u16)> {
        let need = match self.proto {
            IPPROTO_TCP => TCP_HDR_LEN,
            IPPROTO_UDP => UDP_HDR_LEN,
            _ => return None,
        };
        if self.l4.len() < need {
            return None;
        }
        Some((u16::from_be_bytes([self.l4[0], self.l4[1]]), u16::from_be_bytes([self.l4[2], self.l4[3]])))
    }

    /// The flow key lb computes for this packet (TCP/UDP only).
    pub fn flow_key(&self) -> Option<FlowKey> {
        let (sport, dport) = self.ports()?;
        Some(FlowKey::new(self.src, sport, self.dst, dport, self.proto))
    }
}

// ---------------------------------------------------------------------------
// Frame surgery

/// Length of the Ethernet header including every VLAN tag (any depth).
/// Stops at the end of the frame.
pub fn l2_len(frame: &[u8]) -> usize {
    let mut off = 12;
    while off + 2 <= frame.len() {
        let t = u16::from_be_bytes([frame[off], frame[off + 1]]);
        if t == ETH_P_8021Q || t == ETH_P_8021AD {
            off += VLAN_HDR_LEN;
        } else {
            break;
        }
    }
    off + 2
}

/// Innermost ethertype (after all VLAN tags).
pub fn inner_ethertype(frame: &[u8]) -> u16 {
    let l2 = l2_len(frame);
    u16::from_be_bytes([frame[l2 - 2], frame[l2 - 1]])
}

/// The flow key of a frame (any VLAN depth), if it is IP + TCP/UDP.
pub fn parse_flow(frame: &[u8]) -> Option<FlowKey> {
    IpView::parse(frame.get(l2_len(frame)..)?)?.flow_key()
}

/// The first `len` bytes of a frame.
pub fn truncated(frame: &[u8], len: usize) -> Vec<u8> {
    frame[..len.min(frame.len())].to_vec()
}

/// Cuts the IP packet at `l2_len` down to `ip_len` bytes and makes the IP
/// length fields agree (IPv4 total length + header checksum, IPv6 payload
/// length), so the IP header is valid and only the upper layer is short.
pub fn truncate_ip(frame: &[u8], l2_len: usize, ip_len: usize) -> Vec<u8> {
    let mut f = truncated(frame, l2_len + ip_len);
    match f[l2_len] >> 4 {
        4 => set_ipv4_total_len(&mut f, l2_len, ip_len as u16),
        6 => set_ipv6_payload_len(&mut f, l2_len, (ip_len - IPV6_HDR_LEN) as u16),
        v => panic!("truncate_ip: IP version {v}"),
    }
    f
}

/// Rewrites the IPv4 total length and recomputes the header checksum (so the
/// length is the only defect).
pub fn set_ipv4_total_len(frame: &mut [u8], l2_len: usize, total_len: u16) {
    frame[l2_len + 2..l2_len + 4].copy_from_slice(&total_len.to_be_bytes());
    fix_ipv4_csum(frame, l2_len);
}

/// Recomputes the IPv4 header checksum in place.
pub fn fix_ipv4_csum(frame: &mut [u8], l2_len: usize) {
    let hlen = (usize::from(frame[l2_len] & 0x0f) * 4).max(IPV4_HDR_LEN);
    frame[l2_len + 10..l2_len + 12].copy_from_slice(&[0, 0]);
    let c = internet_checksum(&frame[l2_len..l2_len + hlen], 0);
    frame[l2_len + 10..l2_len + 12].copy_from_slice(&c.to_be_bytes());
}

/// Rewrites the IPv6 payload length.
pub fn set_ipv6_payload_len(frame: &mut [u8], l2_len: usize, payload_len: u16) {
    frame[l2_len + 4..l2_len + 6].copy_from_slice(&payload_len.to_be_bytes());
}

// ---------------------------------------------------------------------------
// What lb outputs

/// Ethernet + VLAN part of an output frame: new MACs, the input's tags kept,
/// the innermost ethertype replaced.
fn rewrite_l2(frame_in: &[u8], l2_len: usize, dst: Mac, src: &[u8], ethertype: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(frame_in.len() + IPV6_HDR_LEN);
    out.extend_from_slice(&dst);
    out.extend_from_slice(&src[..6]);
    out.extend_from_slice(&frame_in[12..l2_len - 2]);
    out.extend_from_slice(&ethertype.to_be_bytes());
    out
}

/// lb's IPv4-in-IPv4 output for `frame_in` (IP packet at `l2_len`).
///
/// Ethernet dst = `nexthop_mac`, src = the input's destination MAC, VLAN tags
/// kept, ethertype 0x0800; outer IPv4: 0x45, TOS = inner TOS, total length =
/// inner total length + 20, id 0, DF iff the inner has DF, offset 0, TTL
/// `ENCAP_TTL`, protocol 4, valid checksum, `tunnel_src` -> `backend`; then the
/// rest of the input frame (inner packet and trailing bytes) unchanged.
pub fn ipip_encap_v4(frame_in: &[u8], l2_len: usize, nexthop_mac: Mac, tunnel_src: Ipv4Addr, backend: Ipv4Addr) -> Vec<u8> {
    let inner = &frame_in[l2_len..];
    let mut out = rewrite_l2(frame_in, l2_len, nexthop_mac, &frame_in[0..6], ETH_P_IP);
    let inner_total = u16::from_be_bytes([inner[2], inner[3]]);
    let inner_frag = u16::from_be_bytes([inner[6], inner[7]]);
    let mut h = [0u8; IPV4_HDR_LEN];
    h[0] = 0x45;
    h[1] = inner[1];
    h[2..4].copy_from_slice(&(inner_total + IPV4_HDR_LEN as u16).to_be_bytes());
    // id 0
    h[6..8].copy_from_slice(&(inner_frag & IPV4_DF).to_be_bytes());
    h[8] = ENCAP_TTL;
    h[9] = IPPROTO_IPIP;
    h[12..16].copy_from_slice(&tunnel_src.octets());
    h[16..20].copy_from_slice(&backend.octets());
    let c = internet_checksum(&h, 0);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(inner);
    out
}

/// lb's IPv6-in-IPv6 output: outer version 6, traffic class = inner traffic
/// class, flow label = `flow_hash(inner 5-tuple) & 0xfffff`, payload length =
/// inner payload length + 40, next header 41, hop limit `ENCAP_TTL`,
/// `tunnel_src` -> `backend`; MACs/VLANs as for [`ipip_encap_v4`].
/// The inner packet must be TCP/UDP without extension headers.
pub fn ipip_encap_v6(frame_in: &[u8], l2_len: usize, nexthop_mac: Mac, tunnel_src: Ipv6Addr, backend: Ipv6Addr) -> Vec<u8> {
    let inner = &frame_in[l2_len..];
    let view = IpView::parse(inner).expect("ipip_encap_v6: inner packet does not parse");
    let flow = view.flow_key().expect("ipip_encap_v6: inner packet is not TCP/UDP");
    let mut out = rewrite_l2(frame_in, l2_len, nexthop_mac, &frame_in[0..6], ETH_P_IPV6);
    let inner_plen = u16::from_be_bytes([inner[4], inner[5]]);
    let tc = u32::from(view.tos);
    let label = flow_hash(&flow) & 0xfffff;
    let mut h = [0u8; IPV6_HDR_LEN];
    h[0..4].copy_from_slice(&((6u32 << 28) | (tc << 20) | label).to_be_bytes());
    h[4..6].copy_from_slice(&(inner_plen + IPV6_HDR_LEN as u16).to_be_bytes());
    h[6] = IPPROTO_IPV6;
    h[7] = ENCAP_TTL;
    h[8..24].copy_from_slice(&tunnel_src.octets());
    h[24..40].copy_from_slice(&backend.octets());
    out.extend_from_slice(&h);
    out.extend_from_slice(inner);
    out
}

/// lb's encapsulated output for either family (backend family = inner family).
pub fn ipip_encap(frame_in: &[u8], l2_len: usize, nexthop_mac: Mac, tunnel_src_v4: Ipv4Addr, tunnel_src_v6: Ipv6Addr, backend: IpAddr) -> Vec<u8> {
    match backend {
        IpAddr::V4(b) => ipip_encap_v4(frame_in, l2_len, nexthop_mac, tunnel_src_v4, b),
        IpAddr::V6(b) => ipip_encap_v6(frame_in, l2_len, nexthop_mac, tunnel_src_v6, b),
    }
}

/// lb's L2 direct-server-return output: dst MAC = backend MAC, src MAC = the
/// input's dst MAC, everything else unchanged.
pub fn l2dsr(frame_in: &[u8], backend_mac: Mac) -> Vec<u8> {
    let mut out = frame_in.to_vec();
    out[0..6].copy_from_slice(&backend_mac);
    out[6..12].copy_from_slice(&frame_in[0..6]);
    out
}

/// What `lb_decap` outputs for a tunnel frame: the same MACs and VLAN tags,
/// the innermost ethertype set to the inner family's, then everything after
/// the outer IP header (inner packet and trailing bytes). The outer header
/// must be IPv4 (no options) or IPv6 without extension headers.
pub fn ipip_decap(frame_in: &[u8], l2_len: usize) -> Vec<u8> {
    let outer_len = match frame_in[l2_len] >> 4 {
        4 => usize::from(frame_in[l2_len] & 0x0f) * 4,
        6 => IPV6_HDR_LEN,
        v => panic!("ipip_decap: outer IP version {v}"),
    };
    let inner = &frame_in[l2_len + outer_len..];
    let ethertype = if inner[0] >> 4 == 6 { ETH_P_IPV6 } else { ETH_P_IP };
    let mut out = rewrite_l2(frame_in, l2_len, frame_in[0..6].try_into().unwrap(), &frame_in[6..12], ethertype);
    out.extend_from_slice(inner);
    out
}

// ---------------------------------------------------------------------------
// Diagnostics

/// Hex dump, 16 bytes a line, with offsets.
pub fn hex_dump(data: &[u8]) -> String {
    let mut s = String::new();
    for (i, chunk) in data.chunks(16).enumerate() {
        let _ = write!(s, "{:04x}:", i * 16);
        for b in chunk {
            let _ = write!(s, " {b:02x}");
        }
        s.push('\n');
    }
    s
}

/// Side-by-side hex of expected vs actual, differing bytes marked with `*`,
/// plus the first differing offset and the lengths.
pub fn hex_diff(expected: &[u8], actual: &[u8]) -> String {
    let mut s = String::new();
    let first = expected.iter().zip(actual).position(|(a, b)| a != b).or(
        (expected.len() != actual.len()).then_some(expected.len().min(actual.len())),
    );
    let _ = writeln!(
        s,
        "expected {} bytes, actual {} bytes, first difference at {}",
        expected.len(),
        actual.len(),
        first.map_or("none".to_string(), |o| format!("offset {o} (0x{o:x})"))
    );
    let _ = writeln!(s, "      {:<48}   actual", "expected");
    let n = expected.len().max(actual.len());
    for line in (0..n).step_by(16) {
        let _ = write!(s, "{line:04x}:");
        let mut marks = String::new();
        for side in [expected, actual] {
            for i in line..line + 16 {
                match side.get(i) {
                    Some(b) => {
                        let _ = write!(s, " {b:02x}");
                    }
                    None => s.push_str("   "),
                }
            }
            s.push_str("  |");
        }
        for i in line..(line + 16).min(n) {
            marks.push(if expected.get(i) == actual.get(i) { '.' } else { '*' });
        }
        let _ = writeln!(s, " {marks}");
    }
    s
}

/// Parses "02:00:00:00:00:01".
pub fn mac(s: &str) -> Mac {
    let v: Vec<u8> = s.split(':').map(|p| u8::from_str_radix(p, 16).expect("bad MAC")).collect();
    v.try_into().expect("MAC needs 6 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }
    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }
    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn ipv4_header_matches_the_rfc1071_example() {
        // The header of lb-common's RFC 1071 test: 4500 0073 0000 4000 4011
        // [b861] c0a8 0001 c0a8 00c7, a UDP packet of 0x73 bytes.
        let pkt = Packet::new()
            .ipv4(v4("192.168.0.1"), v4("192.168.0.199"))
            .ip_id(0)
            .df()
            .ttl(64)
            .udp(1, 2)
            .payload(&[0; 0x73 - 28])
            .build_l3();
        assert_eq!(pkt[..20], hex("4500 0073 0000 4000 4011 b861 c0a8 0001 c0a8 00c7")[..]);
        assert!(ipv4_header_csum_ok(&pkt[..20]));
        // Second opinion: lb-common's word-wise checksum.
        let mut words = [0u16; 10];
        for (i, w) in words.iter_mut().enumerate() {
            *w = if i == 5 { 0 } else { u16::from_ne_bytes([pkt[2 * i], pkt[2 * i + 1]]) };
        }
        assert_eq!(lb_common::net::ipv4_header_csum(&words).to_ne_bytes(), [0xb8, 0x61]);
    }

    #[test]
    fn udp_checksum_known_vector() {
        // Worked by hand: 10.0.0.1:1234 -> 10.0.0.2:80, payload "hi".
        // Pseudo: 0a00+0001+0a00+0002+0011+000a = 0x141e; UDP: 04d2+0050+000a+
        // 6869 = 0x6d95; total 0x81b3 -> checksum !0x81b3 = 0x7e4c.
        let f = Packet::new().ipv4(v4("10.0.0.1"), v4("10.0.0.2")).udp(1234, 80).payload(b"hi").build();
        assert_eq!(f[14 + 20..], hex("04d2 0050 000a 7e4c 6869")[..]);
        assert!(l4_csum_ok(&f, 14));
        let bad = Packet::new().ipv4(v4("10.0.0.1"), v4("10.0.0.2")).udp(1234, 80).payload(b"hi").corrupt_l4_csum().build();
        assert!(!l4_csum_ok(&bad, 14));
    }

    #[test]
    fn tcp_checksum_known_vector() {
        // Worked by hand: 10.0.0.1:1234 -> 10.0.0.2:80 SYN, seq 1, ack 0,
        // doff 5, window 0x1000. Pseudo 0a00+0001+0a00+0002+0006+0014 = 0x141d.
        // Header: 04d2+0050+0000+0001+0000+0000+5002+1000+0000+0000 = 0x6525.
        // Sum 0x7942 -> checksum !0x7942 = 0x86bd.
        let f = Packet::new()
            .ipv4(v4("10.0.0.1"), v4("10.0.0.2"))
            .tcp(1234, 80)
            .seq(1)
            .syn()
            .window(0x1000)
            .build();
        assert_eq!(
            f[14 + 20..],
            hex("04d2 0050 0000 0001 0000 0000 5002 1000 86bd 0000")[..]
        );
        assert!(l4_csum_ok(&f, 14));
    }

    #[test]
    fn tcp_over_ipv6_checksum_verifies() {
        let f = Packet::new()
            .dot1q(5)
            .ipv6(v6("2001:db8::1"), v6("2001:db8::2"))
            .tcp(1, 2)
            .payload(b"odd")
            .build();
        assert!(l4_csum_ok(&f, 18));
        // The checksum bytes are the only ones a one's-complement sum over
        // pseudo-header + segment can zero: flipping one bit breaks it.
        let mut g = f.clone();
        *g.last_mut().unwrap() ^= 1;
        assert!(!l4_csum_ok(&g, 18));
        // UDP over IPv6 and ICMPv6 too.
        let u = Packet::new().ipv6(v6("2001:db8::1"), v6("2001:db8::2")).udp(5, 6).payload(b"x").build();
        assert!(l4_csum_ok(&u, 14));
        let i = Packet::new().ipv6(v6("2001:db8::1"), v6("2001:db8::2")).icmp_echo(1, 2).build();
        assert!(l4_csum_ok(&i, 14));
    }

    #[test]
    fn icmpv6_echo_known_vector() {
        // Worked by hand: ::1 -> ::2 echo request id 0 seq 0, no data.
        // Pseudo: 0001 + 0002 + len 0008 + nh 003a = 0x0045; message 8000 -> 0x8045;
        // checksum !0x8045 = 0x7fba.
        let f = Packet::new().ipv6(v6("::1"), v6("::2")).icmp_echo(0, 0).build();
        assert_eq!(f[14 + 40..], hex("8000 7fba 0000 0000")[..]);
    }

    #[test]
    fn vlan_stack_and_ethernet_layout() {
        let f = Packet::new()
            .macs(mac("02:00:00:00:00:aa"), mac("02:00:00:00:00:bb"))
            .dot1ad(100)
            .dot1q(200)
            .vlan_tci(ETH_P_8021Q, 0xe00a)
            .raw_l3(0x88cc, &[1, 2, 3])
            .build();
        assert_eq!(f, hex("0200000000aa 0200000000bb 88a8 0064 8100 00c8 8100 e00a 88cc 010203"));
        assert_eq!(l2_len(&f), 14 + 12);
        assert_eq!(inner_ethertype(&f), 0x88cc);
    }

    #[test]
    fn ipv4_fields_fragments_and_options() {
        let f = Packet::new()
            .ipv4(v4("1.2.3.4"), v4("5.6.7.8"))
            .tos(0xb8)
            .ttl(7)
            .ip_id(0xbeef)
            .mf()
            .frag_offset(185)
            .ipv4_options(&[0x94, 0x04, 0, 0]) // router alert
            .l4_raw(IPPROTO_UDP, &[0; 8])
            .build();
        let ip = &f[14..];
        assert_eq!(ip[0], 0x46);
        assert_eq!(ip[1], 0xb8);
        assert_eq!(u16::from_be_bytes([ip[2], ip[3]]), 24 + 8);
        assert_eq!(u16::from_be_bytes([ip[4], ip[5]]), 0xbeef);
        assert_eq!(u16::from_be_bytes([ip[6], ip[7]]), IPV4_MF | 185);
        assert_eq!(ip[8], 7);
        assert_eq!(ip[9], IPPROTO_UDP);
        assert!(ipv4_header_csum_ok(&ip[..24]));
        let bad = Packet::new().ipv4(v4("1.2.3.4"), v4("5.6.7.8")).corrupt_ipv4_csum().udp(1, 2).build();
        assert!(!ipv4_header_csum_ok(&bad[14..34]));
        let odd = Packet::new().ipv4(v4("1.2.3.4"), v4("5.6.7.8")).ihl(4).ip_version(6).ipv4_total_len(19).udp(1, 2).build();
        assert_eq!(odd[14], 0x64);
        assert_eq!(odd[16..18], [0, 19]);
        assert!(ipv4_header_csum_ok(&odd[14..34]));
    }

    #[test]
    fn ipv6_fields_and_extension_chain() {
        let f = Packet::new()
            .ipv6(v6("2001:db8::1"), v6("2001:db8::2"))
            .traffic_class(0xb8)
            .flow_label(0x12345)
            .hop_limit(9)
            .ext(Ipv6Ext::HopByHop(vec![5, 2, 0, 0])) // router alert
            .ext(Ipv6Ext::Routing { routing_type: 4, segments_left: 0, data: vec![] })
            .ext(Ipv6Ext::DestOpts(vec![]))
            .ext(Ipv6Ext::Fragment { offset: 0, more: true, id: 7 })
            .udp(1, 2)
            .build();
        let ip = &f[14..];
        assert_eq!(ip[0..4], [0x6b, 0x81, 0x23, 0x45]);
        assert_eq!(u16::from_be_bytes([ip[4], ip[5]]) as usize, 8 * 4 + 8);
        assert_eq!(ip[6], IPPROTO_HOPOPTS);
        assert_eq!(ip[7], 9);
        // hop-by-hop: next=routing, len 0, RA option, PadN(0)
        assert_eq!(ip[40..48], [IPPROTO_ROUTING, 0, 5, 2, 0, 0, 1, 0]);
        assert_eq!(ip[48..56], [IPPROTO_DSTOPTS, 0, 4, 0, 0, 0, 0, 0]);
        // dest options with no options: PadN of 4 bytes
        assert_eq!(ip[56..64], [IPPROTO_FRAGMENT, 0, 1, 4, 0, 0, 0, 0]);
        assert_eq!(ip[64..72], [IPPROTO_UDP, 0, 0, 1, 0, 0, 0, 7]);
        let view = IpView::parse(ip).unwrap();
        assert_eq!(view.proto, IPPROTO_UDP);
        assert_eq!(view.header_len, 72);
        assert_eq!(view.tos, 0xb8);
        assert!(l4_csum_ok(&f, 14));
    }

    #[test]
    fn arp_request_layout() {
        let f = Packet::new()
            .macs([0xff; 6], mac("02:00:00:00:00:02"))
            .arp_request(mac("02:00:00:00:00:02"), v4("198.18.0.1"), v4("198.18.0.2"))
            .build();
        assert_eq!(
            f,
            hex("ffffffffffff 020000000002 0806 0001 0800 06 04 0001 020000000002 c6120001 000000000000 c6120002")
        );
    }

    #[test]
    fn padding_and_length_surgery() {
        let p = Packet::new().ipv4(v4("1.1.1.1"), v4("2.2.2.2")).tcp(1, 2).syn().pad_to(60);
        let f = p.build();
        assert_eq!(f.len(), 60);
        assert_eq!(f[54..], [0; 6]);
        assert_eq!(IpView::parse(&f[14..]).unwrap().packet.len(), 40);
        let t = truncate_ip(&f, 14, 30);
        assert_eq!(t.len(), 44);
        assert_eq!(t[16..18], [0, 30]);
        assert!(ipv4_header_csum_ok(&t[14..34]));
        let mut g = f.clone();
        set_ipv4_total_len(&mut g, 14, 100);
        assert!(ipv4_header_csum_ok(&g[14..34]));
        assert!(IpView::parse(&g[14..]).is_none());
        let six = Packet::new().ipv6(v6("::1"), v6("::2")).udp(1, 2).build();
        let t6 = truncate_ip(&six, 14, 44);
        assert_eq!(t6.len(), 58);
        assert_eq!(t6[18..20], [0, 4]);
        assert_eq!(truncated(&six, 20).len(), 20);
    }

    #[test]
    fn encap_v4_reference() {
        let p = Packet::new()
            .macs(mac("02:00:00:00:00:01"), mac("02:00:00:00:00:02"))
            .dot1q(7)
            .ipv4(v4("198.18.1.1"), v4("198.18.100.1"))
            .tos(0x2e)
            .df()
            .tcp(40000, 80)
            .syn()
            .pad_to(80);
        let f = p.build();
        let out = ipip_encap_v4(&f, 18, mac("02:00:00:00:00:fe"), v4("198.18.0.2"), v4("198.18.0.11"));
        assert_eq!(out.len(), f.len() + 20);
        assert_eq!(out[0..6], mac("02:00:00:00:00:fe"));
        assert_eq!(out[6..12], mac("02:00:00:00:00:01"));
        assert_eq!(out[12..18], [0x81, 0x00, 0x00, 0x07, 0x08, 0x00]);
        let o = &out[18..38];
        assert_eq!(o[0..2], [0x45, 0x2e]);
        assert_eq!(u16::from_be_bytes([o[2], o[3]]), 60);
        assert_eq!(o[4..10], [0, 0, 0x40, 0, 64, 4]);
        assert_eq!(o[12..20], [198, 18, 0, 2, 198, 18, 0, 11]);
        assert!(ipv4_header_csum_ok(o));
        assert_eq!(out[38..], f[18..]);
        // decap gives the inner packet and padding back
        let back = ipip_decap(&out, 18);
        assert_eq!(back[18..], f[18..]);
        assert_eq!(back[0..18], out[0..18]);
    }

    #[test]
    fn encap_v6_reference() {
        let p = Packet::new()
            .dot1ad(1)
            .dot1q(2)
            .ipv6(v6("2001:db8:1::1"), v6("2001:db8:100::1"))
            .traffic_class(0xb9)
            .flow_label(0xabcde)
            .udp(5353, 53)
            .payload(b"abc");
        let f = p.build();
        let l2 = p.l2_len();
        let out = ipip_encap_v6(&f, l2, [9; 6], v6("2001:db8::2"), v6("2001:db8::11"));
        assert_eq!(out.len(), f.len() + 40);
        assert_eq!(out[12..l2], f[12..l2 - 2].iter().chain(&[0x86, 0xdd]).copied().collect::<Vec<_>>()[..]);
        let o = &out[l2..l2 + 40];
        let word = u32::from_be_bytes([o[0], o[1], o[2], o[3]]);
        assert_eq!(word >> 28, 6);
        assert_eq!((word >> 20) & 0xff, 0xb9);
        assert_eq!(word & 0xfffff, flow_hash(&p.flow_key()) & 0xfffff);
        assert_eq!(u16::from_be_bytes([o[4], o[5]]), 8 + 3 + 40);
        assert_eq!(o[6..8], [41, 64]);
        assert_eq!(out[l2 + 40..], f[l2..]);
        assert_eq!(parse_flow(&f), Some(p.flow_key()));
    }

    #[test]
    fn l2dsr_reference() {
        let f = Packet::new().ipv4(v4("1.1.1.1"), v4("2.2.2.2")).udp(1, 2).build();
        let out = l2dsr(&f, mac("02:00:00:00:01:31"));
        assert_eq!(out[0..6], mac("02:00:00:00:01:31"));
        assert_eq!(out[6..12], f[0..6]);
        assert_eq!(out[12..], f[12..]);
    }

    #[test]
    fn hex_diff_marks_differences() {
        let d = hex_diff(&[1, 2, 3], &[1, 9, 3, 4]);
        assert!(d.contains("first difference at offset 1"), "{d}");
        assert!(d.contains("| .*.*"), "{d}");
    }
}
