//! Long TCP uploads through a VIP, checked end to end: sinks on the
//! backends read each connection to EOF and answer with the byte count, a
//! hash of the stream and their backend's name; the client sends
//! pseudo-random data (optionally paced, optionally until told to stop) and
//! hashes what it sent, so a lost, duplicated or reordered byte shows.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::netns::spawn_in_netns;
use crate::topology::Host;

/// Read/write timeout of one socket operation.
const OP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a sink keeps accepting connections at most.
const SINK_LIFETIME: Duration = Duration::from_secs(180);
/// Bytes per write.
const CHUNK: usize = 64 * 1024;

/// FNV-1a over the stream's 8-byte little-endian words (a partial last
/// word is zero-padded; the length is mixed in at the end). Word-wise, so
/// a debug build hashes fast enough to keep up with a veth.
#[derive(Clone, Copy, Debug)]
pub struct StreamHash {
    h: u64,
    carry: [u8; 8],
    n: usize,
    total: u64,
}

impl Default for StreamHash {
    fn default() -> Self {
        StreamHash { h: 0xcbf2_9ce4_8422_2325, carry: [0; 8], n: 0, total: 0 }
    }
}

impl StreamHash {
    fn mix(&mut self, w: u64) {
        self.h = (self.h ^ w).wrapping_mul(0x0000_0100_0000_01b3);
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.total += data.len() as u64;
        if self.n > 0 {
            let take = (8 - self.n).min(data.len());
            self.carry[self.n..self.n + take].copy_from_slice(&data[..take]);
            self.n += take;
            data = &data[take..];
            if self.n < 8 {
                return;
            }
            self.mix(u64::from_le_bytes(self.carry));
            self.n = 0;
        }
        let mut words = data.chunks_exact(8);
        for w in &mut words {
            self.mix(u64::from_le_bytes(w.try_into().expect("8 bytes")));
        }
        let rest = words.remainder();
        self.carry[..rest.len()].copy_from_slice(rest);
        self.n = rest.len();
    }

    /// (bytes, hash) of the stream so far.
    pub fn finish(&self) -> (u64, u64) {
        let mut s = *self;
        if s.n > 0 {
            s.carry[s.n..].fill(0);
            s.mix(u64::from_le_bytes(s.carry));
        }
        s.mix(s.total);
        (s.total, s.h)
    }
}

/// Sinks on every host of `hosts` for every address of `addrs` (VIPs the
/// hosts carry). Stopped on drop.
pub struct Sinks {
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<Result<()>>>,
}

impl Sinks {
    pub fn start(hosts: &[Host], addrs: &[SocketAddr]) -> Result<Sinks> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut sinks = Sinks { stop: stop.clone(), handles: Vec::new() };
        for h in hosts {
            for &addr in addrs {
                let (stop, name) = (stop.clone(), h.name.clone());
                // Bound before the thread returns, so a connect right after
                // `start` finds the listener.
                let listener = crate::netns::in_netns(&h.ns, move || {
                    let l = TcpListener::bind(addr).with_context(|| format!("bind {addr}"))?;
                    l.set_nonblocking(true)?;
                    Ok(l)
                })?;
                sinks.handles.push(spawn_in_netns(&h.ns, "sink", move || serve(listener, &stop, &name))?);
            }
        }
        Ok(sinks)
    }

    /// Stops every sink; the first error one of them hit, if any.
    pub fn stop(mut self) -> Result<()> {
        self.finish()
    }

    fn finish(&mut self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        let mut first = Ok(());
        for h in self.handles.drain(..) {
            let r = h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("sink thread panicked")));
            if first.is_ok() {
                first = r;
            }
        }
        first
    }
}

