use std::{
    future::Future,
    net::Ipv4Addr,
    sync::atomic::{AtomicU16, Ordering},
};

use tokio::{io::AsyncReadExt, net::TcpListener, sync::mpsc::error::TryRecvError, task::JoinHandle, time::timeout};

use super::*;

// ---- Hysteresis ----

/// Feeds `checks` ('S' success, 'F' failure) and returns the transitions.
fn feed(h: &mut Hysteresis, checks: &str) -> Vec<Option<Health>> {
    checks.chars().map(|c| h.record(c == 'S')).collect()
}

#[test]
fn hysteresis_flaps_below_fall_never_go_down() {
    let mut h = Hysteresis::new(Health::Up, 2, 3);
    assert_eq!(feed(&mut h, "FFSFFSFFS"), vec![None; 9]);
    assert_eq!(h.health, Health::Up);
}

#[test]
fn hysteresis_goes_down_on_the_fall_th_failure_only_once() {
    let mut h = Hysteresis::new(Health::Up, 2, 3);
    assert_eq!(feed(&mut h, "FFF"), vec![None, None, Some(Health::Down)]);
    assert_eq!(feed(&mut h, "FFFF"), vec![None; 4]);
    assert_eq!((h.health, h.failed, h.ok), (Health::Down, 7, 0));
}

#[test]
fn hysteresis_comes_back_after_rise_successes() {
    let mut h = Hysteresis::new(Health::Down, 2, 3);
    assert_eq!(feed(&mut h, "SFSFS"), vec![None; 5]);
    assert_eq!(h.record(true), Some(Health::Up));
    assert_eq!(feed(&mut h, "SS"), vec![None; 2]);
    assert_eq!((h.health, h.ok, h.failed), (Health::Up, 4, 0));
}

#[test]
fn hysteresis_full_cycle() {
    let mut h = Hysteresis::new(Health::Up, 2, 3);
    let seen: Vec<_> = feed(&mut h, "SFFFSFSS").into_iter().flatten().collect();
    assert_eq!(seen, vec![Health::Down, Health::Up]);
}

#[test]
fn hysteresis_thresholds_of_one_follow_every_check() {
    let mut h = Hysteresis::new(Health::Up, 1, 1);
    assert_eq!(feed(&mut h, "FFSS"), vec![Some(Health::Down), None, Some(Health::Up), None]);
}

// ---- Pace: interval, fastinter, downinter ----

#[test]
fn pace_follows_every_state() {
    let i = Intervals::new(10_000, Some(100), Some(3_000));
    // Up and settled: the interval; the first failure switches to fastinter
    // until the backend is down, then downinter.
    let mut h = Hysteresis::new(Health::Up, 2, 3);
    let mut seen = vec![pace(&h)];
    for c in "SFFFF".chars() {
        h.record(c == 'S');
        seen.push(pace(&h));
    }
    use Pace::*;
    assert_eq!(seen, vec![Interval, Interval, Fastinter, Fastinter, Downinter, Downinter]);
    // Down with a success: fastinter while coming up, a failure returns to
    // downinter, and once up again the interval.
    let seen: Vec<_> = "SFSSS"
        .chars()
        .map(|c| {
            h.record(c == 'S');
            pace(&h)
        })
        .collect();
    assert_eq!(seen, vec![Fastinter, Downinter, Fastinter, Interval, Interval]);
    // A success after failures short of `fall` settles back to the interval.
    let mut h = Hysteresis::new(Health::Up, 2, 3);
    h.record(false);
    h.record(true);
    assert_eq!(pace(&h), Interval);
    assert_eq!([Interval, Fastinter, Downinter].map(|p| i.of(p)), [10_000, 100, 3_000].map(Duration::from_millis));
}

#[test]
fn pace_intervals_default_to_the_interval() {
    let i = Intervals::new(2_000, None, None);
    for p in [Pace::Interval, Pace::Fastinter, Pace::Downinter] {
        assert_eq!(i.of(p), Duration::from_millis(2_000));
    }
    assert_eq!(Intervals::new(2_000, Some(50), None).of(Pace::Downinter), Duration::from_millis(2_000));
}

