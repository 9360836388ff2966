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

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_common::FlowKey;
use lb_common::net::{
    ETH_HDR_LEN, ETH_P_8021AD, ETH_P_8021Q, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, IPPROTO_DSTOPTS, IPPROTO_FRAGMENT,
    IPPROTO_HOPOPTS, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_ROUTING, IPPROTO_TCP, IPPROTO_UDP, IPV4_DF, IPV4_HDR_LEN,
    IPV4_MF, IPV4_OFFSET_MASK, IPV6_HDR_LEN, TCP_FLAG_ACK, TCP_FLAG_SYN, TCP_HDR_LEN, UDP_HDR_LEN, VLAN_HDR_LEN,
};

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
pub use lb_common::net::icmp::{ICMP_ECHO_REQUEST, ICMPV6_ECHO_REQUEST};

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
    Raw {
        ethertype: u16,
        payload: Vec<u8>,
    },
}

#[derive(Clone, Debug)]
pub enum L4 {
    None,
    Tcp(TcpSpec),
    Udp(UdpSpec),
    /// ICMP for IPv4, ICMPv6 for IPv6 (checksum with pseudo-header).
    Icmp {
        ty: u8,
        code: u8,
        rest: Vec<u8>,
    },
    /// Opaque upper-layer bytes with a given protocol number.
    Raw {
        proto: u8,
        payload: Vec<u8>,
    },
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
                let word = (u32::from(h.version) << 28) | (u32::from(h.traffic_class) << 20) | (h.flow_label & 0xfffff);
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

mod diag;
mod expect;
mod inspect;

pub use diag::*;
pub use expect::*;
pub use inspect::*;

#[cfg(test)]
mod tests;
