//! One lb instance of the ECMP topology: its `lb run` configuration, start,
//! stop and death, and the CLIs (`lb`, `birdc`) to talk to it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::{Ecmp, VIP_PORT, birdconf, path_str};
use crate::netns::{self, ChildGuard, CmdOutput, run};
use crate::topology::{LB_IFACE, READY_TIMEOUT};

impl Ecmp {
    pub fn bird_socket(&self, name: &str) -> PathBuf {
        self.dir.join(format!("bird-{name}.ctl"))
    }

    /// The agent's include file of instance `k`.
    pub fn include_file(&self, k: usize) -> PathBuf {
        self.dir.join(format!("{}-vips.conf", self.instances[k].name))
    }

    pub fn control_socket(&self, k: usize) -> PathBuf {
        self.dir.join(format!("{}.sock", self.instances[k].name))
    }

    /// The `lb run` configuration of instance `k`: identical VIP tables on
    /// every instance, host-specific `[global]` and `[bgp]`.
    pub fn lb_config(&self, k: usize) -> String {
        let inst = &self.instances[k];
        let mut s = String::new();
        let _ = writeln!(s, "[global]\ninterface = \"{LB_IFACE}\"\nforwarding = \"ipip\"");
        let _ = writeln!(s, "nexthop_mac = \"{}\"\ntunnel_source_v4 = \"{}\"", self.router_mac, inst.v4);
        if self.is_v6() {
            let _ = writeln!(s, "tunnel_source_v6 = \"{}\"", inst.v6);
        }
        let _ = writeln!(s, "pin_path = \"{}\"", self.dir.join("bpffs").join(&inst.name).display());
        let _ = writeln!(s, "control_socket = \"{}\"", self.control_socket(k).display());
        let _ = writeln!(s, "\n[bgp]\nbird_socket = \"{}\"", self.bird_socket(&inst.name).display());
        let _ = writeln!(s, "config_file = \"{}\"", self.include_file(k).display());
        let _ = writeln!(s, "withdraw_grace_ms = {}", self.opts.withdraw_grace_ms);
        let _ = writeln!(s, "\n[[vip]]\naddress = \"{}\"\nport = {VIP_PORT}\nprotocol = \"tcp\"", self.vip());
        let _ = writeln!(s, "ring_size = {}", self.opts.ring_size);
        let all: Vec<usize> = (0..self.backends.len()).collect();
        for i in inst.backends.as_ref().unwrap_or(&all) {
            let _ = writeln!(s, "  [[vip.backend]]\n  address = \"{}\"", self.backend_addr(*i));
        }
        s
    }

    /// Starts BIRD (unless running) and `lb run` on instance `k`.
    pub fn start_instance(&mut self, k: usize) -> Result<()> {
        let name = self.instances[k].name.clone();
        let ns = self.instances[k].ns.clone();
        if self.instances[k].bird.is_none() {
            let (id, local, router) = (self.instances[k].v4, self.hop(k), self.router_lb_side());
            let conf = birdconf::instance(id, local, LB_IFACE, self.opts.bfd_multiplier, router, &self.include_file(k));
            self.instances[k].bird = Some(self.start_bird(&ns, &name, &conf)?);
        }
        let config = self.dir.join(format!("{name}.toml"));
        std::fs::write(&config, self.lb_config(k)).with_context(|| format!("write {}", config.display()))?;
        self.instances[k].runs += 1;
        let log = self.dir.join(format!("lb-{name}-{}.log", self.instances[k].runs));
        let args = ["run", "--config", path_str(&config)?, "--detach-on-exit"];
        let mut child = ChildGuard::spawn_in(&ns, &format!("lb run ({name})"), &self.lb_bin, &args, &log)?;
        child.wait_for_line("ready", READY_TIMEOUT)?;
        self.instances[k].lb = Some(child);
        Ok(())
    }

    /// Gives instance `k` another backend set (indices) and reloads it: its
    /// table then differs from the others' (a file not rolled out everywhere).
    pub fn reload_with_backends(&mut self, k: usize, backends: &[usize]) -> Result<()> {
        self.instances[k].backends = Some(backends.to_vec());
        let config = self.dir.join(format!("{}.toml", self.instances[k].name));
        std::fs::write(&config, self.lb_config(k)).with_context(|| format!("write {}", config.display()))?;
        self.lb_cli(k, &["reload"]).map(|_| ())
    }

    /// SIGTERM to `lb run` of instance `k` (it withdraws, waits the grace,
    /// detaches); returns its exit status.
    pub fn stop_lb(&mut self, k: usize, grace: Duration) -> Result<std::process::ExitStatus> {
        let mut child = self.instances[k].lb.take().context("no lb run")?;
        child.stop(grace).context("lb run: exit status unknown")
    }

    /// A host dying: `lb run` SIGKILLed, its program detached (as the
    /// host's reboot would), BIRD SIGKILLed.
    pub fn kill_host(&mut self, k: usize) -> Result<()> {
        let inst = &mut self.instances[k];
        inst.lb.take().context("no lb run")?.kill();
        let pins = self.dir.join("bpffs").join(&inst.name);
        let args = ["detach", "--iface", LB_IFACE, "--pin-path", path_str(&pins)?];
        netns::exec_in(&inst.ns, path_str(&self.lb_bin)?, &args)?;
        inst.bird.take().context("no BIRD")?.kill();
        Ok(())
    }

    /// `lb --socket S ARGS...` on instance `k`, whatever its exit code.
    pub fn lb_cli_status(&self, k: usize, args: &[&str]) -> Result<CmdOutput> {
        let sock = self.control_socket(k);
        let mut full = vec!["--socket", path_str(&sock)?];
        full.extend_from_slice(args);
        netns::exec_in_status(&self.instances[k].ns, path_str(&self.lb_bin)?, &full)
    }

    /// `lb ARGS...` on instance `k`, which must succeed; its stdout.
    pub fn lb_cli(&self, k: usize, args: &[&str]) -> Result<String> {
        let out = self.lb_cli_status(k, args)?;
        if !out.success() {
            bail!("lb {} on {}: {out}", args.join(" "), self.instances[k].name);
        }
        Ok(out.stdout)
    }

    pub fn status(&self, k: usize) -> Result<serde_json::Value> {
        Ok(serde_json::from_str(&self.lb_cli(k, &["status", "--json"])?)?)
    }

    /// `birdc -s SOCKET ARGS...` of `router` or an instance.
    pub fn birdc(&self, name: &str, args: &[&str]) -> Result<String> {
        self.birdc_at(&self.bird_socket(name), args)
    }

    pub(super) fn birdc_at(&self, socket: &Path, args: &[&str]) -> Result<String> {
        let mut full = vec!["-s", path_str(socket)?];
        full.extend_from_slice(args);
        run(path_str(&self.birdc)?, &full)
    }
}
