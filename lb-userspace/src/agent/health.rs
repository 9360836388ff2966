//! Health checks as HAProxy runs them: one task per (VIP, backend) probes the
//! backend every interval; `rise` consecutive successes bring a down backend
//! up, `fall` consecutive failures take an up one down. Only transitions are
//! reported, as [`HealthEvent`]s to the owner of the data path. The wait
//! between probes follows the backend's state (see [`pace`]).

mod pace;
pub use pace::{Intervals, Pace, ProbeRecord, RECENT_PROBES, pace};

use std::{
    collections::{HashMap, HashSet, VecDeque},
    fmt,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use crate::unix_ms;
use lb_common::{
    VipKey,
    net::{IPPROTO_TCP, IPPROTO_UDP},
    words_addr,
};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
    sync::mpsc,
};
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, info};

use crate::config::{self, HealthCheck};

/// Longest HTTP status line read: a misbehaving backend cannot feed us forever.
const MAX_STATUS_LINE: u64 = 512;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckKind {
    /// The TCP handshake completes.
    Tcp,
    /// `GET path` answers with `expect_status`.
    Http { path: String, expect_status: u16 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckSpec {
    pub kind: CheckKind,
    /// Port probed on the backend's own address.
    pub port: u16,
    pub intervals: Intervals,
    /// For the whole check: connect, and for HTTP the request and status line.
    pub timeout: Duration,
    /// Consecutive successes that bring a down backend up.
    pub rise: u32,
    /// Consecutive failures that take an up backend down.
    pub fall: u32,
}

impl CheckSpec {
    /// The check a VIP configures; the port defaults to the VIP's.
    pub fn from_config(hc: &HealthCheck, vip_port: u16) -> Self {
        let kind = match hc.kind {
            config::CheckKind::Tcp => CheckKind::Tcp,
            config::CheckKind::Http => CheckKind::Http { path: hc.path.clone(), expect_status: hc.expect_status },
        };
        CheckSpec {
            kind,
            port: hc.port.unwrap_or(vip_port),
            intervals: Intervals::new(hc.interval_ms, hc.fastinter_ms, hc.downinter_ms),
            timeout: Duration::from_millis(hc.timeout_ms),
            rise: hc.rise,
            fall: hc.fall,
        }
    }
}

/// One probed backend of one VIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    pub vip: VipKey,
    pub backend: IpAddr,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let vip = SocketAddr::new(words_addr(self.vip.addr, self.vip.family), u16::from_be(self.vip.port));
        match self.vip.proto {
            IPPROTO_TCP => write!(f, "{vip}/tcp backend {}", self.backend),
            IPPROTO_UDP => write!(f, "{vip}/udp backend {}", self.backend),
            p => write!(f, "{vip}/{p} backend {}", self.backend),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Up,
    Down,
}

/// A transition of one target, with what the check that caused it saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthEvent {
    pub target: Target,
    pub health: Health,
    pub reason: String,
    /// When the check that crossed the threshold completed: the owner
    /// reports how long the data path took to follow.
    pub decided: std::time::Instant,
}

/// What the monitor knows about one target, for status and metrics.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ProbeStatus {
    pub health: Health,
    pub consecutive_ok: u32,
    pub consecutive_failed: u32,
    pub checks: u64,
    pub failures: u64,
    pub transitions: u64,
    /// What the last check saw ("http status 200", "connect: ...").
    pub last_result: String,
    /// Last transition, or when probing started if there was none.
    pub last_change_unix_ms: u64,
    /// The wait before the next probe: which interval, and its length.
    pub pace: Pace,
    pub interval_ms: u64,
    /// The last probes, oldest first.
    pub recent: VecDeque<ProbeRecord>,
}

impl ProbeStatus {
    fn new(health: Health, intervals: &Intervals) -> Self {
        let pace = pace(&Hysteresis::new(health, 1, 1));
        ProbeStatus {
            health,
            consecutive_ok: 0,
            consecutive_failed: 0,
            checks: 0,
            failures: 0,
            transitions: 0,
            last_result: "not checked yet".into(),
            last_change_unix_ms: unix_ms(),
            pace,
            interval_ms: intervals.of(pace).as_millis() as u64,
            recent: VecDeque::new(),
        }
    }
}

