//! Running `lb capture` around some traffic, and reading the pcap file it
//! writes without tcpdump.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use lb_common::capture::CaptureConfig;
use lb_tests::netns::ChildGuard;

use super::World;
use super::browser::target_dir;

pub(super) fn capture(w: &World, name: &str, args: &[&str], during: impl FnOnce()) -> (Vec<Vec<u8>>, String, PathBuf) {
    let file = target_dir().join(format!("{name}.pcap"));
    let _ = std::fs::remove_file(&file);
    let sock = w.topo.control_socket();
    let mut full = vec!["--socket", sock.to_str().unwrap(), "capture"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["-w", file.to_str().unwrap()]);
    let log = w.topo.dir().join(format!("{name}.log"));
    let mut child = ChildGuard::spawn_in(&w.topo.lb().ns, name, w.topo.lb_bin(), &full, &log).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !child.log_text().contains("capturing") {
        assert!(child.try_status().is_none(), "lb capture exited: {}", child.log_text());
        assert!(Instant::now() < deadline, "lb capture did not start: {}", child.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    during();
    std::thread::sleep(Duration::from_millis(300));
    // Ctrl-C, as an operator stops it (unless it ended by itself).
    if let Some(pid) = child.pid() {
        // SAFETY: our own child.
        unsafe { libc::kill(pid as i32, libc::SIGINT) };
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while child.try_status().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = child.stop(Duration::from_secs(1));
    let log = child.log_text();
    assert!(status.is_some_and(|s| s.success()), "lb capture: {status:?}\n{log}");
    // The switch is off again.
    let pinned = w.topo.pin_path().join(format!("v{}", lb_common::LAYOUT_VERSION)).join("lb0").join("CAPTURE_CONFIG");
    let map = aya::maps::MapData::from_pin(&pinned).unwrap();
    let config: aya::maps::Array<_, CaptureConfig> = aya::maps::Array::try_from(aya::maps::Map::Array(map)).unwrap();
    assert_eq!(config.get(&0, 0).unwrap().session, 0, "capture still on after lb capture exited");
    (read_pcap(&std::fs::read(&file).unwrap()), log, file)
}

/// The frames of a classic pcap file (little-endian, Ethernet), checked by hand.
fn read_pcap(b: &[u8]) -> Vec<Vec<u8>> {
    let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    assert!(b.len() >= 24, "no pcap header");
    assert_eq!(u32_at(0), 0xa1b2_c3d4, "magic");
    assert_eq!((u16::from_le_bytes([b[4], b[5]]), u16::from_le_bytes([b[6], b[7]])), (2, 4), "version");
    assert_eq!(u32_at(20), 1, "link type Ethernet");
    let snaplen = u32_at(16) as usize;
    let (mut at, mut frames) = (24, Vec::new());
    while at < b.len() {
        let (incl, orig) = (u32_at(at + 8) as usize, u32_at(at + 12) as usize);
        assert!(incl <= snaplen && incl <= orig, "record at {at}: {incl} of {orig} bytes, snaplen {snaplen}");
        frames.push(b[at + 16..at + 16 + incl].to_vec());
        at += 16 + incl;
    }
    assert_eq!(at, b.len(), "trailing bytes");
    frames
}
