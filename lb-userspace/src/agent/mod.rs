//! The agent behind `lb run`: loads (or adopts) the data path, then runs the
//! owner task, the health probes, the control API and the metrics listener
//! until a signal cancels them all.

pub mod agent_check;
pub mod api;
pub mod bgp;
pub mod capture;
pub mod health;
pub mod hotspot;
pub mod http;
pub mod metrics;
pub mod owner;
pub mod slowstart;
pub mod state;
pub mod statuspage;
pub mod trace;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::{
    config::{Config, XdpModeSetting},
    dataplane::Dataplane,
};
use health::HealthMonitor;
use owner::{Owner, OwnerHandle};

pub struct RunOptions {
    pub config: PathBuf,
    pub iface: Option<String>,
    pub xdp_mode: Option<XdpModeSetting>,
    /// Detach and unpin on exit instead of leaving forwarding running.
    pub detach_on_exit: bool,
}

/// Runs until SIGINT/SIGTERM. `ready` is called once traffic flows.
pub async fn run(opts: RunOptions, ready: impl FnOnce(&str)) -> Result<()> {
    let mut config = Config::load(&opts.config)?;
    for w in config.per_instance_warnings() {
        warn!("{w}");
    }
    let iface = opts
        .iface
        .clone()
        .or_else(|| config.global.interface.clone())
        .context("no interface: set global.interface or pass --iface")?;
    let mode = opts.xdp_mode.unwrap_or(config.global.xdp_mode);
    config.resolve_for(&iface)?;
    hotspot::warn_if_per_instance(&config);
    let global = config.global.clone();
    let bgp_config = config.bgp.clone();
    // Bound first: a second agent, or a busy port, fails before the data
    // path is touched.
    let socket = api::ControlSocket::bind(&global.control_socket).await?;
    let metrics_listener = tokio::net::TcpListener::bind(global.metrics_listen)
        .await
        .with_context(|| format!("listening for metrics on {}", global.metrics_listen))?;

    let (dp, adopted) = Dataplane::open_pinned(&global.pin_path, &iface, Some(global.conntrack_capacity))
        .context("loading the balancer (is this root, with bpffs mounted and BTF?)")?;
    if adopted {
        info!(iface, "adopting the data path a previous agent left running");
    }
    let cancel = CancellationToken::new();
    let (health_tx, health_rx) = mpsc::channel(256);
    let monitor = HealthMonitor::new(health_tx, cancel.child_token());
    // Tables are filled before a fresh attach, so no packet meets an empty one.
    let mut owner = Owner::new(dp, config, opts.config.clone(), iface.clone(), monitor);
    owner.sync().context("writing the configuration to the maps")?;
    owner.attach(&iface, mode).with_context(|| format!("attaching to {iface} in {mode:?} mode"))?;
    info!(iface, ?mode, "attached");
    // Announced only from here on: the program forwards now.
    let speaker = bgp_config.map(bgp::Speaker::start);
    if let Some(s) = &speaker {
        owner.set_bgp(s.clone());
    }

    let (tx, rx) = mpsc::channel(64);
    let handle = OwnerHandle::new(tx);
    let owner_task = tokio::spawn(owner.run(rx, health_rx, cancel.clone()));
    let api_task = tokio::spawn(api::serve_socket(socket, handle.clone(), cancel.clone()));
    let metrics_task = tokio::spawn(metrics::serve_listener(metrics_listener, handle.clone(), cancel.clone()));
    ready(&format!(
        "attached to {iface}; control socket {}, metrics http://{}/metrics",
        global.control_socket.display(),
        global.metrics_listen
    ));

    wait_for_signals(&handle, &cancel).await?;
    // The router moves the flows to the other instances before anything stops.
    if let Some(s) = &speaker {
        s.withdraw_for_stop().await;
    }
    cancel.cancel();
    for (name, task) in [("control API", api_task), ("metrics", metrics_task)] {
        if let Err(e) = task.await {
            warn!(error = %e, "{name} task failed");
        }
    }
    let dp = owner_task.await.context("the owner task failed")?;
    if opts.detach_on_exit {
        info!("detaching and removing pins");
        dp.detach_and_unpin().context("detaching")?;
    } else {
        info!("leaving the XDP program attached; the next `lb run` adopts it");
    }
    Ok(())
}

async fn wait_for_signals(handle: &OwnerHandle, cancel: &CancellationToken) -> Result<()> {
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = term.recv() => return Ok(()),
            _ = cancel.cancelled() => return Ok(()),
            _ = hup.recv() => match handle.reload().await {
                Ok(msg) => info!("{msg}"),
                Err(e) => error!(error = %e, "reload refused; the running configuration is unchanged"),
            },
        }
    }
}

/// Removes what an agent left pinned for an interface (after a crash, or to
/// stop forwarding without starting an agent).
pub fn detach_pinned(pin_path: &Path, iface: &str) -> Result<()> {
    let (dp, adopted) = Dataplane::open_pinned(pin_path, iface, None)?;
    if !adopted {
        anyhow::bail!("nothing pinned for {iface} under {}", pin_path.display());
    }
    dp.detach_and_unpin()?;
    Ok(())
}
