//! One BPF_PROG_TEST_RUN of an XDP program on one frame, for the fixtures and the fuzzer.

use aya::programs::{TestRun, TestRunOptions, Xdp};

/// Room left in the output buffer for a frame the program grows
/// (encapsulation, an ICMP answer).
const GROWTH: usize = 256;

/// Runs `prog` once on `frame` and returns the verdict; the output frame is
/// left in `out` (its buffer is reused). Panics when the kernel refuses the run.
pub fn test_run_into(prog: &Xdp, frame: &[u8], out: &mut Vec<u8>) -> u32 {
    out.clear();
    out.resize(frame.len() + GROWTH, 0);
    let r = prog
        .test_run(TestRunOptions { data_in: Some(frame), data_out: Some(out), ..Default::default() })
        .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN failed ({} bytes): {e}", frame.len()));
    out.truncate(r.data_size_out as usize);
    r.return_value
}

/// [`test_run_into`] with a new output buffer: the verdict and the output frame.
pub fn test_run(prog: &Xdp, frame: &[u8]) -> (u32, Vec<u8>) {
    let mut out = Vec::new();
    let verdict = test_run_into(prog, frame, &mut out);
    (verdict, out)
}
