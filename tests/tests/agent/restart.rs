//! Helpers of the crash-and-restart test: waiting for keep-alive answers, detaching, and the pins left behind.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lb_tests::netns::ip_in;
use lb_tests::traffic::KeepAliveLoad;

use super::env::{Env, WAIT};

/// Waits (bounded) until every connection of `load` answered `more`
/// requests more than when called, or one failed (reported later with the
/// results).
pub(super) fn wait_answers(name: &str, load: &KeepAliveLoad, what: &str, more: usize) {
    let base = load.answered_per_connection();
    let deadline = Instant::now() + WAIT;
    loop {
        let now = load.answered_per_connection();
        if now.iter().zip(&base).all(|(n, b)| n - b >= more) || load.failed() > 0 {
            return;
        }
        if Instant::now() >= deadline {
            panic!("{name}: {what}: not every connection answered {more} more requests within {WAIT:?}: {now:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops the agent for good: SIGTERM leaves the XDP program and the pins,
/// `lb detach` removes both (nothing is left under the pin path).
pub(super) fn stop_and_detach(env: &mut Env) {
    let (name, lb) = (env.name, env.topo.lb().clone());
    if let Err(e) = env.topo.stop_lb() {
        env.fail(format!("{e:#}"));
    }
    let link = ip_in(&lb.ns, &["link", "show", "dev", &lb.ifname]).unwrap();
    assert!(link.contains("xdp"), "{name}: a stopped agent (no --detach-on-exit) detached: {link}");
    let out = env.topo.detach_lb().unwrap_or_else(|e| env.fail(format!("lb detach: {e:#}")));
    println!("{name}: lb detach: {}", out.trim());
    let link = ip_in(&lb.ns, &["link", "show", "dev", &lb.ifname]).unwrap();
    assert!(!link.contains("xdp"), "{name}: still attached after lb detach: {link}");
    // bpffs itself shows maps.debug and progs.debug (its preload iterators).
    let pins: Vec<_> = walk(&env.topo.pin_path())
        .into_iter()
        .filter(|p| p.parent() != Some(env.topo.pin_path().as_path()) || p.extension().is_none_or(|e| e != "debug"))
        .collect();
    assert!(pins.is_empty(), "{name}: pins left after lb detach: {pins:?}");
}

/// Files under `dir` (recursively; bounded).
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        if out.len() > 1000 {
            break;
        }
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}
