use std::{
    collections::BTreeSet,
    net::IpAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::UnixListener,
    sync::oneshot,
};

use super::{
    bird::{Line, parse_line},
    *,
};
use crate::config::{BgpConfig, Config};

fn set(addrs: &[&str]) -> BTreeSet<IpAddr> {
    addrs.iter().map(|a| a.parse().unwrap()).collect()
}

#[test]
fn include_file_has_one_route_per_address_in_its_family() {
    let text = render("lb_vips", &set(&["198.18.100.2", "2001:db8:100::1", "198.18.100.1"]));
    let body: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        body,
        [
            "protocol static lb_vips4 {",
            "  ipv4;",
            "  route 198.18.100.1/32 blackhole;",
            "  route 198.18.100.2/32 blackhole;",
            "}",
            "protocol static lb_vips6 {",
            "  ipv6;",
            "  route 2001:db8:100::1/128 blackhole;",
            "}",
        ]
    );
    let empty = render("x", &BTreeSet::new());
    assert!(
        empty.contains("protocol static x4 {\n  ipv4;\n}\n") && empty.contains("protocol static x6 {\n  ipv6;\n}\n")
    );
}

#[test]
fn reply_lines() {
    assert_eq!(parse_line("0001 BIRD 2.0.12 ready."), Some(Line::Last(1, "BIRD 2.0.12 ready.")));
    assert_eq!(
        parse_line("0002-Reading configuration from /etc/bird.conf"),
        Some(Line::More(2, "Reading configuration from /etc/bird.conf"))
    );
    assert_eq!(parse_line(" Hostname is vm"), Some(Line::Continued("Hostname is vm")));
    assert_eq!(parse_line("8002 bird.conf:1:5 syntax error"), Some(Line::Last(8002, "bird.conf:1:5 syntax error")));
    assert_eq!(parse_line("0013"), Some(Line::Last(13, "")));
    for bad in ["", "12", "+123 x", "abcd x", "0001x"] {
        assert_eq!(parse_line(bad), None, "{bad:?}");
    }
}

#[test]
fn ready_means_a_backend_in_the_table() {
    let text = "[global]\nnexthop_mac = \"02:00:00:00:00:fe\"\ntunnel_source_v4 = \"198.18.0.2\"\n\
        [[vip]]\naddress = \"198.18.100.1\"\nport = 80\nprotocol = \"tcp\"\n\
        [[vip.backend]]\naddress = \"198.18.0.11\"\n\
        [[vip]]\naddress = \"198.18.100.1\"\nport = 443\nprotocol = \"tcp\"\n\
        [[vip]]\naddress = \"198.18.100.2\"\nport = 80\nprotocol = \"tcp\"\n";
    let config = Config::from_toml_str(text).unwrap();
    // 198.18.100.2 has no backend; .1 has one on port 80 (443 has none).
    assert_eq!(ready_addresses(&config), set(&["198.18.100.1"]));
}

/// A stand-in for BIRD's control socket: greets, answers `configure` with
/// the scripted code and records the include file as it was then.
struct FakeBird {
    dir: PathBuf,
    configures: Arc<Mutex<Vec<String>>>,
    answer: Arc<Mutex<(u16, String)>>,
}

impl FakeBird {
    fn new(name: &str) -> (FakeBird, BgpConfig) {
        let dir = std::env::temp_dir().join(format!("lb-bgp-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = BgpConfig {
            bird_socket: dir.join("bird.ctl"),
            config_file: dir.join("sub").join("vips.conf"),
            protocol: "lb_vips".into(),
            withdraw_grace_ms: 0,
            drain_file: dir.join("state").join("drained"),
        };
        let bird =
            FakeBird { dir, configures: Arc::default(), answer: Arc::new(Mutex::new((3, "Reconfigured".into()))) };
        (bird, cfg)
    }

    fn serve(&self, cfg: &BgpConfig) {
        let listener = UnixListener::bind(&cfg.bird_socket).unwrap();
        let (file, configures, answer) = (cfg.config_file.clone(), self.configures.clone(), self.answer.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (file, configures, answer) = (file.clone(), configures.clone(), answer.clone());
                tokio::spawn(async move {
                    let mut s = BufReader::new(stream);
                    s.get_mut().write_all(b"0001 BIRD 2.0.12 ready.\n").await.unwrap();
                    let mut line = String::new();
                    s.read_line(&mut line).await.unwrap();
                    assert_eq!(line, "configure\n");
                    configures.lock().unwrap().push(std::fs::read_to_string(&file).unwrap());
                    let (code, text) = answer.lock().unwrap().clone();
                    let reply = format!("0002-Reading configuration from /etc/bird/bird.conf\n{code:04} {text}\n");
                    s.get_mut().write_all(reply.as_bytes()).await.unwrap();
                });
            }
        });
    }

    fn routes(&self) -> Vec<usize> {
        self.configures.lock().unwrap().iter().map(|f| f.matches("blackhole").count()).collect()
    }
}

