//! `lb_clock`: never attached; the agent runs it with BPF_PROG_TEST_RUN to
//! read the kernel's jiffies (the clock of `ConnEntry::seen`, which
//! userspace cannot read) next to CLOCK_MONOTONIC_COARSE.

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_jiffies64, bpf_ktime_get_coarse_ns},
    macros::{map, xdp},
    maps::Array,
    programs::XdpContext,
};
use lb_common::ClockSample;

#[map(name = "CLOCK")]
pub static CLOCK: Array<ClockSample> = Array::with_max_entries(1, 0);

#[xdp]
pub fn lb_clock(_ctx: XdpContext) -> u32 {
    if let Some(sample) = CLOCK.get_ptr_mut(0) {
        // SAFETY: the map's only element, valid for the program run.
        unsafe { *sample = ClockSample { jiffies: bpf_jiffies64(), coarse_ns: bpf_ktime_get_coarse_ns() } };
    }
    xdp_action::XDP_PASS
}
