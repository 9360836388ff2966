//! The frame generators: their kinds and weights, and the valid packets the others start from.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_common::net::{ETH_P_8021AD, ETH_P_8021Q, IPPROTO_TCP, IPPROTO_UDP, TCP_FLAG_ACK, TCP_FLAG_SYN};
use lb_tests::packet::{Packet, TCP_FLAG_FIN, TCP_FLAG_PSH, TCP_FLAG_RST, truncate_ip};
use lb_tests::rng::Rng;

use super::phases::{OTHER4, OTHER6, PHASES};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Kind {
    Valid,
    AroundMtu,
    IcmpError,
    Echo,
    Ipv6Ext,
    V4FragmentOrOptions,
    NonIp,
    DeepVlan,
    Random,
    Mutated,
    OddLengths,
    Truncated,
    TruncatedL4,
}

/// Per 1000 draws; the truncation sweeps yield ~50-120 frames per draw.
const KINDS: [(Kind, u64); 13] = [
    (Kind::Valid, 250),
    (Kind::AroundMtu, 60),
    (Kind::IcmpError, 120),
    (Kind::Echo, 45),
    (Kind::Ipv6Ext, 50),
    (Kind::V4FragmentOrOptions, 50),
    (Kind::NonIp, 30),
    (Kind::DeepVlan, 20),
    (Kind::Random, 120),
    (Kind::Mutated, 150),
    (Kind::OddLengths, 100),
    (Kind::Truncated, 3),
    (Kind::TruncatedL4, 2),
];

#[derive(Clone, Copy, Debug)]
pub(super) struct Target {
    pub(super) addr: IpAddr,
    pub(super) port: u16,
    pub(super) proto: u8,
}

pub(super) struct Gen {
    pub(super) rng: Rng,
    /// Every VIP of every phase.
    vips: Vec<Target>,
    /// Addresses that carry a VIP in some phase.
    vip_addrs: Vec<IpAddr>,
    queue: VecDeque<(Kind, Vec<u8>)>,
}

const TCP_FLAGS: [u8; 9] = [
    TCP_FLAG_SYN,
    TCP_FLAG_SYN,
    TCP_FLAG_ACK,
    TCP_FLAG_ACK,
    TCP_FLAG_ACK | TCP_FLAG_PSH,
    TCP_FLAG_SYN | TCP_FLAG_ACK,
    TCP_FLAG_FIN | TCP_FLAG_ACK,
    TCP_FLAG_RST,
    0,
];
impl Gen {
    pub(super) fn new(seed: u64) -> Gen {
        let mut vips = Vec::new();
        for (_, _, rows, _, _) in PHASES {
            for (addr, port, proto, ..) in rows {
                let t = Target {
                    addr: addr.parse().unwrap(),
                    port: *port,
                    proto: if *proto == "tcp" { IPPROTO_TCP } else { IPPROTO_UDP },
                };
                if !vips.iter().any(|v: &Target| v.addr == t.addr && v.port == t.port && v.proto == t.proto) {
                    vips.push(t);
                }
            }
        }
        let mut vip_addrs: Vec<IpAddr> = vips.iter().map(|v| v.addr).collect();
        vip_addrs.dedup();
        Gen { rng: Rng::new(seed), vips, vip_addrs, queue: VecDeque::new() }
    }

    pub(super) fn next(&mut self) -> (Kind, Vec<u8>) {
        loop {
            if let Some(f) = self.queue.pop_front() {
                return f;
            }
            let mut roll = self.rng.below(KINDS.iter().map(|k| k.1).sum());
            let mut kind = KINDS[0].0;
            for (k, w) in KINDS {
                if roll < w {
                    kind = k;
                    break;
                }
                roll -= w;
            }
            self.generate(kind);
        }
    }

