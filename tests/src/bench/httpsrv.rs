//! The backends' HTTP server of the HAProxy comparison: HTTP/1.1 on each
//! address, worker threads (pinned, nice -20) with blocking accept, one
//! pre-built answer.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use lb_tests::netns::in_netns;

use super::cpus;

const WORKERS_PER_LISTENER: usize = 24;

/// The bench's backend: HTTP/1.1 on each address, answering every request
/// with the backend's name; closes first after a `Connection: close`
/// request.
pub struct BenchServer {
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
}

impl BenchServer {
    pub fn start(ns: &str, name: &str, addrs: &[SocketAddr], cpu: usize) -> Result<BenchServer> {
        let addrs = addrs.to_vec();
        let listeners: Vec<TcpListener> = in_netns(ns, move || {
            addrs.iter().map(|a| TcpListener::bind(a).with_context(|| format!("bind {a}"))).collect()
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::new();
        let body = format!("{name}\n");
        let resp: Arc<[u8]> =
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len()).into_bytes().into();
        for l in listeners {
            let l = Arc::new(l);
            set_accept_timeout(&l)?;
            for _ in 0..WORKERS_PER_LISTENER {
                let (l, stop, resp) = (l.clone(), stop.clone(), resp.clone());
                workers.push(std::thread::Builder::new().name("bench-srv".into()).spawn(move || {
                    let _ = cpus::pin_self(cpu);
                    while !stop.load(Ordering::Relaxed) {
                        if let Ok((c, _)) = l.accept() {
                            let _ = serve(c, &resp, &stop);
                        }
                    }
                })?);
            }
        }
        Ok(BenchServer { stop, workers })
    }
}

impl Drop for BenchServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}

/// Lets a blocking accept return every 100 ms (to see the stop flag).
fn set_accept_timeout(l: &TcpListener) -> Result<()> {
    use std::os::fd::AsRawFd;
    let tv = libc::timeval { tv_sec: 0, tv_usec: 100_000 };
    // SAFETY: valid socket and option value.
    let rc = unsafe {
        libc::setsockopt(
            l.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as u32,
        )
    };
    if rc != 0 {
        bail!("SO_RCVTIMEO: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

fn serve(mut c: TcpStream, resp: &[u8], stop: &AtomicBool) -> std::io::Result<()> {
    c.set_nodelay(true)?;
    c.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut pending = Vec::new();
    let mut buf = [0u8; 4096];
    let mut idle = 0;
    loop {
        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let close = pending[..end].windows(17).any(|w| w.eq_ignore_ascii_case(b"connection: close"));
            pending.drain(..end + 4);
            c.write_all(resp)?;
            if close {
                return Ok(());
            }
        }
        match c.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                pending.extend_from_slice(&buf[..n]);
                idle = 0;
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                idle += 1;
                if stop.load(Ordering::Relaxed) || idle > 50 {
                    return Ok(());
                }
            }
            Err(e) => return Err(e),
        }
    }
}
