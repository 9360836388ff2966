//! Client traffic: single UDP datagrams and flows whose answers name the
//! backend, and the background load that makes a hot spot while the status
//! page is watched.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Result;
use lb::maglev::{self, Candidate};
use lb_common::{FlowKey, hash::flow_hash, net::IPPROTO_UDP};
use lb_tests::netns::in_netns;
use lb_tests::topology::VIP_V4;
use lb_tests::traffic::{TcpLoad, tcp_client};

use super::{CLIENT, RING, World};

/// One datagram from `CLIENT:port` to the UDP VIP; the backend's name that echoed it.
pub(super) fn udp_from(ns: &str, port: u16, target: SocketAddr) -> Result<String> {
    in_netns(ns, move || {
        let s = UdpSocket::bind(SocketAddr::new(CLIENT.into(), port))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.send_to(b"observe", target)?;
        let mut buf = [0u8; 64];
        let (n, _) = s.recv_from(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).trim().to_string())
    })
}

/// `count` datagrams from one socket (one flow), each answered.
pub(super) fn udp_flow(ns: &str, port: u16, target: SocketAddr, count: usize) -> Result<Vec<String>> {
    in_netns(ns, move || {
        let s = UdpSocket::bind(SocketAddr::new(CLIENT.into(), port))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut names = Vec::new();
        for _ in 0..count {
            s.send_to(b"observe", target)?;
            let mut buf = [0u8; 64];
            let (n, _) = s.recv_from(&mut buf)?;
            names.push(String::from_utf8_lossy(&buf[..n]).trim().to_string());
        }
        Ok(names)
    })
}
/// Traffic while the page is watched: TCP connections to the TCP VIP, and
/// new UDP flows of which 80% go to backend1 (the ring predicted in
/// userspace), so backend1 is a hot spot of the UDP VIP.
pub(super) struct Background {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Background {
    pub(super) fn start(w: &World) -> Background {
        let stop = Arc::new(AtomicBool::new(false));
        let client = w.topo.client().ns.clone();
        let mut threads = Vec::new();
        {
            let (stop, client, target) = (stop.clone(), client.clone(), w.tcp.target());
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let mut load = TcpLoad::new(target, 10);
                    load.requests = 5;
                    let _ = tcp_client(&client, &load);
                }
            }));
        }
        let candidates: Vec<Candidate> =
            w.topo.backends().iter().map(|b| Candidate { address: b.v4.into(), weight: 1 }).collect();
        let table = maglev::build(&candidates, RING);
        let goes_to = |port: u16| {
            table[(flow_hash(&FlowKey::new(CLIENT.into(), port, VIP_V4.into(), 5353, IPPROTO_UDP)) % RING) as usize]
        };
        let (mut hot, mut other) = (Vec::new(), Vec::new());
        for port in 20_000..40_000u16 {
            if goes_to(port) == Some(0) { hot.push(port) } else { other.push(port) }
        }
        let mut ports: Vec<u16> = Vec::new();
        for (i, chunk) in hot.chunks(4).enumerate() {
            ports.extend_from_slice(chunk);
            ports.push(other[i % other.len()]);
        }
        {
            let (stop, target) = (stop.clone(), w.udp.target());
            threads.push(std::thread::spawn(move || {
                let _ = in_netns(&client, move || {
                    // One datagram from each fresh port: a new flow each, ~400/s.
                    for port in ports {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        if let Ok(s) = UdpSocket::bind(SocketAddr::new(CLIENT.into(), port)) {
                            let _ = s.send_to(b"hot", target);
                        }
                        std::thread::sleep(Duration::from_micros(2500));
                    }
                    Ok(())
                });
            }));
        }
        Background { stop, threads }
    }

    pub(super) fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
    }
}