    fn generate(&mut self, kind: Kind) {
        let frame = match kind {
            Kind::Valid => {
                let len = self.payload_len();
                let p = self.flow_packet(None, len);
                self.finish(p)
            }
            Kind::AroundMtu => self.around_mtu(),
            Kind::IcmpError => {
                let p = self.icmp_error(false);
                self.finish(p)
            }
            Kind::Echo => {
                let p = self.echo();
                self.finish(p)
            }
            Kind::Ipv6Ext => {
                let p = self.ipv6_ext();
                self.finish(p)
            }
            Kind::V4FragmentOrOptions => {
                let p = self.v4_fragment_or_options();
                self.finish(p)
            }
            Kind::NonIp => self.non_ip(),
            Kind::DeepVlan => {
                let mut p = self.flow_packet(None, 8);
                for _ in 0..self.rng.range(3, 5) - p.vlans.len() {
                    let tpid = self.rng.pick(&[ETH_P_8021Q, ETH_P_8021AD]);
                    p = p.vlan_tci(tpid, self.rng.u16());
                }
                p.build()
            }
            Kind::Random => self.random_bytes(),
            Kind::Mutated => self.mutated(),
            Kind::OddLengths => self.odd_lengths(),
            Kind::Truncated => {
                let base = self.small_frame();
                for n in 14..base.len() {
                    self.queue.push_back((kind, base[..n].to_vec()));
                }
                base
            }
            Kind::TruncatedL4 => {
                let len = self.rng.range(0, 12);
                let p = self.flow_packet(None, len);
                let base = p.build();
                let l2 = p.l2_len();
                let hdr = if matches!(p.l3, lb_tests::packet::L3::V4(_)) { 20 } else { 40 };
                for ip_len in hdr..base.len() - l2 {
                    self.queue.push_back((kind, truncate_ip(&base, l2, ip_len)));
                }
                base
            }
        };
        self.queue.push_back((kind, frame));
    }

    pub(super) fn payload_len(&mut self) -> usize {
        match self.rng.below(100) {
            0..75 => self.rng.range(0, 48),
            75..90 => self.rng.range(49, 400),
            _ => self.rng.range(400, 1500),
        }
    }

