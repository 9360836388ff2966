//! The one task that owns the data path. Everything that changes what the
//! maps hold (a reload, an API call, a health transition) is a message to
//! this task, so changes are applied one at a time, each as a diff between
//! the wanted and the applied state.

use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use crate::unix_ms;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{
    agent_check::{self, AgentEvent, AgentMonitor},
    health::{CheckSpec, Health, HealthEvent, HealthMonitor, Target},
    slowstart::{self, SlowStart},
    state,
};
use crate::{
    config::{AdminState, BackendSpec, Config, ConfigError, VipId, VipSpec},
    dataplane::{ActiveReport, Counted, Dataplane, IdleTimeouts},
};

mod status;
pub use status::{ActiveRecount, BackendStatus, HotSpotStatus, Status, Transition, VipStatus};

/// A change asked for through the API.
#[derive(Debug)]
pub enum Change {
    AddVip(VipSpec),
    DelVip(VipId),
    AddBackend(VipId, BackendSpec),
    DelBackend(VipId, IpAddr),
    SetState(VipId, IpAddr, AdminState),
}

pub enum Request {
    Status(oneshot::Sender<Status>),
    Trace(lb_common::FlowKey, oneshot::Sender<Result<Option<crate::dataplane::Trace>, ApiError>>),
    Metrics(oneshot::Sender<String>),
    Reload(oneshot::Sender<Result<String, ApiError>>),
    Change(Change, oneshot::Sender<Result<String, ApiError>>),
    Capture(super::capture::CaptureOp, oneshot::Sender<Result<serde_json::Value, ApiError>>),
    /// `lb drain-node` (true) / `lb undrain-node` (false).
    Node(bool, oneshot::Sender<Result<String, ApiError>>),
}

/// An API error: an HTTP status and a message that names the problem.
#[derive(Clone, Debug, Serialize, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into() }
    }
}

impl From<ConfigError> for ApiError {
    fn from(e: ConfigError) -> Self {
        ApiError::new(400, e.to_string())
    }
}

/// Cheap, cloneable way to talk to the owner.
#[derive(Clone)]
pub struct OwnerHandle {
    tx: mpsc::Sender<Request>,
}

impl OwnerHandle {
    pub fn new(tx: mpsc::Sender<Request>) -> Self {
        OwnerHandle { tx }
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Request) -> Result<T, ApiError> {
        let (reply, rx) = oneshot::channel();
        let gone = || ApiError::new(503, "the agent is shutting down");
        self.tx.send(make(reply)).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())
    }

    pub async fn status(&self) -> Result<Status, ApiError> {
        self.ask(Request::Status).await
    }

    /// How the live maps route one 5-tuple (`None`: not a VIP).
    pub async fn trace(&self, flow: lb_common::FlowKey) -> Result<Option<crate::dataplane::Trace>, ApiError> {
        self.ask(|reply| Request::Trace(flow, reply)).await?
    }

    pub async fn metrics(&self) -> Result<String, ApiError> {
        self.ask(Request::Metrics).await
    }

    pub async fn reload(&self) -> Result<String, ApiError> {
        self.ask(Request::Reload).await?
    }

    pub async fn change(&self, change: Change) -> Result<String, ApiError> {
        self.ask(|reply| Request::Change(change, reply)).await?
    }

    pub async fn capture(&self, op: super::capture::CaptureOp) -> Result<serde_json::Value, ApiError> {
        self.ask(|reply| Request::Capture(op, reply)).await?
    }

    /// Withdraws (`true`) or announces again this instance's VIPs.
    pub async fn node(&self, drained: bool) -> Result<String, ApiError> {
        self.ask(|reply| Request::Node(drained, reply)).await?
    }
}

/// Transitions kept for status.
const TRANSITIONS_KEPT: usize = 100;

pub struct Owner {
    dp: Dataplane,
    config: Config,
    config_path: PathBuf,
    interface: String,
    health: HashMap<Target, Health>,
    /// Weight factors the agent applies (slow start, agent checks, hot spots);
    /// absent: neutral.
    factors: HashMap<Target, state::WeightFactors>,
    monitor: HealthMonitor,
    /// The effective configuration the maps hold.
    applied: Option<Config>,
    transitions: VecDeque<Transition>,
    started: Instant,
    rebuilds: u64,
    rebuild_seconds: f64,
    last_rebuild: Duration,
    bgp: Option<super::bgp::Speaker>,
    slowstart: SlowStart,
    agents: AgentMonitor,
    hotspot: super::hotspot::Controller,
    /// Active-connection recounts done, and the last one.
    recounts: u64,
    last_recount: Option<ActiveReport>,
    recount_running: bool,
    /// Entries the connection table was created with (0: unreadable).
    conntrack_capacity: u32,
}

