//! Hot spots: a backend that keeps taking more than its weighted share of a
//! VIP's new flows or packets, and the optional controller that lowers its
//! weight (`[hot_spot] correct = true`).
//!
//! A pure state machine: each tick gets every VIP's cumulative counters and
//! weights and the time, and returns the weight percentages to apply. The
//! owner task calls it from a timer and applies the result as
//! `WeightFactors::hotspot_pct`.
//!
//! Why the correction settles: a backend's weight moves on a ladder of
//! levels (level k keeps `step_pct`^k of it, never below `floor_pct`), one
//! level per change, at most one change per VIP per cool-down, judged on a
//! full window measured after the last change. It goes down only while hot
//! (above `factor`) and up only after being calm (below `restore_factor`,
//! which is below `factor`) for `duration_ms`, and only when its load grown
//! in proportion to the raised weight would still be calm. A backend that
//! turns hot again after a restore goes back down (a back-off): that level
//! becomes its ceiling and the VIP's cool-down doubles. After
//! [`MAX_BACKOFFS`] back-offs in a VIP no restore passes a ceiling any more.
//! Between two back-offs a backend's weight only goes down, then only up,
//! so at most 2L changes with L levels; there are at most
//! `MAX_BACKOFFS` + L·n back-offs (n backends) while the VIP's backends and
//! weights stay the same: the weight changes stop.

mod window;

use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
    time::Duration,
};

use lb_common::VipKey;
use serde::Serialize;
use tracing::{info, warn};

use window::Window;
pub use window::{BackendInput, Counts, Ratios};

use super::health::Target;
use crate::config::{Config, HotSpotConfig};

/// Adjustments kept for status.
pub const ADJUSTMENTS_KEPT: usize = 50;
/// Back-offs of a VIP after which its ceilings hold for good (until its
/// backends or weights change); the cool-down doubles at each (16x).
pub const MAX_BACKOFFS: u32 = 4;

/// One VIP at one tick.
#[derive(Clone, Debug)]
pub struct VipInput {
    pub vip: VipKey,
    /// As status names it (`198.18.100.1:80/tcp`).
    pub name: String,
    pub backends: Vec<BackendInput>,
}

/// One weight change the controller made.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Adjustment {
    pub at_unix_ms: u64,
    pub vip: String,
    pub backend: IpAddr,
    pub old_pct: u32,
    pub new_pct: u32,
    /// The ratio that decided it (load over weighted share; `None` when the
    /// correction was switched off).
    pub ratio: Option<f64>,
    pub reason: String,
}

/// A backend's hot-spot state, for status and metrics.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BackendHotSpot {
    /// Above the factor for the configured duration.
    pub hot: bool,
    /// The last full window's ratios.
    pub ratios: Ratios,
    /// The share of its weight the correction leaves it.
    pub weight_pct: u32,
    /// Restores stop at this percentage (100: no back-off yet).
    pub ceiling_pct: u32,
    /// Weight changes made to this backend.
    pub adjustments: u64,
}

#[derive(Debug, Default)]
struct BackendState {
    hot: bool,
    hot_since: Option<Duration>,
    calm_since: Option<Duration>,
    ratios: Ratios,
    level: u32,
    /// Restores never go below this level (above this weight).
    ceiling: u32,
    last_was_restore: bool,
    adjustments: u64,
}

#[derive(Debug, Default)]
struct VipState {
    name: String,
    /// (address, configured weight, live weight): a change restarts the window.
    signature: Vec<(IpAddr, u32, u32)>,
    window: Window,
    last_change: Option<Duration>,
    backoffs: u32,
    backends: HashMap<IpAddr, BackendState>,
}

/// The weight ladder of `cfg`: level k keeps `step_pct`^k percent, at least `floor_pct`.
pub fn level_pct(cfg: &HotSpotConfig, level: u32) -> u32 {
    let mut pct = 100u32;
    for _ in 0..level {
        pct = pct * cfg.step_pct / 100;
        if pct <= cfg.floor_pct {
            return cfg.floor_pct;
        }
    }
    pct
}

/// The last level (the one at the floor).
pub fn max_level(cfg: &HotSpotConfig) -> u32 {
    (0..).find(|&l| level_pct(cfg, l) == cfg.floor_pct).unwrap_or(0)
}

#[derive(Debug, Default)]
pub struct Controller {
    vips: HashMap<VipKey, VipState>,
    adjustments: VecDeque<Adjustment>,
    total: u64,
}

