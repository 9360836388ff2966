//! Announcing this instance's VIPs through the local BIRD, so that the
//! upstream router spreads flows over every ready lb instance (ECMP).
//!
//! The agent never speaks BGP itself: it writes a BIRD include file with one
//! static blackhole route per VIP address it is ready to serve (the
//! operator's bird.conf exports them to the router), then asks BIRD to
//! re-read its configuration over the control socket. The file is the
//! whole truth: a BIRD that restarts reads it again, and a failed
//! `configure` is retried until BIRD takes it.
//!
//! An address is announced while the data path forwards its VIPs: the
//! program is attached (the speaker starts after the attach) and at least
//! one VIP on that address has a backend in its table. With `all_down =
//! "fail-open"` that holds while any backend is admin-up; with `"drop"` a
//! VIP whose every backend is down is withdrawn, so the router prefers the
//! instances that can still reach one. A VIP whose backends are all
//! draining stays announced: its established flows must keep arriving.
//! `lb drain-node` and SIGTERM withdraw everything, whatever the health.

mod bird;

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    net::IpAddr,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::unix_ms;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

pub use bird::{BirdError, Reply, command};

use super::owner::ApiError;
use crate::config::{BgpConfig, Config};

/// Bound of one exchange with BIRD.
const BIRD_TIMEOUT: Duration = Duration::from_secs(10);
/// Retries of a failed update: first after this, doubling up to the max.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// VIP addresses the data path is ready to serve, from the effective
/// configuration (the one the maps hold: removed backends are already out).
pub fn ready_addresses(effective: &Config) -> BTreeSet<IpAddr> {
    effective.vips.iter().filter(|v| !v.backends.is_empty()).map(|v| v.address).collect()
}

/// The include file: an IPv4 and an IPv6 static protocol, one blackhole
/// route per address (BIRD accepts a static protocol without routes).
pub fn render(protocol: &str, addresses: &BTreeSet<IpAddr>) -> String {
    let mut out = String::from(
        "# Written by the lb agent: the VIP addresses this instance is ready to serve.\n\
         # Do not edit; include it from bird.conf and export these protocols' routes to BGP.\n",
    );
    for (suffix, channel, v4) in [("4", "ipv4", true), ("6", "ipv6", false)] {
        let _ = writeln!(out, "protocol static {protocol}{suffix} {{\n  {channel};");
        for a in addresses.iter().filter(|a| a.is_ipv4() == v4) {
            let len = if v4 { 32 } else { 128 };
            let _ = writeln!(out, "  route {a}/{len} blackhole;");
        }
        out.push_str("}\n");
    }
    out
}

/// Replaces `path` atomically: BIRD never reads half a file.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path)).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("writing {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error(transparent)]
    Bird(#[from] BirdError),
}

/// Writes the file for `addresses` and makes BIRD re-read its configuration.
pub async fn update(cfg: &BgpConfig, addresses: &BTreeSet<IpAddr>) -> Result<String, UpdateError> {
    write_atomically(&cfg.config_file, &render(&cfg.protocol, addresses))
        .map_err(|source| UpdateError::Write { path: cfg.config_file.display().to_string(), source })?;
    let reply = command(&cfg.bird_socket, "configure", BIRD_TIMEOUT).await?;
    Ok(reply.text())
}

/// The result of the last update.
#[derive(Clone, Debug, Serialize)]
pub struct UpdateResult {
    pub at_unix_ms: u64,
    pub ok: bool,
    /// BIRD's answer, or the error.
    pub message: String,
    pub took_ms: f64,
}

/// `bgp` in `lb status --json`.
#[derive(Clone, Debug, Serialize)]
pub struct BgpStatus {
    pub bird_socket: String,
    pub config_file: String,
    /// `lb drain-node`: everything withdrawn, whatever the health.
    pub drained: bool,
    /// Withdrawn for a stop (SIGTERM).
    pub stopping: bool,
    /// Addresses the data path is ready to serve.
    pub ready: Vec<IpAddr>,
    /// Addresses in the file BIRD last accepted.
    pub announced: Vec<IpAddr>,
    /// The file differs from what BIRD accepted: an update failed and is retried.
    pub pending: bool,
    pub updates: u64,
    pub failures: u64,
    pub last_update: Option<UpdateResult>,
}

