//! Agent checks, as HAProxy's agent-check: per backend, every interval, lb
//! connects to the backend's agent port, optionally sends a string, and
//! reads one line in which the backend reports its own weight percentage
//! (`75%`), admin state (`ready`, `drain`, `maint`) and health (`up`,
//! `down`, `fail`, `stopped`, with a reason after `#`); see [`reply`].
//!
//! A reply that changes something goes to the owner as an [`AgentEvent`];
//! the owner keeps the agent's word in the backend's
//! [`WeightFactors`](super::state::WeightFactors), where [`state::placement`]
//! overlays it on the operator's admin state and the health checks. What a
//! reply leaves out stays as it was. A failed exchange (no connection,
//! timeout, no complete line) changes nothing, as in HAProxy: connectivity
//! is the health check's business.

pub mod reply;

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
    sync::mpsc,
    time::MissedTickBehavior,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use reply::{AgentAdmin, MAX_AGENT_PCT, MAX_REPLY, Reply};

use super::{
    health::{Running, Target, lock},
    state::WeightFactors,
};
use crate::config::{AdminState, AgentCheck, Config};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentSpec {
    pub port: u16,
    pub interval: Duration,
    pub timeout: Duration,
    pub send: Option<String>,
}

impl AgentSpec {
    pub fn from_config(a: &AgentCheck) -> Self {
        AgentSpec {
            port: a.port,
            interval: Duration::from_millis(a.interval_ms),
            timeout: Duration::from_millis(a.timeout_ms),
            send: a.send.clone(),
        }
    }
}

/// A reply that differs from the target's previous one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentEvent {
    pub target: Target,
    pub reply: Reply,
}

/// What the agent check of one backend saw, for status.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct AgentStatus {
    pub replies: u64,
    /// Exchanges that failed (they change nothing).
    pub failures: u64,
    /// The last line the agent sent, and what lb made of it.
    pub last_reply: Option<String>,
    pub last_effect: Option<String>,
    pub last_reply_unix_ms: u64,
    pub last_error: Option<String>,
    pub last_error_unix_ms: u64,
}

/// Every agent check of the configuration: one per backend (not in
/// operator maintenance) of each VIP with an `agent_check`.
pub fn targets(config: &Config) -> Vec<(Target, AgentSpec)> {
    let mut out = Vec::new();
    for vip in &config.vips {
        let Some(a) = &vip.agent_check else { continue };
        let spec = AgentSpec::from_config(a);
        for b in vip.backends.iter().filter(|b| b.state != AdminState::Maint) {
            out.push((Target { vip: vip.key(), backend: b.address }, spec.clone()));
        }
    }
    out
}

/// Takes the agent's word out of the factors of backends whose VIP has no
/// agent check (any more).
pub fn forget_unchecked(config: &Config, factors: &mut HashMap<Target, WeightFactors>) {
    let checked: HashSet<_> = config.vips.iter().filter(|v| v.agent_check.is_some()).map(|v| v.key()).collect();
    let neutral = WeightFactors::default();
    for (_, f) in factors.iter_mut().filter(|(t, _)| !checked.contains(&t.vip)) {
        (f.agent_pct, f.agent_admin, f.agent_down) = (neutral.agent_pct, neutral.agent_admin, neutral.agent_down);
    }
}

/// Applies `reply` to the target's factors; true when they changed.
pub fn merge(factors: &mut HashMap<Target, WeightFactors>, target: Target, reply: &Reply) -> bool {
    let f = factors.entry(target).or_default();
    let before = *f;
    if let Some(p) = reply.weight_pct {
        f.agent_pct = p;
    }
    if let Some(a) = reply.admin {
        f.agent_admin = a;
    }
    if let Some(up) = reply.up {
        f.agent_down = !up;
    }
    *f != before
}

/// The running agent checks. Dropping it stops them all.
pub struct AgentMonitor {
    events: mpsc::Sender<AgentEvent>,
    receiver: Option<mpsc::Receiver<AgentEvent>>,
    cancel: CancellationToken,
    agents: HashMap<Target, Running<AgentSpec, AgentStatus>>,
}

