//! The new-connections load of the HAProxy comparison: one thread, epoll,
//! `IN_FLIGHT` non-blocking connections at a time, each: connect, send one
//! pre-built `Connection: close` request, read until the server closes
//! (the answer must start with `HTTP/1.1 200`), close. Far cheaper per
//! connection than a blocking thread per connection, so the generator's
//! CPU goes into TCP, not into scheduling.

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

const IN_FLIGHT: usize = 64;
const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n";

#[derive(Clone, Copy)]
struct Slot {
    fd: i32,
    connected: bool,
    /// First bytes of the answer (to check the status line).
    head: [u8; 12],
    got: usize,
    since: Instant,
}

fn os_err() -> std::io::Error {
    std::io::Error::last_os_error()
}

fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(*a.ip()).to_be() },
        sin_zero: [0; 8],
    }
}

/// Connections that completed and that failed, in `secs` seconds, from the
/// calling thread (which must already be in the client's namespace).
pub fn run(target: SocketAddrV4, secs: f64, timeout: Duration) -> Result<(u64, u64)> {
    // SAFETY: plain syscalls on descriptors this function owns.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        bail!("epoll_create1: {}", os_err());
    }
    let sa = sockaddr(target);
    let mut slots: Vec<Option<Slot>> = vec![None; IN_FLIGHT];
    let (mut ok, mut failed) = (0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; IN_FLIGHT];
    let mut buf = [0u8; 4096];
    let mut last_sweep = Instant::now();
    let close = |s: &Slot| unsafe {
        libc::close(s.fd);
    };
    let result = (|| -> Result<()> {
        loop {
            let now = Instant::now();
            let running = now < deadline && !lb_tests::netns::abort_requested();
            if running {
                for (i, slot) in slots.iter_mut().enumerate() {
                    if slot.is_some() {
                        continue;
                    }
                    let fd = unsafe {
                        libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0)
                    };
                    if fd < 0 {
                        bail!("socket: {}", os_err());
                    }
                    let rc = unsafe {
                        libc::connect(
                            fd,
                            &sa as *const _ as *const libc::sockaddr,
                            std::mem::size_of::<libc::sockaddr_in>() as u32,
                        )
                    };
                    if rc != 0 && os_err().raw_os_error() != Some(libc::EINPROGRESS) {
                        unsafe { libc::close(fd) };
                        failed += 1;
                        continue;
                    }
                    let mut ev = libc::epoll_event { events: libc::EPOLLOUT as u32, u64: i as u64 };
                    if unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) } != 0 {
                        bail!("epoll_ctl: {}", os_err());
                    }
                    *slot = Some(Slot { fd, connected: false, head: [0; 12], got: 0, since: now });
                }
            } else if slots.iter().all(|s| s.is_none()) {
                return Ok(());
            }
            let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, 50) };
            if n < 0 {
                if os_err().kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                bail!("epoll_wait: {}", os_err());
            }
            for ev in &events[..n as usize] {
                let i = ev.u64 as usize;
                let Some(s) = slots[i].as_mut() else { continue };
                // Ok(true) = done, Ok(false) = keep waiting, Err = failed.
                let step = (|| -> std::result::Result<bool, ()> {
                    if !s.connected {
                        let mut err: i32 = 0;
                        let mut len = std::mem::size_of::<i32>() as u32;
                        let rc = unsafe {
                            libc::getsockopt(
                                s.fd,
                                libc::SOL_SOCKET,
                                libc::SO_ERROR,
                                &mut err as *mut _ as *mut libc::c_void,
                                &mut len,
                            )
                        };
                        if rc != 0 || err != 0 {
                            return Err(());
                        }
                        let w = unsafe {
                            libc::send(s.fd, REQUEST.as_ptr() as *const libc::c_void, REQUEST.len(), libc::MSG_NOSIGNAL)
                        };
                        if w != REQUEST.len() as isize {
                            return Err(());
                        }
                        s.connected = true;
                        let mut e = libc::epoll_event { events: libc::EPOLLIN as u32, u64: i as u64 };
                        if unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_MOD, s.fd, &mut e) } != 0 {
                            return Err(());
                        }
                        return Ok(false);
                    }
                    loop {
                        let r = unsafe { libc::recv(s.fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
                        if r > 0 {
                            let r = r as usize;
                            let take = r.min(s.head.len().saturating_sub(s.got));
                            s.head[s.got..s.got + take].copy_from_slice(&buf[..take]);
                            s.got += r;
                        } else if r == 0 {
                            return if s.got >= 12 && &s.head == b"HTTP/1.1 200" { Ok(true) } else { Err(()) };
                        } else if os_err().raw_os_error() == Some(libc::EAGAIN) {
                            return Ok(false);
                        } else {
                            return Err(());
                        }
                    }
                })();
                match step {
                    Ok(false) => {}
                    Ok(true) => {
                        ok += 1;
                        close(s);
                        slots[i] = None;
                    }
                    Err(()) => {
                        failed += 1;
                        close(s);
                        slots[i] = None;
                    }
                }
            }
            if last_sweep.elapsed() > Duration::from_millis(100) {
                last_sweep = Instant::now();
                for slot in slots.iter_mut() {
                    if slot.is_some_and(|s| s.since.elapsed() > timeout) {
                        failed += 1;
                        close(&slot.take().unwrap());
                    }
                }
            }
        }
    })();
    for s in slots.iter().flatten() {
        close(s);
    }
    unsafe { libc::close(ep) };
    result.map(|()| (ok, failed))
}
