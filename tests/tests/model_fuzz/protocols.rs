//! Generators of ICMP errors and echoes, IPv6 extension headers, IPv4 fragments and options, and non-IP frames.

use std::net::{IpAddr, Ipv4Addr};

use lb_common::net::{ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, IPPROTO_ICMP, IPPROTO_TCP};
use lb_tests::packet::{Ipv6Ext, Packet, l2_len};

use super::generate::Gen;
use super::phases::{ROUTER4, ROUTER6};

impl Gen {
    /// An ICMP/ICMPv6 error from a router, quoting a packet a VIP (mostly)
    /// sent to a client of the pool. `small`: a short quote, for sweeps.
    pub(super) fn icmp_error(&mut self, small: bool) -> Packet {
        let v6 = self.rng.chance(50);
        let t = self.target(Some(v6));
        let (client, cport) = self.client(v6);
        let quoted_pkt = Packet::new().ip(t.addr, client);
        let quoted_pkt =
            if t.proto == IPPROTO_TCP { quoted_pkt.tcp(t.port, cport).ack() } else { quoted_pkt.udp(t.port, cport) };
        let n = self.rng.range(0, 64);
        let mut quoted = quoted_pkt.payload(&self.rng.bytes(n)).build_l3();
        match self.rng.below(100) {
            // Quoted header with options, another version, another protocol.
            0..4 if !v6 => quoted[0] = 0x46,
            4..7 => quoted[0] = (self.rng.u8() & 0xf0) | (quoted[0] & 0x0f),
            7..10 => {
                let any = self.rng.u8();
                quoted[if v6 { 6 } else { 9 }] = self.rng.pick(&[IPPROTO_ICMP, 47, any]);
            }
            _ => {}
        }
        let typical = if v6 { 48 } else { 28 };
        let qlen = match self.rng.below(100) {
            _ if small => typical,
            0..60 => typical,
            60..80 => quoted.len(),
            _ => self.rng.range(0, quoted.len()),
        };
        quoted.truncate(qlen);
        let (ty, code, rest) = if v6 {
            match self.rng.below(100) {
                0..30 => (1, self.rng.range(0, 7) as u8, vec![0; 4]),
                30..60 => (2, 0, self.rng.pick(&[1280u32, 1400, 1500]).to_be_bytes().to_vec()),
                60..80 => (3, self.rng.range(0, 1) as u8, vec![0; 4]),
                _ => (self.rng.u8(), self.rng.u8(), self.rng.bytes(4)),
            }
        } else {
            match self.rng.below(100) {
                0..60 => {
                    let code = self.rng.range(0, 15) as u8;
                    (3, code, vec![0, 0, 0x05, 0xc8])
                }
                60..80 => (11, self.rng.range(0, 1) as u8, vec![0; 4]),
                _ => (self.rng.u8(), self.rng.u8(), self.rng.bytes(4)),
            }
        };
        let mut body = rest;
        body.extend_from_slice(&quoted);
        if !small && self.rng.chance(6) {
            // Around the MTU: an error lb cannot encapsulate is dropped.
            let mtu = self.rng.pick(&[1280usize, 1500]);
            let want = mtu + self.rng.range(0, 8) - 4 - if v6 { 80 } else { 48 };
            body.resize(want.max(body.len()), 0xee);
        }
        let dst = if self.rng.chance(88) { t.addr } else { self.vip_addr(v6) };
        let src: IpAddr = if v6 { ROUTER6.into() } else { ROUTER4.into() };
        let p = self.l2();
        let p = self.ip(p, src, dst);
        p.icmp(ty, code, &body)
    }

    /// An echo request (or another informational message) to a VIP's
    /// address, mostly.
    pub(super) fn echo(&mut self) -> Packet {
        let v6 = self.rng.chance(50);
        let dst = self.vip_addr(v6);
        let (src, _) = self.client(v6);
        let p = self.l2();
        let p = self.ip(p, src, dst);
        let n = self.rng.range(0, 64);
        let data = self.rng.bytes(n);
        if self.rng.chance(85) {
            p.icmp_echo(self.rng.u16(), self.rng.u16()).payload(&data)
        } else {
            let any = self.rng.u8();
            let ty = self.rng.pick(&[0u8, 13, 129, 133, 135, any]);
            p.icmp(ty, 0, &data)
        }
    }

