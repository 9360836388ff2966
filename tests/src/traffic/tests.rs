//! Tests of the traffic helpers that need no namespace: the run summary, and an HTTP round trip on loopback.

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;

use super::client::tcp_connection;
use super::servers::serve_http;
use super::{ConnResult, Summary, TcpLoad};

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
