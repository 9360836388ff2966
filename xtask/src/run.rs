//! Subcommands that run something after building: tests, demo, lb itself.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::build::{EBPF_PACKAGE, build_ebpf, host_bin, host_cargo, lb_bin};
use crate::cmd::Cmd;
use crate::setup::setup;
use crate::util::{is_root, step};

/// XDP attach mode for `build-and-load`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum XdpMode {
    /// Driver (native) XDP, the default of `lb run`.
    Native,
    /// Generic XDP in the kernel's network stack (works on any interface).
    Skb,
}

fn require_root(what: &str) -> Result<()> {
    if !is_root() {
        bail!(
            "`cargo xtask {what}` must run as root (it attaches XDP programs and \
             creates network namespaces); run it with sudo, e.g. `sudo -E env \"PATH=$PATH\" cargo xtask {what}`"
        );
    }
    Ok(())
}

/// `cargo xtask test`: setup, eBPF objects, `lb`, then
/// `cargo test --workspace --exclude lb-ebpf --no-fail-fast`.
pub fn test(root: &Path, extra: &[OsString]) -> Result<()> {
    require_root("test")?;
    let setup = setup()?;
    build_ebpf(root, &setup)?;
    host_cargo(root, "build", false).args(["-p", "lb-userspace", "--bin", "lb"]).run().context("building lb failed")?;
    step(format!("running the tests with LB_BIN={}", lb_bin(root, false).display()));
    let mut cmd = host_cargo(root, "test", false);
    if !selects_packages(extra) {
        // `--workspace` ignores default-members: leave the no_main eBPF crate out.
        cmd.args(["--workspace", "--exclude", EBPF_PACKAGE]);
    }
    // Report every failing test binary, not just the first.
    cmd.arg("--no-fail-fast").args(extra);
    let mut tally = Tally::default();
    let result = cmd.run_lines(|line| {
        println!("{line}");
        tally.add(line);
    });
    // One closing line over all test binaries: cargo's own last line is the
    // last binary's, often a crate without doc-tests ("0 passed").
    println!("{} passed, {} failed", tally.passed, tally.failed);
    result.context("tests failed")
}

/// Sums cargo's `test result: ok. N passed; M failed; ...` lines.
#[derive(Default)]
struct Tally {
    passed: u64,
    failed: u64,
}

impl Tally {
    fn add(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else { return };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(what), Some(count)) = (words.next(), words.next()) else { continue };
            let count: u64 = count.parse().unwrap_or(0);
            match what {
                "passed" => self.passed += count,
                "failed" => self.failed += count,
                _ => {}
            }
        }
    }
}

/// Whether the extra `cargo test` arguments (before a `--`) choose packages
/// themselves, in which case `--workspace` must not override them.
fn selects_packages(extra: &[OsString]) -> bool {
    extra.iter().map(|a| a.to_string_lossy()).take_while(|a| a != "--").any(|a| {
        a.starts_with("-p") || a == "--package" || a.starts_with("--package=") || a == "--workspace" || a == "--all"
    })
}

/// `cargo xtask demo`: builds everything, then `lb-demo --lb-bin <lb>`.
pub fn demo(root: &Path, extra: &[OsString]) -> Result<()> {
    require_root("demo")?;
    let setup = setup()?;
    build_ebpf(root, &setup)?;
    host_cargo(root, "build", false)
        .args(["-p", "lb-userspace", "-p", "lb-tests", "--bins"])
        .run()
        .context("building lb and lb-demo failed")?;
    Cmd::new(host_bin(root, false, "lb-demo"))
        .arg("--lb-bin")
        .arg(lb_bin(root, false))
        .args(extra)
        .run()
        .context("the demo failed")
}

/// `cargo xtask build-and-load`: release build, then exec `lb run`.
pub fn build_and_load(root: &Path, iface: &str, config: &Path, mode: Option<XdpMode>) -> Result<()> {
    // Resolve the config now: lb runs in the caller's directory anyway, but a
    // typo should fail before a release build.
    let config: PathBuf =
        config.canonicalize().with_context(|| format!("config file {} not found", config.display()))?;
    require_root("build-and-load")?;
    let setup = setup()?;
    build_ebpf(root, &setup)?;
    host_cargo(root, "build", true)
        .args(["-p", "lb-userspace", "--bin", "lb"])
        .run()
        .context("building lb (release) failed")?;
    let mut cmd = Cmd::new(lb_bin(root, true));
    cmd.arg("run").arg("--config").arg(&config).args(["--iface", iface]);
    if mode == Some(XdpMode::Skb) {
        cmd.args(["--xdp-mode", "skb"]);
    }
    step("lb stays in the foreground; Ctrl-C detaches it");
    Err(cmd.exec())
}

#[cfg(test)]
mod tests {
    use super::selects_packages;
    use std::ffi::OsString;

    fn args(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn package_selection() {
        assert!(!selects_packages(&args(&[])));
        assert!(!selects_packages(&args(&["maglev", "--", "-p"])));
        assert!(selects_packages(&args(&["-p", "lb-tests"])));
        assert!(selects_packages(&args(&["-plb-tests"])));
        assert!(selects_packages(&args(&["--package=lb-common"])));
    }
}

#[cfg(test)]
mod tally_tests {
    use super::Tally;

    #[test]
    fn sums_cargo_test_result_lines() {
        let mut t = Tally::default();
        t.add("test result: ok. 49 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.77s");
        t.add("test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1s");
        t.add("running 3 tests");
        assert_eq!((t.passed, t.failed), (52, 2));
    }
}