    pub(super) fn ipv6_ext(&mut self) -> Packet {
        let t = self.target(Some(true));
        let (src, sport) = self.client(true);
        let p = self.l2();
        let mut p = self.ip(p, src, t.addr);
        for _ in 0..self.rng.range(1, 3) {
            let ext = match self.rng.below(4) {
                0 => {
                    let n = self.rng.range(0, 14);
                    Ipv6Ext::HopByHop(self.rng.bytes(n))
                }
                1 => {
                    let n = self.rng.range(0, 20);
                    Ipv6Ext::Routing {
                        routing_type: self.rng.u8(),
                        segments_left: self.rng.u8(),
                        data: self.rng.bytes(n),
                    }
                }
                2 => {
                    let n = self.rng.range(0, 14);
                    Ipv6Ext::DestOpts(self.rng.bytes(n))
                }
                _ => Ipv6Ext::Fragment {
                    offset: self.rng.u16() & 0x1fff,
                    more: self.rng.chance(50),
                    id: self.rng.next_u64() as u32,
                },
            };
            p = p.ext(ext);
        }
        if self.rng.chance(20) { p.icmp_echo(1, 1) } else { self.l4(p, t.proto, sport, t.port, 16) }
    }

    pub(super) fn v4_fragment_or_options(&mut self) -> Packet {
        let mut p = if self.rng.chance(80) {
            let len = self.payload_len().min(200);
            self.flow_packet(Some(false), len)
        } else if self.rng.chance(50) {
            self.echo_v4()
        } else {
            self.icmp_error_v4()
        };
        match self.rng.below(3) {
            0 => {
                if self.rng.chance(60) {
                    p = p.mf();
                }
                if self.rng.chance(60) {
                    p = p.frag_offset(self.rng.u16() & 0x1fff);
                }
            }
            1 => {
                let n = self.rng.range(1, 40);
                p = p.ipv4_options(&self.rng.bytes(n));
            }
            _ => {
                let n = self.rng.range(1, 40);
                p = p.mf().ipv4_options(&self.rng.bytes(n));
            }
        }
        p
    }

    fn echo_v4(&mut self) -> Packet {
        loop {
            let p = self.echo();
            if matches!(p.l3, lb_tests::packet::L3::V4(_)) {
                return p;
            }
        }
    }

    fn icmp_error_v4(&mut self) -> Packet {
        loop {
            let p = self.icmp_error(false);
            if matches!(p.l3, lb_tests::packet::L3::V4(_)) {
                return p;
            }
        }
    }

    pub(super) fn non_ip(&mut self) -> Vec<u8> {
        let p = self.l2();
        let p = match self.rng.below(4) {
            0 => p.arp_request([2, 0, 0, 0, 0, 9], Ipv4Addr::new(198, 18, 0, 9), Ipv4Addr::new(198, 18, 100, 1)),
            1 => {
                let n = self.rng.range(0, 60);
                p.raw_l3(0x88cc, &self.rng.bytes(n))
            }
            2 => {
                let et = loop {
                    let et = self.rng.u16();
                    if ![ETH_P_IP, ETH_P_IPV6, ETH_P_8021Q, ETH_P_8021AD].contains(&et) {
                        break et;
                    }
                };
                let n = self.rng.range(0, 80);
                p.raw_l3(et, &self.rng.bytes(n))
            }
            // An IP packet behind a tag the parser does not walk.
            _ => {
                let inner = self.flow_packet(None, 4).build();
                let l2 = l2_len(&inner);
                let mut f = inner[..12].to_vec();
                f.extend_from_slice(&[0x91, 0x00, 0x00, 0x05]);
                f.extend_from_slice(&inner[l2 - 2..]);
                return f;
            }
        };
        p.build()
    }
}