impl Default for AgentMonitor {
    fn default() -> Self {
        let (events, receiver) = mpsc::channel(256);
        AgentMonitor { events, receiver: Some(receiver), cancel: CancellationToken::new(), agents: HashMap::new() }
    }
}

impl Drop for AgentMonitor {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl AgentMonitor {
    /// The events of every check; there is one receiver, taken once.
    pub fn take_events(&mut self) -> mpsc::Receiver<AgentEvent> {
        self.receiver.take().unwrap_or_else(|| mpsc::channel(1).1)
    }

    /// Makes the running checks match `wanted`; a check whose spec changed
    /// starts over. Must be called within a tokio runtime.
    pub fn sync(&mut self, wanted: &[(Target, AgentSpec)]) {
        let keep: HashMap<Target, &AgentSpec> = wanted.iter().map(|(t, s)| (*t, s)).collect();
        self.agents.retain(|t, a| keep.get(t) == Some(&&a.spec));
        let missing: Vec<_> = wanted.iter().filter(|(t, _)| !self.agents.contains_key(t)).collect();
        for (target, spec) in missing {
            let status = Arc::new(Mutex::new(AgentStatus::default()));
            let token = self.cancel.child_token();
            let task = run_agent(*target, spec.clone(), Arc::clone(&status), self.events.clone(), token.clone());
            tokio::spawn(task);
            self.agents.insert(*target, Running { spec: spec.clone(), status, stop: token.drop_guard() });
        }
    }

    pub fn status(&self, target: &Target) -> Option<AgentStatus> {
        self.agents.get(target).map(|a| lock(&a.status).clone())
    }
}

/// One agent check's task: asks every interval until cancelled; sends each
/// reply that differs from the previous one.
async fn run_agent(
    target: Target,
    spec: AgentSpec,
    status: Arc<Mutex<AgentStatus>>,
    events: mpsc::Sender<AgentEvent>,
    cancel: CancellationToken,
) {
    let mut ticks = tokio::time::interval(spec.interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut previous: Option<Reply> = None;
    loop {
        let result = tokio::select! {
            _ = cancel.cancelled() => return,
            r = async {
                ticks.tick().await;
                ask(target.backend, &spec).await
            } => r,
        };
        let now = crate::unix_ms();
        let (line, reply) = match result {
            Ok(r) => r,
            Err(e) => {
                debug!(%target, error = %e, "agent check failed; nothing changes");
                let mut s = lock(&status);
                s.failures += 1;
                (s.last_error, s.last_error_unix_ms) = (Some(e), now);
                continue;
            }
        };
        {
            let mut s = lock(&status);
            s.replies += 1;
            (s.last_reply, s.last_effect, s.last_reply_unix_ms) = (Some(line.clone()), Some(reply.to_string()), now);
        }
        if previous.as_ref() == Some(&reply) {
            continue;
        }
        if !reply.warnings.is_empty() {
            warn!(%target, reply = %line, warnings = ?reply.warnings, "agent check reply partly ignored");
        }
        info!(%target, reply = %line, effect = %reply, "agent check reply");
        previous = Some(reply.clone());
        if reply.is_empty() {
            continue;
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            sent = events.send(AgentEvent { target, reply }) => if sent.is_err() { return },
        }
    }
}

/// One exchange: the line read and what it says.
async fn ask(backend: IpAddr, spec: &AgentSpec) -> Result<(String, Reply), String> {
    let exchange = async {
        let mut stream = TcpStream::connect((backend, spec.port)).await.map_err(|e| format!("connect: {e}"))?;
        if let Some(send) = &spec.send {
            stream.write_all(send.as_bytes()).await.map_err(|e| format!("send: {e}"))?;
        }
        let mut buf = Vec::with_capacity(64);
        BufReader::new(stream.take(MAX_REPLY as u64))
            .read_until(b'\n', &mut buf)
            .await
            .map_err(|e| format!("receive: {e}"))?;
        let line = reply::line(&buf)?;
        Ok((line.to_string(), reply::parse(line)))
    };
    tokio::time::timeout(spec.timeout, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("timeout after {} ms", spec.timeout.as_millis())))
}

#[cfg(test)]
mod tests;
