use std::{collections::HashMap, net::IpAddr, time::Duration};

use lb_common::VipKey;

use super::*;
use crate::config::HotSpotConfig;

/// Short times: sampled each second, 5 s window, 10 s duration and cool-down.
fn cfg(correct: bool) -> HotSpotConfig {
    HotSpotConfig {
        duration_ms: 10_000,
        window_ms: 5_000,
        cooldown_ms: 10_000,
        min_flows: 100,
        min_packets: 0,
        correct,
        ..HotSpotConfig::default()
    }
}

fn addr(i: usize) -> IpAddr {
    format!("198.18.0.{}", 11 + i).parse().unwrap()
}

/// Four backends of weight 1 of one VIP; each simulated second adds the
/// flows a load model gives each backend, from its current weight pct.
struct Sim {
    cfg: HotSpotConfig,
    ctl: Controller,
    vip: VipKey,
    counts: Vec<Counts>,
    pct: Vec<u32>,
    second: u64,
    /// (second, backend, new pct) of every change.
    changes: Vec<(u64, usize, u32)>,
}

impl Sim {
    fn new(cfg: HotSpotConfig) -> Sim {
        Sim {
            cfg,
            ctl: Controller::default(),
            vip: VipKey::new("198.18.100.1".parse().unwrap(), 80, 6),
            counts: vec![Counts::default(); 4],
            pct: vec![100; 4],
            second: 0,
            changes: Vec::new(),
        }
    }

    /// Runs `seconds` ticks; `flows(backend, pct)` is what it gets each second.
    fn run(&mut self, seconds: u64, flows: impl Fn(usize, u32) -> u64) {
        for _ in 0..seconds {
            for (i, c) in self.counts.iter_mut().enumerate() {
                c.flows += flows(i, self.pct[i]);
                c.packets += 10 * flows(i, self.pct[i]);
            }
            let backends = (0..4)
                .map(|i| BackendInput {
                    address: addr(i),
                    weight: 1,
                    effective_weight: self.pct[i],
                    counts: self.counts[i],
                })
                .collect();
            let input = VipInput { vip: self.vip, name: "198.18.100.1:80/tcp".into(), backends };
            let now = Duration::from_secs(self.second);
            for (t, pct) in self.ctl.tick(&self.cfg, now, self.second * 1000, &[input]) {
                let i = (0..4).find(|&i| addr(i) == t.backend).unwrap();
                self.pct[i] = pct;
                self.changes.push((self.second, i, pct));
            }
            self.second += 1;
        }
    }

    fn hot(&self, i: usize) -> bool {
        self.ctl.backend(&self.cfg, &Target { vip: self.vip, backend: addr(i) }).is_some_and(|b| b.hot)
    }
}

/// Backend 0 gets `a` flows a second, the others 100: its ratio is
/// `4a / (a + 300)` (500: 2.5, 400: 2.29, 300: 2.0, 200: 1.6, 80: 0.84).
fn skew(a: impl Fn(u32) -> u64) -> impl Fn(usize, u32) -> u64 {
    move |i, pct| if i == 0 { a(pct) } else { 100 }
}

#[test]
fn the_ladder_goes_down_by_step_to_the_floor() {
    let c = cfg(true);
    let ladder: Vec<u32> = (0..=max_level(&c)).map(|l| level_pct(&c, l)).collect();
    assert_eq!(ladder, [100, 75, 56, 42, 31, 25]);
}

#[test]
fn hot_after_the_duration_above_the_factor() {
    let mut sim = Sim::new(cfg(false));
    // The window is full at 5 s; above the factor from then on, hot 10 s later.
    sim.run(15, skew(|_| 500));
    assert!(!sim.hot(0));
    sim.run(1, skew(|_| 500));
    assert!(sim.hot(0));
    assert!((1..4).all(|i| !sim.hot(i)));
    let b = sim.ctl.backend(&sim.cfg, &Target { vip: sim.vip, backend: addr(0) }).unwrap();
    assert!((b.ratios.flows.unwrap() - 2.5).abs() < 1e-9, "{b:?}");
    assert_eq!(b.ratios.packets, None, "min_packets = 0 turns that measure off");
    // Back at its share: cleared at once; detection alone changes no weight.
    sim.run(6, skew(|_| 100));
    assert!(!sim.hot(0));
    assert!(sim.changes.is_empty());
}

#[test]
fn at_the_factor_is_not_hot() {
    let mut sim = Sim::new(cfg(false));
    sim.run(200, skew(|_| 300));
    assert!(!sim.hot(0));
}