impl Controller {
    /// One tick at `now` (monotonic) with every VIP's counters; returns the
    /// backends whose weight percentage changed, with the new value.
    pub fn tick(
        &mut self,
        cfg: &HotSpotConfig,
        now: Duration,
        unix_ms: u64,
        inputs: &[VipInput],
    ) -> Vec<(Target, u32)> {
        let mut changes = Vec::new();
        self.vips.retain(|k, _| inputs.iter().any(|v| v.vip == *k));
        if !cfg.detect {
            self.reset_all(cfg, unix_ms, "detection switched off", &mut changes);
            self.vips.clear();
            return changes;
        }
        if !cfg.correct {
            self.reset_all(cfg, unix_ms, "correction switched off", &mut changes);
        }
        let span = Duration::from_millis(cfg.window_ms);
        for input in inputs {
            let state = self.vips.entry(input.vip).or_default();
            state.name.clone_from(&input.name);
            let signature: Vec<_> = input.backends.iter().map(|b| (b.address, b.weight, b.effective_weight)).collect();
            let restarted = signature != state.signature;
            if restarted {
                // The table changed: what was measured no longer says how it spreads.
                let weights_changed = state.signature.len() != signature.len()
                    || state.signature.iter().zip(&signature).any(|(a, b)| (a.0, a.1) != (b.0, b.1));
                state.signature = signature;
                state.window.clear();
                if weights_changed {
                    // A new backend set or new configured weights: start over.
                    state.backends.retain(|a, _| input.backends.iter().any(|b| b.address == *a));
                    for b in state.backends.values_mut() {
                        b.ceiling = 0;
                        b.last_was_restore = false;
                    }
                    state.backoffs = 0;
                }
            }
            if state.window.push(now, span, &input.backends) || restarted {
                for b in state.backends.values_mut() {
                    b.hot_since = None;
                    b.calm_since = None;
                }
            }
            let Some(ratios) = state.window.ratios(now, span, &input.backends, cfg.min_flows, cfg.min_packets) else {
                continue;
            };
            for (b, r) in input.backends.iter().zip(ratios) {
                let s = state.backends.entry(b.address).or_default();
                s.ratios = r;
                detect(cfg, now, &input.name, b.address, s);
            }
            if cfg.correct
                && let Some(adj) = correct(cfg, now, unix_ms, input, state)
            {
                let target = Target { vip: input.vip, backend: adj.backend };
                changes.push((target, adj.new_pct));
                self.record(adj);
            }
        }
        changes
    }

    /// Puts every corrected backend back to its full weight.
    fn reset_all(&mut self, cfg: &HotSpotConfig, unix_ms: u64, why: &str, changes: &mut Vec<(Target, u32)>) {
        let mut done = Vec::new();
        for (key, vip) in &mut self.vips {
            for (addr, b) in vip.backends.iter_mut().filter(|(_, b)| b.level > 0) {
                let old_pct = level_pct(cfg, b.level);
                (b.level, b.ceiling, b.last_was_restore) = (0, 0, false);
                changes.push((Target { vip: *key, backend: *addr }, 100));
                done.push(Adjustment {
                    at_unix_ms: unix_ms,
                    vip: vip.name.clone(),
                    backend: *addr,
                    old_pct,
                    new_pct: 100,
                    ratio: None,
                    reason: why.to_string(),
                });
            }
        }
        for adj in done {
            info!(backend = %adj.backend, old_pct = adj.old_pct, "hot-spot correction removed: {why}");
            self.record(adj);
        }
    }

    fn record(&mut self, adj: Adjustment) {
        if self.adjustments.len() == ADJUSTMENTS_KEPT {
            self.adjustments.pop_front();
        }
        self.adjustments.push_back(adj);
        self.total += 1;
    }

    /// The latest adjustments, oldest first.
    pub fn adjustments(&self) -> Vec<Adjustment> {
        self.adjustments.iter().cloned().collect()
    }

    pub fn adjustments_total(&self) -> u64 {
        self.total
    }

    pub fn backend(&self, cfg: &HotSpotConfig, target: &Target) -> Option<BackendHotSpot> {
        let b = self.vips.get(&target.vip)?.backends.get(&target.backend)?;
        Some(BackendHotSpot {
            hot: b.hot,
            ratios: b.ratios,
            weight_pct: level_pct(cfg, b.level),
            ceiling_pct: level_pct(cfg, b.ceiling),
            adjustments: b.adjustments,
        })
    }
}

/// The hot flag: set after `duration_ms` above the factor, cleared at or
/// below it. A window with too little traffic changes nothing, so an idle
/// VIP neither raises nor clears it.
fn detect(cfg: &HotSpotConfig, now: Duration, vip: &str, address: IpAddr, s: &mut BackendState) {
    let duration = Duration::from_millis(cfg.duration_ms);
    let Some(ratio) = s.ratios.max() else {
        s.calm_since = None;
        if !s.hot {
            s.hot_since = None;
        }
        return;
    };
    if ratio > cfg.factor {
        s.calm_since = None;
        let since = *s.hot_since.get_or_insert(now);
        if !s.hot && now.saturating_sub(since) >= duration {
            s.hot = true;
            warn!(vip, backend = %address, ratio, factor = cfg.factor, "hot spot: the backend takes more than factor times its weighted share");
        }
        return;
    }
    s.hot_since = None;
    if s.hot {
        s.hot = false;
        info!(vip, backend = %address, ratio, "hot spot over: the backend is back within factor times its share");
    }
    if ratio < cfg.restore_factor {
        s.calm_since.get_or_insert(now);
    } else {
        s.calm_since = None;
    }
}