    /// A client: one of a small pool (so flows repeat and hit the table),
    /// or anyone.
    pub(super) fn client(&mut self, v6: bool) -> (IpAddr, u16) {
        let pool = self.rng.chance(85);
        let (host, port) = if pool {
            (self.rng.below(24) as u16 + 1, 40_000 + self.rng.below(12) as u16)
        } else {
            (self.rng.u16(), self.rng.u16())
        };
        let addr = if v6 {
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, if pool { 0 } else { self.rng.u16() }, host))
        } else {
            IpAddr::V4(Ipv4Addr::new(198, 19, (host >> 8) as u8, host as u8))
        };
        (addr, port)
    }

    /// A destination: mostly a VIP, sometimes a VIP's address with another
    /// port or protocol, or another address.
    pub(super) fn target(&mut self, v6: Option<bool>) -> Target {
        let v6 = v6.unwrap_or_else(|| self.rng.chance(50));
        let vips: Vec<Target> = self.vips.iter().copied().filter(|t| t.addr.is_ipv6() == v6).collect();
        let mut t = self.rng.pick(&vips);
        match self.rng.below(100) {
            0..78 => {}
            78..86 => {
                let any = self.rng.u16();
                t.port = self.rng.pick(&[t.port.wrapping_add(1), 0, 8080, any]);
            }
            86..92 => t.proto = if t.proto == IPPROTO_TCP { IPPROTO_UDP } else { IPPROTO_TCP },
            _ => t.addr = if v6 { OTHER6.into() } else { OTHER4.into() },
        }
        t
    }

    pub(super) fn vip_addr(&mut self, v6: bool) -> IpAddr {
        let addrs: Vec<IpAddr> = self.vip_addrs.iter().copied().filter(|a| a.is_ipv6() == v6).collect();
        if self.rng.chance(80) {
            self.rng.pick(&addrs)
        } else if v6 {
            OTHER6.into()
        } else {
            OTHER4.into()
        }
    }

    /// Ethernet: 0-2 VLAN tags, now and then other MACs.
    pub(super) fn l2(&mut self) -> Packet {
        let mut p = Packet::new();
        if self.rng.chance(5) {
            let (d, s) = (self.rng.bytes(6), self.rng.bytes(6));
            p = p.macs(d.try_into().unwrap(), s.try_into().unwrap());
        }
        let tags = match self.rng.below(100) {
            0..65 => 0,
            65..85 => 1,
            _ => 2,
        };
        for _ in 0..tags {
            let tpid = self.rng.pick(&[ETH_P_8021Q, ETH_P_8021AD]);
            p = p.vlan_tci(tpid, self.rng.u16());
        }
        p
    }

    /// IPv4/IPv6 header fields that ride along (TOS, TTL, DF, id, label).
    pub(super) fn ip(&mut self, p: Packet, src: IpAddr, dst: IpAddr) -> Packet {
        let mut p = p.ip(src, dst);
        if self.rng.chance(30) {
            p = p.tos(self.rng.u8());
        }
        if self.rng.chance(20) {
            p = p.ttl(self.rng.u8());
        }
        if src.is_ipv4() {
            p = p.ip_id(self.rng.u16());
            if self.rng.chance(50) {
                p = p.df();
            }
        } else if self.rng.chance(30) {
            p = p.flow_label(self.rng.next_u64() as u32 & 0xfffff);
        }
        p
    }

    /// A client's TCP or UDP packet with `len` bytes of payload.
    pub(super) fn flow_packet(&mut self, v6: Option<bool>, len: usize) -> Packet {
        let t = self.target(v6);
        let (src, sport) = self.client(t.addr.is_ipv6());
        let p = self.l2();
        let p = self.ip(p, src, t.addr);
        self.l4(p, t.proto, sport, t.port, len)
    }

    pub(super) fn l4(&mut self, p: Packet, proto: u8, sport: u16, dport: u16, len: usize) -> Packet {
        let payload = self.rng.bytes(len);
        if proto == IPPROTO_TCP {
            let mut p = p.tcp(sport, dport).flags(self.rng.pick(&TCP_FLAGS)).seq(self.rng.next_u64() as u32);
            if self.rng.chance(5) {
                p = p.flags(self.rng.u8());
            }
            if self.rng.chance(15) {
                let n = self.rng.range(1, 40);
                p = p.tcp_options(&self.rng.bytes(n));
            }
            p.payload(&payload)
        } else {
            p.udp(sport, dport).payload(&payload)
        }
    }

    /// Builds, with Ethernet padding or a trailer now and then.
    pub(super) fn finish(&mut self, mut p: Packet) -> Vec<u8> {
        if self.rng.chance(20) {
            p = p.pad_to(60);
        }
        if self.rng.chance(8) {
            let n = self.rng.range(1, 16);
            p = p.trailer(&self.rng.bytes(n));
        }
        p.build()
    }

    /// A packet whose encapsulation lands around an MTU of some phase.
    fn around_mtu(&mut self) -> Vec<u8> {
        let v6 = self.rng.chance(50);
        let mtu = self.rng.pick(&[1280usize, 1500]);
        let (ip_hdr, outer) = if v6 { (40, 40) } else { (20, 20) };
        let ip_len = (mtu - outer).saturating_add_signed(self.rng.range(0, 8) as isize - 4);
        let ip_len = if self.rng.chance(10) { self.rng.range(1300, 2000) } else { ip_len };
        let mut p = self.flow_packet(Some(v6), 0);
        let l4_hdr = match &p.l4 {
            lb_tests::packet::L4::Tcp(t) => 20 + t.options.len(),
            _ => 8,
        };
        let len = ip_len.saturating_sub(ip_hdr + l4_hdr);
        let data = self.rng.bytes(len);
        p = p.payload(&data);
        self.finish(p)
    }
}
