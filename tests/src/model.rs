//! A plain-Rust reference model of `lb_balancer`: for one input frame and
//! the configuration, the verdict, the `lb_common::stats` reason, the backend
//! and the exact output bytes, written from the README's table ("What the
//! data path does with each packet") rather than from the eBPF code.
//!
//! What the model shares with the program: the flow hash, the map types and
//! the constants (`lb_common`), and the backend choice, which it reads from
//! the live maps (`Dataplane::trace`: the VIP's ring entry and the flow's
//! connection-table entry), so it stays exact while the kernel inserts
//! entries. It decides "connection table or ring" itself, as the README says:
//! a TCP SYN (SYN without ACK) always takes the ring and is recorded; other
//! TCP/UDP packets take a valid connection-table entry if any, else the ring
//! and are recorded; ICMP errors about a VIP flow use the flow's valid entry,
//! else its ring entry, and are never recorded. Output bytes come from
//! `crate::packet`'s reference functions (encapsulation, L2 DSR) or are
//! written here (echo replies, fragmentation-needed, packet-too-big, and
//! IPv6-in-IPv6 of an ICMPv6 error, whose flow label is the quoted flow's).
//!
//! Where the program knowingly deviates from the spec, [`Expected::product`]
//! carries what the program does instead, with a [`Deviation`] naming it, so
//! a harness can tell a known product bug from a new mismatch.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb::config::{Config, Forwarding, NextHop, TooBig};
use lb::dataplane::{Dataplane, Trace};
use lb_common::{FlowKey, VipKey};

use crate::packet::Mac;

mod answers;
mod decide;
mod expected;
mod forward;
mod parse;
#[cfg(test)]
mod tests;

pub use answers::{IPV6_MIN_MTU, echo_reply, frag_needed, packet_too_big};
pub use expected::{Deviation, Expected, XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, stat_name, verdict_name};

/// The live maps, as far as the model needs them: `Dataplane::trace`.
pub trait LiveMaps {
    /// `None` when (dst, dport, proto) is not a VIP.
    fn trace(&self, flow: &FlowKey) -> Option<Trace>;
}

impl LiveMaps for Dataplane {
    fn trace(&self, flow: &FlowKey) -> Option<Trace> {
        Dataplane::trace(self, flow).expect("reading the live maps")
    }
}

#[derive(Clone, Debug)]
struct ModelVip {
    l2dsr: bool,
    /// Backend MACs (l2dsr), by address.
    macs: HashMap<IpAddr, Mac>,
}

/// The configuration, as the data path sees it.
#[derive(Clone, Debug)]
pub struct Model {
    vips: HashMap<VipKey, ModelVip>,
    vip_addrs: HashSet<IpAddr>,
    nexthop: Mac,
    tunnel_v4: Ipv4Addr,
    tunnel_v6: Ipv6Addr,
    /// 0: no limit.
    mtu: u16,
    too_big_drop: bool,
    /// The interface's MAC: VIP packets in frames addressed to another are
    /// passed. `None`: no check (the agent did not say).
    own_mac: Option<Mac>,
}

impl Model {
    /// The model of a configuration as `Dataplane::apply` writes it (with
    /// `nexthop_mac` and `mtu` resolved).
    pub fn new(cfg: &Config) -> Model {
        let g = &cfg.global;
        let nexthop = match g.nexthop_mac {
            Some(NextHop::Mac(m)) => m.0,
            _ => [0; 6],
        };
        let vips = cfg
            .vips
            .iter()
            .map(|v| {
                let macs = v.backends.iter().filter_map(|b| Some((b.address, b.mac?.0))).collect();
                (v.key(), ModelVip { l2dsr: v.forwarding == Forwarding::L2dsr, macs })
            })
            .collect();
        Model {
            vips,
            vip_addrs: cfg.vips.iter().map(|v| v.address).collect(),
            nexthop,
            tunnel_v4: g.tunnel_source_v4.unwrap_or(Ipv4Addr::UNSPECIFIED),
            tunnel_v6: g.tunnel_source_v6.unwrap_or(Ipv6Addr::UNSPECIFIED),
            mtu: g.mtu.unwrap_or(0),
            too_big_drop: g.too_big == TooBig::Drop,
            own_mac: g.interface_mac.map(|m| m.0).filter(|m| *m != [0; 6]),
        }
    }

    pub fn is_vip_addr(&self, addr: IpAddr) -> bool {
        self.vip_addrs.contains(&addr)
    }
}
