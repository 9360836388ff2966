//! Long-lived keep-alive connections that record when each answer came and
//! from which backend, so a test can tell how long a flow stalled while the
//! router moved it, and whether it kept its backend.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::netns::abort_requested;
use crate::traffic::open_keepalive;

#[derive(Debug, Clone)]
pub struct FlowLog {
    /// The client's source port (the router hashes it).
    pub sport: u16,
    /// When each answer arrived, and the backend it named.
    pub answers: Vec<(Instant, String)>,
    pub error: Option<String>,
}

impl FlowLog {
    /// Every answer named the same backend.
    pub fn sticky(&self) -> bool {
        self.answers.first().is_some_and(|(_, b)| self.answers.iter().all(|(_, x)| x == b))
    }
    /// First answer that arrived at or after `t`.
    pub fn first_after(&self, t: Instant) -> Option<Instant> {
        self.answers.iter().map(|(at, _)| *at).find(|at| *at >= t)
    }
    /// Longest time between two answers that ended after `since`.
    pub fn longest_gap_after(&self, since: Instant) -> Duration {
        self.answers.windows(2).filter(|w| w[1].0 >= since).map(|w| w[1].0 - w[0].0).max().unwrap_or_default()
    }
}

/// Keep-alive connections, each on its own thread sending one request
/// every `period` until stopped (bounded by `max`). A connection stops at
/// its first failure, which is recorded.
pub struct Flows {
    stop: Arc<AtomicBool>,
    logs: Arc<Vec<Mutex<FlowLog>>>,
    handles: Vec<JoinHandle<()>>,
}

impl Flows {
    pub fn start(
        ns: &str,
        target: SocketAddr,
        count: usize,
        period: Duration,
        op_timeout: Duration,
        max: Duration,
    ) -> Result<Flows> {
        let conns = open_keepalive(ns, target, count, op_timeout)?;
        let now = Instant::now();
        let logs: Arc<Vec<Mutex<FlowLog>>> = Arc::new(
            conns
                .iter()
                .map(|(c, backend)| {
                    let sport = c.local_addr().map(|a| a.port()).unwrap_or_default();
                    Mutex::new(FlowLog { sport, answers: vec![(now, backend.clone())], error: None })
                })
                .collect(),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let end = now + max;
        let mut handles = Vec::new();
        for (i, (mut c, _)) in conns.into_iter().enumerate() {
            let (stop, logs) = (stop.clone(), logs.clone());
            let h = thread::Builder::new()
                .name(format!("flow-{i}"))
                .spawn(move || {
                    while !stop.load(Ordering::SeqCst) && !abort_requested() && Instant::now() < end {
                        thread::sleep(period);
                        let r = c.get();
                        let mut log = logs[i].lock().unwrap();
                        match r {
                            Ok(b) => log.answers.push((Instant::now(), b)),
                            Err(e) => {
                                log.error = Some(format!("{e:#}"));
                                return;
                            }
                        }
                    }
                })
                .context("spawn flow thread")?;
            handles.push(h);
        }
        Ok(Flows { stop, logs, handles })
    }

    pub fn sports(&self) -> Vec<u16> {
        self.logs.iter().map(|l| l.lock().unwrap().sport).collect()
    }

    pub fn snapshot(&self) -> Vec<FlowLog> {
        self.logs.iter().map(|l| l.lock().unwrap().clone()).collect()
    }

    /// Connections that failed so far.
    pub fn failed(&self) -> usize {
        self.logs.iter().filter(|l| l.lock().unwrap().error.is_some()).count()
    }

    /// Waits until every connection still alive answered at least twice
    /// after `t` (so each crossed whatever changed at `t`); false on timeout.
    pub fn wait_answered_after(&self, t: Instant, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline && !abort_requested() {
            let done = self.logs.iter().all(|l| {
                let l = l.lock().unwrap();
                l.error.is_some() || l.answers.iter().filter(|(at, _)| *at >= t).count() >= 2
            });
            if done {
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn stop(mut self) -> Vec<FlowLog> {
        self.finish();
        self.snapshot()
    }

    fn finish(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

impl Drop for Flows {
    fn drop(&mut self) {
        self.finish();
    }
}

/// What one event (drain, failure, return) did to the connections.
#[derive(Debug, Clone)]
pub struct Move {
    pub what: String,
    /// From the action to the router's route change.
    pub route_changed: Duration,
    /// Connections whose path changed (through another instance).
    pub moved: usize,
    /// From the action to the first answer, after the route change, of the
    /// slowest moved connection.
    pub moved_answered: Option<Duration>,
    /// Longest time between two answers of any connection across the event.
    pub longest_stall: Duration,
    /// Connections that failed.
    pub broken: usize,
    /// Connections whose answers named more than one backend.
    pub switched_backend: usize,
}

impl Move {
    /// `moved` lists the connections (indices into `logs`) whose path
    /// changed at the event.
    pub fn measure(what: &str, logs: &[FlowLog], moved: &[usize], action: Instant, route: Instant) -> Move {
        let moved_answered = moved.iter().filter_map(|&i| logs[i].first_after(route)).map(|at| at - action).max();
        Move {
            what: what.to_string(),
            route_changed: route.saturating_duration_since(action),
            moved: moved.len(),
            moved_answered,
            longest_stall: logs.iter().map(|l| l.longest_gap_after(action)).max().unwrap_or_default(),
            broken: logs.iter().filter(|l| l.error.is_some()).count(),
            switched_backend: logs.iter().filter(|l| !l.sticky()).count(),
        }
    }
}

impl fmt::Display for Move {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1e3);
        write!(
            f,
            "{}: route changed after {}; {} connections moved, the slowest answered {} after the action; \
             longest stall {}; {} broken, {} changed backend",
            self.what,
            ms(self.route_changed),
            self.moved,
            self.moved_answered.map_or("never".into(), ms),
            ms(self.longest_stall),
            self.broken,
            self.switched_backend
        )
    }
}
