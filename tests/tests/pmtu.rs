//! Path MTU discovery through the tunnel: the client keeps its 1500-byte
//! MTU, its full-size segments would not fit once encapsulated, lb answers
//! them with ICMP fragmentation-needed / packet-too-big, the client's kernel
//! lowers the path MTU, and a large upload through IP-in-IP completes.
//! Needs root (skipped otherwise) and the `lb` binary.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lb_tests::netns::{in_netns, is_root, spawn_in_netns};
use lb_tests::topology::{Forwarding, Topology, TopologyOptions, VIP_V4, VIP_V6, VipSpec};

/// Port of the sink servers on the backends.
const PORT: u16 = 9000;
/// Bytes uploaded per connection: many full-size segments.
const UPLOAD: usize = 2 << 20;
const OP_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections on the VIPs, reads each to EOF, answers with the
/// number of bytes read. Stops when `stop` is set.
fn start_sinks(topo: &Topology, stop: &Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<anyhow::Result<()>>> {
    let mut handles = Vec::new();
    for b in topo.backends() {
        for vip in [SocketAddr::new(VIP_V4.into(), PORT), SocketAddr::new(VIP_V6.into(), PORT)] {
            let stop = stop.clone();
            let h = spawn_in_netns(&b.ns, "sink", move || {
                let listener = TcpListener::bind(vip)?;
                listener.set_nonblocking(true)?;
                let deadline = Instant::now() + Duration::from_secs(120);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    match listener.accept() {
                        Ok((mut conn, _)) => {
                            conn.set_nonblocking(false)?;
                            conn.set_read_timeout(Some(OP_TIMEOUT))?;
                            let mut total = 0usize;
                            let mut buf = [0u8; 65536];
                            loop {
                                let n = conn.read(&mut buf)?;
                                if n == 0 {
                                    break;
                                }
                                total += n;
                            }
                            conn.write_all(format!("{total}\n").as_bytes())?;
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(10))
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(())
            })
            .expect("sink thread");
            handles.push(h);
        }
    }
    handles
}

fn upload(client_ns: &str, to: SocketAddr) -> anyhow::Result<usize> {
    in_netns(client_ns, move || {
        let mut conn = TcpStream::connect_timeout(&to, OP_TIMEOUT)?;
        conn.set_write_timeout(Some(OP_TIMEOUT))?;
        conn.set_read_timeout(Some(OP_TIMEOUT))?;
        let chunk = vec![0x5au8; 64 * 1024];
        let mut sent = 0;
        while sent < UPLOAD {
            conn.write_all(&chunk)?;
            sent += chunk.len();
        }
        conn.shutdown(Shutdown::Write)?;
        let mut answer = String::new();
        conn.read_to_string(&mut answer)?;
        Ok(answer.trim().parse()?)
    })
}

#[test]
fn large_uploads_through_ipip_complete_at_a_1500_byte_client_mtu() {
    if !is_root() {
        eprintln!("skipped: the end-to-end tests need root");
        return;
    }
    let opts = TopologyOptions { client_mtu: 1500, ..TopologyOptions::default() };
    let mut topo = Topology::new(opts).expect("topology");
    let vips = [
        VipSpec::tcp(VIP_V4, PORT, Forwarding::Ipip).ring_size(251),
        VipSpec::tcp(VIP_V6, PORT, Forwarding::Ipip).ring_size(251),
    ];
    let config = topo.write_config(&vips);
    topo.start_lb(&config).expect("lb run");
    let stop = Arc::new(AtomicBool::new(false));
    let sinks = start_sinks(&topo, &stop);
    std::thread::sleep(Duration::from_millis(200));
    let client = topo.client().ns.clone();
    for to in [SocketAddr::new(VIP_V4.into(), PORT), SocketAddr::new(VIP_V6.into(), PORT)] {
        let got = upload(&client, to).unwrap_or_else(|e| panic!("upload to {to}: {e:#}\n{}", topo.logs()));
        assert_eq!(got, UPLOAD, "upload to {to}");
    }
    let stats = topo.lb_cli(&["stats", "--json"]).expect("lb stats");
    let json: serde_json::Value = serde_json::from_str(&stats).expect("stats JSON");
    let too_big = json.pointer("/counters/tx_icmp_too_big").and_then(|v| v.as_u64()).unwrap_or_default();
    assert!(too_big >= 2, "lb answered {too_big} too-big packets; expected at least one per family\n{stats}");
    println!("2 x {UPLOAD} bytes uploaded at client MTU 1500 through IP-in-IP; lb sent {too_big} too-big answers");
    stop.store(true, Ordering::Relaxed);
    for s in sinks {
        let _ = s.join();
    }
}
