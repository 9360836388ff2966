//! In-process traffic for the network tests: tiny HTTP/1.1 and UDP echo
//! servers that run in backend namespaces and answer with the backend's
//! name, and clients that run in the client namespace and record which
//! backend answered. Every socket operation has a timeout and every loop is
//! bounded in count and time.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::netns::{abort_requested, in_netns, spawn_in_netns};

/// A server connection that sees no request for this long is closed.
const SERVER_IDLE: Duration = Duration::from_secs(15);
/// Poll interval of server loops (how fast they notice the stop flag).
const TICK: Duration = Duration::from_millis(100);
/// Largest request head a server accepts.
const MAX_HEAD: usize = 16 * 1024;

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
fn serve_http(mut s: TcpStream, body: &str, stop: &AtomicBool, served: &AtomicUsize) -> std::io::Result<()> {
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

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// What one client connection (or UDP socket) saw.
#[derive(Debug, Clone, Default)]
pub struct ConnResult {
    /// The backend named by each answer, in order.
    pub backends: Vec<String>,
    /// Why the connection failed, if it did (answers before the failure are
    /// kept in `backends`).
    pub error: Option<String>,
}

impl ConnResult {
    /// All answers came from one backend (and there was at least one).
    pub fn sticky(&self) -> bool {
        self.backends.first().is_some_and(|first| self.backends.iter().all(|b| b == first))
    }
}

/// Parameters of a TCP client run.
#[derive(Debug, Clone)]
pub struct TcpLoad {
    /// VIP and port to connect to.
    pub target: SocketAddr,
    /// Number of connections.
    pub connections: usize,
    /// Requests per connection (>= 1; the tests use 3 or more).
    pub requests: usize,
    /// Connections in flight at once.
    pub parallel: usize,
    /// Timeout of each connect, read and write.
    pub op_timeout: Duration,
    /// Bound of the whole run; connections not started by then fail.
    pub deadline: Duration,
    /// Source address to connect from (one of the client's); `None`: the
    /// kernel's choice.
    pub source: Option<IpAddr>,
}

impl TcpLoad {
    pub fn new(target: SocketAddr, connections: usize) -> TcpLoad {
        TcpLoad {
            target,
            connections,
            requests: 3,
            parallel: 4,
            op_timeout: Duration::from_secs(3),
            deadline: Duration::from_secs(60),
            source: None,
        }
    }
}

/// Opens `load.connections` TCP connections from namespace `ns` and sends
/// `load.requests` HTTP requests on each; returns one result per
/// connection, in order.
pub fn tcp_client(ns: &str, load: &TcpLoad) -> Result<Vec<ConnResult>> {
    run_parallel(ns, load.connections, load.parallel, load.deadline, {
        let load = load.clone();
        move |_i| tcp_connection(&load)
    })
}

fn tcp_connection(load: &TcpLoad) -> ConnResult {
    let mut r = ConnResult::default();
    let host = match load.target {
        SocketAddr::V4(a) => a.ip().to_string(),
        SocketAddr::V6(a) => format!("[{}]", a.ip()),
    };
    let connected = match load.source {
        Some(src) => connect_from(src, load.target, load.op_timeout),
        None => TcpStream::connect_timeout(&load.target, load.op_timeout),
    };
    let mut s = match connected {
        Ok(s) => s,
        Err(e) => {
            r.error = Some(format!("connect {}: {e}", load.target));
            return r;
        }
    };
    let setup = (|| {
        s.set_read_timeout(Some(load.op_timeout))?;
        s.set_write_timeout(Some(load.op_timeout))?;
        s.set_nodelay(true)
    })();
    if let Err(e) = setup {
        r.error = Some(format!("socket options: {e}"));
        return r;
    }
    let mut pending = Vec::new();
    for i in 0..load.requests {
        let req = format!("GET /req{i} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: lb-tests\r\n\r\n");
        if let Err(e) = s.write_all(req.as_bytes()) {
            r.error = Some(format!("request {i}: write: {e}"));
            return r;
        }
        match read_response(&mut s, &mut pending) {
            Ok(body) => r.backends.push(body.trim().to_string()),
            Err(e) => {
                r.error = Some(format!("request {i}: {e:#}"));
                return r;
            }
        }
    }
    r
}

/// A TCP connection from a chosen local address (std has no bind before
/// connect). The connect is bounded by `timeout` through SO_SNDTIMEO.
pub fn connect_from(src: IpAddr, target: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    let (family, local, remote) = match (src, target) {
        (IpAddr::V4(s), SocketAddr::V4(t)) => (libc::AF_INET, sockaddr_v4(s, 0), sockaddr_v4(*t.ip(), t.port())),
        _ => return Err(std::io::Error::other("connect_from: IPv4 only")),
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let tv = libc::timeval { tv_sec: timeout.as_secs() as _, tv_usec: timeout.subsec_micros() as _ };
    // SAFETY: a fresh socket owned by the TcpStream from here on; the
    // addresses and the timeval are valid for the calls.
    unsafe {
        let fd = libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let opt = std::ptr::addr_of!(tv).cast();
        let tv_len = std::mem::size_of::<libc::timeval>() as libc::socklen_t;
        if libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_SNDTIMEO, opt, tv_len) != 0
            || libc::bind(fd, std::ptr::addr_of!(local).cast(), len) != 0
            || libc::connect(fd, std::ptr::addr_of!(remote).cast(), len) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stream)
    }
}