impl Owner {
    pub fn new(dp: Dataplane, config: Config, config_path: PathBuf, interface: String, monitor: HealthMonitor) -> Self {
        let conntrack_capacity = dp.conntrack_capacity().unwrap_or_else(|e| {
            warn!(error = %e, "reading the connection table's size");
            0
        });
        Owner {
            conntrack_capacity,
            dp,
            config,
            config_path,
            interface,
            health: HashMap::new(),
            factors: HashMap::new(),
            monitor,
            applied: None,
            transitions: VecDeque::new(),
            started: Instant::now(),
            rebuilds: 0,
            rebuild_seconds: 0.0,
            last_rebuild: Duration::ZERO,
            bgp: None,
            slowstart: SlowStart::default(),
            agents: AgentMonitor::default(),
            hotspot: Default::default(),
            recounts: 0,
            last_recount: None,
            recount_running: false,
        }
    }

    /// Starts announcing; called once the program is attached.
    pub fn set_bgp(&mut self, speaker: super::bgp::Speaker) {
        self.bgp = Some(speaker);
        self.announce();
    }

    /// Tells the speaker which VIP addresses the maps are ready to serve.
    fn announce(&self) {
        if let (Some(bgp), Some(applied)) = (&self.bgp, &self.applied) {
            bgp.ready(super::bgp::ready_addresses(applied));
        }
    }

    /// Attaches the balancer through its pinned link.
    pub fn attach(&mut self, iface: &str, mode: crate::config::XdpModeSetting) -> anyhow::Result<()> {
        Ok(self.dp.attach_pinned(iface, mode)?)
    }

    /// Makes the maps and the probes match the wanted state.
    pub fn sync(&mut self) -> anyhow::Result<()> {
        let known = |t: &Target| {
            self.config.vips.iter().any(|v| v.key() == t.vip && v.backends.iter().any(|b| b.address == t.backend))
        };
        self.health.retain(|t, _| known(t));
        agent_check::forget_unchecked(&self.config, &mut self.factors);
        // Kept only once the maps took the change: a refused one starts no ramp.
        let (mut ramps, now) = (self.slowstart.clone(), Instant::now());
        ramps.observe(&self.config, state::taking_new_flows(&self.config, &self.health, &self.factors), now);
        ramps.apply(&mut self.factors, now);
        self.factors.retain(|t, f| known(t) && !f.is_neutral());
        let wanted = state::effective(&self.config, &self.health, &self.factors);
        if self.applied.as_ref() != Some(&wanted) {
            let started = Instant::now();
            let report = self.dp.apply(&wanted)?;
            self.last_rebuild = started.elapsed();
            self.rebuilds += 1;
            self.rebuild_seconds += self.last_rebuild.as_secs_f64();
            info!(?report, took_ms = self.last_rebuild.as_secs_f64() * 1e3, "data path updated");
            self.applied = Some(wanted);
            self.announce();
        }
        self.slowstart = ramps;
        self.monitor.sync(&self.probe_targets());
        self.agents.sync(&agent_check::targets(&self.config));
        Ok(())
    }

    fn probe_targets(&self) -> Vec<(Target, CheckSpec, Health)> {
        let mut out = Vec::new();
        for vip in &self.config.vips {
            let Some(hc) = &vip.health_check else { continue };
            let spec = CheckSpec::from_config(hc, vip.port);
            for b in vip.backends.iter().filter(|b| b.state != AdminState::Maint) {
                let target = Target { vip: vip.key(), backend: b.address };
                out.push((target, spec.clone(), self.health.get(&target).copied().unwrap_or(Health::Up)));
            }
        }
        out
    }

