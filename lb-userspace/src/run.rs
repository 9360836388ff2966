//! `lb run` and `lb decap`: attach, then wait for signals.

use std::{io::Write, path::Path};

use anyhow::{Context, Result};
use lb::{agent, config::XdpModeSetting};
use tokio::signal::unix::{SignalKind, signal};
use tracing::info;

pub async fn run(
    config: &Path,
    iface: Option<String>,
    xdp_mode: Option<XdpModeSetting>,
    detach_on_exit: bool,
) -> Result<()> {
    let opts = agent::RunOptions { config: config.to_path_buf(), iface, xdp_mode, detach_on_exit };
    agent::run(opts, announce_ready).await
}

pub async fn decap(iface: &str, mode: XdpModeSetting) -> Result<()> {
    let _attached =
        lb::decap::attach_decap(iface, mode).with_context(|| format!("attaching the decapsulator to {iface}"))?;
    info!(iface, ?mode, "decapsulator attached");
    announce_ready(&format!("decapsulating on {iface}"));
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    info!("detaching");
    Ok(())
}

/// The line scripts and tests wait for.
fn announce_ready(what: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "ready: {what}");
    let _ = out.flush();
    crate::notify::notify(&format!("READY=1\nSTATUS={what}"));
}
