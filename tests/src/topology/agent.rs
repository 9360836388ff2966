//! The `lb` processes of a topology: which binary, `lb run` started,
//! stopped, killed and detached, the `lb` CLI against its control socket,
//! and their logs.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::{READY_TIMEOUT, Topology};
use crate::netns::{self, ChildGuard};

/// `$LB_BIN`; else `lb` next to the running executable (the test binary
/// lives in `target/<profile>/deps`, the demo in `target/<profile>`), so a
/// release test run uses the release `lb`; else
/// `<workspace>/target/debug/lb`.
pub fn default_lb_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("LB_BIN") {
        return PathBuf::from(p);
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(mut dir) = exe.parent().map(Path::to_path_buf)
    {
        if dir.file_name().is_some_and(|n| n == "deps") {
            dir.pop();
        }
        let cand = dir.join("lb");
        if cand.is_file() {
            return cand;
        }
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("target").join("debug").join("lb")
}

/// Warns (once per process) when the lb binary is older than one of the
/// files it was built from (as listed in cargo's dep-info `lb.d` next to
/// it): `cargo test -p lb-tests` does not rebuild the `lb` binary, so a
/// stale one would be tested.
pub(crate) fn warn_if_stale(lb_bin: &Path) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let Ok(bin_time) = std::fs::metadata(lb_bin).and_then(|m| m.modified()) else {
            return;
        };
        let Ok(dep_info) = std::fs::read_to_string(lb_bin.with_extension("d")) else {
            return;
        };
        let Some((_, deps)) = dep_info.lines().next().and_then(|l| l.split_once(": ")) else {
            return;
        };
        // Paths are separated by spaces; a space inside a path is "\ ".
        let deps = deps.replace("\\ ", "\u{0}");
        for dep in deps.split_whitespace().map(|d| d.replace('\u{0}', " ")) {
            if let Ok(t) = std::fs::metadata(&dep).and_then(|m| m.modified())
                && t > bin_time
            {
                eprintln!(
                    "lb-tests: warning: {} is older than {dep}; rebuild it (`cargo build -p lb-userspace`)",
                    lb_bin.display()
                );
                return;
            }
        }
    });
}
impl Topology {
    /// Runs `lb --socket <control socket> ARGS...` in the lb namespace
    /// (`lb status`, `lb stats`, `lb backend ...`) and returns its stdout.
    pub fn lb_cli(&self, args: &[&str]) -> Result<String> {
        let sock = self.control_socket();
        let mut full = vec!["--socket", sock.to_str().context("socket path is not UTF-8")?];
        full.extend_from_slice(args);
        let bin = self.lb_bin.to_str().context("lb path is not UTF-8")?;
        netns::exec_in(&self.lb.ns, bin, &full)
    }

    /// Starts `lb run --config CONFIG` in the lb namespace and waits until
    /// it prints `ready`. A running lb is stopped first.
    pub fn start_lb(&mut self, config: &Path) -> Result<()> {
        self.spawn_lb(config, true)
    }

    /// Like [`Topology::start_lb`], but without `--detach-on-exit`: when this
    /// agent stops (or is killed, see [`Topology::kill_lb`]) forwarding goes
    /// on from the pinned maps and link, and the next `lb run` adopts them.
    /// The topology runs `lb detach` on drop if the pins may still be there;
    /// [`Topology::detach_lb`] does it earlier.
    pub fn start_lb_keeping_pins(&mut self, config: &Path) -> Result<()> {
        self.pins_left = true;
        self.spawn_lb(config, false)
    }

