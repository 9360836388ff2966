//! The addresses of the VIP's family: the topology is IPv4 with an IPv4
//! VIP, and adds IPv6 (sessions, routes, tunnels) with an IPv6 one.

use std::net::IpAddr;

use super::{CLIENT, CLIENT_V6, Ecmp, ROUTER_CLIENT_SIDE, ROUTER_CLIENT_SIDE_V6, ROUTER_LB_SIDE, ROUTER_LB_SIDE_V6};
use crate::topology::{VIP_NET_V4, VIP_NET_V6};

impl Ecmp {
    pub fn vip(&self) -> IpAddr {
        self.opts.vip
    }

    pub fn is_v6(&self) -> bool {
        self.opts.vip.is_ipv6()
    }

    /// The prefix the client routes through the router.
    pub fn vip_net(&self) -> &'static str {
        if self.is_v6() { VIP_NET_V6 } else { VIP_NET_V4 }
    }

    /// Instance `k`'s address of the VIP's family: its BGP session's, and
    /// the router's next hop through it.
    pub fn hop(&self, k: usize) -> IpAddr {
        let i = &self.instances[k];
        if self.is_v6() { i.v6.into() } else { i.v4.into() }
    }

    /// The router's address on the bridge (of the VIP's family).
    pub fn router_lb_side(&self) -> IpAddr {
        if self.is_v6() { ROUTER_LB_SIDE_V6.into() } else { ROUTER_LB_SIDE.into() }
    }

    /// The client's address (of the VIP's family).
    pub fn client_addr(&self) -> IpAddr {
        if self.is_v6() { CLIENT_V6.into() } else { CLIENT.into() }
    }

    pub(super) fn router_client_side(&self) -> IpAddr {
        if self.is_v6() { ROUTER_CLIENT_SIDE_V6.into() } else { ROUTER_CLIENT_SIDE.into() }
    }

    /// Backend `i`'s address of the VIP's family (its tunnel endpoint).
    pub(super) fn backend_addr(&self, i: usize) -> IpAddr {
        let b = &self.backends[i];
        if self.is_v6() { b.v6.into() } else { b.v4.into() }
    }
}
