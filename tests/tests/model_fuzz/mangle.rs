//! Generators of broken frames: random bytes, mutated headers, odd length fields, truncation bases.

use std::net::IpAddr;

use lb_common::net::{
    ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP,
};
use lb_tests::packet::{internet_checksum, l2_len};

use super::generate::Gen;

impl Gen {
    /// Random bytes, mostly behind an ethertype (and first IP bytes) that
    /// lead the parser in.
    pub(super) fn random_bytes(&mut self) -> Vec<u8> {
        let n = self.rng.range(14, 160);
        let mut f = self.rng.bytes(n);
        if self.rng.chance(80) {
            let mut off = 12;
            for _ in 0..self.rng.range(0, 3) {
                if off + 4 > f.len() {
                    break;
                }
                let tpid = self.rng.pick(&[ETH_P_8021Q, ETH_P_8021AD]);
                f[off..off + 2].copy_from_slice(&tpid.to_be_bytes());
                off += 4;
            }
            let v6 = self.rng.chance(50);
            if off + 2 <= f.len() {
                f[off..off + 2].copy_from_slice(&(if v6 { ETH_P_IPV6 } else { ETH_P_IP }).to_be_bytes());
            }
            let ip = off + 2;
            let rest = f.len().saturating_sub(ip);
            if rest >= 20 && !v6 {
                if self.rng.chance(70) {
                    f[ip] = 0x45;
                    f[ip + 6] &= if self.rng.chance(70) { 0x40 } else { 0xff };
                    f[ip + 7] = if f[ip + 6] & 0x3f == 0 { 0 } else { f[ip + 7] };
                }
                if self.rng.chance(70) {
                    f[ip + 2..ip + 4]
                        .copy_from_slice(&(rest as u16).saturating_sub(self.rng.below(4) as u16).to_be_bytes());
                }
                f[ip + 9] = self.rng.pick(&[IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP, f[ip + 9]]);
                if self.rng.chance(50) {
                    let dst = self.vip_addr(false);
                    let IpAddr::V4(d) = dst else { unreachable!() };
                    f[ip + 16..ip + 20].copy_from_slice(&d.octets());
                }
            }
            if rest >= 40 && v6 {
                if self.rng.chance(70) {
                    f[ip] = 0x60 | (f[ip] & 0x0f);
                }
                if self.rng.chance(70) {
                    f[ip + 4..ip + 6]
                        .copy_from_slice(&(rest as u16 - 40).saturating_sub(self.rng.below(4) as u16).to_be_bytes());
                }
                f[ip + 6] = self.rng.pick(&[IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMPV6, 0, 43, 44, 60, f[ip + 6]]);
                if self.rng.chance(50) {
                    let IpAddr::V6(d) = self.vip_addr(true) else { unreachable!() };
                    f[ip + 24..ip + 40].copy_from_slice(&d.octets());
                }
            }
        }
        f
    }

    /// A valid frame of some kind, for mutation.
    fn any_valid(&mut self, small: bool) -> Vec<u8> {
        let p = match self.rng.below(100) {
            0..45 => {
                let len = if small { self.rng.range(0, 24) } else { self.payload_len().min(200) };
                self.flow_packet(None, len)
            }
            45..75 => self.icmp_error(small),
            75..85 => self.echo(),
            85..93 => self.ipv6_ext(),
            _ => self.v4_fragment_or_options(),
        };
        if small { p.build() } else { self.finish(p) }
    }

    pub(super) fn small_frame(&mut self) -> Vec<u8> {
        loop {
            let f = self.any_valid(true);
            if f.len() <= 130 {
                return f;
            }
        }
    }

    /// Bit flips and byte changes in the headers of a valid frame.
    pub(super) fn mutated(&mut self) -> Vec<u8> {
        let mut f = self.any_valid(false);
        for _ in 0..self.rng.range(1, 4) {
            let at = self.rng.range(12, f.len().min(110) - 1);
            if self.rng.chance(70) {
                f[at] ^= 1 << self.rng.below(8);
            } else {
                f[at] = self.rng.u8();
            }
        }
        if self.rng.chance(50) && f.len() >= 34 && f[12..14] == ETH_P_IP.to_be_bytes() && f[14] >> 4 == 4 {
            refresh_ipv4_csum(&mut f, 14);
        }
        f
    }

    /// Valid frames with one length field changed: IHL, total length,
    /// payload length, TCP data offset, UDP length.
    pub(super) fn odd_lengths(&mut self) -> Vec<u8> {
        let mut f = self.any_valid(false);
        let l2 = l2_len(&f);
        if l2 + 20 > f.len() {
            return f;
        }
        let ip = l2;
        let v4 = f[ip] >> 4 == 4;
        let (hdr, proto) = if v4 { ((f[ip] & 0x0f) as usize * 4, f[ip + 9]) } else { (40, f[ip + 6]) };
        match self.rng.below(4) {
            0 if v4 => {
                f[ip] = 0x40 | self.rng.below(16) as u8;
                refresh_ipv4_csum(&mut f, ip);
            }
            1 if v4 => {
                let total = self.rng.range(0, f.len() - l2 + 24) as u16;
                f[ip + 2..ip + 4].copy_from_slice(&total.to_be_bytes());
                refresh_ipv4_csum(&mut f, ip);
            }
            1 | 0 => {
                let plen = self.rng.range(0, (f.len() - l2).saturating_sub(40) + 24) as u16;
                f[ip + 4..ip + 6].copy_from_slice(&plen.to_be_bytes());
            }
            _ => {
                let l4 = ip + hdr;
                if proto == IPPROTO_TCP && l4 + 13 <= f.len() {
                    f[l4 + 12] = (self.rng.below(16) as u8) << 4 | (f[l4 + 12] & 0x0f);
                } else if proto == IPPROTO_UDP && l4 + 6 <= f.len() {
                    f[l4 + 4..l4 + 6].copy_from_slice(&self.rng.u16().to_be_bytes());
                }
            }
        }
        f
    }
}

/// Recomputes the IPv4 header checksum over as much of the header (by IHL)
/// as the frame holds.
fn refresh_ipv4_csum(f: &mut [u8], ip: usize) {
    if f.len() < ip + 20 {
        return;
    }
    let end = (ip + (f[ip] & 0x0f) as usize * 4).clamp(ip + 20, f.len());
    f[ip + 10..ip + 12].copy_from_slice(&[0, 0]);
    let c = internet_checksum(&f[ip..end], 0);
    f[ip + 10..ip + 12].copy_from_slice(&c.to_be_bytes());
}