    fn spawn_lb(&mut self, config: &Path, detach_on_exit: bool) -> Result<()> {
        if !self.lb_bin.is_file() {
            bail!(
                "lb binary not found at {} (build it with `cargo build -p lb-userspace`, or set LB_BIN / --lb-bin)",
                self.lb_bin.display()
            );
        }
        self.stop_lb()?;
        warn_if_stale(&self.lb_bin);
        self.configs += 1;
        let log = self.dir.join(format!("lb-run-{}.log", self.configs));
        let config = config.to_str().context("config path is not UTF-8")?;
        let mut args = vec!["run", "--config", config];
        if detach_on_exit {
            args.push("--detach-on-exit");
        }
        let mut child = ChildGuard::spawn_in(&self.lb.ns, "lb run", &self.lb_bin, &args, &log)?;
        child.wait_for_line("ready", READY_TIMEOUT)?;
        self.lb_proc = Some(child);
        Ok(())
    }

    /// Stops a running `lb run` (SIGTERM) and checks that it exited 0.
    pub fn stop_lb(&mut self) -> Result<()> {
        let Some(mut child) = self.lb_proc.take() else {
            return Ok(());
        };
        match child.stop(Duration::from_secs(5)) {
            Some(s) if s.success() => Ok(()),
            Some(s) => bail!("lb run exited with {s} on SIGTERM\n--- stderr ---\n{}", child.log_text()),
            None => bail!("lb run: exit status unknown\n--- stderr ---\n{}", child.log_text()),
        }
    }

    /// SIGKILLs the running `lb run`, as a crash would end it: nothing is
    /// detached or unpinned. Returns its exit status (killed by signal 9).
    pub fn kill_lb(&mut self) -> Result<std::process::ExitStatus> {
        let mut child = self.lb_proc.take().context("no lb run to kill")?;
        self.pins_left = true;
        child.kill().context("lb run: exit status unknown after SIGKILL")
    }

    /// Runs `lb detach --iface lb0 --pin-path PIN_PATH` in the lb namespace
    /// (for an agent that stopped without `--detach-on-exit`), and returns
    /// its stdout. No agent may be running.
    pub fn detach_lb(&mut self) -> Result<String> {
        if self.lb_proc.is_some() {
            bail!("lb run is still running; stop it first");
        }
        let pin = self.pin_path();
        let pin = pin.to_str().context("pin path is not UTF-8")?.to_string();
        let bin = self.lb_bin.to_str().context("lb path is not UTF-8")?.to_string();
        let out = netns::exec_in(&self.lb.ns, &bin, &["detach", "--iface", &self.lb.ifname, "--pin-path", &pin])?;
        self.pins_left = false;
        Ok(out)
    }

    /// Pid of the running `lb run`.
    pub fn lb_pid(&self) -> Option<u32> {
        self.lb_proc.as_ref().and_then(ChildGuard::pid)
    }

    /// The stderr log of the running `lb run` (empty when none runs).
    pub fn lb_log(&self) -> String {
        self.lb_proc.as_ref().map(ChildGuard::log_text).unwrap_or_default()
    }

    /// Like [`Topology::lb_cli`], but returns the exit code, stdout and
    /// stderr whatever the outcome (for refused requests).
    pub fn lb_cli_status(&self, args: &[&str]) -> Result<netns::CmdOutput> {
        let sock = self.control_socket();
        let mut full = vec!["--socket", sock.to_str().context("socket path is not UTF-8")?];
        full.extend_from_slice(args);
        let bin = self.lb_bin.to_str().context("lb path is not UTF-8")?;
        netns::exec_in_status(&self.lb.ns, bin, &full)
    }

    /// Fails if `lb run` or an `lb decap` has exited.
    pub fn check_children(&mut self) -> Result<()> {
        let mut dead = Vec::new();
        for c in self.lb_proc.iter_mut().chain(self.decaps.iter_mut()) {
            if let Some(status) = c.try_status() {
                dead.push(format!("{} exited ({status})\n--- stderr ---\n{}", c.name, c.log_text()));
            }
        }
        if dead.is_empty() { Ok(()) } else { bail!("{}", dead.join("\n")) }
    }

    /// The stderr logs of `lb run` and of every `lb decap`.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for c in self.lb_proc.iter().chain(self.decaps.iter()) {
            let _ = writeln!(s, "--- {} stderr ---\n{}", c.name, c.log_text().trim_end());
        }
        s
    }
}
