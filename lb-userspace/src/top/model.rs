//! What `lb top` reads of the agent's status, and the samples it keeps:
//! rates between the last two, new-flow shares over a window.

use std::{
    collections::{HashMap, VecDeque},
    time::Duration,
};

use serde::Deserialize;

pub use crate::probe_text::{Agent, Probe};

/// New flows are shared over this window.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Fewer new flows than this in the window say nothing about balance.
pub const HOT_MIN_FLOWS: u64 = 20;
/// A backend is hot when its share of new flows exceeds this many times its weighted share.
pub const HOT_FACTOR: f64 = 2.0;

// What top reads of the status; unknown fields are ignored.
#[derive(Clone, Debug, Deserialize)]
pub struct Snapshot {
    pub interface: String,
    pub uptime_s: u64,
    pub vips: Vec<Vip>,
    pub counters: HashMap<String, u64>,
    #[serde(default)]
    pub transitions: Vec<Transition>,
    /// The agent's clock when it read the counters (older agents: none).
    #[serde(default)]
    pub sampled_unix_ms: Option<u64>,
    #[serde(default)]
    pub hot_spot: HotSpotStatus,
    /// Announcing through BIRD (no `[bgp]` table, or older agents: none).
    #[serde(default)]
    pub bgp: Option<super::bgp::Bgp>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Vip {
    pub vip: String,
    pub forwarding: String,
    /// Older agents: none.
    #[serde(default)]
    pub algorithm: Option<String>,
    /// Why this instance's choices may differ from another instance's.
    #[serde(default)]
    pub per_instance: Vec<String>,
    pub ring_size: u32,
    pub health_check: Option<String>,
    pub failing_open: bool,
    pub fingerprint: String,
    /// BIRD announces the VIP's address (meaningful with `bgp` only).
    #[serde(default)]
    pub announced: bool,
    pub backends: Vec<Backend>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Backend {
    pub address: String,
    pub weight: u32,
    pub effective_weight: u32,
    pub state: String,
    pub health: String,
    pub packets: u64,
    #[serde(default)]
    pub new_flows: u64,
    pub probe: Option<Probe>,
    /// What changed the weight (older agents: none).
    #[serde(default)]
    pub factors: Option<Factors>,
    #[serde(default)]
    pub agent: Option<Agent>,
    /// The agent's hot-spot detector (`None`: not measured yet).
    #[serde(default)]
    pub hot_spot: Option<HotSpot>,
    /// Connections the data path counts as open (agents that count them).
    #[serde(default)]
    pub active_connections: Option<u64>,
}

/// Percentages applied to the configured weight, and the agent check's word.
#[derive(Clone, Debug, Deserialize)]
pub struct Factors {
    pub agent_pct: u32,
    pub slowstart_pct: u32,
    pub hotspot_pct: u32,
    pub agent_admin: String,
    pub agent_down: bool,
}

impl Factors {
    /// The factors that are not neutral, as `slow start 10%`.
    pub fn active(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (label, pct) in
            [("slow start", self.slowstart_pct), ("agent", self.agent_pct), ("hot spot", self.hotspot_pct)]
        {
            if pct != 100 {
                out.push(format!("{label} {pct}%"));
            }
        }
        if self.agent_admin != "ready" {
            out.push(format!("agent {}", self.agent_admin));
        }
        if self.agent_down {
            out.push("agent down".into());
        }
        out
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct HotSpot {
    pub hot: bool,
    pub ratios: Ratios,
}

#[derive(Clone, Copy, Debug, Default, Deserialize)]
pub struct Ratios {
    pub flows: Option<f64>,
    pub packets: Option<f64>,
}

impl Ratios {
    /// The larger of the measured ratios.
    pub fn max(&self) -> Option<f64> {
        [self.flows, self.packets].into_iter().flatten().reduce(f64::max)
    }
}

/// The hot-spot controller's latest weight changes.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct HotSpotStatus {
    #[serde(default)]
    pub adjustments: Vec<Adjustment>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Adjustment {
    pub at_unix_ms: u64,
    pub vip: String,
    pub backend: String,
    pub old_pct: u32,
    pub new_pct: u32,
    pub ratio: Option<f64>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Transition {
    pub at_unix_ms: u64,
    pub vip: String,
    pub backend: String,
    pub health: String,
    pub reason: String,
}

/// A backend's part of its VIP's new flows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Share {
    /// Of the VIP's new flows in the window.
    pub share: f64,
    /// Its effective weight over the VIP's.
    pub weighted: f64,
    pub hot: bool,
}

/// Shares of new flows (`flows`: each backend's, in the VIP's order) against
/// the weighted shares. Hot spots are judged on the recent window only
/// (`in_window`), and only for backends in the table: one just taken out
/// still shows the flows it got before.
pub fn shares(flows: &[u64], effective_weights: &[u32], in_window: bool) -> Vec<Share> {
    let total: u64 = flows.iter().sum();
    let weights: u64 = effective_weights.iter().map(|w| *w as u64).sum();
    flows
        .iter()
        .zip(effective_weights)
        .map(|(f, w)| {
            let share = if total > 0 { *f as f64 / total as f64 } else { 0.0 };
            let weighted = if weights > 0 { *w as f64 / weights as f64 } else { 0.0 };
            let hot = in_window && weighted > 0.0 && total >= HOT_MIN_FLOWS && share > HOT_FACTOR * weighted;
            Share { share, weighted, hot }
        })
        .collect()
}

/// Successive samples: (agent time in ms, status).
#[derive(Default)]
pub struct History {
    pub(super) samples: VecDeque<(u64, Snapshot)>,
}

type BackendKey = (String, String);

fn by_backend(s: &Snapshot) -> HashMap<BackendKey, &Backend> {
    s.vips.iter().flat_map(|v| v.backends.iter().map(move |b| ((v.vip.clone(), b.address.clone()), b))).collect()
}

impl History {
    pub fn push(&mut self, at_ms: u64, s: Snapshot) {
        self.samples.push_back((at_ms, s));
        let window = WINDOW.as_millis() as u64;
        while self.samples.len() > 2 && at_ms.saturating_sub(self.samples[1].0) >= window {
            self.samples.pop_front();
        }
    }

    /// Packets/s and new flows/s per backend between the last two samples.
    pub fn rates(&self) -> HashMap<BackendKey, (f64, f64)> {
        let n = self.samples.len();
        if n < 2 {
            return HashMap::new();
        }
        let ((t0, a), (t1, b)) = (&self.samples[n - 2], &self.samples[n - 1]);
        let dt = t1.saturating_sub(*t0) as f64 / 1e3;
        if dt <= 0.0 {
            return HashMap::new();
        }
        let before = by_backend(a);
        by_backend(b)
            .into_iter()
            .filter_map(|(k, cur)| {
                let p = before.get(&k)?;
                let pps = cur.packets.saturating_sub(p.packets) as f64 / dt;
                let nfs = cur.new_flows.saturating_sub(p.new_flows) as f64 / dt;
                Some((k, (pps, nfs)))
            })
            .collect()
    }

    /// Per-second rate of a counter between the last two samples.
    pub fn counter_rate(&self, name: &str) -> Option<f64> {
        let n = self.samples.len();
        let ((t0, a), (t1, b)) = (self.samples.get(n.checked_sub(2)?)?, &self.samples[n - 1]);
        let dt = t1.saturating_sub(*t0) as f64 / 1e3;
        (dt > 0.0)
            .then(|| b.counters.get(name).unwrap_or(&0).saturating_sub(*a.counters.get(name).unwrap_or(&0)) as f64 / dt)
    }

    /// Each backend's new flows in the window (since the program was loaded
    /// when the window has none) and whether that was the window.
    pub fn window_flows(&self, vip: &Vip) -> (Vec<u64>, bool) {
        let oldest = (self.samples.len() > 1).then(|| by_backend(&self.samples[0].1));
        let windowed: Vec<u64> = vip
            .backends
            .iter()
            .map(|b| {
                let before = oldest.as_ref().and_then(|o| o.get(&(vip.vip.clone(), b.address.clone())));
                before.map_or(0, |p| b.new_flows.saturating_sub(p.new_flows))
            })
            .collect();
        if windowed.iter().sum::<u64>() > 0 {
            (windowed, true)
        } else {
            (vip.backends.iter().map(|b| b.new_flows).collect(), false)
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// One TCP VIP with a backend per entry of `flows`/`packets`, weight 1 each.
    pub fn snap(flows: &[u64], packets: &[u64]) -> Snapshot {
        let backends = flows
            .iter()
            .zip(packets)
            .enumerate()
            .map(|(i, (f, p))| Backend {
                address: format!("198.18.0.1{}", i + 1),
                weight: 1,
                effective_weight: 1,
                state: "up".into(),
                health: "up".into(),
                packets: *p,
                new_flows: *f,
                probe: None,
                factors: None,
                agent: None,
                hot_spot: None,
                active_connections: None,
            })
            .collect();
        Snapshot {
            interface: "lb0".into(),
            uptime_s: 75,
            vips: vec![Vip {
                vip: "198.18.100.1:80/tcp".into(),
                forwarding: "ipip".into(),
                algorithm: None,
                per_instance: vec![],
                ring_size: 251,
                health_check: None,
                failing_open: false,
                fingerprint: "00112233aabbccdd".into(),
                announced: false,
                backends,
            }],
            counters: HashMap::from([("drop_no_backend".into(), 4), ("tx_ipip".into(), 10)]),
            transitions: vec![],
            sampled_unix_ms: None,
            hot_spot: HotSpotStatus::default(),
            bgp: None,
        }
    }

    #[test]
    fn hot_spots() {
        let s = shares(&[30, 5, 5], &[1, 1, 1], true);
        assert!(s[0].hot && !s[1].hot && !s[2].hot, "{s:?}");
        assert!((s[0].share - 0.75).abs() < 1e-9 && (s[0].weighted - 1.0 / 3.0).abs() < 1e-9);
        // Not judged on old flows only.
        assert!(!shares(&[30, 5, 5], &[1, 1, 1], false)[0].hot);
        // Too few flows to judge.
        assert!(!shares(&[10, 1, 1], &[1, 1, 1], true)[0].hot);
        // Weights count: 2/3 of the table may take 2/3 of the flows.
        assert!(shares(&[60, 30], &[2, 1], true).iter().all(|s| !s.hot));
        // Out of the table (just drained): its earlier flows are no hot spot.
        assert!(!shares(&[0, 30], &[1, 0], true)[1].hot);
        assert!(shares(&[0, 0], &[0, 0], true).iter().all(|s| s.share == 0.0 && !s.hot));
    }

    #[test]
    fn rates_and_window() {
        let mut h = History::default();
        h.push(1_000, snap(&[0, 0, 0], &[0, 0, 0]));
        h.push(3_000, snap(&[30, 6, 4], &[100, 20, 40]));
        let r = h.rates();
        let k = |a: &str| ("198.18.100.1:80/tcp".to_string(), a.to_string());
        assert_eq!(r[&k("198.18.0.11")], (50.0, 15.0));
        assert_eq!(r[&k("198.18.0.13")], (20.0, 2.0));
        let v = &h.samples[1].1.vips[0];
        assert_eq!(h.window_flows(v), (vec![30, 6, 4], true));
        // Samples older than the window go, one before it stays.
        h.push(14_000, snap(&[31, 6, 4], &[100, 20, 40]));
        h.push(15_000, snap(&[31, 6, 4], &[100, 20, 40]));
        assert_eq!(h.samples.len(), 3);
        assert_eq!(h.window_flows(&h.samples[2].1.vips[0]), (vec![1, 0, 0], true));
    }
}
