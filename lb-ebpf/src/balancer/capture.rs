//! `lb capture`: copies frames of VIP traffic, as the program leaves them
//! (after the rewrite of XDP_TX, untouched on a drop), with their verdicts,
//! into the `CAPTURE` ring buffer. Off by default; while off a packet pays
//! one array lookup and a branch. While on: filtered by VIP slot and backend,
//! sampled, bounded in rate, record count and time (the expiry is checked
//! here too, so a capture ends even if the agent that started it is gone).

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_ns, bpf_xdp_load_bytes},
    macros::map,
    maps::{Array, RingBuf},
    programs::XdpContext,
};
use lb_common::capture::{
    CAPTURE_ANY, CAPTURE_RING_BYTES, CAPTURE_SNAPLEN, CaptureConfig, CaptureRecord, CaptureState,
};

#[map(name = "CAPTURE")]
pub static CAPTURE: RingBuf = RingBuf::with_byte_size(CAPTURE_RING_BYTES, 0);

#[map(name = "CAPTURE_CONFIG")]
pub static CAPTURE_CONFIG: Array<CaptureConfig> = Array::with_max_entries(1, 0);

#[map(name = "CAPTURE_STATE")]
pub static CAPTURE_STATE: Array<CaptureState> = Array::with_max_entries(1, 0);

const SECOND_NS: u64 = 1_000_000_000;
const _: () = assert!(CAPTURE_SNAPLEN.is_power_of_two());

/// The hook: `verdict` is (XDP action, stats reason) of the frame in `ctx`.
#[inline(always)]
pub fn frame(ctx: &XdpContext, vip_slot: u32, backend: u32, verdict: (u32, u32)) {
    let Some(cfg) = CAPTURE_CONFIG.get(0) else { return };
    if cfg.session != 0 {
        // Packed: a BPF call takes at most five arguments.
        copy(ctx, cfg, vip_slot, backend, (verdict.0 as u64) << 32 | verdict.1 as u64);
    }
}

/// Adds 1 atomically. The checks before it race, so a bound may be
/// overshot by a record per CPU.
#[inline(always)]
fn bump(counter: &mut u64) {
    super::atomic::add(counter, 1);
}

// Out of line: the hot path of a capture that is off stays small.
#[inline(never)]
fn copy(ctx: &XdpContext, cfg: &CaptureConfig, vip_slot: u32, backend: u32, verdict: u64) {
    if (cfg.vip_slot != CAPTURE_ANY && cfg.vip_slot != vip_slot)
        || (cfg.backend != CAPTURE_ANY && cfg.backend != backend)
    {
        return;
    }
    // Sampled out before the clock is read: the cheapest test first.
    if cfg.sample > 1 && unsafe { bpf_get_prandom_u32() } % cfg.sample != 0 {
        return;
    }
    let now = unsafe { bpf_ktime_get_ns() };
    if now > cfg.expires_ns {
        return;
    }
    let Some(state) = CAPTURE_STATE.get_ptr_mut(0) else { return };
    // SAFETY: a valid map value; concurrent CPUs only blur the window.
    let state = unsafe { &mut *state };
    if now.wrapping_sub(state.window_start_ns) >= SECOND_NS {
        state.window_start_ns = now;
        state.window_records = 0;
    }
    if state.window_records >= cfg.max_per_sec as u64 || (cfg.max_records != 0 && state.records >= cfg.max_records) {
        bump(&mut state.limited);
        return;
    }
    bump(&mut state.window_records);
    bump(&mut state.records);
    let Some(mut entry) = CAPTURE.reserve::<CaptureRecord>(0) else {
        bump(&mut state.lost);
        return;
    };
    let len = (ctx.data_end() - ctx.data()) as u32;
    let cap = if len < cfg.snaplen { len } else { cfg.snaplen };
    // 1..=CAPTURE_SNAPLEN (a power of two) in a form the verifier can follow:
    // the helper refuses a length that may be zero or too large.
    let cap = (cap.wrapping_sub(1) & (CAPTURE_SNAPLEN - 1)) + 1;
    let rec = entry.as_mut_ptr();
    // SAFETY: `rec` points to a reserved, writable record of the right size.
    let copied = unsafe {
        (*rec).ts_ns = now;
        (*rec).session = cfg.session;
        (*rec).frame_len = len;
        (*rec).cap_len = cap;
        (*rec).vip_slot = vip_slot;
        (*rec).backend = backend;
        (*rec).action = (verdict >> 32) as u32;
        (*rec).reason = verdict as u32;
        (*rec)._pad = 0;
        bpf_xdp_load_bytes(ctx.ctx, 0, (*rec).data.as_mut_ptr() as *mut c_void, cap) == 0
    };
    if copied {
        entry.submit(0);
    } else {
        entry.discard(0);
    }
}
