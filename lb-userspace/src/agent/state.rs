//! From what the operator asked for (the configuration, admin states) and
//! what the probes see (health) to what the data path must hold: the
//! effective configuration handed to `Dataplane::apply`. Pure, so the
//! rules are tested without a kernel.

use std::collections::{HashMap, HashSet};

use crate::{
    agent::{
        agent_check::AgentAdmin,
        health::{Health, Target},
    },
    config::{AdminState, AllDown, BackendConfig, Config, OnDown, Vip},
};

/// Where a backend stands in the data path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Placement {
    /// In the Maglev table with its weight.
    InTable,
    /// Out of the table, established flows kept (drain, or down with `on_down = keep`).
    Draining,
    /// Out of the data path: established flows re-picked.
    Removed,
}

/// What the agent itself does to a backend's configured weight, each factor
/// in percent (100: unchanged). Every factor other than 100 comes from this
/// instance's own view (its probe timing, its counters), so while one is
/// active the VIP's table may differ from another instance's: see
/// [`per_instance_reasons`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct WeightFactors {
    /// Weight percentage the backend's agent check reported.
    pub agent_pct: u32,
    /// Slow start: how far the ramp from 0 to the full weight has come.
    pub slowstart_pct: u32,
    /// Hot-spot correction: the share of its weight a hot backend keeps.
    pub hotspot_pct: u32,
    /// Admin state the agent check asked for (`ready`: none of its own);
    /// the stricter of it and the operator's applies.
    pub agent_admin: AgentAdmin,
    /// The agent check reported `down`, `fail` or `stopped` (until `up`).
    pub agent_down: bool,
}

impl Default for WeightFactors {
    fn default() -> Self {
        WeightFactors {
            agent_pct: 100,
            slowstart_pct: 100,
            hotspot_pct: 100,
            agent_admin: AgentAdmin::Ready,
            agent_down: false,
        }
    }
}

impl WeightFactors {
    /// The weight the table gets: `weight` scaled by every factor, rounded
    /// up and at least 1 (as HAProxy's slow start, so a ramping backend gets
    /// some flows); 0 only when the weight or a factor is 0.
    pub fn apply(&self, weight: u32) -> u32 {
        let factors = [self.agent_pct, self.slowstart_pct, self.hotspot_pct];
        if weight == 0 || factors.contains(&0) {
            return 0;
        }
        let scaled = factors.iter().fold(weight as u64, |w, &f| (w * f as u64).div_ceil(100));
        scaled.clamp(1, crate::config::MAX_WEIGHT as u64) as u32
    }

    pub fn is_neutral(&self) -> bool {
        *self == WeightFactors::default()
    }
}

/// Why a VIP's table (or its choice of backend for new flows) depends on this
/// instance's own view and may differ from another lb instance's behind the
/// same ECMP route. Empty: any instance with the same configuration and
/// health sends every flow to the same backend.
pub fn per_instance_reasons(vip: &Vip, factors: &HashMap<Target, WeightFactors>) -> Vec<String> {
    let mut reasons = Vec::new();
    if vip.algorithm.per_instance() {
        reasons.push(format!("{}: new flows are placed from this instance's own state", vip.algorithm));
    }
    for b in &vip.backends {
        let f = factors.get(&Target { vip: vip.key(), backend: b.address }).copied().unwrap_or_default();
        if f.slowstart_pct != 100 {
            reasons.push(format!("slow start of {} in progress ({}%)", b.address, f.slowstart_pct));
        }
        if f.hotspot_pct != 100 {
            reasons.push(format!("hot-spot correction of {} ({}% of its weight)", b.address, f.hotspot_pct));
        }
    }
    reasons
}

/// The admin state that applies: the stricter of the operator's and the
/// agent check's (so an agent's `ready` never lifts an operator's drain or
/// maintenance).
pub fn admin_state(operator: AdminState, agent: AgentAdmin) -> AdminState {
    match (operator, agent) {
        (AdminState::Maint, _) | (_, AgentAdmin::Maint) => AdminState::Maint,
        (AdminState::Drain, _) | (_, AgentAdmin::Drain) => AdminState::Drain,
        (AdminState::Up, AgentAdmin::Ready) => AdminState::Up,
    }
}

/// A backend's placement and the weight it gets in the table. The agent
/// check's word (in `factors`) overlays the admin state and the health.
pub fn placement(
    vip: &Vip,
    b: &BackendConfig,
    health: Health,
    fail_open: bool,
    factors: WeightFactors,
) -> (Placement, u32) {
    let health = if factors.agent_down { Health::Down } else { health };
    match admin_state(b.state, factors.agent_admin) {
        AdminState::Maint => (Placement::Removed, 0),
        AdminState::Drain => (Placement::Draining, 0),
        AdminState::Up if health == Health::Up || fail_open => (Placement::InTable, factors.apply(b.weight)),
        AdminState::Up => match vip.on_down {
            OnDown::Repick => (Placement::Removed, 0),
            OnDown::Keep => (Placement::Draining, 0),
        },
    }
}

