//! Header rules shared by the program and the tests: protocol numbers and
//! the Internet checksum.

pub const ETH_HDR_LEN: usize = 14;
pub const VLAN_HDR_LEN: usize = 4;
pub const IPV4_HDR_LEN: usize = 20;
pub const IPV6_HDR_LEN: usize = 40;
pub const TCP_HDR_LEN: usize = 20;
pub const UDP_HDR_LEN: usize = 8;

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;

pub const IPPROTO_HOPOPTS: u8 = 0;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_IPIP: u8 = 4;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_IPV6: u8 = 41;
pub const IPPROTO_ROUTING: u8 = 43;
pub const IPPROTO_FRAGMENT: u8 = 44;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_DSTOPTS: u8 = 60;

/// ICMP and ICMPv6 message types (and the one code) lb reads or writes.
pub mod icmp {
    pub const ICMP_ECHO_REPLY: u8 = 0;
    pub const ICMP_DEST_UNREACH: u8 = 3;
    /// Code of ICMP_DEST_UNREACH: fragmentation needed and DF set.
    pub const ICMP_FRAG_NEEDED: u8 = 4;
    pub const ICMP_ECHO_REQUEST: u8 = 8;
    pub const ICMP_TIME_EXCEEDED: u8 = 11;
    pub const ICMPV6_DEST_UNREACH: u8 = 1;
    pub const ICMPV6_PKT_TOO_BIG: u8 = 2;
    pub const ICMPV6_TIME_EXCEEDED: u8 = 3;
    pub const ICMPV6_ECHO_REQUEST: u8 = 128;
    pub const ICMPV6_ECHO_REPLY: u8 = 129;
}

/// IPv4 `frag_off` bits (host order): more-fragments flag and offset mask.
pub const IPV4_MF: u16 = 0x2000;
pub const IPV4_DF: u16 = 0x4000;
pub const IPV4_OFFSET_MASK: u16 = 0x1fff;

pub const TCP_FLAG_FIN: u8 = 0x01;
pub const TCP_FLAG_SYN: u8 = 0x02;
pub const TCP_FLAG_RST: u8 = 0x04;
pub const TCP_FLAG_ACK: u8 = 0x10;

/// One's-complement sum folded to 16 bits and inverted.
#[inline(always)]
pub fn csum_fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// Checksum of a 20-byte IPv4 header given as ten native-order words read
/// from wire bytes (the checksum word itself zero). The result is in the same
/// native-from-wire representation, ready to store.
#[inline(always)]
pub fn ipv4_header_csum(words: &[u16; 10]) -> u16 {
    let mut sum = 0u32;
    let mut i = 0;
    while i < 10 {
        sum += words[i] as u32;
        i += 1;
    }
    csum_fold(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_checksum_matches_rfc1071_example() {
        // A well-known header: 4500 0073 0000 4000 4011 [b861] c0a8 0001 c0a8 00c7
        let bytes: [u8; 20] = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0, 0, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00,
            0xc7,
        ];
        let words: [u16; 10] = core::array::from_fn(|i| u16::from_ne_bytes([bytes[2 * i], bytes[2 * i + 1]]));
        assert_eq!(ipv4_header_csum(&words).to_ne_bytes(), [0xb8, 0x61]);
    }
}