type Answer = oneshot::Sender<Result<String, ApiError>>;

enum Msg {
    Ready(BTreeSet<IpAddr>),
    Drain(bool, Answer),
    Stop(Answer),
}

/// Handle on the speaker task; cheap to clone.
#[derive(Clone)]
pub struct Speaker {
    tx: mpsc::UnboundedSender<Msg>,
    status: Arc<Mutex<BgpStatus>>,
    grace: Duration,
}

impl Speaker {
    /// Starts the task; it announces nothing until the first [`Speaker::ready`].
    pub fn start(cfg: BgpConfig) -> Speaker {
        let drained = cfg.drain_file.exists();
        if drained {
            warn!(drain_file = %cfg.drain_file.display(), "starting drained (lb undrain-node announces again)");
        }
        let status = Arc::new(Mutex::new(BgpStatus {
            bird_socket: cfg.bird_socket.display().to_string(),
            config_file: cfg.config_file.display().to_string(),
            drained,
            stopping: false,
            ready: Vec::new(),
            announced: Vec::new(),
            pending: false,
            updates: 0,
            failures: 0,
            last_update: None,
        }));
        let (tx, rx) = mpsc::unbounded_channel();
        let grace = Duration::from_millis(cfg.withdraw_grace_ms);
        tokio::spawn(Task { cfg, status: status.clone(), rx }.run(drained));
        Speaker { tx, status, grace }
    }

    /// The addresses the data path is ready to serve now (sent after every
    /// change of the maps; the task acts only on differences).
    pub fn ready(&self, addresses: BTreeSet<IpAddr>) {
        let _ = self.tx.send(Msg::Ready(addresses));
    }

    /// `lb drain-node` / `lb undrain-node`; `reply` gets the outcome once
    /// BIRD took the change (or refused it).
    pub fn set_drained(&self, drained: bool, reply: Answer) {
        if let Err(mpsc::error::SendError(Msg::Drain(_, reply))) = self.tx.send(Msg::Drain(drained, reply)) {
            let _ = reply.send(Err(ApiError::new(503, "the BGP speaker has stopped")));
        }
    }

    /// Withdraws everything for a planned stop, then waits the grace period
    /// so the router moves the flows before anything else changes.
    pub async fn withdraw_for_stop(&self) {
        let (reply, answer) = oneshot::channel();
        if self.tx.send(Msg::Stop(reply)).is_err() {
            return;
        }
        match answer.await {
            Ok(Ok(msg)) => info!(grace_ms = self.grace.as_millis() as u64, "{msg}; waiting before stopping"),
            Ok(Err(e)) => warn!(error = %e, "withdrawing the VIPs before stopping failed"),
            Err(_) => return,
        }
        tokio::time::sleep(self.grace).await;
    }

    pub fn status(&self) -> BgpStatus {
        self.status.lock().expect("bgp status lock").clone()
    }

    /// Whether BIRD currently has `address` from this instance.
    pub fn announced(&self, address: IpAddr) -> bool {
        self.status.lock().expect("bgp status lock").announced.contains(&address)
    }
}

struct Task {
    cfg: BgpConfig,
    status: Arc<Mutex<BgpStatus>>,
    rx: mpsc::UnboundedReceiver<Msg>,
}