/// Health of a backend: unchecked VIPs' backends are always up.
pub fn health_of(vip: &Vip, b: &BackendConfig, health: &HashMap<Target, Health>) -> Health {
    if vip.health_check.is_none() {
        return Health::Up;
    }
    health.get(&Target { vip: vip.key(), backend: b.address }).copied().unwrap_or(Health::Up)
}

/// True when the VIP applies its all-down policy: every backend that could
/// take traffic (admin up) is down.
pub fn fail_open(vip: &Vip, health: &HashMap<Target, Health>) -> bool {
    vip.all_down == AllDown::FailOpen
        && vip.backends.iter().any(|b| b.state == AdminState::Up)
        && vip.backends.iter().filter(|b| b.state == AdminState::Up).all(|b| health_of(vip, b, health) == Health::Down)
}

/// The factors of one backend (neutral when the agent set none).
pub fn factors_of(vip: &Vip, b: &BackendConfig, factors: &HashMap<Target, WeightFactors>) -> WeightFactors {
    factors.get(&Target { vip: vip.key(), backend: b.address }).copied().unwrap_or_default()
}

/// The backends that take new flows: in the table with a weight above 0.
pub fn taking_new_flows(
    config: &Config,
    health: &HashMap<Target, Health>,
    factors: &HashMap<Target, WeightFactors>,
) -> HashSet<Target> {
    let mut out = HashSet::new();
    for vip in &config.vips {
        for (b, (_, weight)) in vip.backends.iter().zip(placements(vip, health, factors)) {
            if weight > 0 {
                out.insert(Target { vip: vip.key(), backend: b.address });
            }
        }
    }
    out
}

/// Each backend's placement and table weight, in the VIP's order: its
/// health, the VIP's all-down policy, its factors and the VIP's weight scale.
pub fn placements(
    vip: &Vip,
    health: &HashMap<Target, Health>,
    factors: &HashMap<Target, WeightFactors>,
) -> Vec<(Placement, u32)> {
    let open = fail_open(vip, health);
    let scale = weight_scale(vip, factors);
    vip.backends
        .iter()
        .map(|b| placement(vip, &scaled(b, scale), health_of(vip, b, health), open, factors_of(vip, b, factors)))
        .collect()
}

/// What a VIP's configured weights are multiplied by in the table: 1 while
/// every factor of its backends is neutral; otherwise enough for its
/// smallest weight to reach 100 (within `MAX_WEIGHT`), so that a percentage
/// (slow start, an agent's `N%`, a hot-spot correction) changes the table
/// even for a weight of 1. Maglev and round-robin use only the ratios of the
/// weights, so scaling every weight of a VIP alike leaves its table unchanged.
pub fn weight_scale(vip: &Vip, factors: &HashMap<Target, WeightFactors>) -> u32 {
    let percentages = |f: WeightFactors| [f.agent_pct, f.slowstart_pct, f.hotspot_pct];
    if vip.backends.iter().all(|b| percentages(factors_of(vip, b, factors)) == [100; 3]) {
        return 1;
    }
    let weights = vip.backends.iter().map(|b| b.weight).filter(|&w| w > 0);
    let (min, max) = weights.fold((u32::MAX, 1), |(lo, hi), w| (lo.min(w), hi.max(w)));
    100u32.div_ceil(min.max(1)).min(crate::config::MAX_WEIGHT / max).max(1)
}

/// A backend with its weight scaled by [`weight_scale`], as placed in the table.
fn scaled(b: &BackendConfig, scale: u32) -> BackendConfig {
    BackendConfig { weight: b.weight * scale, ..b.clone() }
}

/// The configuration as the data path must see it.
pub fn effective(
    config: &Config,
    health: &HashMap<Target, Health>,
    factors: &HashMap<Target, WeightFactors>,
) -> Config {
    let mut out = config.clone();
    for vip in &mut out.vips {
        let placed = placements(vip, health, factors);
        vip.backends = std::mem::take(&mut vip.backends)
            .into_iter()
            .zip(placed)
            .filter(|(_, (place, _))| *place != Placement::Removed)
            .map(|(b, (_, weight))| BackendConfig { weight, ..b })
            .collect();
    }
    out
}

#[cfg(test)]
pub(crate) mod tests;
