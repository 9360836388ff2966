use std::net::Ipv4Addr;

use lb_common::{VipKey, net::IPPROTO_TCP};
use tokio::{io::AsyncWriteExt, net::TcpListener};

use super::{reply::*, *};

fn words(line: &str) -> (Option<u32>, Option<AgentAdmin>, Option<bool>, Option<String>, usize) {
    let r = parse(line);
    (r.weight_pct, r.admin, r.up, r.reason, r.warnings.len())
}

#[test]
fn every_word() {
    use AgentAdmin::*;
    assert_eq!(words("75%"), (Some(75), None, None, None, 0));
    assert_eq!(words("0%"), (Some(0), None, None, None, 0));
    assert_eq!(words("ready"), (None, Some(Ready), None, None, 0));
    assert_eq!(words("drain"), (None, Some(Drain), None, None, 0));
    assert_eq!(words("maint"), (None, Some(Maint), None, None, 0));
    assert_eq!(words("up"), (None, None, Some(true), None, 0));
    for w in ["down", "fail", "stopped", "DOWN", "Stopped"] {
        assert_eq!(words(w), (None, None, Some(false), None, 0), "{w}");
        assert_eq!(parse(w).health_word.as_deref(), Some(w.to_ascii_lowercase().as_str()));
    }
    assert_eq!(words("READY"), (None, Some(Ready), None, None, 0));
    assert_eq!(words(""), (None, None, None, None, 0));
    assert!(parse("  ,\t ").is_empty());
}

#[test]
fn combinations_separators_and_the_last_word_of_a_kind_wins() {
    use AgentAdmin::*;
    assert_eq!(words("75% drain"), (Some(75), Some(Drain), None, None, 0));
    assert_eq!(words("ready 100%"), (Some(100), Some(Ready), None, None, 0));
    assert_eq!(words("50%,maint\tup"), (Some(50), Some(Maint), Some(true), None, 0));
    assert_eq!(words("10% 20% drain ready down up"), (Some(20), Some(Ready), Some(true), None, 0));
    assert_eq!(
        words("down # disk full, sorry"),
        (None, None, Some(false), Some("disk full, sorry".into()), 0),
        "the words end at #"
    );
    assert_eq!(words("50% #no health word: no reason"), (Some(50), None, None, None, 0));
}

#[test]
fn garbage_is_reported_and_the_rest_still_applies() {
    let r = parse("75% frobnicate drain 5x% maxconn:30");
    assert_eq!((r.weight_pct, r.admin), (Some(75), Some(AgentAdmin::Drain)));
    assert_eq!(r.warnings.len(), 3, "{:?}", r.warnings);
    assert!(r.warnings[0].contains("frobnicate"), "{:?}", r.warnings);
    assert!(r.warnings[1].contains("5x%"), "{:?}", r.warnings);
    assert!(r.warnings[2].contains("maxconn"), "{:?}", r.warnings);
    let r = parse("%50 50 percent");
    assert!(r.is_empty() && r.warnings.len() == 3, "{r:?}");
    let r = parse("300%");
    assert_eq!(r.weight_pct, Some(MAX_AGENT_PCT));
    assert!(r.warnings[0].contains("capped"), "{:?}", r.warnings);
    assert_eq!(parse("99999999999999999999999%").weight_pct, Some(MAX_AGENT_PCT));
    assert_eq!(parse("75% drain").to_string(), "weight 75% drain");
    assert_eq!(parse("fail # gone").to_string(), "fail (gone)");
}

#[test]
fn a_reply_is_one_complete_bounded_line() {
    assert_eq!(line(b"75% drain\n"), Ok("75% drain"));
    assert_eq!(line(b"up\r\n"), Ok("up"));
    assert_eq!(line(b"up\nignored second line\n"), Ok("up"));
    assert!(line(b"up").unwrap_err().contains("incomplete"));
    assert!(line(&[b'a'; MAX_REPLY]).unwrap_err().contains("512"));
    assert!(line(b"\xff\xfe\n").unwrap_err().contains("UTF-8"));
}

