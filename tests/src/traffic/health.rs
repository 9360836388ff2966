//! A backend's health-check endpoint that the test switches between healthy, unhealthy, flapping and refusing.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::http::{MAX_HEAD, find};
use crate::netns::spawn_in_netns;

/// How a [`HealthServer`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthMode {
    /// `200 OK` to every request.
    Healthy,
    /// `503 Service Unavailable` to every request.
    Unhealthy,
    /// `fail_run` answers 503, then one 200, again and again (starting
    /// with the failures).
    Flapping { fail_run: u32 },
    /// Not listening at all: connections are refused.
    Refusing,
}

struct HealthShared {
    mode: Mutex<(HealthMode, u64)>,
    stop: AtomicBool,
    /// Generation of the mode the server thread applies (see `set_mode`).
    applied: AtomicUsize,
    ok: AtomicUsize,
    failed: AtomicUsize,
}

/// A health-check endpoint of one backend on a port of its own address: an
/// HTTP server answering every request with 200 or 503 (or refusing
/// connections) as the test switches it, counting what it answered. One
/// request per connection, as health checkers send them. Stopped on drop.
pub struct HealthServer {
    pub name: String,
    pub addr: SocketAddr,
    shared: Arc<HealthShared>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl HealthServer {
    /// Listens on `addr` (an address of namespace `ns`), in `mode`.
    pub fn start(ns: &str, name: &str, addr: SocketAddr, mode: HealthMode) -> Result<HealthServer> {
        let shared = Arc::new(HealthShared {
            mode: Mutex::new((mode, 1)),
            stop: AtomicBool::new(false),
            applied: AtomicUsize::new(0),
            ok: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
        });
        let thread = {
            let shared = shared.clone();
            spawn_in_netns(ns, &format!("hc-{name}"), move || health_loop(addr, &shared))?
        };
        let mut s = HealthServer { name: name.to_string(), addr, shared, thread: Some(thread) };
        s.wait_applied(1)?;
        Ok(s)
    }

    /// Switches the mode; returns once the server applies it (a refusing
    /// server has closed its listener, a serving one listens again).
    pub fn set_mode(&mut self, mode: HealthMode) -> Result<()> {
        let generation = {
            let mut m = self.shared.mode.lock().unwrap();
            m.1 += 1;
            m.0 = mode;
            m.1
        };
        self.wait_applied(generation as usize)
    }

    pub fn mode(&self) -> HealthMode {
        self.shared.mode.lock().unwrap().0
    }

    fn wait_applied(&mut self, generation: usize) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.shared.applied.load(Ordering::SeqCst) < generation {
            if self.thread.as_ref().is_some_and(JoinHandle::is_finished) {
                let r = self.thread.take().map(JoinHandle::join);
                bail!(
                    "health server {} ({}) stopped: {:?}",
                    self.name,
                    self.addr,
                    r.map(|r| r.map(|r| r.map_err(|e| format!("{e:#}"))))
                );
            }
            if Instant::now() >= deadline {
                bail!("health server {} ({}) did not switch modes within 5 s", self.name, self.addr);
            }
            thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// Requests answered so far: (200s, 503s).
    pub fn answered(&self) -> (usize, usize) {
        (self.shared.ok.load(Ordering::SeqCst), self.shared.failed.load(Ordering::SeqCst))
    }

    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.thread.take() {
            let _ = h.join();
        }
    }
}

impl Drop for HealthServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn health_loop(addr: SocketAddr, shared: &HealthShared) -> Result<()> {
    let mut listener: Option<TcpListener> = None;
    let mut generation = 0u64;
    // Position in a flapping pattern.
    let mut flap = 0u32;
    while !shared.stop.load(Ordering::SeqCst) {
        let (mode, g) = *shared.mode.lock().unwrap();
        if g != generation {
            flap = 0;
            if mode == HealthMode::Refusing {
                listener = None;
            } else if listener.is_none() {
                // std sets SO_REUSEADDR: rebinding after a close works at once.
                let l = TcpListener::bind(addr).with_context(|| format!("bind health server {addr}"))?;
                l.set_nonblocking(true)?;
                listener = Some(l);
            }
            generation = g;
            shared.applied.store(g as usize, Ordering::SeqCst);
        }
        let Some(l) = &listener else {
            thread::sleep(Duration::from_millis(5));
            continue;
        };
        let mut pfd = libc::pollfd { fd: l.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut pfd, 1, 20) };
        if n <= 0 {
            continue;
        }
        // Bounded: at most 64 connections per round.
        for _ in 0..64 {
            let Ok((s, _)) = l.accept() else { break };
            let healthy = match mode {
                HealthMode::Healthy => true,
                HealthMode::Unhealthy | HealthMode::Refusing => false,
                HealthMode::Flapping { fail_run } => {
                    let ok = flap >= fail_run;
                    flap = if ok { 0 } else { flap + 1 };
                    ok
                }
            };
            if answer_health(s, healthy).is_ok() {
                if healthy { &shared.ok } else { &shared.failed }.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
    Ok(())
}

/// Reads one request head (bounded in size and time) and answers it.
fn answer_health(mut s: TcpStream, healthy: bool) -> std::io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_millis(500)))?;
    s.set_write_timeout(Some(Duration::from_millis(500)))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while find(&head, b"\r\n\r\n").is_none() && head.len() < MAX_HEAD {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let resp = if healthy {
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"
    } else {
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nConnection: close\r\n\r\nsick\n"
    };
    s.write_all(resp.as_bytes())
}
