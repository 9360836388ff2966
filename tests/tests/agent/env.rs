//! The test's world (topology, health servers, `lb run`), its settings, and CLI and status calls that fail naming it.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use lb_tests::netns::{CmdOutput, is_root};
use lb_tests::topology::{Topology, TopologyOptions, VipSpec};
use lb_tests::traffic::{HealthMode, HealthServer, HttpConn, Summary, TcpLoad, open_keepalive, tcp_client};

use super::status::{Json, JsonExt, is_up_in_table, u64_at};

/// A small prime ring keeps table generation fast in debug builds.
pub(super) const RING: u32 = 251;
/// Port of the backends' health-check servers (on their own addresses).
const HC_PORT: u16 = 8080;
pub(super) const RISE: u32 = 2;
pub(super) const FALL: u32 = 3;
// Generous probe timeout: a spurious timeout on a loaded CI machine must
// not add to the deliberate failures of the flapping test.
const INTERVAL_MS: u64 = 200;
pub(super) const TIMEOUT_MS: u64 = 150;
/// New connections per traffic check.
pub(super) const NEW_CONNECTIONS: usize = 100;
/// Keep-alive connections held across a change.
pub(super) const KEEPALIVE: usize = 30;
/// Timeout of each connect, read and write of the test's clients.
const OP_TIMEOUT: Duration = Duration::from_secs(3);
/// Bound of every wait for the agent to reach a state.
pub(super) const WAIT: Duration = Duration::from_secs(20);

static SERIAL: Mutex<()> = Mutex::new(());

pub(super) fn serial() -> MutexGuard<'static, ()> {
    // A failed test poisons the mutex; the next one may still run.
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

pub(super) fn http_check() -> String {
    format!(
        "{{ kind = \"http\", port = {HC_PORT}, path = \"/health\", expect_status = 200, interval_ms = {INTERVAL_MS}, \
         timeout_ms = {TIMEOUT_MS}, rise = {RISE}, fall = {FALL} }}"
    )
}

/// One test's world. Fields drop in order: health servers, then the
/// topology (which stops lb, decaps, and removes the namespaces).
pub(super) struct Env {
    pub(super) name: &'static str,
    pub(super) health: Vec<HealthServer>,
    pub(super) topo: Topology,
    pub(super) config: PathBuf,
    vip: VipSpec,
    /// `198.18.100.1:80/tcp`
    pub(super) vip_id: String,
}

impl Env {
    /// Builds a topology with `backends` backends (health servers on every
    /// one when `health` is set), writes a config with `vip` and starts
    /// `lb run` (keeping its pins when `keep_pins`). `None` when not root.
    pub(super) fn new(name: &'static str, backends: usize, vip: VipSpec, health: bool, keep_pins: bool) -> Option<Env> {
        if !is_root() {
            eprintln!("{name}: skipped: the agent tests need root");
            return None;
        }
        let opts = TopologyOptions { backends, vips_v6: vec![], udp_ports: vec![], ..Default::default() };
        let topo = Topology::new(opts).unwrap_or_else(|e| panic!("{name}: topology: {e:#}"));
        let mut servers = Vec::new();
        if health {
            for b in topo.backends() {
                let addr = SocketAddr::new(IpAddr::V4(b.v4), HC_PORT);
                let s = HealthServer::start(&b.ns, &b.name, addr, HealthMode::Healthy)
                    .unwrap_or_else(|e| panic!("{name}: health server of {}: {e:#}", b.name));
                servers.push(s);
            }
        }
        let config = topo.write_config(std::slice::from_ref(&vip));
        let vip_id = vip.id();
        let mut env = Env { name, health: servers, topo, config, vip, vip_id };
        let started =
            if keep_pins { env.topo.start_lb_keeping_pins(&env.config) } else { env.topo.start_lb(&env.config) };
        if let Err(e) = started {
            panic!("{name}: starting lb: {e:#}\nconfig:\n{}", std::fs::read_to_string(&env.config).unwrap_or_default());
        }
        Some(env)
    }

    /// Panics naming the test; the topology prints the agent's and the
    /// decapsulators' logs as it is torn down.
    pub(super) fn fail(&self, what: impl std::fmt::Display) -> ! {
        panic!("{}: {what}", self.name)
    }