impl Task {
    async fn run(mut self, mut drained: bool) {
        let mut ready: Option<BTreeSet<IpAddr>> = None;
        let mut stopping = false;
        // A drain marker that could not be written: reported with the answer.
        let mut marker_error: Option<String> = None;
        // What BIRD last accepted; `None` until the first update, so a
        // restarted agent rewrites whatever an earlier one left.
        let mut applied: Option<BTreeSet<IpAddr>> = None;
        let mut waiting: Vec<Answer> = Vec::new();
        let mut retry: Option<(Instant, Duration)> = None;
        loop {
            let msg = match retry {
                Some((at, _)) => tokio::select! {
                    m = self.rx.recv() => m.map(Some),
                    _ = tokio::time::sleep_until(at.into()) => Some(None),
                },
                None => self.rx.recv().await.map(Some),
            };
            let Some(first) = msg else { break };
            // Take everything queued, so a burst of changes costs one update.
            let mut batch: Vec<Msg> = first.into_iter().collect();
            while let Ok(m) = self.rx.try_recv() {
                batch.push(m);
            }
            for m in batch {
                match m {
                    Msg::Ready(set) => ready = Some(set),
                    Msg::Drain(d, reply) => {
                        drained = d;
                        marker_error = set_marker(&self.cfg.drain_file, d).err();
                        waiting.push(reply);
                    }
                    Msg::Stop(reply) => {
                        stopping = true;
                        waiting.push(reply);
                    }
                }
            }
            // Before the first Ready the data path is not attached yet.
            let Some(ready_now) = &ready else { continue };
            let target = if drained || stopping { BTreeSet::new() } else { ready_now.clone() };
            let outcome = if applied.as_ref() == Some(&target) {
                retry = None;
                Ok(describe(&target, "nothing to change"))
            } else {
                let started = Instant::now();
                let result = update(&self.cfg, &target).await;
                let took = started.elapsed();
                let ok = result.is_ok();
                let message = match &result {
                    Ok(reply) => reply.clone(),
                    Err(e) => e.to_string(),
                };
                {
                    let mut s = self.status.lock().expect("bgp status lock");
                    s.updates += 1;
                    s.failures += u64::from(!ok);
                    s.last_update = Some(UpdateResult {
                        at_unix_ms: unix_ms(),
                        ok,
                        message: message.clone(),
                        took_ms: took.as_secs_f64() * 1e3,
                    });
                }
                match result {
                    Ok(reply) => {
                        info!(announced = ?target, took_ms = took.as_secs_f64() * 1e3, "BIRD reconfigured");
                        applied = Some(target.clone());
                        retry = None;
                        Ok(describe(&target, &reply))
                    }
                    Err(e) => {
                        let wait = retry.map_or(RETRY_FIRST, |(_, w)| (w * 2).min(RETRY_MAX));
                        warn!(error = %e, retry_in_s = wait.as_secs(), "updating BIRD failed");
                        retry = Some((Instant::now() + wait, wait));
                        Err(ApiError::new(502, format!("BIRD did not take the change (retrying): {e}")))
                    }
                }
            };
            {
                let mut s = self.status.lock().expect("bgp status lock");
                s.drained = drained;
                s.stopping = stopping;
                s.ready = ready_now.iter().copied().collect();
                s.announced = applied.iter().flatten().copied().collect();
                s.pending = applied.as_ref() != Some(&target);
            }
            for reply in waiting.drain(..) {
                let _ = reply.send(outcome.clone().map(|m| {
                    let state = if stopping {
                        "stopping"
                    } else if drained {
                        "drained"
                    } else {
                        "undrained"
                    };
                    match &marker_error {
                        Some(e) => format!("{state}: {m} (but the drain marker was not updated: {e})"),
                        None => format!("{state}: {m}"),
                    }
                }));
            }
        }
    }
}

/// Creates (`drained`) or removes the drain marker.
fn set_marker(path: &Path, drained: bool) -> Result<(), String> {
    let result = if drained {
        path.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|()| {
            std::fs::write(path, "lb drain-node: this instance announces nothing until lb undrain-node\n")
        })
    } else {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    };
    result.map_err(|e| {
        warn!(drain_file = %path.display(), error = %e, "updating the drain marker failed");
        format!("{}: {e}", path.display())
    })
}

fn describe(set: &BTreeSet<IpAddr>, bird: &str) -> String {
    if set.is_empty() {
        format!("nothing announced ({bird})")
    } else {
        let list: Vec<String> = set.iter().map(IpAddr::to_string).collect();
        format!("announcing {} ({bird})", list.join(", "))
    }
}

#[cfg(test)]
mod tests;
