//! The world the tests share: one topology whose agent runs three VIPs
//! (health checks, an agent check, hot-spot correction, a BGP speaker that
//! is not there), built on first use and torn down at exit; and lookups in
//! its status JSON.

use std::net::{IpAddr, SocketAddr};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, Once};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use lb_tests::netns::{CmdOutput, is_root};
use lb_tests::topology::{Forwarding, Topology, TopologyOptions, VIP_V4, VIP_V6, VipSpec};
use lb_tests::traffic::{HealthMode, HealthServer};
use serde_json::Value;

use super::RING;

/// Health-check port; backend3 serves none, so it goes down.
const HC_PORT: u16 = 8080;
/// Agent-check port of the IPv6 VIP: no backend listens there, so every
/// exchange fails (and changes nothing) and status shows the error.
const AGENT_PORT: u16 = 9777;
/// Hot-spot detection and correction with short windows, so that the UDP
/// VIP's hot spot (see `Background`) is corrected once within a second or
/// two of traffic; the long cool-down keeps it at one step for the test.
/// At `factor = 1.5` it stays flagged after that step (about 1.9 times its
/// share: the test's flows were picked for the uncorrected table).
const HOT_SPOT: &str = "[hot_spot]\nfactor = 1.5\ninterval_ms = 100\nwindow_ms = 1000\nduration_ms = 300\n\
                        min_flows = 20\nmin_packets = 0\ncorrect = true\ncooldown_ms = 600000\n";

/// The agent's world, shared by the tests of this file.
pub(super) struct World {
    // Dropped in this order: health servers, then the topology.
    _health: Vec<HealthServer>,
    pub(super) topo: Topology,
    /// Where `lb run` sent its sd_notify messages.
    pub(super) notify: UnixDatagram,
    notify_path: PathBuf,
    pub(super) tcp: VipSpec,
    pub(super) udp: VipSpec,
    pub(super) v6: VipSpec,
}

static WORLD: Mutex<Option<World>> = Mutex::new(None);

extern "C" fn teardown() {
    let world = WORLD.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(w) = world {
        let _ = std::fs::remove_file(&w.notify_path);
        drop(w);
    }
}

/// The shared world, built on first use; `None` when not root.
pub(super) fn world(name: &str) -> Option<MutexGuard<'static, Option<World>>> {
    if !is_root() {
        eprintln!("{name}: skipped: needs root");
        return None;
    }
    let mut guard = WORLD.lock().unwrap_or_else(|e| e.into_inner());
    if guard.is_none() {
        static AT_EXIT: Once = Once::new();
        // SAFETY: registering a plain extern "C" function.
        AT_EXIT.call_once(|| unsafe {
            libc::atexit(teardown);
        });
        // Built by a thread that lives as long as the process: the harness
        // ties the processes it spawns (lb run, lb decap) to the spawning
        // thread (PR_SET_PDEATHSIG), and a test's thread ends with the test.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("observe-world".into())
            .spawn(move || {
                let _ = tx.send(World::new().map_err(|e| format!("{e:#}")));
                loop {
                    std::thread::park();
                }
            })
            .unwrap();
        let built = rx.recv().unwrap_or_else(|_| Err("the builder panicked".into()));
        *guard = Some(built.unwrap_or_else(|e| panic!("{name}: building the world: {e}")));
    }
    Some(guard)
}

