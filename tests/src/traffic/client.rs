//! Clients of many short TCP (HTTP) connections or UDP sockets run in parallel, each recording who answered.

use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;

use super::http::read_response;
use crate::netns::{abort_requested, spawn_in_netns};

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

pub(super) fn tcp_connection(load: &TcpLoad) -> ConnResult {
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
