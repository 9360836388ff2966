//! `lb capture`: asks the agent to switch the program's capture on, reads
//! the records from the pinned `CAPTURE` ring buffer itself (records never
//! pass through the agent's owner task or its one-answer-per-request HTTP
//! API, and the reader needs root like the control socket anyway), and
//! writes a pcap file. Frames are written as the program left them: after
//! the IP-in-IP encapsulation or MAC rewrite for XDP_TX (what went on the
//! wire), untouched for a drop. The verdict of each frame is summed up on
//! stderr at the end. Capture is switched off when this exits, on Ctrl-C
//! too; the agent and the program bound it in time regardless.

use std::{
    collections::BTreeMap,
    fs::File,
    io::{BufWriter, Write},
    net::IpAddr,
    os::fd::AsRawFd,
    path::PathBuf,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context;
use aya::maps::{Map, MapData, RingBuf};
use clap::Args;
use lb::agent::capture::{CaptureStart, CaptureStarted, CaptureStop, CaptureStopped, monotonic_ns};
use lb_common::capture::{CAPTURE_SNAPLEN, CaptureRecord};

use crate::{
    client::{Client, ClientError},
    pcap::PcapWriter,
};

#[derive(Args)]
#[command(after_help = "\
Examples:
  lb capture --vip 198.18.100.1:80/tcp --count 100 -w lb.pcap && tcpdump -nr lb.pcap
  lb capture --vip 198.18.100.1:80/tcp --backend 198.18.0.12 --sample 100 --duration 30 -w - | tcpdump -nr -

Frames are written as lb sends them: IP-in-IP encapsulated (or with the
backend's MAC for l2dsr); dropped frames as they arrived.")]
pub struct CaptureArgs {
    /// The VIP whose frames to copy: ADDR:PORT/PROTOCOL.
    #[arg(long, required_unless_present = "stop")]
    pub vip: Option<String>,
    /// Only frames sent to this backend of the VIP.
    #[arg(long, value_name = "ADDR")]
    pub backend: Option<IpAddr>,
    /// Copy 1 in N frames.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub sample: u32,
    /// Stop after C frames.
    #[arg(long, value_name = "C")]
    pub count: Option<u64>,
    /// Stop after S seconds [default: 60; the agent allows up to 3600].
    #[arg(long, value_name = "S")]
    pub duration: Option<u64>,
    /// Bytes kept of each frame (1-256).
    #[arg(long, value_name = "BYTES", default_value_t = CAPTURE_SNAPLEN)]
    pub snaplen: u32,
    /// Frames per second over all CPUs at most (the rest are counted as limited).
    #[arg(long, value_name = "N")]
    pub max_per_sec: Option<u32>,
    /// The pcap file to write; - for standard output.
    #[arg(short = 'w', value_name = "FILE", required_unless_present = "stop")]
    pub file: Option<PathBuf>,
    /// Switch off a capture whose reader is gone (killed), instead of waiting
    /// for its deadline.
    #[arg(long, conflicts_with_all = ["vip", "file"])]
    pub stop: bool,
}

static QUIT: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    QUIT.store(true, Ordering::Relaxed);
}

fn catch_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGPIPE] {
        // SAFETY: the handler only stores to an atomic; no SA_RESTART, so a
        // blocked poll returns.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// Turns capture off when dropped: on every way out of `run`.
struct Running<'a> {
    client: &'a Client,
    session: u32,
    stopped: Option<CaptureStopped>,
}

impl Running<'_> {
    fn stop(&mut self) -> Result<CaptureStopped, ClientError> {
        let v = self.client.call("POST", "/v1/capture/stop", Some(&CaptureStop { session: Some(self.session) }))?;
        let stopped: CaptureStopped = serde_json::from_value(v).unwrap_or_default();
        self.stopped = Some(stopped);
        Ok(stopped)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if self.stopped.is_none()
            && let Err(e) = self.stop()
        {
            eprintln!("lb: warning: switching capture off failed ({e}); the agent ends it at its deadline");
        }
    }
}

/// Maps the kernel's CLOCK_MONOTONIC stamps to wall-clock time.
fn wall_clock_offset() -> Duration {
    let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    wall.saturating_sub(Duration::from_nanos(monotonic_ns()))
}

fn record(bytes: &[u8]) -> Option<CaptureRecord> {
    (bytes.len() >= size_of::<CaptureRecord>())
        // SAFETY: length checked; CaptureRecord is plain old data.
        .then(|| unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<CaptureRecord>()) })
}