/// HAProxy's rise/fall counting: any success resets the failure run and
/// vice versa, so results short of a threshold never change the health.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hysteresis {
    pub health: Health,
    /// Current run of successes.
    pub ok: u32,
    /// Current run of failures.
    pub failed: u32,
    pub rise: u32,
    pub fall: u32,
}

impl Hysteresis {
    pub fn new(health: Health, rise: u32, fall: u32) -> Self {
        Hysteresis { health, ok: 0, failed: 0, rise, fall }
    }

    /// Counts one check; returns the new health when this check changed it.
    pub fn record(&mut self, success: bool) -> Option<Health> {
        let (to, run, threshold) = if success {
            self.failed = 0;
            self.ok = self.ok.saturating_add(1);
            (Health::Up, self.ok, self.rise)
        } else {
            self.ok = 0;
            self.failed = self.failed.saturating_add(1);
            (Health::Down, self.failed, self.fall)
        };
        if self.health == to || run < threshold {
            return None;
        }
        self.health = to;
        Some(to)
    }
}

/// The running probes. Dropping it stops them all.
pub struct HealthMonitor {
    events: mpsc::Sender<HealthEvent>,
    cancel: CancellationToken,
    probes: HashMap<Target, Probe>,
}

/// A running check's task: what it checks, what it saw.
pub(super) struct Running<S, St> {
    pub spec: S,
    pub status: Arc<Mutex<St>>,
    /// Cancels the task when dropped.
    pub stop: DropGuard,
}

type Probe = Running<CheckSpec, ProbeStatus>;

impl HealthMonitor {
    /// Transitions go to `events`; cancelling `cancel` stops every probe.
    pub fn new(events: mpsc::Sender<HealthEvent>, cancel: CancellationToken) -> Self {
        HealthMonitor { events, cancel, probes: HashMap::new() }
    }

    /// Makes the running probes match `wanted`: starts probes for new targets
    /// (with the health given), stops those for targets no longer wanted, and
    /// restarts a probe whose spec changed, keeping its current health.
    /// Must be called within a tokio runtime.
    pub fn sync(&mut self, wanted: &[(Target, CheckSpec, Health)]) {
        let keep: HashSet<Target> = wanted.iter().map(|(t, ..)| *t).collect();
        self.probes.retain(|t, _| keep.contains(t));
        for (target, spec, health) in wanted {
            let status = match self.probes.remove(target) {
                Some(p) if p.spec == *spec => {
                    self.probes.insert(*target, p);
                    continue;
                }
                Some(p) => {
                    // Stopped before its health is read: a stopped task never
                    // changes it again (see `run_probe`).
                    drop(p.stop);
                    let mut s = lock(&p.status);
                    s.consecutive_ok = 0;
                    s.consecutive_failed = 0;
                    drop(s);
                    p.status
                }
                None => Arc::new(Mutex::new(ProbeStatus::new(*health, &spec.intervals))),
            };
            let token = self.cancel.child_token();
            tokio::spawn(run_probe(*target, spec.clone(), Arc::clone(&status), self.events.clone(), token.clone()));
            self.probes.insert(*target, Probe { spec: spec.clone(), status, stop: token.drop_guard() });
        }
    }

    pub fn status(&self, target: &Target) -> Option<ProbeStatus> {
        self.probes.get(target).map(|p| lock(&p.status).clone())
    }

    /// Every probed target, in target order.
    pub fn statuses(&self) -> Vec<(Target, ProbeStatus)> {
        let mut all: Vec<_> = self.probes.iter().map(|(t, p)| (*t, lock(&p.status).clone())).collect();
        all.sort_by_key(|(t, _)| *t);
        all
    }
}