#[test]
fn pace_remembers_the_last_probes_only() {
    let mut recent = VecDeque::new();
    for n in 0..RECENT_PROBES as u64 + 5 {
        let r = ProbeRecord { at_unix_ms: n, ok: true, health: Health::Up, next: Pace::Interval, next_ms: 1 };
        pace::remember(&mut recent, r);
    }
    assert_eq!(recent.len(), RECENT_PROBES);
    assert_eq!(recent.front().map(|r| r.at_unix_ms), Some(5));
}

// ---- HTTP status line ----

#[test]
fn health_status_line_parsing() {
    assert_eq!(parse_status_line(b"HTTP/1.1 200 OK\r\n"), Ok(200));
    assert_eq!(parse_status_line(b"HTTP/1.0 503 Service Unavailable\r\n"), Ok(503));
    assert_eq!(parse_status_line(b"HTTP/1.1 204\n"), Ok(204));
    for bad in [&b"SSH-2.0-OpenSSH_9.6\r\n"[..], b"HTTP/1.1 2000 X\r\n", b"HTTP/1.1 OK\r\n", b"\r\n"] {
        let e = parse_status_line(bad).unwrap_err();
        assert!(e.starts_with("bad status line"), "{e}");
    }
}

// ---- Real sockets, 127.0.0.1 only ----

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Bound on every wait: generous, as it only matters when a test fails.
const WAIT: Duration = Duration::from_secs(10);

/// A target per `n`: the VIP key only tells targets apart.
fn target(n: u16) -> Target {
    Target { vip: VipKey::new(LOCAL, n, IPPROTO_TCP), backend: LOCAL }
}

fn spec(kind: CheckKind, port: u16) -> CheckSpec {
    CheckSpec {
        kind,
        port,
        intervals: Intervals::new(50, None, None),
        timeout: Duration::from_millis(200),
        rise: 2,
        fall: 3,
    }
}

fn http(expect_status: u16) -> CheckKind {
    CheckKind::Http { path: "/healthz".into(), expect_status }
}

async fn listen() -> (TcpListener, u16) {
    let l = TcpListener::bind((LOCAL, 0)).await.unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

/// A port nothing listens on (just released by us).
async fn closed_port() -> u16 {
    listen().await.1
}

/// Accepts and closes connections until stopped.
fn tcp_server(l: TcpListener) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let _ = l.accept().await;
        }
    })
}

/// Stops a server; its listener is closed once this returns.
async fn stop(server: JoinHandle<()>) {
    server.abort();
    let _ = server.await;
}

/// Serves one connection at a time: reads the request, then answers with
/// the status `answer` gives for the n-th connection (from 0), or closes
/// without answering on None. Keeps the last request in `seen`.
fn http_server(
    l: TcpListener,
    seen: Arc<Mutex<String>>,
    answer: impl Fn(u64) -> Option<u16> + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        for n in 0.. {
            let Ok((mut s, _)) = l.accept().await else { continue };
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.ends_with(b"\r\n\r\n") {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(k) => req.extend_from_slice(&buf[..k]),
                }
            }
            *seen.lock().unwrap() = String::from_utf8_lossy(&req).into_owned();
            if let Some(code) = answer(n) {
                let resp = format!("HTTP/1.1 {code} Whatever\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                let _ = s.write_all(resp.as_bytes()).await;
            }
        }
    })
}

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    timeout(WAIT, f).await.unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

async fn next_event(rx: &mut mpsc::Receiver<HealthEvent>) -> HealthEvent {
    within("a health event", rx.recv()).await.expect("events channel open")
}