fn sockaddr_v4(addr: std::net::Ipv4Addr, port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(addr.octets()) },
        sin_zero: [0; 8],
    }
}

/// Reads one HTTP response (head + Content-Length body); `pending` keeps
/// bytes read past it.
fn read_response(s: &mut TcpStream, pending: &mut Vec<u8>) -> Result<String> {
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = find(pending, b"\r\n\r\n") {
            break end;
        }
        if pending.len() > MAX_HEAD {
            bail!("response head too long");
        }
        let n = s.read(&mut buf).context("read head")?;
        if n == 0 {
            bail!("connection closed before a response");
        }
        pending.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&pending[..head_end]).into_owned();
    let status = head.lines().next().unwrap_or("");
    if !status.starts_with("HTTP/1.1 200") {
        bail!("unexpected status line {status:?}");
    }
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case("content-length").then(|| v.trim().parse().ok())?
        })
        .context("no Content-Length")?;
    if len > MAX_HEAD {
        bail!("body too long ({len})");
    }
    pending.drain(..head_end + 4);
    while pending.len() < len {
        let n = s.read(&mut buf).context("read body")?;
        if n == 0 {
            bail!("connection closed inside the body");
        }
        pending.extend_from_slice(&buf[..n]);
    }
    let body: Vec<u8> = pending.drain(..len).collect();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Parameters of a UDP client run.
#[derive(Debug, Clone)]
pub struct UdpLoad {
    pub target: SocketAddr,
    /// Number of sockets (each has its own source port).
    pub sockets: usize,
    /// Datagrams per socket.
    pub datagrams: usize,
    /// Sends of one datagram before it counts as lost.
    pub attempts: usize,
    pub parallel: usize,
    /// Wait for each answer.
    pub op_timeout: Duration,
    pub deadline: Duration,
}

impl UdpLoad {
    pub fn new(target: SocketAddr, sockets: usize) -> UdpLoad {
        UdpLoad {
            target,
            sockets,
            datagrams: 3,
            attempts: 3,
            parallel: 4,
            op_timeout: Duration::from_secs(1),
            deadline: Duration::from_secs(60),
        }
    }
}

/// From `load.sockets` UDP sockets in namespace `ns`, sends
/// `load.datagrams` datagrams each to the target; returns per socket the
/// backend that answered each datagram. Sockets are connected, so only
/// answers whose source is the VIP count.
pub fn udp_client(ns: &str, load: &UdpLoad) -> Result<Vec<ConnResult>> {
    run_parallel(ns, load.sockets, load.parallel, load.deadline, {
        let load = load.clone();
        move |_i| udp_socket(&load)
    })
}

