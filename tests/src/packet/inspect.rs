//! Reading and editing built frames: checksums, a parsed view of the IP
//! part, and the surgery that makes defective frames.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_common::FlowKey;
use lb_common::net::{
    ETH_P_8021AD, ETH_P_8021Q, IPPROTO_DSTOPTS, IPPROTO_FRAGMENT, IPPROTO_HOPOPTS, IPPROTO_ICMP, IPPROTO_ROUTING,
    IPPROTO_TCP, IPPROTO_UDP, IPV4_HDR_LEN, IPV6_HDR_LEN, TCP_HDR_LEN, UDP_HDR_LEN, VLAN_HDR_LEN, csum_fold,
};

/// Sum of big-endian 16-bit words (odd length: last byte is the high half).
pub(crate) fn sum_words(data: &[u8]) -> u32 {
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

pub(crate) fn add_ones(a: u32, b: u32) -> u32 {
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
