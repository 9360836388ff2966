//! Packet capture (`lb capture`): the program copies the first bytes of the
//! frames it handles, as it leaves them, into the `CAPTURE` ring buffer
//! while `CAPTURE_CONFIG[0]` enables it. tcpdump cannot see these frames:
//! XDP_TX sends them before the kernel's taps.

/// Largest number of frame bytes a record carries (the pcap snap length).
pub const CAPTURE_SNAPLEN: u32 = 256;
/// `CAPTURE` ring buffer size in bytes (a power-of-2 number of pages): about
/// 7000 records of backlog for a slow reader.
pub const CAPTURE_RING_BYTES: u32 = 2 << 20;
/// `CaptureConfig::vip_slot` / `backend`: no filter.
pub const CAPTURE_ANY: u32 = u32::MAX;
/// `CaptureRecord::backend` of a packet dropped before a backend was chosen.
pub const CAPTURE_NO_BACKEND: u32 = u32::MAX;

/// `CAPTURE_CONFIG[0]`, written by the agent. All zero (the default) is off.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureConfig {
    /// Non-zero while a capture runs; copied into every record so a reader
    /// skips what an earlier capture left in the ring.
    pub session: u32,
    /// Copy 1 in `sample` matching frames (0 and 1: every one).
    pub sample: u32,
    /// Only this VIP slot, or `CAPTURE_ANY`.
    pub vip_slot: u32,
    /// Only this backend id, or `CAPTURE_ANY`.
    pub backend: u32,
    /// Bytes copied per frame, `1..=CAPTURE_SNAPLEN`.
    pub snaplen: u32,
    /// Records per second over all CPUs; further frames are counted as limited.
    pub max_per_sec: u32,
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) after which the program copies
    /// nothing, even if the agent that enabled it is gone.
    pub expires_ns: u64,
    /// Records in the whole capture (0: unbounded, the rate and time bounds still hold).
    pub max_records: u64,
}

/// `CAPTURE_STATE[0]`: the program's bookkeeping, reset by the agent when a
/// capture starts. Updated with atomic adds, shared by all CPUs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureState {
    /// Start of the current one-second rate window (ktime ns).
    pub window_start_ns: u64,
    /// Records taken in the current window.
    pub window_records: u64,
    /// Records taken in the whole capture.
    pub records: u64,
    /// Frames not copied because the ring buffer was full (the reader is slow).
    pub lost: u64,
    /// Frames not copied because of the rate or record bound.
    pub limited: u64,
}

/// One record of the `CAPTURE` ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CaptureRecord {
    /// `bpf_ktime_get_ns` when the frame was copied.
    pub ts_ns: u64,
    /// `CaptureConfig::session` at the time.
    pub session: u32,
    /// Length of the whole frame, as the program left it.
    pub frame_len: u32,
    /// Bytes of it in `data`.
    pub cap_len: u32,
    pub vip_slot: u32,
    /// Backend id, or `CAPTURE_NO_BACKEND`.
    pub backend: u32,
    /// XDP action (XDP_TX, XDP_DROP, ...).
    pub action: u32,
    /// `lb_common::stats` reason it is counted under.
    pub reason: u32,
    pub _pad: u32,
    pub data: [u8; CAPTURE_SNAPLEN as usize],
}

const _: () = {
    assert!(core::mem::size_of::<CaptureConfig>() == 40);
    assert!(core::mem::size_of::<CaptureState>() == 40);
    assert!(core::mem::size_of::<CaptureRecord>() == 40 + CAPTURE_SNAPLEN as usize);
    assert!(core::mem::align_of::<CaptureRecord>() == 8);
};

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: repr(C), Copy, explicit padding, integers only.
    unsafe impl aya::Pod for CaptureConfig {}
    unsafe impl aya::Pod for CaptureState {}
    unsafe impl aya::Pod for CaptureRecord {}
}
