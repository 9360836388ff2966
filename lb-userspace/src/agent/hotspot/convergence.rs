//! The controller against a simulated workload routed by the real table:
//! weights through `state::effective`, tables from `maglev::build`, entries
//! from the data path's `source_hash` (the `source-hash` algorithm: every
//! connection of a client reaches one backend), and a few heavy clients
//! pile onto one backend.

use std::{collections::HashMap, net::IpAddr, time::Duration};

use lb_common::{FlowKey, hash::source_hash};

use super::*;
use crate::{
    agent::state::{self, WeightFactors},
    config::{Config, HotSpotConfig},
    maglev::{self, Candidate},
};

const RING: u32 = 4099;
const LIGHT: usize = 2000;
/// Packets of a light client's flow and of a heavy client's flow.
const LIGHT_PACKETS: u64 = 10;
const HEAVY_PACKETS: u64 = 200;
const HEAVY_FLOWS: u64 = 25;

fn config(correct: bool) -> Config {
    let mut text = String::from(
        "[global]\nnexthop_mac = \"02:00:00:00:00:fe\"\ntunnel_source_v4 = \"198.18.0.2\"\n\
         [[vip]]\naddress = \"198.18.100.1\"\nport = 80\nprotocol = \"tcp\"\nring_size = 4099\nalgorithm = \"source-hash\"\n",
    );
    for i in 0..5 {
        text.push_str(&format!("[[vip.backend]]\naddress = \"198.18.0.{}\"\n", 11 + i));
    }
    let mut c = Config::from_toml_str(&text).unwrap();
    c.hot_spot = HotSpotConfig { correct, ..HotSpotConfig::default() };
    c
}

/// The ring entry every connection of a client takes under source-hash.
fn entry(client: IpAddr, vip: IpAddr) -> usize {
    (source_hash(&FlowKey::new(client, 40_000, vip, 80, 6)) % RING) as usize
}

struct World {
    config: Config,
    factors: HashMap<Target, WeightFactors>,
    table: Vec<Option<u16>>,
    light: Vec<usize>,
    heavy: Vec<usize>,
    counts: Vec<Counts>,
    ctl: Controller,
    rng: u64,
    second: u64,
    changes: Vec<(u64, IpAddr, u32)>,
}

impl World {
    fn new(correct: bool) -> World {
        let config = config(correct);
        let vip = config.vips[0].address;
        let light: Vec<usize> = (0..LIGHT)
            .map(|i| entry(IpAddr::from([198, 18, 10 + (i / 250) as u8, (i % 250) as u8 + 1]), vip))
            .collect();
        let mut w = World {
            config,
            factors: HashMap::new(),
            table: Vec::new(),
            light,
            heavy: Vec::new(),
            counts: vec![Counts::default(); 5],
            ctl: Controller::default(),
            rng: 0x9e37_79b9_7f4a_7c15,
            second: 0,
            changes: Vec::new(),
        };
        w.rebuild();
        // Two heavy clients that the initial table sends to the same backend.
        let clients: Vec<usize> = (1..=250u8).map(|i| entry(IpAddr::from([198, 19, 0, i]), vip)).collect();
        let first = clients[0];
        let same = clients.iter().skip(1).find(|&&e| w.table[e] == w.table[first]).copied().unwrap();
        w.heavy = vec![first, same];
        w
    }

    fn rebuild(&mut self) {
        let eff = state::effective(&self.config, &HashMap::new(), &self.factors);
        let candidates: Vec<Candidate> =
            eff.vips[0].backends.iter().map(|b| Candidate { address: b.address, weight: b.weight }).collect();
        // Index into the configured backends (effective keeps them all here).
        self.table = maglev::build(&candidates, RING);
    }