#[test]
fn merge_keeps_what_a_reply_leaves_out() {
    let t =
        Target { vip: VipKey::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 80, IPPROTO_TCP), backend: [127, 0, 0, 1].into() };
    let mut factors = HashMap::new();
    assert!(merge(&mut factors, t, &parse("50%")));
    assert!(merge(&mut factors, t, &parse("drain")));
    assert_eq!((factors[&t].agent_pct, factors[&t].agent_admin), (50, AgentAdmin::Drain));
    assert!(!merge(&mut factors, t, &parse("drain 50%")), "nothing new");
    assert!(merge(&mut factors, t, &parse("down")));
    assert!(factors[&t].agent_down);
    assert!(merge(&mut factors, t, &parse("ready up 100%")));
    assert!(factors[&t].is_neutral());
}

// ---- Real sockets, 127.0.0.1 only ----

/// An agent on 127.0.0.1 answering each connection with the next of `lines`
/// (the last one again and again), after reading what lb sends, if `expect`.
async fn agent_server(lines: Vec<&'static [u8]>, expect: Option<&'static str>) -> u16 {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        for n in 0.. {
            let Ok((mut s, _)) = l.accept().await else { return };
            if let Some(want) = expect {
                let mut got = vec![0; want.len()];
                if tokio::io::AsyncReadExt::read_exact(&mut s, &mut got).await.is_err() || got != want.as_bytes() {
                    continue;
                }
            }
            let _ = s.write_all(lines[n.min(lines.len() - 1)]).await;
        }
    });
    port
}

fn spec(port: u16, send: Option<&str>) -> AgentSpec {
    AgentSpec {
        port,
        interval: Duration::from_millis(20),
        timeout: Duration::from_millis(500),
        send: send.map(str::to_string),
    }
}

#[tokio::test]
async fn the_monitor_sends_each_new_reply_once() {
    let port = agent_server(vec![b"50%\n", b"50%\n", b"drain # busy\n", b"ready 100%\n"], Some("hello\n")).await;
    let mut m = AgentMonitor::default();
    let mut events = m.take_events();
    let t =
        Target { vip: VipKey::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 80, IPPROTO_TCP), backend: [127, 0, 0, 1].into() };
    m.sync(&[(t, spec(port, Some("hello\n")))]);
    let mut seen = Vec::new();
    for _ in 0..3 {
        let ev = tokio::time::timeout(Duration::from_secs(10), events.recv()).await.unwrap().unwrap();
        seen.push(ev.reply.to_string());
    }
    assert_eq!(seen, ["weight 50%", "drain", "weight 100% ready"]);
    let status = m.status(&t).unwrap();
    assert!(status.replies >= 4, "{status:?}");
    assert_eq!(status.last_reply.as_deref(), Some("ready 100%"));
    m.sync(&[]);
    assert!(m.status(&t).is_none());
}

#[tokio::test]
async fn failed_exchanges_change_nothing_and_are_counted() {
    // Closed port, and an agent that never ends its line.
    let closed = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap().local_addr().unwrap().port();
    let partial = agent_server(vec![b"50%"], None).await;
    let mut m = AgentMonitor::default();
    let mut events = m.take_events();
    let key = |p| VipKey::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p, IPPROTO_TCP);
    let (t1, t2) = (
        Target { vip: key(1), backend: [127, 0, 0, 1].into() },
        Target { vip: key(2), backend: [127, 0, 0, 1].into() },
    );
    m.sync(&[(t1, spec(closed, None)), (t2, spec(partial, None))]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while [t1, t2].iter().any(|t| m.status(t).unwrap().failures < 3) {
        assert!(tokio::time::Instant::now() < deadline, "{:?} {:?}", m.status(&t1), m.status(&t2));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(events.try_recv().is_err(), "a failure sent an event");
    assert!(m.status(&t1).unwrap().last_error.unwrap().contains("connect"));
    assert!(m.status(&t2).unwrap().last_error.unwrap().contains("incomplete"));
}