#[test]
fn an_interruption_restarts_the_duration() {
    let mut sim = Sim::new(cfg(false));
    sim.run(10, skew(|_| 500));
    // Five seconds at its share bring the window's ratio under the factor.
    sim.run(5, skew(|_| 100));
    let mut first_hot = None;
    while first_hot.is_none() && sim.second < 100 {
        sim.run(1, skew(|_| 500));
        first_hot = sim.hot(0).then_some(sim.second - 1);
    }
    // Without the interruption it would be hot at 15 s: the duration (10 s)
    // restarts once the window is above the factor again.
    let first_hot = first_hot.unwrap();
    assert!((25..=30).contains(&first_hot), "hot at {first_hot} s");
}

#[test]
fn too_little_traffic_neither_raises_nor_clears_the_flag() {
    let mut sim = Sim::new(cfg(false));
    // 5 + 3 * 1 = 8 flows a second: 40 a window, under min_flows.
    sim.run(100, |i, _| if i == 0 { 5 } else { 1 });
    assert!(!sim.hot(0));
    sim.run(20, skew(|_| 500));
    assert!(sim.hot(0));
    // Idle (even if evenly spread, too little to judge): stays flagged.
    sim.run(100, |_, _| 1);
    assert!(sim.hot(0));
}

#[test]
fn correction_steps_down_once_per_cooldown_to_the_floor_and_stops() {
    let mut sim = Sim::new(cfg(true));
    // The load does not follow the weight: the correction can only reach the floor.
    sim.run(600, skew(|_| 500));
    let pcts: Vec<u32> = sim.changes.iter().map(|c| c.2).collect();
    assert_eq!(pcts, [75, 56, 42, 31, 25]);
    assert!(sim.changes.iter().all(|c| c.1 == 0));
    for w in sim.changes.windows(2) {
        assert!(w[1].0 - w[0].0 >= 10, "changes closer than the cool-down: {:?}", sim.changes);
    }
    assert!(sim.hot(0), "still flagged at the floor");
    let adj = sim.ctl.adjustments();
    assert_eq!(adj.len(), 5);
    assert_eq!((adj[0].old_pct, adj[0].new_pct, adj[0].reason.as_str()), (100, 75, "hot"));
    assert!(adj[0].ratio.unwrap() > 2.0);
    assert_eq!(sim.ctl.adjustments_total(), 5);
}

#[test]
fn correction_stops_between_the_thresholds_and_restores_when_the_load_evens_out() {
    let mut sim = Sim::new(cfg(true));
    // 100% and 75% hot, 56% between restore_factor and factor: it stays there.
    let heavy = |pct: u32| if pct >= 75 { 500 } else { 200 };
    sim.run(1000, skew(heavy));
    assert_eq!(sim.changes.iter().map(|c| c.2).collect::<Vec<_>>(), [75, 56]);
    assert!(!sim.hot(0));
    // The heavy clients leave (its flows now follow its weight): back to
    // full weight one step at a time, then nothing.
    let settled = sim.changes.len();
    sim.run(1000, |i, pct| if i == 0 { pct as u64 } else { 100 });
    assert_eq!(sim.changes[settled..].iter().map(|c| c.2).collect::<Vec<_>>(), [75, 100]);
    assert_eq!(sim.ctl.adjustments().last().unwrap().reason, "load evened out");
}

#[test]
fn a_restore_that_makes_it_hot_again_is_undone_then_held_for_good() {
    let mut sim = Sim::new(cfg(true));
    // Calm at 56% (ratio 0.84, 1.13 predicted at 75%) but hot at 75% again:
    // a naive controller would cycle forever.
    let heavy = |pct: u32| if pct >= 75 { 500 } else { 80 };
    sim.run(20_000, skew(heavy));
    let pcts: Vec<u32> = sim.changes.iter().map(|c| c.2).collect();
    let mut expected = vec![75, 56];
    for _ in 0..MAX_BACKOFFS {
        expected.extend([75, 56]);
    }
    assert_eq!(pcts, expected);
    // Each back-off doubles the wait before the next restore.
    let restores: Vec<u64> = sim.changes.iter().filter(|c| c.2 == 75).map(|c| c.0).collect();
    let gaps: Vec<u64> = restores.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.windows(2).all(|g| g[1] > g[0]), "{restores:?}");
    let b = sim.ctl.backend(&sim.cfg, &Target { vip: sim.vip, backend: addr(0) }).unwrap();
    assert_eq!((b.weight_pct, b.ceiling_pct), (56, 56));
    assert_eq!(sim.ctl.adjustments().last().unwrap().reason, "hot again after a restore: back-off");
}

#[test]
fn no_restore_when_the_raised_weight_would_not_stay_calm() {
    let mut sim = Sim::new(cfg(true));
    // At 56% the ratio is 1.2: calm, but 1.6 predicted at 75%, not calm.
    let heavy = |pct: u32| if pct >= 75 { 500 } else { 129 };
    sim.run(5000, skew(heavy));
    assert_eq!(sim.changes.iter().map(|c| c.2).collect::<Vec<_>>(), [75, 56]);
}

