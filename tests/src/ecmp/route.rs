//! The router's view: its multipath route to the VIP, the instance it
//! picks for a flow, and the links it reaches the instances through.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::{Ecmp, VIP_PORT};
use crate::netns::{abort_requested, ip_in};

impl Ecmp {
    /// `ip route show` of the VIP's host route on the router (`-4`, `-6`:
    /// without a family, `ip route show` lists IPv4 routes only).
    fn show_vip_route(&self) -> Result<String> {
        let (family, len) = if self.is_v6() { ("-6", 128) } else { ("-4", 32) };
        ip_in(&self.router_ns, &[family, "route", "show", &format!("{}/{len}", self.vip())])
    }

    /// The router's kernel route to the VIP: its next hops (instance
    /// addresses, of the VIP's family).
    pub fn nexthops(&self) -> Result<Vec<IpAddr>> {
        let out = self.show_vip_route()?;
        let words: Vec<&str> = out.split_whitespace().collect();
        let mut hops: Vec<IpAddr> =
            words.windows(2).filter(|w| w[0] == "via").filter_map(|w| w[1].parse().ok()).collect();
        hops.sort();
        Ok(hops)
    }

    /// The router's route (for messages).
    pub fn route_text(&self) -> String {
        self.show_vip_route().unwrap_or_else(|e| format!("{e:#}"))
    }

    /// Polls the route every 5 ms until `done(next hops)`; returns when.
    pub fn wait_route(&self, timeout: Duration, done: impl Fn(&[IpAddr]) -> bool) -> Result<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            if done(&self.nexthops()?) {
                return Ok(Instant::now());
            }
            if Instant::now() > deadline || abort_requested() {
                bail!("the router's route did not change as expected within {timeout:?}: {}", self.route_text());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn wait_nexthops(&self, count: usize, timeout: Duration) -> Result<Instant> {
        self.wait_route(timeout, |h| h.len() == count)
            .with_context(|| format!("waiting for {count} next hops\n{}", self.logs()))
    }

    /// The instance the router sends a client flow to (its FIB, with the
    /// same L4 hash the forwarding path uses).
    pub fn path_of(&self, sport: u16) -> Result<String> {
        let (vip, client, sport, dport) =
            (self.vip().to_string(), self.client_addr().to_string(), sport.to_string(), VIP_PORT.to_string());
        let args =
            ["route", "get", &vip, "from", &client, "iif", "eth1", "ipproto", "tcp", "sport", &sport, "dport", &dport];
        let out = ip_in(&self.router_ns, &args)?;
        let words: Vec<&str> = out.split_whitespace().collect();
        let via: IpAddr = words
            .windows(2)
            .find(|w| w[0] == "via")
            .and_then(|w| w[1].parse().ok())
            .with_context(|| format!("no next hop in {out:?}"))?;
        let k =
            (0..self.instances.len()).find(|k| self.hop(*k) == via).with_context(|| format!("{via} is no instance"))?;
        Ok(self.instances[k].name.clone())
    }

    /// Cuts (or restores) instance `k`'s link to the router: its bridge port
    /// goes down, as a dead host or a pulled cable looks to the router.
    pub fn set_link(&self, k: usize, up: bool) -> Result<()> {
        ip_in(&self.switch_ns, &["link", "set", &self.instances[k].port, if up { "up" } else { "down" }]).map(|_| ())
    }
}