    /// `lb --socket S ARGS...` with its exit code and output.
    pub(super) fn cli(&self, args: &[&str]) -> CmdOutput {
        self.topo.lb_cli_status(args).unwrap_or_else(|e| self.fail(format!("lb {}: {e:#}", args.join(" "))))
    }

    /// `lb ARGS...`, which must exit 0; returns stdout.
    pub(super) fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        if !out.success() {
            self.fail(format!("`lb {}` failed: {out}", args.join(" ")));
        }
        out.stdout
    }

    /// `lb ARGS...`, which the agent must refuse: exit 64, and stderr
    /// containing every one of `needles`. Returns stderr.
    pub(super) fn cli_refused(&self, args: &[&str], needles: &[&str]) -> String {
        let out = self.cli(args);
        if out.code != Some(64) || needles.iter().any(|n| !out.stderr.contains(n)) {
            self.fail(format!("`lb {}`: expected exit 64 and {needles:?} in stderr; got {out}", args.join(" ")));
        }
        out.stderr.trim().to_string()
    }

    pub(super) fn status(&self) -> Json {
        let text = self.cli_ok(&["status", "--json"]);
        Json::parse(&text).unwrap_or_else(|e| self.fail(format!("lb status --json: {e}\n{text}")))
    }

    /// The status of this test's VIP.
    pub(super) fn vip_status(&self, status: &Json) -> Json {
        let vips = status.get("vips").and_then(Json::as_array).unwrap_or_else(|| self.fail("status has no vips"));
        vips.iter()
            .find(|v| v.str_at("vip") == Some(self.vip_id.as_str()))
            .cloned()
            .unwrap_or_else(|| self.fail(format!("status has no VIP {}: {status:?}", self.vip_id)))
    }

    /// The status of one backend of this test's VIP, if it is listed.
    pub(super) fn backend_status(&self, status: &Json, addr: &str) -> Option<Json> {
        let vip = self.vip_status(status);
        vip.get("backends")?.as_array()?.iter().find(|b| b.str_at("address") == Some(addr)).cloned()
    }

    pub(super) fn backend_addr(&self, i: usize) -> String {
        self.topo.backends()[i].v4.to_string()
    }

    /// Polls `lb status --json` every 50 ms until `done` returns
    /// `Some(_)`, for at most [`WAIT`].
    pub(super) fn wait_status<T>(&self, what: &str, mut done: impl FnMut(&Json) -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            let s = self.status();
            if let Some(t) = done(&s) {
                return t;
            }
            if Instant::now() >= deadline {
                self.fail(format!("waited {WAIT:?} for {what}; last status:\n{}", self.cli(&["status"]).stdout));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until every backend of the VIP is up, in the table and probed
    /// at least `checks` times; returns that status.
    pub(super) fn wait_probed(&self, what: &str, checks: u64) -> Json {
        self.wait_status(what, |s| {
            let v = self.vip_status(s);
            let bs = v.get("backends")?.as_array()?;
            bs.iter().all(|b| is_up_in_table(b) && u64_at(b, &["probe", "checks"]) >= checks).then(|| s.clone())
        })
    }

    /// `n` new connections (2 requests each) to the VIP.
    pub(super) fn new_connections(&self, n: usize) -> Summary {
        let mut load = TcpLoad::new(self.vip.target(), n);
        load.requests = 2;
        load.op_timeout = OP_TIMEOUT;
        let results = tcp_client(&self.topo.client().ns, &load).unwrap_or_else(|e| self.fail(format!("client: {e:#}")));
        Summary::new(&results, &self.topo.backend_names())
    }

    pub(super) fn keepalive(&self, n: usize) -> Vec<(HttpConn, String)> {
        open_keepalive(&self.topo.client().ns, self.vip.target(), n, OP_TIMEOUT)
            .unwrap_or_else(|e| self.fail(format!("keep-alive connections: {e:#}")))
    }

    /// Ends the test: the agent must still run, then it is stopped (exit 0).
    pub(super) fn finish(mut self) {
        if let Err(e) = self.topo.check_children() {
            self.fail(format!("{e:#}"));
        }
        if let Err(e) = self.topo.stop_lb() {
            self.fail(format!("{e:#}"));
        }
    }
}