impl World {
    fn new() -> Result<World> {
        let t0 = Instant::now();
        // `lb run` (started below, inheriting the environment) tells this
        // socket that it is ready, as it would tell systemd.
        let notify_path = std::env::temp_dir().join(format!("lb-observe-notify-{}", std::process::id()));
        let _ = std::fs::remove_file(&notify_path);
        let notify = UnixDatagram::bind(&notify_path)?;
        notify.set_nonblocking(true)?;
        // SAFETY: the other test threads are waiting on the WORLD lock, not
        // reading the environment.
        unsafe { std::env::set_var("NOTIFY_SOCKET", &notify_path) };

        let topo = Topology::new(TopologyOptions::default())?;
        let mut health = Vec::new();
        for b in &topo.backends()[..2] {
            health.push(HealthServer::start(
                &b.ns,
                &b.name,
                SocketAddr::new(b.v4.into(), HC_PORT),
                HealthMode::Healthy,
            )?);
        }
        let check = format!(
            "{{ kind = \"tcp\", port = {HC_PORT}, interval_ms = 200, downinter_ms = 400, timeout_ms = 200, rise = 2, fall = 2 }}"
        );
        let tcp = VipSpec::tcp(VIP_V4, 80, Forwarding::Ipip).ring_size(RING).health_check(&check);
        let udp = VipSpec::udp(VIP_V4, 5353, Forwarding::Ipip).ring_size(RING);
        let v6 = VipSpec::tcp(VIP_V6, 80, Forwarding::L2dsr)
            .ring_size(RING)
            .key(&format!("agent_check = {{ port = {AGENT_PORT}, interval_ms = 200, timeout_ms = 100 }}"));
        let mut w = World { _health: health, topo, notify, notify_path, tcp, udp, v6 };
        // Every BGP path in the test's own directory (never the /run defaults);
        // no grace at the stop, since no router listens either.
        let dir = w.topo.dir().display().to_string();
        let bgp = format!(
            "[bgp]\nbird_socket = \"{dir}/bird.ctl\"\nconfig_file = \"{dir}/lb-bird-vips.conf\"\n\
             drain_file = \"{dir}/lb-bird-vips.drained\"\nwithdraw_grace_ms = 0\n"
        );
        let vips = [w.tcp.clone(), w.udp.clone(), w.v6.clone()];
        let text = format!("{}\n{HOT_SPOT}{bgp}", w.topo.render_config(&vips));
        let config = w.topo.dir().join("lb-observe.toml");
        std::fs::write(&config, text)?;
        w.topo.start_lb(&config)?;
        // backend3 answers no health check: wait until the agent sees it down.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = w.status()?;
            if backend(&s, &w.tcp.id(), "198.18.0.13")["health"] == "down" {
                break;
            }
            if Instant::now() > deadline {
                bail!("backend3 never went down: {s:#}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("observe: world ready in {:.1?}", t0.elapsed());
        Ok(w)
    }

    pub(super) fn cli(&self, args: &[&str]) -> CmdOutput {
        self.topo.lb_cli_status(args).unwrap_or_else(|e| panic!("lb {}: {e:#}", args.join(" ")))
    }

    pub(super) fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(out.success(), "`lb {}` failed: {out}\n{}", args.join(" "), self.topo.lb_log());
        out.stdout
    }

    pub(super) fn status(&self) -> Result<Value> {
        let text = self.topo.lb_cli(&["status", "--json"])?;
        serde_json::from_str(&text).context("status JSON")
    }

    /// `backendN` -> its address for `vip`'s family.
    pub(super) fn address_of(&self, name: &str, v6: bool) -> IpAddr {
        let b = self.topo.backends().iter().find(|b| b.name == name).unwrap_or_else(|| panic!("no backend {name}"));
        if v6 { b.v6.into() } else { b.v4.into() }
    }
}

pub(super) fn vip<'a>(status: &'a Value, id: &str) -> &'a Value {
    status["vips"].as_array().and_then(|v| v.iter().find(|v| v["vip"] == id)).unwrap_or_else(|| panic!("no VIP {id}"))
}

pub(super) fn backend<'a>(status: &'a Value, vip_id: &str, address: &str) -> &'a Value {
    vip(status, vip_id)["backends"]
        .as_array()
        .and_then(|b| b.iter().find(|b| b["address"] == address))
        .unwrap_or_else(|| panic!("no backend {address} in {vip_id}"))
}
