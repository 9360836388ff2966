//! `cargo xtask bench`: setup, the eBPF objects, a release build of `lb`
//! and `lb-bench`, then `target/release/lb-bench --lb-bin target/release/lb`.

use std::ffi::OsString;
use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::build::{build_ebpf, host_bin, host_cargo, lb_bin};
use crate::cmd::Cmd;
use crate::setup::setup;
use crate::util::{is_root, step};

pub fn bench(root: &Path, quick: bool, extra: &[OsString]) -> Result<()> {
    if !is_root() {
        bail!(
            "`cargo xtask bench` must run as root (BPF_PROG_TEST_RUN, XDP, network namespaces); \
             run it with sudo, e.g. `sudo -E env \"PATH=$PATH\" cargo xtask bench`"
        );
    }
    let setup = setup()?;
    build_ebpf(root, &setup)?;
    // Release: the agent's control-plane timings and the HAProxy comparison
    // measure lb's own userspace too.
    host_cargo(root, "build", true)
        .args(["-p", "lb-userspace", "-p", "lb-tests", "--bins"])
        .run()
        .context("building lb and lb-bench (release) failed")?;
    step("running the benchmarks (results in target/bench/report.json and report.svg)");
    let mut cmd = Cmd::new(host_bin(root, true, "lb-bench"));
    cmd.arg("--lb-bin").arg(lb_bin(root, true));
    if quick {
        cmd.arg("--quick");
    }
    cmd.args(extra).run().context("the benchmarks failed")
}