/// Polls `cond` until it holds.
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    within(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

fn checks(m: &HealthMonitor, t: &Target) -> u64 {
    m.status(t).map_or(0, |s| s.checks)
}

fn monitor() -> (HealthMonitor, mpsc::Receiver<HealthEvent>, CancellationToken) {
    let (tx, rx) = mpsc::channel(16);
    let cancel = CancellationToken::new();
    (HealthMonitor::new(tx, cancel.clone()), rx, cancel)
}

#[tokio::test]
async fn health_check_reports_what_it_saw() {
    let seen = Arc::new(Mutex::new(String::new()));
    let (l, port) = listen().await;
    let status = Arc::new(AtomicU16::new(200));
    let s = Arc::clone(&status);
    let server = http_server(l, Arc::clone(&seen), move |_| Some(s.load(Ordering::SeqCst)));

    assert_eq!(check(LOCAL, &spec(CheckKind::Tcp, port)).await, Ok("connected".into()));
    assert_eq!(check(LOCAL, &spec(http(200), port)).await, Ok("http status 200".into()));
    assert_eq!(
        *seen.lock().unwrap(),
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: lb-health\r\nConnection: close\r\n\r\n"
    );
    status.store(503, Ordering::SeqCst);
    assert_eq!(check(LOCAL, &spec(http(200), port)).await, Err("http status 503, expected 200".into()));
    stop(server).await;

    let e = check(LOCAL, &spec(CheckKind::Tcp, closed_port().await)).await.unwrap_err();
    assert!(e.starts_with("connect: "), "{e}");

    // Accepts (the kernel does) but never answers.
    let (silent, port) = listen().await;
    assert_eq!(check(LOCAL, &spec(http(200), port)).await, Err("timeout after 200 ms".into()));
    drop(silent);

    let (l, port) = listen().await;
    let server = tokio::spawn(async move {
        loop {
            if let Ok((mut s, _)) = l.accept().await {
                let _ = s.write_all(b"SSH-2.0-OpenSSH_9.6\r\n").await;
            }
        }
    });
    let e = check(LOCAL, &spec(http(200), port)).await.unwrap_err();
    assert!(e.starts_with("bad status line \"SSH-2.0"), "{e}");
    stop(server).await;

    let (l, port) = listen().await;
    let server = http_server(l, seen, |_| None);
    assert_eq!(check(LOCAL, &spec(http(200), port)).await, Err("connection closed before the status line".into()));
    stop(server).await;
}

#[tokio::test]
async fn health_tcp_down_after_fall_then_up_after_rise() {
    let (mut m, mut rx, _cancel) = monitor();
    let (l, port) = listen().await;
    let mut server = tcp_server(l);
    let t = target(1);
    m.sync(&[(t, spec(CheckKind::Tcp, port), Health::Up)]);
    wait_until("a few successful checks", || checks(&m, &t) >= 3).await;
    assert_eq!(m.status(&t).unwrap().failures, 0);

    stop(server).await;
    let ev = next_event(&mut rx).await;
    assert_eq!((ev.target, ev.health), (t, Health::Down));
    assert!(ev.reason.starts_with("connect: "), "{}", ev.reason);
    let s = m.status(&t).unwrap();
    assert_eq!((s.health, s.transitions), (Health::Down, 1));
    assert!(s.failures >= 3 && s.consecutive_failed >= 3, "{s:?}");

    server = tcp_server(TcpListener::bind((LOCAL, port)).await.unwrap());
    let ev = next_event(&mut rx).await;
    assert_eq!((ev.target, ev.health, ev.reason.as_str()), (t, Health::Up, "connected"));
    let s = m.status(&t).unwrap();
    assert_eq!((s.health, s.transitions), (Health::Up, 2));
    assert!(s.consecutive_ok >= 2, "{s:?}");
    stop(server).await;
}

#[tokio::test]
async fn health_http_up_then_down_on_503() {
    let (mut m, mut rx, _cancel) = monitor();
    let (l, port) = listen().await;
    let status = Arc::new(AtomicU16::new(200));
    let s = Arc::clone(&status);
    let server = http_server(l, Arc::default(), move |_| Some(s.load(Ordering::SeqCst)));
    let t = target(1);
    // Starts down: `rise` good answers bring it up.
    m.sync(&[(t, spec(http(200), port), Health::Down)]);
    let ev = next_event(&mut rx).await;
    assert_eq!((ev.health, ev.reason.as_str()), (Health::Up, "http status 200"));
    assert_eq!(m.status(&t).unwrap().checks, 2);

    status.store(503, Ordering::SeqCst);
    let ev = next_event(&mut rx).await;
    assert_eq!((ev.target, ev.health, ev.reason.as_str()), (t, Health::Down, "http status 503, expected 200"));
    assert_eq!(m.status(&t).unwrap().last_result, "http status 503, expected 200");
    stop(server).await;
}

#[tokio::test]
async fn health_flapping_below_thresholds_sends_no_event() {
    let (mut m, mut rx, _cancel) = monitor();
    let mut wanted = Vec::new();
    let mut servers = Vec::new();
    // One server per probe, so each probe sees success and failure alternate.
    for (n, health) in [(1, Health::Up), (2, Health::Down)] {
        let (l, port) = listen().await;
        servers.push(http_server(l, Arc::default(), |n| (n % 2 == 0).then_some(200)));
        wanted.push((target(n), CheckSpec { rise: 2, fall: 2, ..spec(http(200), port) }, health));
    }
    m.sync(&wanted);
    wait_until("eight checks each", || wanted.iter().all(|(t, ..)| checks(&m, t) >= 8)).await;

    assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Empty);
    for (t, _, health) in &wanted {
        let s = m.status(t).unwrap();
        assert_eq!((s.health, s.transitions), (*health, 0));
        assert!(s.failures >= 3, "{s:?}");
    }
    for s in servers {
        stop(s).await;
    }
}

