//! `lb top`: the status page in a terminal. Polls the agent's status every
//! interval and redraws with plain ANSI sequences (no curses), so it works
//! over ssh in any terminal; q or Ctrl-C quits. Rates come from successive
//! samples; new-flow shares from a 10-second window, with the same hot-spot
//! rule as the page.

use std::{
    collections::{HashMap, VecDeque},
    fmt::Write as _,
    io::{IsTerminal, Write as _},
    os::fd::AsRawFd,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use clap::Args;
use serde::Deserialize;

use crate::client::{Client, ClientError};

#[derive(Args)]
pub struct TopArgs {
    /// Seconds between refreshes.
    #[arg(long, default_value_t = 1.0, value_name = "SECONDS", value_parser = parse_interval)]
    pub interval: f64,
    /// Print one frame and exit: two samples INTERVAL apart, for the rates.
    #[arg(long)]
    pub once: bool,
}

fn parse_interval(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.1..=3600.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?}: expected seconds between 0.1 and 3600")),
    }
}

/// New flows are shared over this window.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Fewer new flows than this in the window say nothing about balance.
pub const HOT_MIN_FLOWS: u64 = 20;
/// A backend is hot when its share of new flows exceeds this many times its weighted share.
pub const HOT_FACTOR: f64 = 2.0;