/// At most one weight change per VIP per cool-down: the hottest backend one
/// level down, else a backend calm for long enough one level up.
fn correct(
    cfg: &HotSpotConfig,
    now: Duration,
    unix_ms: u64,
    input: &VipInput,
    vip: &mut VipState,
) -> Option<Adjustment> {
    let cooldown = Duration::from_millis(cfg.cooldown_ms) * (1u32 << vip.backoffs);
    if vip.last_change.is_some_and(|t| now.saturating_sub(t) < cooldown) {
        return None;
    }
    let duration = Duration::from_millis(cfg.duration_ms);
    let floor = max_level(cfg);
    let ratio_of = |s: &BackendState| s.ratios.max().unwrap_or(0.0);
    let in_table = |a: &IpAddr| input.backends.iter().any(|b| b.address == *a && b.effective_weight > 0);
    let hottest = vip
        .backends
        .iter()
        .filter(|(a, s)| in_table(a) && s.hot && ratio_of(s) > cfg.factor && s.level < floor)
        .max_by(|x, y| ratio_of(x.1).total_cmp(&ratio_of(y.1)))
        .map(|(a, _)| *a);
    // Past a back-off's ceiling only while back-offs are left.
    let may_lift = vip.backoffs < MAX_BACKOFFS;
    let calm = || {
        vip.backends
            .iter()
            .filter(|(a, s)| in_table(a) && s.level > 0 && (s.level > s.ceiling || may_lift))
            .filter(|(_, s)| s.calm_since.is_some_and(|t| now.saturating_sub(t) >= duration))
            // Its load grown with the weight must stay calm too.
            .filter(|(_, s)| {
                let up = level_pct(cfg, s.level - 1) as f64 / level_pct(cfg, s.level) as f64;
                ratio_of(s) * up < cfg.restore_factor
            })
            .min_by(|x, y| ratio_of(x.1).total_cmp(&ratio_of(y.1)))
            .map(|(a, _)| *a)
    };
    let (address, down) = match hottest {
        Some(a) => (a, true),
        None => (calm()?, false),
    };
    let s = vip.backends.get_mut(&address)?;
    let old_pct = level_pct(cfg, s.level);
    let ratio = ratio_of(s);
    let reason = if down && s.last_was_restore {
        // The restore made it hot again: hold the level below and wait longer.
        s.ceiling = s.level + 1;
        vip.backoffs = (vip.backoffs + 1).min(MAX_BACKOFFS);
        "hot again after a restore: back-off"
    } else if down {
        "hot"
    } else {
        "load evened out"
    };
    s.level = if down { s.level + 1 } else { s.level - 1 };
    s.last_was_restore = !down;
    s.adjustments += 1;
    s.hot_since = None;
    s.calm_since = None;
    vip.last_change = Some(now);
    vip.window.clear();
    let new_pct = level_pct(cfg, s.level);
    warn!(vip = %input.name, backend = %address, old_pct, new_pct, ratio, reason, "hot-spot correction: weight changed (this instance only)");
    Some(Adjustment {
        at_unix_ms: unix_ms,
        vip: input.name.clone(),
        backend: address,
        old_pct,
        new_pct,
        ratio: Some(ratio),
        reason: reason.to_string(),
    })
}

/// The controller's input from the configuration, the table the maps hold
/// (`applied`, the effective configuration) and the data path's counters.
pub fn inputs(
    config: &Config,
    applied: Option<&Config>,
    counters: &HashMap<(VipKey, IpAddr), crate::dataplane::BackendTraffic>,
) -> Vec<VipInput> {
    config
        .vips
        .iter()
        .map(|vip| {
            let key = vip.key();
            let live = applied.and_then(|a| a.vips.iter().find(|v| v.key() == key));
            let backends = vip
                .backends
                .iter()
                .map(|b| {
                    let c = counters.get(&(key, b.address)).copied().unwrap_or_default();
                    BackendInput {
                        address: b.address,
                        weight: b.weight,
                        effective_weight: live
                            .and_then(|v| v.backends.iter().find(|x| x.address == b.address))
                            .map_or(0, |x| x.weight),
                        counts: Counts { flows: c.new_flows, packets: c.packets },
                    }
                })
                .collect();
            VipInput { vip: key, name: vip.to_string(), backends }
        })
        .collect()
}

/// Logs at load what the configuration implies for several instances.
pub fn warn_if_per_instance(config: &Config) {
    if config.hot_spot.detect && config.hot_spot.correct && config.bgp.is_some() {
        warn!(
            "[hot_spot] correct = true with [bgp]: each instance lowers weights from its own counters, so the \
             instances behind the ECMP route no longer send every flow to the same backend"
        );
    }
}

#[cfg(test)]
mod convergence;
#[cfg(test)]
mod tests;