/// A probe's task: checks `target` until cancelled, waiting the interval
/// its pace asks for between probes.
async fn run_probe(
    target: Target,
    spec: CheckSpec,
    status: Arc<Mutex<ProbeStatus>>,
    events: mpsc::Sender<HealthEvent>,
    cancel: CancellationToken,
) {
    let mut counts = Hysteresis::new(lock(&status).health, spec.rise, spec.fall);
    // The first probe is immediate; one slower than the interval delays the
    // next rather than bunching probes up.
    let mut next = tokio::time::Instant::now();
    loop {
        let started = next;
        let result = tokio::select! {
            _ = cancel.cancelled() => return,
            r = async {
                tokio::time::sleep_until(started).await;
                check(target.backend, &spec).await
            } => r,
        };
        let ok = result.is_ok();
        let seen = result.unwrap_or_else(|e| e);
        debug!(%target, ok, result = %seen, "health check");

        let mut counted = counts;
        let change = counted.record(ok);
        let pace = pace(&counted);
        let wait = spec.intervals.of(pace);
        next = (started + wait).max(tokio::time::Instant::now());
        // Room for the event is taken before the transition is committed, so
        // the owner never misses a transition the status shows.
        let permit = match change {
            None => None,
            Some(_) => tokio::select! {
                _ = cancel.cancelled() => return,
                p = events.reserve() => match p {
                    Ok(p) => Some(p),
                    Err(_) => return, // nobody listens any more
                },
            },
        };

        let from = counts.health;
        {
            let mut s = lock(&status);
            // `sync` carries a stopped probe's health over to its restarted
            // successor: once stopped, this task must not change it.
            if cancel.is_cancelled() {
                return;
            }
            counts = counted;
            s.health = counts.health;
            s.pace = pace;
            s.interval_ms = wait.as_millis() as u64;
            let at_unix_ms = unix_ms();
            let record = ProbeRecord { at_unix_ms, ok, health: counts.health, next: pace, next_ms: s.interval_ms };
            pace::remember(&mut s.recent, record);
            s.consecutive_ok = counts.ok;
            s.consecutive_failed = counts.failed;
            s.checks += 1;
            s.failures += u64::from(!ok);
            s.last_result.clone_from(&seen);
            if let (Some(health), Some(permit)) = (change, permit) {
                s.transitions += 1;
                s.last_change_unix_ms = unix_ms();
                permit.send(HealthEvent { target, health, reason: seen.clone(), decided: std::time::Instant::now() });
            }
        }
        if let Some(to) = change {
            info!(%target, ?from, ?to, reason = %seen, "health check transition");
        }
    }
}

/// One check of `backend`: what was seen, as Ok when healthy.
async fn check(backend: IpAddr, spec: &CheckSpec) -> Result<String, String> {
    tokio::time::timeout(spec.timeout, attempt(backend, spec))
        .await
        .unwrap_or_else(|_| Err(format!("timeout after {} ms", spec.timeout.as_millis())))
}

async fn attempt(backend: IpAddr, spec: &CheckSpec) -> Result<String, String> {
    let mut stream = TcpStream::connect((backend, spec.port)).await.map_err(|e| format!("connect: {e}"))?;
    let CheckKind::Http { path, expect_status } = &spec.kind else {
        return Ok("connected".into());
    };
    let host = match backend {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    };
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: lb-health\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.map_err(|e| format!("send: {e}"))?;
    let mut line = Vec::new();
    BufReader::new(stream.take(MAX_STATUS_LINE))
        .read_until(b'\n', &mut line)
        .await
        .map_err(|e| format!("receive: {e}"))?;
    if line.is_empty() {
        return Err("connection closed before the status line".into());
    }
    match parse_status_line(&line)? {
        status if status == *expect_status => Ok(format!("http status {status}")),
        status => Err(format!("http status {status}, expected {expect_status}")),
    }
}

/// The status code of `HTTP/x.y NNN reason`.
fn parse_status_line(line: &[u8]) -> Result<u16, String> {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end_matches(['\r', '\n']);
    let mut words = text.splitn(3, ' ');
    match (words.next(), words.next()) {
        (Some(version), Some(code))
            if version.starts_with("HTTP/") && code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit()) =>
        {
            Ok(code.parse().expect("three digits"))
        }
        _ => Err(format!("bad status line {:?}", text.chars().take(64).collect::<String>())),
    }
}

/// Status is plain data: a panic elsewhere leaves nothing half-updated worth refusing.
pub(super) fn lock<St>(status: &Mutex<St>) -> MutexGuard<'_, St> {
    status.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