// What top reads of the status; unknown fields are ignored.
#[derive(Clone, Debug, Deserialize)]
pub struct Snapshot {
    pub interface: String,
    pub uptime_s: u64,
    pub vips: Vec<Vip>,
    pub counters: HashMap<String, u64>,
    #[serde(default)]
    pub transitions: Vec<Transition>,
    /// The agent's clock when it read the counters (older agents: none).
    #[serde(default)]
    pub sampled_unix_ms: Option<u64>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Vip {
    pub vip: String,
    pub forwarding: String,
    pub ring_size: u32,
    pub health_check: Option<String>,
    pub failing_open: bool,
    pub fingerprint: String,
    pub backends: Vec<Backend>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Backend {
    pub address: String,
    pub weight: u32,
    pub effective_weight: u32,
    pub state: String,
    pub health: String,
    pub packets: u64,
    #[serde(default)]
    pub new_flows: u64,
    pub probe: Option<Probe>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Probe {
    pub last_result: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Transition {
    pub at_unix_ms: u64,
    pub vip: String,
    pub backend: String,
    pub health: String,
    pub reason: String,
}

/// A backend's part of its VIP's new flows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Share {
    /// Of the VIP's new flows in the window.
    pub share: f64,
    /// Its effective weight over the VIP's.
    pub weighted: f64,
    pub hot: bool,
}

/// Shares of new flows (`flows`: each backend's, in the VIP's order) against
/// the weighted shares. Hot spots are judged on the recent window only
/// (`in_window`), and only for backends in the table: one just taken out
/// still shows the flows it got before.
pub fn shares(flows: &[u64], effective_weights: &[u32], in_window: bool) -> Vec<Share> {
    let total: u64 = flows.iter().sum();
    let weights: u64 = effective_weights.iter().map(|w| *w as u64).sum();
    flows
        .iter()
        .zip(effective_weights)
        .map(|(f, w)| {
            let share = if total > 0 { *f as f64 / total as f64 } else { 0.0 };
            let weighted = if weights > 0 { *w as f64 / weights as f64 } else { 0.0 };
            let hot = in_window && weighted > 0.0 && total >= HOT_MIN_FLOWS && share > HOT_FACTOR * weighted;
            Share { share, weighted, hot }
        })
        .collect()
}

/// Successive samples: (agent time in ms, status).
#[derive(Default)]
pub struct History {
    samples: VecDeque<(u64, Snapshot)>,
}

type BackendKey = (String, String);

fn by_backend(s: &Snapshot) -> HashMap<BackendKey, &Backend> {
    s.vips.iter().flat_map(|v| v.backends.iter().map(move |b| ((v.vip.clone(), b.address.clone()), b))).collect()
}

impl History {
    pub fn push(&mut self, at_ms: u64, s: Snapshot) {
        self.samples.push_back((at_ms, s));
        let window = WINDOW.as_millis() as u64;
        while self.samples.len() > 2 && at_ms.saturating_sub(self.samples[1].0) >= window {
            self.samples.pop_front();
        }
    }

    /// Packets/s and new flows/s per backend between the last two samples.
    pub fn rates(&self) -> HashMap<BackendKey, (f64, f64)> {
        let n = self.samples.len();
        if n < 2 {
            return HashMap::new();
        }
        let ((t0, a), (t1, b)) = (&self.samples[n - 2], &self.samples[n - 1]);
        let dt = t1.saturating_sub(*t0) as f64 / 1e3;
        if dt <= 0.0 {
            return HashMap::new();
        }
        let before = by_backend(a);
        by_backend(b)
            .into_iter()
            .filter_map(|(k, cur)| {
                let p = before.get(&k)?;
                let pps = cur.packets.saturating_sub(p.packets) as f64 / dt;
                let nfs = cur.new_flows.saturating_sub(p.new_flows) as f64 / dt;
                Some((k, (pps, nfs)))
            })
            .collect()
    }

    /// Per-second rate of a counter between the last two samples.
    fn counter_rate(&self, name: &str) -> Option<f64> {
        let n = self.samples.len();
        let ((t0, a), (t1, b)) = (self.samples.get(n.checked_sub(2)?)?, &self.samples[n - 1]);
        let dt = t1.saturating_sub(*t0) as f64 / 1e3;
        (dt > 0.0)
            .then(|| b.counters.get(name).unwrap_or(&0).saturating_sub(*a.counters.get(name).unwrap_or(&0)) as f64 / dt)
    }

    /// Each backend's new flows in the window (since the program was loaded
    /// when the window has none) and whether that was the window.
    pub fn window_flows(&self, vip: &Vip) -> (Vec<u64>, bool) {
        let oldest = (self.samples.len() > 1).then(|| by_backend(&self.samples[0].1));
        let windowed: Vec<u64> = vip
            .backends
            .iter()
            .map(|b| {
                let before = oldest.as_ref().and_then(|o| o.get(&(vip.vip.clone(), b.address.clone())));
                before.map_or(0, |p| b.new_flows.saturating_sub(p.new_flows))
            })
            .collect();
        if windowed.iter().sum::<u64>() > 0 {
            (windowed, true)
        } else {
            (vip.backends.iter().map(|b| b.new_flows).collect(), false)
        }
    }
}

/// ANSI styling, off for pipes, `--once` into a file, and NO_COLOR.
#[derive(Clone, Copy)]
pub struct Style(pub bool);

impl Style {
    fn paint(self, code: &str, s: &str) -> String {
        if self.0 { format!("\x1b[{code}m{s}\x1b[0m") } else { s.to_string() }
    }
    fn bold(self, s: &str) -> String {
        self.paint("1", s)
    }
    fn dim(self, s: &str) -> String {
        self.paint("2", s)
    }
    fn good(self, s: &str) -> String {
        self.paint("32", s)
    }
    fn bad(self, s: &str) -> String {
        self.paint("31;1", s)
    }
    fn hot(self, s: &str) -> String {
        self.paint("30;43", s)
    }
}

fn si(x: f64) -> String {
    match x {
        x if x >= 1e9 => format!("{:.1}G", x / 1e9),
        x if x >= 1e6 => format!("{:.1}M", x / 1e6),
        x if x >= 1e4 => format!("{:.1}k", x / 1e3),
        x if x >= 100.0 || x.fract() == 0.0 => format!("{x:.0}"),
        x => format!("{x:.1}"),
    }
}

fn ago(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h{}m", s / 3600, s / 60 % 60),
        s => format!("{}d{}h", s / 86400, s / 3600 % 24),
    }
}

const BAR: usize = 20;

/// `█████···|··········` with the weighted share marked.
fn bar(s: &Share) -> String {
    let fill = (s.share * BAR as f64).round() as usize;
    let mark = ((s.weighted * BAR as f64).round() as usize).min(BAR - 1);
    (0..BAR)
        .map(|i| {
            if i < fill {
                '█'
            } else if i == mark {
                '|'
            } else {
                '·'
            }
        })
        .collect()
}

/// Pads `cells` to `widths` (the widths of the plain text; colours pad after).
fn row(out: &mut String, cells: &[(String, String)], widths: &[usize]) {
    out.push_str("  ");
    for (i, (plain, shown)) in cells.iter().enumerate() {
        let pad = widths[i].saturating_sub(plain.chars().count());
        let _ = write!(out, "{shown}{}  ", " ".repeat(pad));
    }
    while out.ends_with(' ') {
        out.pop();
    }
    out.push('\n');
}

/// One frame.
pub fn render(h: &History, style: Style, interval: f64) -> String {
    let Some((now, s)) = h.samples.back() else { return "waiting for the first sample\n".into() };
    let rates = h.rates();
    let mut out = String::new();
    let clock = chrono_like(*now);
    let _ = writeln!(
        out,
        "{} on {}, up {}, refresh {interval}s, {clock}   {}",
        style.bold("lb top"),
        s.interface,
        ago(s.uptime_s * 1000),
        style.dim("q: quit")
    );
    let mut drops: Vec<_> = s.counters.iter().filter(|(k, n)| k.starts_with("drop_") && **n > 0).collect();
    drops.sort();
    if drops.is_empty() {
        out.push_str("drops: none\n");
    } else {
        let list: Vec<String> = drops
            .iter()
            .map(|(k, n)| {
                let r = h.counter_rate(k).map_or(String::new(), |r| format!(" ({}/s)", si(r)));
                style.bad(&format!("{k} {n}{r}"))
            })
            .collect();
        let _ = writeln!(out, "drops: {}", list.join(", "));
    }
    if s.vips.is_empty() {
        out.push_str("\nno VIPs\n");
    }
    for v in &s.vips {
        out.push('\n');
        let fp = if v.fingerprint.is_empty() { "-" } else { &v.fingerprint };
        let mut head = format!(
            "{}  {}  ring {}  fingerprint {fp}  check {}",
            style.bold(&v.vip),
            v.forwarding,
            v.ring_size,
            v.health_check.as_deref().unwrap_or("none")
        );
        if v.failing_open {
            let _ = write!(head, "  {}", style.bad("FAILING OPEN"));
        }
        let _ = writeln!(out, "{head}");
        let (flows, in_window) = h.window_flows(v);
        let weights: Vec<u32> = v.backends.iter().map(|b| b.effective_weight).collect();
        let sh = shares(&flows, &weights, in_window);
        let total: u64 = flows.iter().sum();
        let (mut pps, mut nfs, mut known) = (0.0, 0.0, false);
        for b in &v.backends {
            if let Some((p, n)) = rates.get(&(v.vip.clone(), b.address.clone())) {
                (pps, nfs, known) = (pps + p, nfs + n, true);
            }
        }
        let rate = |x: f64| if known { format!("{}/s", si(x)) } else { "-".into() };
        let window = if in_window {
            format!("{total} new flows in the last {}s", WINDOW.as_secs())
        } else if total > 0 {
            format!("no new flows lately; shares since load ({total} flows)")
        } else {
            "no new flows yet".into()
        };
        let _ =
            writeln!(out, "  {} packets  {} new flows  {}", rate(pps), rate(nfs), style.dim(&format!("({window})")));
        if v.backends.is_empty() {
            out.push_str("  no backends\n");
            continue;
        }
        let header =
            ["BACKEND", "STATE", "HEALTH", "WEIGHT", "PKT/S", "NEW/S", "PACKETS", "NEW-FLOW SHARE", "LAST PROBE"];
        let mut rows: Vec<Vec<(String, String)>> = vec![header.iter().map(|h| (h.to_string(), style.dim(h))).collect()];
        for (b, share) in v.backends.iter().zip(&sh) {
            let r = rates.get(&(v.vip.clone(), b.address.clone()));
            let health = if v.health_check.is_none() { "-".to_string() } else { b.health.clone() };
            let shown_health = match health.as_str() {
                "up" => style.good(&health),
                "down" => style.bad(&health),
                _ => health.clone(),
            };
            let state = match b.state.as_str() {
                "up" => style.good(&b.state),
                _ => style.bad(&b.state),
            };
            let share_text = format!(
                "{} {:>5.1}% (weight {:.0}%){}",
                bar(share),
                share.share * 100.0,
                share.weighted * 100.0,
                if share.hot { " HOT" } else { "" }
            );
            let shown_share = if share.hot { style.hot(&share_text) } else { share_text.clone() };
            let plain = |s: String| (s.clone(), s);
            rows.push(vec![
                plain(b.address.clone()),
                (b.state.clone(), state),
                (health, shown_health),
                plain(format!("{}/{}", b.weight, b.effective_weight)),
                plain(r.map_or("-".into(), |r| si(r.0))),
                plain(r.map_or("-".into(), |r| si(r.1))),
                plain(b.packets.to_string()),
                (share_text, shown_share),
                plain(b.probe.as_ref().map_or("-".into(), |p| p.last_result.clone())),
            ]);
        }
        let widths: Vec<usize> =
            (0..header.len()).map(|c| rows.iter().map(|r| r[c].0.chars().count()).max().unwrap_or(0)).collect();
        for r in &rows {
            row(&mut out, r, &widths);
        }
        for t in s.transitions.iter().filter(|t| t.vip == v.vip).rev().take(3) {
            let health = if t.health == "up" { style.good(&t.health) } else { style.bad(&t.health) };
            let _ =
                writeln!(out, "  {} ago {} {health} ({})", ago(now.saturating_sub(t.at_unix_ms)), t.backend, t.reason);
        }
    }
    out
}

/// `HH:MM:SS` UTC of a unix time in ms (no time-zone database needed).
fn chrono_like(ms: u64) -> String {
    let s = ms / 1000;
    format!("{:02}:{:02}:{:02} UTC", s / 3600 % 24, s / 60 % 60, s % 60)
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or_default()
}

fn sample(client: &Client) -> Result<(u64, Snapshot), ClientError> {
    let raw = client.call("GET", "/v1/status", None::<&()>)?;
    let snap: Snapshot = serde_json::from_value(raw)
        .map_err(|e| ClientError::Protocol { path: "(status)".into(), reason: format!("unexpected status: {e}") })?;
    Ok((snap.sampled_unix_ms.unwrap_or_else(unix_ms), snap))
}

static QUIT: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    QUIT.store(true, Ordering::Relaxed);
}

/// The terminal as top found it; restored on drop (also on errors).
struct Screen {
    saved: Option<libc::termios>,
}

impl Screen {
    fn enter() -> Screen {
        let stdin = std::io::stdin();
        let mut saved = None;
        if stdin.is_terminal() {
            let fd = stdin.as_raw_fd();
            // SAFETY: termios calls on a valid descriptor with a zeroed struct to fill.
            unsafe {
                let mut t: libc::termios = std::mem::zeroed();
                if libc::tcgetattr(fd, &mut t) == 0 {
                    saved = Some(t);
                    // Keys one at a time, unechoed; Ctrl-C arrives as a byte.
                    t.c_lflag &= !(libc::ICANON | libc::ECHO | libc::ISIG);
                    t.c_cc[libc::VMIN] = 0;
                    t.c_cc[libc::VTIME] = 0;
                    libc::tcsetattr(fd, libc::TCSANOW, &t);
                }
            }
        }
        // Alternate screen, no cursor, no line wrap (long lines are clipped).
        print!("\x1b[?1049h\x1b[?25l\x1b[?7l");
        let _ = std::io::stdout().flush();
        Screen { saved }
    }

