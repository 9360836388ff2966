//! The outside programs: tools installed on demand (Chromium, tcpdump),
//! headless Chromium against the status page and reading the DOM it dumps,
//! and target/observe/ where what they make is kept.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use lb_tests::netns::exec_in_status;

/// `cmd` is on PATH, or Debian's `package` could be installed now.
pub(super) fn ensure_tool(cmd: &str, package: &str) -> bool {
    let found =
        || Command::new("sh").args(["-c", &format!("command -v {cmd}")]).output().is_ok_and(|o| o.status.success());
    if found() {
        return true;
    }
    eprintln!("observe: {cmd} is missing; installing Debian's {package}");
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends", package])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        let _ = Command::new("apt-get").args(["update", "-q"]).status();
        install();
    }
    found()
}

pub(super) fn target_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("target").join("observe");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Headless Chromium in the lb namespace, where the metrics listener is on
/// the namespace's own loopback. Returns stdout and the wall time it took.
pub(super) fn chromium(ns: &str, profile: &Path, extra: &[&str]) -> (String, Duration) {
    let profile = format!("--user-data-dir={}", profile.display());
    let mut args = vec![
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        profile.as_str(),
    ];
    args.extend_from_slice(extra);
    args.push("http://127.0.0.1:9641/");
    let t0 = Instant::now();
    let out = exec_in_status(ns, "chromium", &args).expect("running chromium");
    assert!(out.success(), "chromium failed: {out}");
    (out.stdout, t0.elapsed())
}

/// Attributes of the tags whose `data-address` and `data-vip` are these.
pub(super) fn row_attr(dom: &str, vip: &str, address: &str, attr: &str) -> Option<String> {
    let needle = format!("data-vip=\"{vip}\" data-address=\"{address}\"");
    let start = dom.find(&needle)?;
    let tag = &dom[start..start + dom[start..].find('>')?];
    let key = format!("{attr}=\"");
    let at = tag.find(&key)? + key.len();
    Some(tag[at..at + tag[at..].find('"')?].to_string())
}
