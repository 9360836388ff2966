//! `lb run` and `lb decap`: attach, then wait for signals.

use std::{io::Write, path::Path};

use anyhow::{Context, Result};
use lb::{
    config::{Config, XdpModeSetting},
    dataplane::Dataplane,
};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info};

pub async fn run(config_path: &Path, iface: Option<String>, mode: Option<XdpModeSetting>) -> Result<()> {
    let config = Config::load(config_path)?;
    let iface = iface
        .or_else(|| config.global.interface.clone())
        .context("no interface: set global.interface or pass --iface")?;
    let mode = mode.unwrap_or(config.global.xdp_mode);
    let mut dp = Dataplane::load().context("loading the balancer (is this root, with bpffs and BTF?)")?;
    let report = dp.apply(&config).context("writing the configuration to the maps")?;
    info!(?report, "configuration applied");
    dp.attach(&iface, mode).with_context(|| format!("attaching to {iface} in {mode:?} mode"))?;
    info!(iface, ?mode, vips = config.vips.len(), "attached");
    announce_ready(&format!("attached to {iface} ({} VIPs, {} backends)", config.vips.len(), config.backend_entries()));

    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = hup.recv() => match Config::load(config_path) {
                Ok(new) => match dp.apply(&new) {
                    Ok(report) => info!(?report, "configuration reloaded"),
                    Err(e) => error!(error = %e, "reload failed while writing maps"),
                },
                Err(e) => error!(error = %e, "reload refused: the file is invalid; the running configuration is unchanged"),
            },
        }
    }
    info!("detaching");
    drop(dp);
    Ok(())
}

pub async fn decap(iface: &str, mode: XdpModeSetting) -> Result<()> {
    let _attached = lb::decap::attach_decap(iface, mode).with_context(|| format!("attaching the decapsulator to {iface}"))?;
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
}