    fn draw(&self, frame: &str) {
        let mut out = String::with_capacity(frame.len() + 256);
        out.push_str("\x1b[H");
        for line in frame.lines() {
            let _ = write!(out, "{line}\x1b[K\r\n");
        }
        out.push_str("\x1b[J");
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(out.as_bytes());
        let _ = stdout.flush();
    }

    /// Waits up to `d` for a key; true when it asks to quit.
    fn wait_key(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        loop {
            if QUIT.load(Ordering::Relaxed) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            if self.saved.is_none() {
                std::thread::sleep(left.min(Duration::from_millis(200)));
                continue;
            }
            let mut fds = libc::pollfd { fd: libc::STDIN_FILENO, events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&mut fds, 1, left.as_millis().min(200) as i32) };
            if n > 0 {
                let mut buf = [0u8; 16];
                // SAFETY: reading into a local buffer of its size.
                let got = unsafe { libc::read(libc::STDIN_FILENO, buf.as_mut_ptr().cast(), buf.len()) };
                if got <= 0 {
                    // Hung up: no keys will come; don't spin.
                    std::thread::sleep(left.min(Duration::from_millis(200)));
                    continue;
                }
                if buf[..got as usize].iter().any(|c| matches!(c, b'q' | b'Q' | 3 | 4)) {
                    return true;
                }
            }
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        print!("\x1b[?7h\x1b[?25h\x1b[?1049l");
        let _ = std::io::stdout().flush();
        if let Some(t) = &self.saved {
            // SAFETY: restoring the attributes read in `enter`.
            unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, t) };
        }
    }
}

fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

pub fn run(client: &Client, args: &TopArgs) -> anyhow::Result<()> {
    let interval = Duration::from_secs_f64(args.interval);
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let mut history = History::default();
    if args.once {
        let (t, s) = sample(client)?;
        history.push(t, s);
        std::thread::sleep(interval);
        let (t, s) = sample(client)?;
        history.push(t, s);
        print!("{}", render(&history, Style(color), args.interval));
        return Ok(());
    }
    // Fail early and plainly when the agent is not there.
    let (t, s) = sample(client)?;
    history.push(t, s);
    install_signal_handlers();
    let screen = Screen::enter();
    loop {
        screen.draw(&render(&history, Style(color), args.interval));
        if screen.wait_key(interval) {
            return Ok(());
        }
        match sample(client) {
            Ok((t, s)) => history.push(t, s),
            Err(e) => {
                let mut frame = render(&history, Style(color), args.interval);
                let _ = write!(frame, "\n{}\n", Style(color).bad(&format!("agent: {e}")));
                screen.draw(&frame);
                if screen.wait_key(interval) {
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(flows: &[u64], packets: &[u64]) -> Snapshot {
        let backends = flows
            .iter()
            .zip(packets)
            .enumerate()
            .map(|(i, (f, p))| Backend {
                address: format!("198.18.0.1{}", i + 1),
                weight: 1,
                effective_weight: 1,
                state: "up".into(),
                health: "up".into(),
                packets: *p,
                new_flows: *f,
                probe: None,
            })
            .collect();
        Snapshot {
            interface: "lb0".into(),
            uptime_s: 75,
            vips: vec![Vip {
                vip: "198.18.100.1:80/tcp".into(),
                forwarding: "ipip".into(),
                ring_size: 251,
                health_check: None,
                failing_open: false,
                fingerprint: "00112233aabbccdd".into(),
                backends,
            }],
            counters: HashMap::from([("drop_no_backend".into(), 4), ("tx_ipip".into(), 10)]),
            transitions: vec![],
            sampled_unix_ms: None,
        }
    }

    #[test]
    fn hot_spots() {
        let s = shares(&[30, 5, 5], &[1, 1, 1], true);
        assert!(s[0].hot && !s[1].hot && !s[2].hot, "{s:?}");
        assert!((s[0].share - 0.75).abs() < 1e-9 && (s[0].weighted - 1.0 / 3.0).abs() < 1e-9);
        // Not judged on old flows only.
        assert!(!shares(&[30, 5, 5], &[1, 1, 1], false)[0].hot);
        // Too few flows to judge.
        assert!(!shares(&[10, 1, 1], &[1, 1, 1], true)[0].hot);
        // Weights count: 2/3 of the table may take 2/3 of the flows.
        assert!(shares(&[60, 30], &[2, 1], true).iter().all(|s| !s.hot));
        // Out of the table (just drained): its earlier flows are no hot spot.
        assert!(!shares(&[0, 30], &[1, 0], true)[1].hot);
        assert!(shares(&[0, 0], &[0, 0], true).iter().all(|s| s.share == 0.0 && !s.hot));
    }

    #[test]
    fn rates_and_window() {
        let mut h = History::default();
        h.push(1_000, snap(&[0, 0, 0], &[0, 0, 0]));
        h.push(3_000, snap(&[30, 6, 4], &[100, 20, 40]));
        let r = h.rates();
        let k = |a: &str| ("198.18.100.1:80/tcp".to_string(), a.to_string());
        assert_eq!(r[&k("198.18.0.11")], (50.0, 15.0));
        assert_eq!(r[&k("198.18.0.13")], (20.0, 2.0));
        let v = &h.samples[1].1.vips[0];
        assert_eq!(h.window_flows(v), (vec![30, 6, 4], true));
        // Samples older than the window go, one before it stays.
        h.push(14_000, snap(&[31, 6, 4], &[100, 20, 40]));
        h.push(15_000, snap(&[31, 6, 4], &[100, 20, 40]));
        assert_eq!(h.samples.len(), 3);
        assert_eq!(h.window_flows(&h.samples[2].1.vips[0]), (vec![1, 0, 0], true));
    }

    #[test]
    fn frame_shows_everything() {
        let mut h = History::default();
        h.push(1_000, snap(&[0, 0, 0], &[0, 0, 0]));
        h.push(2_000, snap(&[30, 5, 5], &[900, 20, 40]));
        let f = render(&h, Style(false), 1.0);
        for want in [
            "198.18.100.1:80/tcp",
            "198.18.0.11",
            "198.18.0.12",
            "198.18.0.13",
            "00112233aabbccdd",
            "HOT",
            "drop_no_backend 4",
            "900",
        ] {
            assert!(f.contains(want), "{want} missing from\n{f}");
        }
        assert!(!f.contains('\x1b'), "no ANSI without a terminal:\n{f}");
        assert_eq!(f.matches("HOT").count(), 1, "{f}");
        assert!(render(&h, Style(true), 1.0).contains("\x1b[30;43m"));
    }

    #[test]
    fn bars() {
        let b = bar(&Share { share: 0.5, weighted: 0.75, hot: false });
        assert_eq!(b.chars().count(), BAR);
        assert_eq!(b.chars().filter(|c| *c == '█').count(), 10);
        assert_eq!(b.chars().position(|c| c == '|'), Some(15));
    }
}