    fn next(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// One simulated second of traffic, then a controller tick.
    fn second(&mut self, heavy_on: bool) {
        for i in 0..self.light.len() {
            // 0, 1 or 2 flows a second (1 on average).
            let flows = self.next() % 3;
            let b = self.table[self.light[i]].unwrap() as usize;
            self.counts[b].flows += flows;
            self.counts[b].packets += flows * LIGHT_PACKETS;
        }
        if heavy_on {
            for &e in &self.heavy {
                let b = self.table[e].unwrap() as usize;
                self.counts[b].flows += HEAVY_FLOWS;
                self.counts[b].packets += HEAVY_FLOWS * HEAVY_PACKETS;
            }
        }
        let eff = state::effective(&self.config, &HashMap::new(), &self.factors);
        let vip = &self.config.vips[0];
        let backends = vip
            .backends
            .iter()
            .zip(&eff.vips[0].backends)
            .zip(&self.counts)
            .map(|((b, e), c)| BackendInput {
                address: b.address,
                weight: b.weight,
                effective_weight: e.weight,
                counts: *c,
            })
            .collect();
        let input = VipInput { vip: vip.key(), name: vip.to_string(), backends };
        let now = Duration::from_secs(self.second);
        let changes = self.ctl.tick(&self.config.hot_spot, now, self.second * 1000, &[input]);
        for (t, pct) in &changes {
            self.factors.entry(*t).or_default().hotspot_pct = *pct;
            self.changes.push((self.second, t.backend, *pct));
        }
        if !changes.is_empty() {
            self.rebuild();
        }
        self.second += 1;
    }

    fn run(&mut self, seconds: u64, heavy_on: bool) {
        for _ in 0..seconds {
            self.second(heavy_on);
        }
    }

    fn state(&self, i: usize) -> BackendHotSpot {
        let vip = &self.config.vips[0];
        self.ctl.backend(&self.config.hot_spot, &Target { vip: vip.key(), backend: vip.backends[i].address }).unwrap()
    }

    fn hot_backend(&self) -> usize {
        self.table[self.heavy[0]].unwrap() as usize
    }
}

const HOUR: u64 = 3600;

#[test]
fn without_correction_the_heavy_clients_make_a_packet_hot_spot() {
    let mut w = World::new(false);
    w.run(HOUR, true);
    let hot = w.hot_backend();
    let s = w.state(hot);
    assert!(s.hot && s.ratios.packets.unwrap() > 2.0, "{s:?}");
    assert!(s.ratios.flows.unwrap() < 2.0, "the light clients' flows alone spread evenly: {s:?}");
    assert!((0..5).filter(|&i| i != hot).all(|i| !w.state(i).hot));
    assert!(w.changes.is_empty());
    eprintln!("uncorrected: backend {hot} packet ratio {:.2}", s.ratios.packets.unwrap());
}

#[test]
fn correction_converges_and_the_weight_changes_stop() {
    let mut w = World::new(true);
    let first_hot = w.hot_backend();
    w.run(4 * HOUR, true);
    let levels = max_level(&w.config.hot_spot) as usize;
    // Far fewer than the 2L(L+1) per backend the design bounds it to.
    assert!(!w.changes.is_empty() && w.changes.len() <= 2 * levels * (levels + 1), "{:?}", w.changes);
    let last = w.changes.last().unwrap().0;
    assert!(last < 2 * HOUR, "still changing after {last} s: {:?}", w.changes);
    // Every backend now within the factor, or corrected as far as allowed.
    for i in 0..5 {
        let s = w.state(i);
        assert!(s.ratios.packets.unwrap() <= 2.0 || s.weight_pct == 25, "backend {i}: {s:?}");
    }
    let s = w.state(first_hot);
    eprintln!(
        "corrected: {} changes {:?}, last at {last} s; backend {first_hot} at {}% packet ratio {:.2}",
        w.changes.len(),
        w.changes,
        s.weight_pct,
        s.ratios.packets.unwrap()
    );
    // A long quiet time more: nothing moves.
    let settled = w.changes.len();
    w.run(6 * HOUR, true);
    assert_eq!(w.changes.len(), settled, "{:?}", &w.changes[settled..]);
}

#[test]
fn when_the_heavy_clients_leave_the_weights_come_back_without_oscillating() {
    let mut w = World::new(true);
    w.run(2 * HOUR, true);
    let corrected = w.changes.len();
    assert!(corrected > 0);
    w.run(2 * HOUR, false);
    let after = &w.changes[corrected..];
    // Only raises, each backend back to 100%, then nothing.
    let mut pct: HashMap<IpAddr, u32> = HashMap::new();
    for (_, b, p) in &w.changes[..corrected] {
        pct.insert(*b, *p);
    }
    for (_, b, p) in after {
        assert!(*p > pct[b], "lowered after the load evened out: {after:?}");
        pct.insert(*b, *p);
    }
    assert!(pct.values().all(|&p| p == 100), "{pct:?}");
    assert!((0..5).all(|i| w.state(i).weight_pct == 100 && !w.state(i).hot));
    eprintln!("restored in {} changes, last at {} s", after.len(), after.last().map_or(0, |c| c.0));
    let done = w.changes.len();
    w.run(4 * HOUR, false);
    assert_eq!(w.changes.len(), done);
}