#[tokio::test]
async fn health_sync_starts_stops_and_restarts_probes() {
    let (mut m, mut rx, _cancel) = monitor();
    let (l, live) = listen().await;
    let server = tcp_server(l);
    let (a, b) = (target(1), target(2));
    let failing = spec(CheckKind::Tcp, closed_port().await);
    m.sync(&[(a, failing.clone(), Health::Down), (b, spec(CheckKind::Tcp, live), Health::Up)]);
    // The monitor holds one sender, each running task another.
    assert_eq!(rx.sender_strong_count(), 3);
    wait_until("a failing a few times", || m.status(&a).unwrap().consecutive_failed >= 2).await;

    // Same spec: left running.
    m.sync(&[(a, failing.clone(), Health::Down), (b, spec(CheckKind::Tcp, live), Health::Up)]);
    assert_eq!(rx.sender_strong_count(), 3);
    assert!(m.status(&a).unwrap().consecutive_failed >= 2);

    // b goes; a's spec changes: restarted, keeping its health and totals.
    let before = m.status(&a).unwrap();
    m.sync(&[(a, spec(CheckKind::Tcp, live), Health::Up)]);
    assert!(m.status(&b).is_none());
    let s = m.status(&a).unwrap();
    assert_eq!((s.health, s.consecutive_failed), (Health::Down, 0));
    assert!(s.checks >= before.checks && s.failures >= before.failures, "{s:?}");
    wait_until("the stopped probes to end", || rx.sender_strong_count() == 2).await;
    let ev = next_event(&mut rx).await;
    assert_eq!((ev.target, ev.health), (a, Health::Up));
    assert_eq!(m.statuses().iter().map(|(t, _)| *t).collect::<Vec<_>>(), vec![a]);

    m.sync(&[]);
    assert!(m.statuses().is_empty());
    wait_until("every probe to end", || rx.sender_strong_count() == 1).await;
    stop(server).await;
}

#[tokio::test]
async fn health_cancel_and_drop_stop_every_probe() {
    let (l, port) = listen().await;
    let server = tcp_server(l);
    let wanted: Vec<_> = (1..=3).map(|n| (target(n), spec(CheckKind::Tcp, port), Health::Up)).collect();

    let (mut m, rx, cancel) = monitor();
    m.sync(&wanted);
    assert_eq!(rx.sender_strong_count(), 4);
    cancel.cancel();
    wait_until("the probes to end on cancel", || rx.sender_strong_count() == 1).await;

    let (mut m, mut rx, _cancel) = monitor();
    m.sync(&wanted);
    drop(m);
    // Every sender gone: the tasks have ended.
    assert!(within("the probes to end on drop", rx.recv()).await.is_none());
    stop(server).await;
}
