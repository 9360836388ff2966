//! `lb top`: the status page in a terminal. Polls the agent's status every
//! interval and redraws with plain ANSI sequences (no curses), so it works
//! over ssh in any terminal; q or Ctrl-C quits. Rates come from successive
//! samples; new-flow shares from a 10-second window, with the same hot-spot
//! rule as the page.

use std::{
    fmt::Write as _,
    io::{IsTerminal, Write as _},
    os::fd::AsRawFd,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use clap::Args;

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

mod bgp;
mod model;
mod render;

use model::{History, Snapshot};
use render::{Style, render};

fn sample(client: &Client) -> Result<(u64, Snapshot), ClientError> {
    let raw = client.call("GET", "/v1/status", None::<&()>)?;
    let snap: Snapshot = serde_json::from_value(raw)
        .map_err(|e| ClientError::Protocol { path: "(status)".into(), reason: format!("unexpected status: {e}") })?;
    Ok((snap.sampled_unix_ms.unwrap_or_else(lb::unix_ms), snap))
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