impl Drop for FakeBird {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn wait_for(speaker: &Speaker, what: &str, done: impl Fn(&BgpStatus) -> bool) {
    for _ in 0..500 {
        if done(&speaker.status()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}: {:?}", speaker.status());
}

async fn drain(speaker: &Speaker, drained: bool) -> Result<String, crate::agent::owner::ApiError> {
    let (tx, rx) = oneshot::channel();
    speaker.set_drained(drained, tx);
    rx.await.unwrap()
}

#[tokio::test]
async fn announces_when_ready_withdraws_on_drain_and_stop() {
    let (bird, cfg) = FakeBird::new("cycle");
    bird.serve(&cfg);
    let speaker = Speaker::start(cfg.clone());
    // Nothing is written before the data path says what it serves.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!cfg.config_file.exists());

    speaker.ready(set(&["198.18.100.1", "2001:db8:100::1"]));
    wait_for(&speaker, "announced", |s| s.announced.len() == 2).await;
    assert!(speaker.announced("198.18.100.1".parse().unwrap()));
    // The same set again costs no configure.
    speaker.ready(set(&["198.18.100.1", "2001:db8:100::1"]));
    let msg = drain(&speaker, true).await.unwrap();
    assert!(msg.starts_with("drained: nothing announced"), "{msg}");
    // Health changes while drained announce nothing.
    speaker.ready(set(&["198.18.100.1"]));
    let msg = drain(&speaker, false).await.unwrap();
    assert!(msg.contains("announcing 198.18.100.1"), "{msg}");
    assert_eq!(bird.routes(), [2, 0, 1]);

    let started = std::time::Instant::now();
    speaker.withdraw_for_stop().await;
    assert!(started.elapsed() < Duration::from_secs(1));
    let s = speaker.status();
    assert!(s.stopping && s.announced.is_empty() && !s.pending, "{s:?}");
    assert_eq!(bird.routes(), [2, 0, 1, 0]);
    assert_eq!((s.updates, s.failures), (4, 0));
    assert!(s.last_update.unwrap().ok);
}

#[tokio::test]
async fn a_refused_update_is_reported_and_retried() {
    let (bird, cfg) = FakeBird::new("refused");
    bird.serve(&cfg);
    *bird.answer.lock().unwrap() = (8002, "vips.conf:3:1 syntax error".into());
    let speaker = Speaker::start(cfg);
    speaker.ready(set(&["198.18.100.1"]));
    wait_for(&speaker, "first failure", |s| s.failures == 1).await;
    let s = speaker.status();
    assert!(s.pending && s.announced.is_empty(), "{s:?}");
    let last = s.last_update.unwrap();
    assert!(!last.ok && last.message.contains("syntax error") && last.message.contains("8002"), "{last:?}");
    // BIRD is fixed: the retry (after about a second) goes through.
    *bird.answer.lock().unwrap() = (3, "Reconfigured".into());
    wait_for(&speaker, "retried", |s| !s.pending && s.announced.len() == 1).await;
}

#[tokio::test]
async fn no_bird_is_an_error_naming_the_socket() {
    let (_bird, cfg) = FakeBird::new("absent");
    let speaker = Speaker::start(cfg.clone());
    speaker.ready(set(&["198.18.100.1"]));
    let e = drain(&speaker, false).await.unwrap_err();
    assert_eq!(e.status, 502);
    assert!(e.message.contains(&cfg.bird_socket.display().to_string()), "{e}");
    // The file is written anyway: a BIRD that starts later reads it.
    assert!(std::fs::read_to_string(&cfg.config_file).unwrap().contains("198.18.100.1/32"));
}

#[tokio::test]
async fn a_drain_outlives_the_agent_until_undrained() {
    let (bird, cfg) = FakeBird::new("persist");
    bird.serve(&cfg);
    let first = Speaker::start(cfg.clone());
    first.ready(set(&["198.18.100.1"]));
    wait_for(&first, "announced", |s| s.announced.len() == 1).await;
    drain(&first, true).await.unwrap();
    assert!(cfg.drain_file.exists());
    drop(first);

    // A new agent (a restart) starts drained: it announces nothing even once
    // the data path is ready.
    let second = Speaker::start(cfg.clone());
    assert!(second.status().drained);
    second.ready(set(&["198.18.100.1"]));
    wait_for(&second, "first update", |s| s.updates == 1).await;
    assert!(second.status().announced.is_empty(), "{:?}", second.status());
    let msg = drain(&second, false).await.unwrap();
    assert!(msg.starts_with("undrained") && msg.contains("198.18.100.1"), "{msg}");
    assert!(!cfg.drain_file.exists());
    assert_eq!(bird.routes(), [1, 0, 0, 1]);
}