fn udp_socket(load: &UdpLoad) -> ConnResult {
    let mut r = ConnResult::default();
    let bind: SocketAddr = if load.target.is_ipv4() { "0.0.0.0:0".parse().unwrap() } else { "[::]:0".parse().unwrap() };
    let sock = match UdpSocket::bind(bind).and_then(|s| {
        s.connect(load.target)?;
        s.set_read_timeout(Some(load.op_timeout))?;
        s.set_write_timeout(Some(load.op_timeout))?;
        Ok(s)
    }) {
        Ok(s) => s,
        Err(e) => {
            r.error = Some(format!("udp socket to {}: {e}", load.target));
            return r;
        }
    };
    let mut buf = [0u8; 512];
    'dgrams: for i in 0..load.datagrams {
        let mut last_err = String::new();
        for _ in 0..load.attempts.max(1) {
            if let Err(e) = sock.send(format!("ping {i}").as_bytes()) {
                last_err = format!("send: {e}");
                continue;
            }
            match sock.recv(&mut buf) {
                Ok(n) => {
                    r.backends.push(String::from_utf8_lossy(&buf[..n]).trim().to_string());
                    continue 'dgrams;
                }
                Err(e) => last_err = format!("recv: {e}"),
            }
        }
        r.error = Some(format!("datagram {i}: no answer after {} attempts ({last_err})", load.attempts));
        return r;
    }
    r
}

/// After this many failed jobs without a single success, the remaining jobs
/// are not started (they fail at once): a broken data path fails a run in
/// seconds instead of one timeout per connection.
const GIVE_UP_AFTER: usize = 12;

/// Runs `job(i)` for i in 0..count on `parallel` threads inside namespace
/// `ns`. Jobs not started before `deadline` (or after an abort, or after
/// [`GIVE_UP_AFTER`] failures without a success) fail.
fn run_parallel<F>(ns: &str, count: usize, parallel: usize, deadline: Duration, job: F) -> Result<Vec<ConnResult>>
where
    F: Fn(usize) -> ConnResult + Send + Sync + 'static,
{
    let job = Arc::new(job);
    let next = Arc::new(AtomicUsize::new(0));
    let results: Arc<Mutex<Vec<ConnResult>>> = Arc::new(Mutex::new(vec![ConnResult::default(); count]));
    let end = Instant::now() + deadline;
    let (oks, fails) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut workers = Vec::new();
    for w in 0..parallel.clamp(1, 64).min(count.max(1)) {
        let (job, next, results) = (job.clone(), next.clone(), results.clone());
        let (oks, fails) = (oks.clone(), fails.clone());
        workers.push(spawn_in_netns(ns, &format!("client-{w}"), move || {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= count {
                    return Ok(());
                }
                let r = if abort_requested() {
                    ConnResult { error: Some("interrupted".into()), ..Default::default() }
                } else if Instant::now() >= end {
                    ConnResult { error: Some("not started: run deadline passed".into()), ..Default::default() }
                } else if oks.load(Ordering::SeqCst) == 0 && fails.load(Ordering::SeqCst) >= GIVE_UP_AFTER {
                    ConnResult {
                        error: Some(format!("not started: the first {GIVE_UP_AFTER} attempts all failed")),
                        ..Default::default()
                    }
                } else {
                    let r = job(i);
                    if r.error.is_none() { &oks } else { &fails }.fetch_add(1, Ordering::SeqCst);
                    r
                };
                results.lock().unwrap()[i] = r;
            }
        })?);
    }
    for w in workers {
        match w.join() {
            Ok(r) => r?,
            Err(p) => std::panic::resume_unwind(p),
        }
    }
    let v = std::mem::take(&mut *results.lock().unwrap());
    Ok(v)
}

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

/// Per-backend counts and failures of a client run.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Connections (or UDP sockets) attempted.
    pub total: usize,
    /// Connections that failed (connect error, timeout, bad answer...).
    pub failures: usize,
    /// Connections whose answers did not all name the same backend.
    pub not_sticky: usize,
    /// Connections per backend, by the backend of their first answer.
    /// Every expected backend has an entry (possibly 0).
    pub per_backend: BTreeMap<String, usize>,
    /// Answers (requests or datagrams) in all.
    pub answers: usize,
    /// The first few distinct errors, for messages.
    pub errors: Vec<String>,
    /// Connections without error whose answers all named one backend.
    pub good: usize,
}

impl Summary {
    /// Summarises `results`; `backends` lists the names that should appear
    /// (an answer naming another backend still gets its own entry).
    pub fn new(results: &[ConnResult], backends: &[String]) -> Summary {
        let mut s = Summary { total: results.len(), ..Default::default() };
        for b in backends {
            s.per_backend.insert(b.clone(), 0);
        }
        for r in results {
            s.answers += r.backends.len();
            if let Some(e) = &r.error {
                s.failures += 1;
                if s.errors.len() < 10 && !s.errors.contains(e) {
                    s.errors.push(e.clone());
                }
            }
            if r.error.is_none() && r.sticky() {
                s.good += 1;
            }
            if let Some(first) = r.backends.first() {
                *s.per_backend.entry(first.clone()).or_insert(0) += 1;
                if !r.sticky() {
                    s.not_sticky += 1;
                    if s.errors.len() < 10 {
                        s.errors.push(format!("moved between backends: {:?}", r.backends));
                    }
                }
            }
        }
        s
    }