#[test]
fn switching_the_correction_off_restores_full_weight() {
    let mut sim = Sim::new(cfg(true));
    sim.run(16, skew(|_| 500));
    assert_eq!(sim.pct[0], 75);
    sim.cfg.correct = false;
    sim.run(1, skew(|_| 500));
    assert_eq!(sim.pct[0], 100);
    assert_eq!(sim.ctl.adjustments().last().unwrap().reason, "correction switched off");
    // Detection goes on.
    assert!(sim.hot(0));
    sim.run(100, skew(|_| 500));
    assert_eq!(sim.pct[0], 100);
}

#[test]
fn a_counter_that_goes_back_restarts_the_window() {
    let mut sim = Sim::new(cfg(false));
    sim.run(14, skew(|_| 500));
    // A reused backend slot starts from 0: no negative delta, no judgment
    // until a new window is full.
    sim.counts[0] = Counts::default();
    sim.run(1, skew(|_| 500));
    let b = sim.ctl.backend(&sim.cfg, &Target { vip: sim.vip, backend: addr(0) }).unwrap();
    assert!(b.ratios.flows.is_some(), "the last full window's ratios stay until the next");
    // Full again at 19 s, hot 10 s later.
    sim.run(14, skew(|_| 500));
    assert!(!sim.hot(0));
    sim.run(1, skew(|_| 500));
    assert!(sim.hot(0));
}

#[test]
fn either_measure_can_be_turned_off() {
    // min_flows = 0: packets only (the simulation sends 10 packets a flow).
    let mut sim = Sim::new(HotSpotConfig { min_flows: 0, min_packets: 1000, ..cfg(false) });
    sim.run(16, skew(|_| 500));
    assert!(sim.hot(0));
    let b = sim.ctl.backend(&sim.cfg, &Target { vip: sim.vip, backend: addr(0) }).unwrap();
    assert_eq!(b.ratios.flows, None);
    assert!((b.ratios.packets.unwrap() - 2.5).abs() < 1e-9, "{b:?}");
}

#[test]
fn weights_are_judged_against_the_configured_share_of_the_backends_in_the_table() {
    let mut w = window::Window::default();
    let b = |i: usize, weight, live, flows| BackendInput {
        address: addr(i),
        weight,
        effective_weight: live,
        counts: Counts { flows, packets: 0 },
    };
    let span = Duration::from_secs(1);
    w.push(Duration::ZERO, span, &[b(0, 3, 1, 0), b(1, 1, 1, 0), b(2, 1, 0, 0)]);
    let now = Duration::from_secs(1);
    let later = [b(0, 3, 1, 600), b(1, 1, 1, 400), b(2, 1, 0, 1000)];
    w.push(now, span, &later);
    let r = w.ratios(now, span, &later, 1, 0).unwrap();
    // Backend 2 is out of the table: shares are 3/4 and 1/4 of 1000 flows.
    assert!((r[0].flows.unwrap() - 0.8).abs() < 1e-9 && (r[1].flows.unwrap() - 1.6).abs() < 1e-9, "{r:?}");
    assert_eq!(r[2], Ratios::default());
}

#[test]
fn the_correction_changes_the_table_even_for_weight_one() {
    use crate::agent::state::{WeightFactors, effective};
    let config = crate::config::Config::from_toml_str(
        "[global]\nnexthop_mac = \"02:00:00:00:00:fe\"\ntunnel_source_v4 = \"198.18.0.2\"\n\
         [[vip]]\naddress = \"198.18.100.1\"\nport = 80\nprotocol = \"tcp\"\n\
         backend = [{ address = \"198.18.0.11\" }, { address = \"198.18.0.12\" }]\n",
    )
    .unwrap();
    let weights = |factors: &HashMap<Target, WeightFactors>| -> Vec<u32> {
        effective(&config, &HashMap::new(), factors).vips[0].backends.iter().map(|b| b.weight).collect()
    };
    assert_eq!(weights(&HashMap::new()), [1, 1]);
    let hot = Target { vip: config.vips[0].key(), backend: addr(0) };
    let factors = HashMap::from([(hot, WeightFactors { hotspot_pct: 25, ..Default::default() })]);
    assert_eq!(weights(&factors), [25, 100]);
    // A slow start is scaled the same way: a ramp works for weight 1 too.
    let factors = HashMap::from([(hot, WeightFactors { slowstart_pct: 25, ..Default::default() })]);
    assert_eq!(weights(&factors), [25, 100]);
}
