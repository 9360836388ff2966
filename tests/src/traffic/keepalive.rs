//! Long-lived HTTP/1.1 keep-alive connections: one at a time, or many sending requests in the background.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::client::ConnResult;
use super::http::read_response;
use crate::netns::{abort_requested, in_netns};

/// One client-side HTTP/1.1 keep-alive connection: connected once, then
/// used for as many requests as the test wants (to check that an
/// established flow keeps its backend across a change of the agent).
pub struct HttpConn {
    stream: TcpStream,
    pending: Vec<u8>,
    host: String,
    /// Requests sent so far.
    pub requests: usize,
}

impl HttpConn {
    /// Connects from the calling thread's namespace (see [`open_keepalive`]
    /// for one made in a given namespace). Every later read and write of
    /// the connection times out after `op_timeout`.
    pub fn connect(target: SocketAddr, op_timeout: Duration) -> Result<HttpConn> {
        let stream = TcpStream::connect_timeout(&target, op_timeout).with_context(|| format!("connect {target}"))?;
        stream.set_read_timeout(Some(op_timeout))?;
        stream.set_write_timeout(Some(op_timeout))?;
        stream.set_nodelay(true)?;
        let host = match target {
            SocketAddr::V4(a) => a.ip().to_string(),
            SocketAddr::V6(a) => format!("[{}]", a.ip()),
        };
        Ok(HttpConn { stream, pending: Vec::new(), host, requests: 0 })
    }

    /// Sends one GET and returns the name of the backend that answered.
    pub fn get(&mut self) -> Result<String> {
        let i = self.requests;
        self.requests += 1;
        let req = format!("GET /keepalive{i} HTTP/1.1\r\nHost: {}\r\nUser-Agent: lb-tests\r\n\r\n", self.host);
        self.stream.write_all(req.as_bytes()).with_context(|| format!("request {i}: write"))?;
        let body = read_response(&mut self.stream, &mut self.pending).with_context(|| format!("request {i}"))?;
        Ok(body.trim().to_string())
    }

    /// The client's own address and port (the flow's source).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.stream.local_addr().ok()
    }
}

/// Opens `count` keep-alive connections to `target` from namespace `ns`
/// (one after the other) and sends one request on each. Returns the
/// connections with the backend of that first answer. Fails on the first
/// connection that fails. The sockets stay in `ns` and may be used from any
/// thread.
pub fn open_keepalive(
    ns: &str,
    target: SocketAddr,
    count: usize,
    op_timeout: Duration,
) -> Result<Vec<(HttpConn, String)>> {
    in_netns(ns, move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut out = Vec::with_capacity(count);
        for i in 0..count {
            if abort_requested() || Instant::now() >= deadline {
                bail!("interrupted or out of time after {i} of {count} connections");
            }
            let mut c = HttpConn::connect(target, op_timeout).with_context(|| format!("connection {i}"))?;
            let backend = c.get().with_context(|| format!("connection {i}"))?;
            out.push((c, backend));
        }
        Ok(out)
    })
}

/// Keep-alive connections that each send a request every `period` from
/// their own thread, until stopped or for at most `max` (bounded). A
/// connection stops at its first failure, which is recorded.
pub struct KeepAliveLoad {
    stop: Arc<AtomicBool>,
    answered: Arc<Vec<AtomicUsize>>,
    failed: Arc<AtomicUsize>,
    handles: Vec<JoinHandle<ConnResult>>,
}

impl KeepAliveLoad {
    pub fn start(conns: Vec<HttpConn>, period: Duration, max: Duration) -> Result<KeepAliveLoad> {
        let stop = Arc::new(AtomicBool::new(false));
        let answered: Arc<Vec<AtomicUsize>> = Arc::new(conns.iter().map(|_| AtomicUsize::new(0)).collect());
        let failed = Arc::new(AtomicUsize::new(0));
        let mut load = KeepAliveLoad {
            stop: stop.clone(),
            answered: answered.clone(),
            failed: failed.clone(),
            handles: Vec::new(),
        };
        let end = Instant::now() + max;
        for (i, mut c) in conns.into_iter().enumerate() {
            let (stop, answered, failed) = (stop.clone(), answered.clone(), failed.clone());
            let h = thread::Builder::new()
                .name(format!("keepalive-{i}").chars().take(15).collect())
                .spawn(move || {
                    let mut r = ConnResult::default();
                    while !stop.load(Ordering::SeqCst) && !abort_requested() && Instant::now() < end {
                        match c.get() {
                            Ok(b) => {
                                r.backends.push(b);
                                answered[i].fetch_add(1, Ordering::SeqCst);
                            }
                            Err(e) => {
                                r.error = Some(format!("{e:#}"));
                                failed.fetch_add(1, Ordering::SeqCst);
                                break;
                            }
                        }
                        thread::sleep(period);
                    }
                    r
                })
                .context("spawn keep-alive thread")?;
            load.handles.push(h);
        }
        Ok(load)
    }

    /// Answers received so far, over all connections.
    pub fn answered(&self) -> usize {
        self.answered.iter().map(|a| a.load(Ordering::SeqCst)).sum()
    }

    /// Answers received so far, per connection.
    pub fn answered_per_connection(&self) -> Vec<usize> {
        self.answered.iter().map(|a| a.load(Ordering::SeqCst)).collect()
    }

    /// Connections that have failed so far.
    pub fn failed(&self) -> usize {
        self.failed.load(Ordering::SeqCst)
    }

    /// Stops every connection's loop and returns what each one saw.
    pub fn stop(mut self) -> Vec<ConnResult> {
        self.finish()
    }

    fn finish(&mut self) -> Vec<ConnResult> {
        self.stop.store(true, Ordering::SeqCst);
        self.handles
            .drain(..)
            .map(|h| {
                h.join().unwrap_or_else(|_| ConnResult { error: Some("thread panicked".into()), ..Default::default() })
            })
            .collect()
    }
}

impl Drop for KeepAliveLoad {
    fn drop(&mut self) {
        self.finish();
    }
}
