//! What `bad_config_and_bad_api_calls_change_nothing` tries: bad config files, refused CLI calls, broken raw requests.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::env::{RING, TIMEOUT_MS};

/// Invalid edits of the config file `good`: (what, file text, what the
/// refusal must name).
pub(super) fn bad_files(good: &str) -> [(&'static str, String, Vec<&'static str>); 5] {
    let no_macs: String =
        good.lines().filter(|l| !l.trim_start().starts_with("mac =")).map(|l| format!("{l}\n")).collect();
    [
        ("typo'd key", good.replace("ring_size = ", "ring_sise = "), vec!["ring_sise"]),
        (
            "l2dsr VIP without backend MACs",
            no_macs.replace("forwarding = \"ipip\"\nring_size", "forwarding = \"l2dsr\"\nring_size"),
            vec!["vip[0].backend[0].mac"],
        ),
        (
            "non-prime ring_size",
            good.replace(&format!("ring_size = {RING}"), "ring_size = 250"),
            vec!["vip[0].ring_size", "250"],
        ),
        (
            "health check timeout above its interval",
            good.replace(&format!("timeout_ms = {TIMEOUT_MS}"), "timeout_ms = 5000"),
            vec!["vip[0].health_check.timeout_ms"],
        ),
        ("not TOML", format!("{good}\n[[vip]\n"), vec!["TOML"]),
    ]
}

/// CLI calls the agent must refuse: (what, arguments, what the refusal must
/// name), for the VIP `vid` whose first backend is `b1`.
pub(super) fn refused_calls<'a>(vid: &'a str, b1: &'a str) -> Vec<(&'static str, Vec<&'a str>, Vec<&'a str>)> {
    vec![
        ("IPv6 backend to an IPv4 VIP", vec!["backend", "add", vid, "2001:db8::14"], vec!["2001:db8::14", "family"]),
        ("backend to an unknown VIP", vec!["backend", "add", "198.18.100.9:80/tcp", "198.18.0.14"], vec!["no VIP"]),
        ("duplicate backend", vec!["backend", "add", vid, b1], vec![b1, "twice"]),
        ("existing VIP", vec!["vip", "add", vid, "--backend", "198.18.0.14"], vec!["twice"]),
        (
            "drain of an unknown backend",
            vec!["backend", "drain", vid, "198.18.0.19"],
            vec!["no backend", "198.18.0.19"],
        ),
        ("del of an unknown backend", vec!["backend", "del", vid, "198.18.0.19"], vec!["no backend"]),
        ("del of an unknown VIP", vec!["vip", "del", "198.18.100.9:80/tcp"], vec!["no VIP"]),
        (
            "backend weight above the maximum",
            vec!["backend", "add", vid, "198.18.0.14", "--weight", "10001"],
            vec!["weight"],
        ),
    ]
}

/// Raw requests with broken bodies, answered 400 naming the problem: (what,
/// path, body, what the answer must name).
pub(super) const BROKEN_BODIES: [(&str, &str, &str, &[&str]); 5] = [
    (
        "partial JSON",
        "/v1/backends/add",
        r#"{"vip": "198.18.100.1:80/tcp", "backend": {"address": "198.18.0.14""#,
        &["request body", "EOF"],
    ),
    (
        "unknown top-level key",
        "/v1/backends/add",
        r#"{"vip": "198.18.100.1:80/tcp", "backend": {"address": "198.18.0.14"}, "colour": "red"}"#,
        &["unknown field", "colour"],
    ),
    (
        "unknown backend key",
        "/v1/backends/add",
        r#"{"vip": "198.18.100.1:80/tcp", "backend": {"address": "198.18.0.14", "wieght": 2}}"#,
        &["unknown field", "wieght"],
    ),
    (
        "unknown state",
        "/v1/backends/state",
        r#"{"vip": "198.18.100.1:80/tcp", "address": "198.18.0.11", "state": "sleepy"}"#,
        &["sleepy"],
    ),
    (
        "unknown VIP key",
        "/v1/vips/add",
        r#"{"address": "198.18.100.2", "port": 80, "protocol": "tcp", "backends": []}"#,
        &["unknown field", "backends"],
    ),
];

/// One raw HTTP request on the control socket from this process; returns
/// (status, body).
pub(super) fn raw_request(socket: &Path, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = UnixStream::connect(socket).unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: lb\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut answer = Vec::new();
    // Bounded by the read timeout and by this size.
    let _ = s.take(1 << 20).read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}