impl Drop for Sinks {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// Reads each accepted connection to EOF and answers `bytes hash name`.
fn serve(listener: TcpListener, stop: &AtomicBool, name: &str) -> Result<()> {
    let deadline = Instant::now() + SINK_LIFETIME;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        match listener.accept() {
            Ok((mut conn, _)) => {
                conn.set_nonblocking(false)?;
                conn.set_read_timeout(Some(OP_TIMEOUT))?;
                let mut hash = StreamHash::default();
                let mut buf = vec![0u8; CHUNK];
                loop {
                    let n = conn.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    hash.update(&buf[..n]);
                }
                let (total, h) = hash.finish();
                conn.write_all(format!("{total} {h:016x} {name}\n").as_bytes())?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// What one upload sent and what the sink saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadResult {
    pub sent: u64,
    pub sent_hash: u64,
    pub received: u64,
    pub received_hash: u64,
    /// The sink's backend.
    pub backend: String,
}

impl UploadResult {
    /// Every byte arrived, once and in order.
    pub fn intact(&self) -> bool {
        self.sent == self.received && self.sent_hash == self.received_hash
    }
}

/// How much to send.
#[derive(Debug, Clone)]
pub struct UploadPlan {
    /// Bytes at least.
    pub min_bytes: u64,
    /// Keep sending (past `min_bytes`) until this is set.
    pub until: Option<Arc<AtomicBool>>,
    /// Bytes per second at most (`None`: as fast as TCP goes).
    pub rate: Option<u64>,
    /// Hard bound on the whole upload.
    pub timeout: Duration,
}

/// An upload running on its own thread in the client's namespace.
pub struct Upload {
    progress: Arc<AtomicU64>,
    handle: JoinHandle<Result<UploadResult>>,
}

impl Upload {
    /// Connects from namespace `ns` to `to` and starts sending.
    pub fn start(ns: &str, to: SocketAddr, plan: UploadPlan) -> Result<Upload> {
        let progress = Arc::new(AtomicU64::new(0));
        let p = progress.clone();
        let handle = spawn_in_netns(ns, "upload", move || send(to, &plan, &p))?;
        Ok(Upload { progress, handle })
    }

    /// Bytes written to the socket so far.
    pub fn progress(&self) -> u64 {
        self.progress.load(Ordering::Relaxed)
    }

    pub fn wait(self) -> Result<UploadResult> {
        self.handle.join().unwrap_or_else(|_| bail!("upload thread panicked"))
    }
}

/// Sends `plan.min_bytes` (and more, until `plan.until`) and reads the answer.
pub fn send(to: SocketAddr, plan: &UploadPlan, progress: &AtomicU64) -> Result<UploadResult> {
    let started = Instant::now();
    let mut conn = TcpStream::connect_timeout(&to, OP_TIMEOUT).with_context(|| format!("connect {to}"))?;
    conn.set_write_timeout(Some(OP_TIMEOUT))?;
    conn.set_read_timeout(Some(OP_TIMEOUT))?;
    let mut hash = StreamHash::default();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut chunk = vec![0u8; CHUNK];
    let mut sent = 0u64;
    let more = |sent: u64| sent < plan.min_bytes || plan.until.as_ref().is_some_and(|u| !u.load(Ordering::Relaxed));
    while more(sent) {
        if started.elapsed() > plan.timeout {
            bail!("upload to {to}: {sent} bytes sent, not done after {:?}", plan.timeout);
        }
        if let Some(rate) = plan.rate {
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        for w in chunk.chunks_exact_mut(8) {
            // xorshift64: different bytes everywhere in the stream.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            w.copy_from_slice(&state.to_le_bytes());
        }
        conn.write_all(&chunk).with_context(|| format!("upload to {to}: write after {sent} bytes"))?;
        hash.update(&chunk);
        sent += chunk.len() as u64;
        progress.store(sent, Ordering::Relaxed);
    }
    conn.shutdown(Shutdown::Write)?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer).with_context(|| format!("upload to {to}: reading the sink's answer"))?;
    let mut f = answer.split_whitespace();
    let (Some(received), Some(received_hash), Some(backend)) = (f.next(), f.next(), f.next()) else {
        bail!("upload to {to}: bad answer {answer:?}");
    };
    let (sent, sent_hash) = hash.finish();
    Ok(UploadResult {
        sent,
        sent_hash,
        received: received.parse().with_context(|| format!("answer {answer:?}"))?,
        received_hash: u64::from_str_radix(received_hash, 16).with_context(|| format!("answer {answer:?}"))?,
        backend: backend.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::StreamHash;

    #[test]
    fn the_hash_does_not_depend_on_how_the_stream_is_cut() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
        let mut whole = StreamHash::default();
        whole.update(&data);
        for cut in [1, 3, 7, 8, 9, 500, 999] {
            let mut parts = StreamHash::default();
            for c in data.chunks(cut) {
                parts.update(c);
            }
            assert_eq!(parts.finish(), whole.finish(), "cut {cut}");
        }
        let mut other = StreamHash::default();
        let mut swapped = data.clone();
        swapped.swap(10, 11);
        other.update(&swapped);
        assert_ne!(other.finish(), whole.finish());
        let mut shorter = StreamHash::default();
        shorter.update(&data[..999]);
        assert_ne!(shorter.finish(), whole.finish());
    }
}