    /// Serves requests and health events until cancelled; returns the data
    /// path so the caller decides whether to leave it running.
    pub async fn run(
        mut self,
        mut requests: mpsc::Receiver<Request>,
        mut events: mpsc::Receiver<HealthEvent>,
        cancel: CancellationToken,
    ) -> Dataplane {
        let mut agent_events = self.agents.take_events();
        // Periodic work: due one period (read from the configuration on every
        // turn, so a reload changes it at once) after it last ran.
        let (mut hotspot_ran, mut recount_ran) = (None, None);
        let due = |ran: Option<tokio::time::Instant>, ms: u64| {
            ran.map_or_else(tokio::time::Instant::now, |t| t + Duration::from_millis(ms))
        };
        let (counted_tx, mut counted_rx) = mpsc::channel(1);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep_until(due(hotspot_ran, self.config.hot_spot.interval_ms)) => {
                    hotspot_ran = Some(tokio::time::Instant::now());
                    self.on_hotspot_tick();
                }
                Some(req) = requests.recv() => self.handle(req),
                Some(ev) = events.recv() => self.on_health(ev),
                Some(ev) = agent_events.recv() => self.on_agent(ev),
                // Armed only while a slow start ramps.
                _ = slowstart::until(self.slowstart.next_step(Instant::now())) => self.resync("a slow-start step"),
                _ = tokio::time::sleep_until(due(recount_ran, self.config.global.active_reconcile_ms)) => {
                    recount_ran = Some(tokio::time::Instant::now());
                    self.start_recount(&counted_tx);
                }
                Some(counted) = counted_rx.recv() => self.finish_recount(counted),
            }
        }
        self.dp
    }

    /// Feeds the hot-spot controller the counters; applies its weight changes.
    fn on_hotspot_tick(&mut self) {
        let counters = self.dp.backend_counters().unwrap_or_default().into_iter().map(|(v, a, c)| ((v, a), c));
        let inputs = super::hotspot::inputs(&self.config, self.applied.as_ref(), &counters.collect());
        let changes = self.hotspot.tick(&self.config.hot_spot, self.started.elapsed(), unix_ms(), &inputs);
        for (target, pct) in &changes {
            self.factors.entry(*target).or_default().hotspot_pct = *pct;
        }
        if !changes.is_empty()
            && let Err(e) = self.sync()
        {
            warn!(error = %e, "applying a hot-spot weight change failed");
        }
    }

    /// Starts a recount of active connections (see `dataplane::active`) on
    /// a blocking thread, unless one is still running: a walk reads every
    /// slot of the table (64 MiB by default), which requests should not
    /// wait for.
    fn start_recount(&mut self, done: &mpsc::Sender<Counted>) {
        if self.recount_running {
            return;
        }
        let g = &self.config.global;
        let idle = IdleTimeouts { tcp_s: g.tcp_idle_timeout_s, udp_s: g.udp_idle_timeout_s };
        match self.dp.prepare_recount(idle) {
            Ok(job) => {
                self.recount_running = true;
                let done = done.clone();
                tokio::task::spawn_blocking(move || done.blocking_send(job.run()));
            }
            Err(e) => warn!(error = %e, "recounting active connections failed"),
        }
    }

    /// Overwrites the active-connection counters with the recount's.
    fn finish_recount(&mut self, counted: Counted) {
        self.recount_running = false;
        match self.dp.finish_recount(counted) {
            Ok(report) => {
                self.recounts += 1;
                self.last_recount = Some(report);
            }
            Err(e) => warn!(error = %e, "recounting active connections failed"),
        }
    }

    fn handle(&mut self, req: Request) {
        match req {
            Request::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Request::Trace(flow, reply) => {
                let _ = reply.send(self.dp.trace(&flow).map_err(|e| ApiError::new(500, e.to_string())));
            }
            Request::Metrics(reply) => {
                let _ = reply.send(super::metrics::render(&self.status(), self.rebuild_seconds));
            }
            Request::Reload(reply) => {
                let _ = reply.send(self.reload());
            }
            Request::Change(change, reply) => {
                let _ = reply.send(self.change(change));
            }
            Request::Capture(op, reply) => {
                let _ = reply.send(super::capture::apply(&mut self.dp, op));
            }
            Request::Node(drained, reply) => match &self.bgp {
                Some(bgp) => bgp.set_drained(drained, reply),
                None => {
                    let _ = reply.send(Err(ApiError::new(
                        409,
                        "no [bgp] table in the configuration: this instance announces nothing",
                    )));
                }
            },
        }
    }

    /// Re-reads the file; an invalid file changes nothing.
    pub fn reload(&mut self) -> Result<String, ApiError> {
        let mut next = Config::load(&self.config_path)?;
        for w in next.per_instance_warnings() {
            warn!("{w}");
        }
        next.resolve_for(&self.interface).map_err(|e| ApiError::new(400, e.to_string()))?;
        if next.global.interface.as_deref().is_some_and(|i| i != self.interface) {
            warn!("global.interface changed in the file; it takes effect at the next start");
        }
        if next.global.conntrack_capacity != self.config.global.conntrack_capacity {
            warn!(
                "global.conntrack_capacity changed in the file; the connection table keeps its size: \
                 a new size needs `lb detach` and a start (established flows lose their entries)"
            );
        }
        if next.bgp != self.config.bgp {
            warn!("the [bgp] table changed in the file; it takes effect at the next start");
        }
        super::hotspot::warn_if_per_instance(&next);
        self.replace(next)?;
        Ok(format!("reloaded {} ({} VIPs)", self.config_path.display(), self.config.vips.len()))
    }

    fn change(&mut self, change: Change) -> Result<String, ApiError> {
        let not_found = |what: String| ApiError::new(404, what);
        let (next, done) = match change {
            Change::AddVip(spec) => {
                let next = self.config.with_vip(spec)?;
                let vip = next.vips.last().expect("just added").to_string();
                (next, format!("added VIP {vip}"))
            }
            Change::DelVip(id) => {
                if self.config.vip(&id).is_none() {
                    return Err(not_found(format!("no VIP {id}")));
                }
                let mut next = self.config.clone();
                next.vips.retain(|v| v.id() != id);
                (next, format!("removed VIP {id}"))
            }
            Change::AddBackend(id, spec) => {
                let vip = self.config.vip(&id).ok_or_else(|| not_found(format!("no VIP {id}")))?;
                let (address, forwarding) = (spec.address, vip.forwarding);
                let key = format!("backend {address}");
                let backend = spec.validate(&key, id.address, forwarding)?;
                let next = self.config.with_backends(&id, |list| {
                    list.push(backend);
                    Ok(())
                })?;
                (next, format!("added backend {address} to {id}"))
            }
            Change::DelBackend(id, address) => {
                self.find_backend(&id, address)?;
                let next = self.config.with_backends(&id, |list| {
                    list.retain(|b| b.address != address);
                    Ok(())
                })?;
                (next, format!("removed backend {address} from {id}"))
            }
            Change::SetState(id, address, new_state) => {
                self.find_backend(&id, address)?;
                let next = self.config.with_backends(&id, |list| {
                    for b in list.iter_mut().filter(|b| b.address == address) {
                        b.state = new_state;
                    }
                    Ok(())
                })?;
                (next, format!("backend {address} of {id} is now {new_state:?}").to_lowercase())
            }
        };
        self.replace(next)?;
        info!("{done}");
        Ok(done)
    }

    fn find_backend(&self, id: &VipId, address: IpAddr) -> Result<(), ApiError> {
        let vip = self.config.vip(id).ok_or_else(|| ApiError::new(404, format!("no VIP {id}")))?;
        if !vip.backends.iter().any(|b| b.address == address) {
            return Err(ApiError::new(404, format!("no backend {address} in {id}")));
        }
        Ok(())
    }

    /// Switches to `next`; if the kernel refuses it, the previous
    /// configuration is restored so nothing is half-applied.
    fn replace(&mut self, next: Config) -> Result<(), ApiError> {
        let previous = std::mem::replace(&mut self.config, next);
        if let Err(e) = self.sync() {
            warn!(error = %e, "applying failed; restoring the previous configuration");
            self.config = previous;
            self.applied = None;
            if let Err(e2) = self.sync() {
                warn!(error = %e2, "restoring the previous configuration failed too");
            }
            return Err(ApiError::new(500, format!("the data path refused the change: {e:#}")));
        }
        Ok(())
    }

    fn on_health(&mut self, ev: HealthEvent) {
        let Some(vip) = self.config.vips.iter().find(|v| v.key() == ev.target.vip) else { return };
        let vip_name = vip.to_string();
        info!(vip = %vip_name, backend = %ev.target.backend, health = ?ev.health, reason = %ev.reason, "backend health changed");
        self.health.insert(ev.target, ev.health);
        if self.transitions.len() == TRANSITIONS_KEPT {
            self.transitions.pop_front();
        }
        let synced = self.sync();
        if let Err(e) = &synced {
            warn!(error = %e, "updating the data path after a health change failed");
        }
        self.transitions.push_back(Transition {
            at_unix_ms: unix_ms(),
            vip: vip_name,
            backend: ev.target.backend,
            health: ev.health,
            reason: ev.reason,
            table_live_after_us: synced.is_ok().then(|| ev.decided.elapsed().as_micros() as u64),
        });
    }

    fn on_agent(&mut self, ev: AgentEvent) {
        if agent_check::merge(&mut self.factors, ev.target, &ev.reply) {
            info!(target = %ev.target, effect = %ev.reply, "agent check changed the backend");
            self.resync("an agent check reply");
        }
    }

    fn resync(&mut self, why: &str) {
        if let Err(e) = self.sync() {
            warn!(error = %e, "updating the data path after {why} failed");
        }
    }
}
