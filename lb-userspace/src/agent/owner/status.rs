//! `lb status --json`: what the owner reports, built from the wanted
//! configuration, the health and factors it holds and the maps' counters.

use std::{collections::HashMap, net::IpAddr};

use serde::Serialize;

use super::Owner;
use crate::agent::{
    agent_check::AgentStatus,
    health::{Health, ProbeStatus, Target},
    state,
};
use crate::config::{AdminState, CheckKind};

/// `lb status --json`: everything an operator looks at.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    pub interface: String,
    pub config_file: String,
    pub layout_version: u32,
    pub uptime_s: u64,
    pub vips: Vec<VipStatus>,
    /// Every `lb_common::stats` counter by label (packets).
    pub counters: HashMap<String, u64>,
    pub transitions: Vec<Transition>,
    pub table_rebuilds: u64,
    pub last_rebuild_ms: f64,
    /// Announcements through BIRD (`None`: no `[bgp]` table).
    pub bgp: Option<crate::agent::bgp::BgpStatus>,
    pub hot_spot: HotSpotStatus,
    /// The agent's recounts of active connections.
    pub active_recount: ActiveRecount,
}

/// The hot-spot controller's settings and latest weight changes.
#[derive(Clone, Debug, Default, Serialize)]
pub struct HotSpotStatus {
    pub detect: bool,
    pub correct: bool,
    pub factor: f64,
    pub adjustments_total: u64,
    /// The latest weight changes, oldest first.
    pub adjustments: Vec<crate::agent::hotspot::Adjustment>,
}

/// `Status::active_recount`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ActiveRecount {
    pub recounts: u64,
    /// Connection-table entries the last recount read.
    pub entries: u64,
    /// Entries the connection table holds at most (`global.conntrack_capacity`
    /// when it was created).
    pub capacity: u32,
    /// Active flows it found, over all backends.
    pub active: u64,
    /// How long it took (the walk and the counter writes).
    pub took_ms: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct VipStatus {
    pub vip: String,
    pub forwarding: crate::config::Forwarding,
    pub algorithm: crate::config::Algorithm,
    pub ring_size: u32,
    pub health_check: Option<CheckKind>,
    pub all_down: crate::config::AllDown,
    /// Every admin-up backend is down and the VIP uses them anyway.
    pub failing_open: bool,
    /// Digest of the live Maglev table (backend addresses per entry): equal
    /// on every lb instance that holds the same backend set.
    pub fingerprint: String,
    /// BIRD announces the VIP's address for this instance.
    pub announced: bool,
    /// Why this VIP's choices depend on this instance's own view (empty:
    /// every instance with the same configuration agrees on every flow).
    pub per_instance: Vec<String>,
    pub packets: u64,
    pub bytes: u64,
    pub backends: Vec<BackendStatus>,
}

#[derive(Clone, Debug, Serialize)]
pub struct BackendStatus {
    pub address: IpAddr,
    pub weight: u32,
    pub effective_weight: u32,
    /// What the agent applied on top of `weight` (percentages).
    pub factors: state::WeightFactors,
    pub state: AdminState,
    pub health: Health,
    pub placement: state::Placement,
    pub packets: u64,
    pub bytes: u64,
    /// New flows the ring gave it since the data path was loaded.
    pub new_flows: u64,
    /// Active connections (see README, "Balancing algorithms").
    pub active_connections: u64,
    pub probe: Option<ProbeStatus>,
    /// The backend's agent check (`None`: the VIP has none).
    pub agent: Option<AgentStatus>,
    /// Its load against its weighted share (`None`: not measured yet).
    pub hot_spot: Option<crate::agent::hotspot::BackendHotSpot>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Transition {
    pub at_unix_ms: u64,
    pub vip: String,
    pub backend: IpAddr,
    pub health: Health,
    pub reason: String,
    /// From the deciding probe's result to the updated table being live
    /// (the generation flip done), in microseconds.
    pub table_live_after_us: Option<u64>,
}

impl Owner {
    pub fn status(&self) -> Status {
        let vip_counters: HashMap<_, _> = self.dp.vip_counters().unwrap_or_default().into_iter().collect();
        let backend_counters: HashMap<_, _> =
            self.dp.backend_counters().unwrap_or_default().into_iter().map(|(v, a, c)| ((v, a), c)).collect();
        let vips = self
            .config
            .vips
            .iter()
            .map(|vip| {
                let open = state::fail_open(vip, &self.health);
                let key = vip.key();
                let c = vip_counters.get(&key).copied().unwrap_or_default();
                let backends = vip
                    .backends
                    .iter()
                    .zip(state::placements(vip, &self.health, &self.factors))
                    .map(|(b, (placement, effective_weight))| {
                        let health = state::health_of(vip, b, &self.health);
                        let factors = state::factors_of(vip, b, &self.factors);
                        let c = backend_counters.get(&(key, b.address)).copied().unwrap_or_default();
                        let target = Target { vip: key, backend: b.address };
                        let (probe, agent) = (self.monitor.status(&target), self.agents.status(&target));
                        BackendStatus {
                            address: b.address,
                            weight: b.weight,
                            effective_weight,
                            factors,
                            state: b.state,
                            health,
                            placement,
                            packets: c.packets,
                            bytes: c.bytes,
                            new_flows: c.new_flows,
                            active_connections: c.active,
                            probe,
                            agent,
                            hot_spot: self
                                .hotspot
                                .backend(&self.config.hot_spot, &Target { vip: key, backend: b.address }),
                        }
                    })
                    .collect();
                VipStatus {
                    vip: vip.to_string(),
                    forwarding: vip.forwarding,
                    algorithm: vip.algorithm,
                    ring_size: vip.ring_size,
                    health_check: vip.health_check.as_ref().map(|h| h.kind.clone()),
                    all_down: vip.all_down,
                    failing_open: open,
                    fingerprint: self.dp.fingerprint(&key).map(|f| format!("{f:016x}")).unwrap_or_default(),
                    announced: self.bgp.as_ref().is_some_and(|b| b.announced(vip.address)),
                    per_instance: state::per_instance_reasons(vip, &self.factors),
                    packets: c.packets,
                    bytes: c.bytes,
                    backends,
                }
            })
            .collect();
        let counters = self
            .dp
            .stats()
            .map(|s| lb_common::stats::LABELS.iter().zip(s).map(|(l, c)| (l.to_string(), c.packets)).collect())
            .unwrap_or_default();
        Status {
            interface: self.interface.clone(),
            config_file: self.config_path.display().to_string(),
            layout_version: lb_common::LAYOUT_VERSION,
            uptime_s: self.started.elapsed().as_secs(),
            vips,
            counters,
            transitions: self.transitions.iter().cloned().collect(),
            table_rebuilds: self.rebuilds,
            last_rebuild_ms: self.last_rebuild.as_secs_f64() * 1e3,
            bgp: self.bgp.as_ref().map(crate::agent::bgp::Speaker::status),
            hot_spot: HotSpotStatus {
                detect: self.config.hot_spot.detect,
                correct: self.config.hot_spot.correct,
                factor: self.config.hot_spot.factor,
                adjustments_total: self.hotspot.adjustments_total(),
                adjustments: self.hotspot.adjustments(),
            },
            active_recount: ActiveRecount {
                recounts: self.recounts,
                entries: self.last_recount.map_or(0, |r| r.entries),
                capacity: self.conntrack_capacity,
                active: self.last_recount.map_or(0, |r| r.active),
                took_ms: self.last_recount.map_or(0.0, |r| r.took.as_secs_f64() * 1e3),
            },
        }
    }
}