    /// Connections that succeeded and stayed on one backend.
    pub fn sticky_ok(&self) -> usize {
        self.good
    }

    /// Backends that got no connection.
    pub fn idle_backends(&self) -> Vec<String> {
        self.per_backend.iter().filter(|(_, n)| **n == 0).map(|(b, _)| b.clone()).collect()
    }

    /// Checks the end-to-end invariants: every connection succeeded and was
    /// sticky, every backend got at least one, and each backend's share lies
    /// in `[min_share, max_share]` (fractions of `total`).
    pub fn check(&self, min_share: f64, max_share: f64) -> Result<()> {
        let mut problems = Vec::new();
        if self.total == 0 {
            problems.push("no connection was attempted".to_string());
        }
        if self.failures > 0 {
            problems.push(format!("{} of {} connections failed", self.failures, self.total));
        }
        if self.not_sticky > 0 {
            problems.push(format!("{} connections moved between backends", self.not_sticky));
        }
        for (b, n) in &self.per_backend {
            let share = *n as f64 / self.total.max(1) as f64;
            if *n == 0 {
                problems.push(format!("{b} got no connection"));
            } else if share < min_share || share > max_share {
                problems.push(format!(
                    "{b} got {n}/{} connections ({:.0}%), outside {:.0}%..{:.0}%",
                    self.total,
                    share * 100.0,
                    min_share * 100.0,
                    max_share * 100.0
                ));
            }
        }
        if problems.is_empty() { Ok(()) } else { bail!("{}\n{self}", problems.join("; ")) }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (b, n) in &self.per_backend {
            let pct = 100.0 * *n as f64 / self.total.max(1) as f64;
            writeln!(f, "  {b:<12} {n:>5} ({pct:5.1}%)")?;
        }
        write!(
            f,
            "  {}/{} stayed on one backend, {} failed, {} moved, {} answers",
            self.sticky_ok(),
            self.total,
            self.failures,
            self.not_sticky,
            self.answers
        )?;
        for e in &self.errors {
            write!(f, "\n  error: {e}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(b: &[&str], err: Option<&str>) -> ConnResult {
        ConnResult { backends: b.iter().map(|s| s.to_string()).collect(), error: err.map(str::to_string) }
    }

    #[test]
    fn summary_counts() {
        let names: Vec<String> = ["backend1", "backend2", "backend3"].iter().map(|s| s.to_string()).collect();
        let rs = vec![
            res(&["backend1", "backend1", "backend1"], None),
            res(&["backend2", "backend2", "backend2"], None),
            res(&["backend2", "backend1", "backend2"], None),
            res(&[], Some("connect: refused")),
        ];
        let s = Summary::new(&rs, &names);
        assert_eq!(s.total, 4);
        assert_eq!(s.failures, 1);
        assert_eq!(s.not_sticky, 1);
        assert_eq!(s.per_backend["backend1"], 1);
        assert_eq!(s.per_backend["backend2"], 2);
        assert_eq!(s.per_backend["backend3"], 0);
        assert_eq!(s.idle_backends(), vec!["backend3".to_string()]);
        assert_eq!(s.sticky_ok(), 2);
        assert!(s.check(0.0, 1.0).is_err());
    }

    #[test]
    fn http_roundtrip_on_loopback() {
        // Runs in the host's namespace on 127.0.0.1 only: the server and
        // the client parse each other. Needs no root.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicUsize::new(0));
        let h = {
            let (stop, served) = (stop.clone(), served.clone());
            thread::spawn(move || {
                let (s, _) = l.accept().unwrap();
                serve_http(s, "backend9\n", &stop, &served).unwrap();
            })
        };
        let mut load = TcpLoad::new(addr, 1);
        load.requests = 5;
        let r = tcp_connection(&load);
        assert!(r.error.is_none(), "{r:?}");
        assert_eq!(r.backends, vec!["backend9"; 5]);
        assert!(r.sticky());
        h.join().unwrap();
        assert_eq!(served.load(Ordering::Relaxed), 5);
    }
}