pub fn run(client: &Client, args: &CaptureArgs) -> anyhow::Result<()> {
    let (Some(vip), Some(file)) = (&args.vip, &args.file) else {
        let v = client.call("POST", "/v1/capture/stop", Some(&CaptureStop::default()))?;
        let stopped: CaptureStopped = serde_json::from_value(v).unwrap_or_default();
        if stopped.stopped {
            println!("capture switched off ({} frames copied, {} lost)", stopped.records, stopped.lost);
        } else {
            println!("no capture was running");
        }
        return Ok(());
    };
    let req = CaptureStart {
        vip: vip.clone(),
        backend: args.backend,
        sample: Some(args.sample),
        count: args.count,
        duration_s: args.duration,
        snaplen: Some(args.snaplen),
        max_per_sec: args.max_per_sec,
    };
    catch_signals();
    let started: CaptureStarted = serde_json::from_value(client.call("POST", "/v1/capture/start", Some(&req))?)
        .context("unexpected answer to the capture request")?;
    // From here on, every way out switches capture off again.
    let mut running = Running { client, session: started.session, stopped: None };
    let out: Box<dyn Write> = if file.as_os_str() == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(File::create(file).with_context(|| format!("creating {}", file.display()))?)
    };
    let mut pcap = PcapWriter::new(BufWriter::new(out), started.snaplen)?;
    let map = MapData::from_pin(&started.ring).with_context(|| format!("opening {}", started.ring.display()))?;
    let mut ring = RingBuf::try_from(Map::from_map_data(map)?).context("the capture map is not a ring buffer")?;
    let names: BTreeMap<u32, IpAddr> = started.backends.iter().map(|b| (b.id, b.address)).collect();
    eprintln!(
        "lb: capturing {}{} (1 in {}, {} bytes per frame) for at most {} s; Ctrl-C stops",
        vip,
        args.backend.map_or(String::new(), |b| format!(" to {b}")),
        started.sample,
        started.snaplen,
        started.duration_s
    );

    let offset = wall_clock_offset();
    let deadline = Instant::now() + Duration::from_secs(started.duration_s);
    let mut verdicts: BTreeMap<(u32, Option<IpAddr>), u64> = BTreeMap::new();
    let want = args.count.unwrap_or(u64::MAX);
    'read: while !QUIT.load(Ordering::Relaxed) && Instant::now() < deadline {
        while let Some(item) = ring.next() {
            let Some(r) = record(&item) else { continue };
            drop(item);
            // Left in the ring by an earlier capture.
            if r.session != started.session {
                continue;
            }
            let len = (r.cap_len as usize).min(r.data.len());
            pcap.frame(offset + Duration::from_nanos(r.ts_ns), r.frame_len, &r.data[..len])?;
            *verdicts.entry((r.reason, names.get(&r.backend).copied())).or_default() += 1;
            if pcap.frames() >= want {
                break 'read;
            }
        }
        pcap.flush()?;
        let left = deadline.saturating_duration_since(Instant::now()).min(Duration::from_millis(100));
        let mut fds = libc::pollfd { fd: ring.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd; EINTR (a signal) just ends the wait.
        unsafe { libc::poll(&mut fds, 1, left.as_millis() as i32) };
    }
    let stopped = running.stop()?;
    // What arrived between the last read and the switch going off.
    while let Some(item) = ring.next() {
        if pcap.frames() >= want {
            break;
        }
        if let Some(r) = record(&item).filter(|r| r.session == started.session) {
            drop(item);
            let len = (r.cap_len as usize).min(r.data.len());
            pcap.frame(offset + Duration::from_nanos(r.ts_ns), r.frame_len, &r.data[..len])?;
            *verdicts.entry((r.reason, names.get(&r.backend).copied())).or_default() += 1;
        }
    }
    pcap.flush()?;
    let list: Vec<String> = verdicts
        .iter()
        .map(|((reason, backend), n)| {
            let label = lb_common::stats::LABELS.get(*reason as usize).copied().unwrap_or("unknown");
            match backend {
                Some(b) => format!("{n} {label} to {b}"),
                None => format!("{n} {label}"),
            }
        })
        .collect();
    eprintln!(
        "lb: {} frames written to {}{}{}",
        pcap.frames(),
        file.display(),
        if list.is_empty() { String::new() } else { format!(": {}", list.join(", ")) },
        if stopped.lost + stopped.limited > 0 {
            format!(
                "; not copied: {} (ring full, reader too slow), {} (over the rate or count bound)",
                stopped.lost, stopped.limited
            )
        } else {
            String::new()
        }
    );
    Ok(())
}
