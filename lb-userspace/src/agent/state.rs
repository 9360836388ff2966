//! From what the operator asked for (the configuration, admin states) and
//! what the probes see (health) to what the data path must hold: the
//! effective configuration handed to `Dataplane::apply`. Pure, so the
//! rules are tested without a kernel.

use std::collections::HashMap;

use crate::{
    agent::health::{Health, Target},
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

/// A backend's placement and the weight it gets in the table.
pub fn placement(vip: &Vip, b: &BackendConfig, health: Health, fail_open: bool) -> (Placement, u32) {
    match b.state {
        AdminState::Maint => (Placement::Removed, 0),
        AdminState::Drain => (Placement::Draining, 0),
        AdminState::Up if health == Health::Up || fail_open => (Placement::InTable, b.weight),
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

/// The configuration as the data path must see it.
pub fn effective(config: &Config, health: &HashMap<Target, Health>) -> Config {
    let mut out = config.clone();
    for vip in &mut out.vips {
        let open = fail_open(vip, health);
        let original = vip.clone();
        vip.backends = original
            .backends
            .iter()
            .filter_map(|b| {
                let (place, weight) = placement(&original, b, health_of(&original, b, health), open);
                (place != Placement::Removed).then(|| BackendConfig { weight, ..b.clone() })
            })
            .collect();
    }
    out
}

#[cfg(test)]
mod tests;
