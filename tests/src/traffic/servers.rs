//! The backends' HTTP/1.1 and UDP echo servers, which answer with the backend's name.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::http::{MAX_HEAD, find};
use crate::netns::in_netns;

/// A server connection that sees no request for this long is closed.
const SERVER_IDLE: Duration = Duration::from_secs(15);
/// Poll interval of server loops (how fast they notice the stop flag).
const TICK: Duration = Duration::from_millis(100);

/// TCP (HTTP) and UDP (echo) servers of one backend. Stopped and joined on
/// drop.
pub struct Servers {
    pub name: String,
    stop: Arc<AtomicBool>,
    main: Option<JoinHandle<()>>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    served: Arc<AtomicUsize>,
}

impl Servers {
    /// Binds HTTP listeners on `tcp` and UDP echo sockets on `udp` inside
    /// namespace `ns` (the addresses must exist there, e.g. VIPs on `lo`),
    /// and serves them until dropped. Every answer names `name`.
    pub fn start(ns: &str, name: &str, tcp: &[SocketAddr], udp: &[SocketAddr]) -> Result<Servers> {
        let (tcp_addrs, udp_addrs) = (tcp.to_vec(), udp.to_vec());
        let (listeners, udps) = in_netns(ns, move || {
            let mut ls = Vec::new();
            for a in &tcp_addrs {
                let l = TcpListener::bind(a).with_context(|| format!("bind tcp {a}"))?;
                l.set_nonblocking(true)?;
                ls.push(l);
            }
            let mut us = Vec::new();
            for a in &udp_addrs {
                let u = UdpSocket::bind(a).with_context(|| format!("bind udp {a}"))?;
                u.set_nonblocking(true)?;
                us.push(u);
            }
            Ok((ls, us))
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let served = Arc::new(AtomicUsize::new(0));
        let main = {
            let (stop, conns, served) = (stop.clone(), conns.clone(), served.clone());
            let name = name.to_string();
            thread::Builder::new()
                .name(format!("srv-{name}").chars().take(15).collect())
                .spawn(move || serve_loop(&name, listeners, udps, &stop, &conns, &served))
                .context("spawn server thread")?
        };
        Ok(Servers { name: name.to_string(), stop, main: Some(main), conns, served })
    }

    /// Number of HTTP requests and UDP datagrams answered so far.
    pub fn served(&self) -> usize {
        self.served.load(Ordering::Relaxed)
    }

    /// Stops accepting and waits for every server thread (bounded by the
    /// poll interval).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.main.take() {
            let _ = h.join();
        }
        let handles: Vec<_> = std::mem::take(&mut *self.conns.lock().unwrap());
        for h in handles {
            let _ = h.join();
        }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve_loop(
    name: &str,
    listeners: Vec<TcpListener>,
    udps: Vec<UdpSocket>,
    stop: &Arc<AtomicBool>,
    conns: &Arc<Mutex<Vec<JoinHandle<()>>>>,
    served: &Arc<AtomicUsize>,
) {
    let mut fds: Vec<libc::pollfd> = listeners
        .iter()
        .map(|l| l.as_raw_fd())
        .chain(udps.iter().map(|u| u.as_raw_fd()))
        .map(|fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 })
        .collect();
    let body = format!("{name}\n");
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::SeqCst) {
        for p in fds.iter_mut() {
            p.revents = 0;
        }
        // SAFETY: fds is a valid array of pollfd for the duration of the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, TICK.as_millis() as i32) };
        if n <= 0 {
            continue;
        }
        for l in &listeners {
            // Accept until the backlog is empty (non-blocking listener).
            while let Ok((s, _peer)) = l.accept() {
                let (stop, body, served) = (stop.clone(), body.clone(), served.clone());
                let h = thread::Builder::new().name("srv-conn".into()).spawn(move || {
                    let _ = serve_http(s, &body, &stop, &served);
                });
                if let Ok(h) = h {
                    let mut v = conns.lock().unwrap();
                    v.retain(|h| !h.is_finished());
                    v.push(h);
                }
            }
        }
        for u in &udps {
            // Bounded: at most 256 datagrams per poll round per socket.
            for _ in 0..256 {
                match u.recv_from(&mut buf) {
                    Ok((_, peer)) => {
                        if u.send_to(name.as_bytes(), peer).is_ok() {
                            served.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(_) => break,
                }
            }
        }
    }
}

/// Serves HTTP/1.1 keep-alive requests on one connection until the peer
/// closes, the connection idles for [`SERVER_IDLE`], or `stop` is set.
pub(super) fn serve_http(mut s: TcpStream, body: &str, stop: &AtomicBool, served: &AtomicUsize) -> std::io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(TICK))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    s.set_nodelay(true)?;
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = [0u8; 4096];
    let mut last = Instant::now();
    loop {
        // Answer every complete request head in the buffer.
        while let Some(end) = find(&pending, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end]).into_owned();
            pending.drain(..end + 4);
            let line = head.lines().next().unwrap_or("");
            let mut parts = line.split_whitespace();
            let (method, path, version) = (parts.next(), parts.next(), parts.next());
            let resp = if method == Some("GET") && path.is_some_and(|p| p.starts_with('/')) && version.is_some() {
                format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}", body.len())
            } else {
                "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
            };
            s.write_all(resp.as_bytes())?;
            served.fetch_add(1, Ordering::Relaxed);
            if !resp.starts_with("HTTP/1.1 200") {
                return Ok(());
            }
            last = Instant::now();
        }
        if pending.len() > MAX_HEAD {
            return Ok(());
        }
        if stop.load(Ordering::SeqCst) || last.elapsed() > SERVER_IDLE {
            return Ok(());
        }
        match s.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
            Err(e) => return Err(e),
        }
    }
}
