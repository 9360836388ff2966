//! Prometheus metrics (text exposition format 0.0.4) and the status JSON,
//! served over plain HTTP on `global.metrics_listen`.

use std::{fmt::Write, net::SocketAddr};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::{
    api::{self, Control},
    health::Health,
    http::{self, Response},
    owner::{BackendStatus, OwnerHandle, Status, VipStatus},
};
use crate::config::AdminState;

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

type Labels = Vec<(&'static str, String)>;

/// Prometheus label value escaping: backslash, double quote, newline.
fn escape(v: &str) -> String {
    v.replace('\\', r"\\").replace('"', r#"\""#).replace('\n', r"\n")
}

fn number(v: f64) -> String {
    match v {
        v if v.is_nan() => "NaN".into(),
        v if v == f64::INFINITY => "+Inf".into(),
        v if v == f64::NEG_INFINITY => "-Inf".into(),
        v => v.to_string(),
    }
}

/// Writes one metric family: its HELP and TYPE lines, then its samples
/// together, as the format requires.
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: impl IntoIterator<Item = (Labels, f64)>) {
    let _ = writeln!(out, "# HELP {name} {}", help.replace('\\', r"\\").replace('\n', r"\n"));
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        out.push_str(name);
        if !labels.is_empty() {
            let labels: Vec<_> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
            let _ = write!(out, "{{{}}}", labels.join(","));
        }
        let _ = writeln!(out, " {}", number(value));
    }
}

fn vip_label(v: &VipStatus) -> Labels {
    vec![("vip", v.vip.clone())]
}

fn backend_labels(v: &VipStatus, b: &BackendStatus) -> Labels {
    vec![("vip", v.vip.clone()), ("backend", b.address.to_string())]
}

fn per_backend(s: &Status, value: impl Fn(&BackendStatus) -> Option<f64>) -> Vec<(Labels, f64)> {
    let value = &value;
    s.vips.iter().flat_map(|v| v.backends.iter().filter_map(move |b| Some((backend_labels(v, b), value(b)?)))).collect()
}

fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

/// The metrics page for `status`; `rebuild_seconds_sum` is the time spent
/// in every table rebuild so far.
pub fn render(s: &Status, rebuild_seconds_sum: f64) -> String {
    let mut out = String::with_capacity(4096);
    let vips = |value: fn(&VipStatus) -> f64| s.vips.iter().map(move |v| (vip_label(v), value(v))).collect::<Vec<_>>();
    family(&mut out, "lb_vip_packets_total", "counter", "Packets forwarded for the VIP.", vips(|v| v.packets as f64));
    family(
        &mut out,
        "lb_vip_bytes_total",
        "counter",
        "Bytes forwarded for the VIP (before encapsulation).",
        vips(|v| v.bytes as f64),
    );
    family(
        &mut out,
        "lb_vip_failing_open",
        "gauge",
        "1 while every admin-up backend is down and the VIP uses them anyway.",
        vips(|v| flag(v.failing_open)),
    );
    if let Some(bgp) = &s.bgp {
        family(
            &mut out,
            "lb_vip_announced",
            "gauge",
            "1 while the local BIRD announces the VIP's address for this instance.",
            vips(|v| flag(v.announced)),
        );
        family(&mut out, "lb_bgp_drained", "gauge", "1 after lb drain-node.", [(vec![], flag(bgp.drained))]);
        family(
            &mut out,
            "lb_bgp_update_failures_total",
            "counter",
            "Updates of the BIRD include file that BIRD did not take (retried).",
            [(vec![], bgp.failures as f64)],
        );
    }
    family(
        &mut out,
        "lb_backend_packets_total",
        "counter",
        "Packets forwarded to the backend.",
        per_backend(s, |b| Some(b.packets as f64)),
    );
    family(
        &mut out,
        "lb_backend_bytes_total",
        "counter",
        "Bytes forwarded to the backend.",
        per_backend(s, |b| Some(b.bytes as f64)),
    );
    family(
        &mut out,
        "lb_backend_new_flows_total",
        "counter",
        "New flows the Maglev table gave the backend (re-picks included).",
        per_backend(s, |b| Some(b.new_flows as f64)),
    );
    family(
        &mut out,
        "lb_backend_active_connections",
        "gauge",
        "Flows in the connection table that are current, not closed by a client FIN/RST and seen within the idle timeout.",
        per_backend(s, |b| Some(b.active_connections as f64)),
    );
    family(
        &mut out,
        "lb_active_recount_seconds",
        "gauge",
        "How long the last recount of active connections (a connection-table walk) took.",
        [(vec![], s.active_recount.took_ms / 1e3)],
    );
    family(
        &mut out,
        "lb_conntrack_entries",
        "gauge",
        "Connection-table entries the last active-connection recount read.",
        [(vec![], s.active_recount.entries as f64)],
    );
    family(
        &mut out,
        "lb_conntrack_capacity",
        "gauge",
        "Entries the connection table holds at most (global.conntrack_capacity when it was created).",
        [(vec![], s.active_recount.capacity as f64)],
    );
    family(
        &mut out,
        "lb_backend_up",
        "gauge",
        "1 when the backend's health checks pass (always 1 without checks).",
        per_backend(s, |b| Some(flag(b.health == Health::Up))),
    );
    family(
        &mut out,
        "lb_backend_effective_weight",
        "gauge",
        "Weight the backend has in the Maglev table now (0 when out of it).",
        per_backend(s, |b| Some(b.effective_weight as f64)),
    );
    hotspot::render(&mut out, s);
    let states = [(AdminState::Up, "up"), (AdminState::Drain, "drain"), (AdminState::Maint, "maint")];
    let admin = s.vips.iter().flat_map(|v| {
        v.backends.iter().flat_map(move |b| {
            states.into_iter().map(move |(st, name)| {
                let mut labels = backend_labels(v, b);
                labels.push(("state", name.to_string()));
                (labels, flag(b.state == st))
            })
        })
    });
    family(
        &mut out,
        "lb_backend_admin_state",
        "gauge",
        "The operator's state of the backend: 1 for the current one.",
        admin,
    );
    family(
        &mut out,
        "lb_backend_checks_total",
        "counter",
        "Health checks run against the backend.",
        per_backend(s, |b| b.probe.as_ref().map(|p| p.checks as f64)),
    );
    family(
        &mut out,
        "lb_backend_check_failures_total",
        "counter",
        "Health checks of the backend that failed.",
        per_backend(s, |b| b.probe.as_ref().map(|p| p.failures as f64)),
    );
    family(
        &mut out,
        "lb_backend_transitions_total",
        "counter",
        "Up/down transitions of the backend's health.",
        per_backend(s, |b| b.probe.as_ref().map(|p| p.transitions as f64)),
    );
    family(
        &mut out,
        "lb_backend_check_interval_seconds",
        "gauge",
        "Wait before the backend's next health check (interval, fastinter or downinter).",
        per_backend(s, |b| b.probe.as_ref().map(|p| p.interval_ms as f64 / 1e3)),
    );
    family(
        &mut out,
        "lb_backend_agent_weight_percent",
        "gauge",
        "Weight percentage the backend's agent check reported (100 until it reports one).",
        per_backend(s, |b| b.agent.as_ref().map(|_| b.factors.agent_pct as f64)),
    );
    family(
        &mut out,
        "lb_backend_agent_replies_total",
        "counter",
        "Replies read from the backend's agent check.",
        per_backend(s, |b| b.agent.as_ref().map(|a| a.replies as f64)),
    );
    family(
        &mut out,
        "lb_backend_agent_failures_total",
        "counter",
        "Agent check exchanges that failed (no connection, timeout, no complete line); they change nothing.",
        per_backend(s, |b| b.agent.as_ref().map(|a| a.failures as f64)),
    );
    family(
        &mut out,
        "lb_backend_slowstart_percent",
        "gauge",
        "How far the backend's slow start has come (100: not ramping).",
        per_backend(s, |b| Some(b.factors.slowstart_pct as f64)),
    );

    let mut counters: Vec<_> = s.counters.iter().collect();
    counters.sort();
    let (conntrack, reasons): (Vec<_>, Vec<_>) = counters.into_iter().partition(|(k, _)| k.starts_with("conntrack_"));
    let samples = |list: Vec<(&String, &u64)>, label: &'static str, strip: &str| {
        list.into_iter()
            .map(|(k, &v)| (vec![(label, k.strip_prefix(strip).unwrap_or(k).to_string())], v as f64))
            .collect::<Vec<_>>()
    };
    family(
        &mut out,
        "lb_packets_total",
        "counter",
        "Packets seen by the XDP program, by what it did with them.",
        samples(reasons, "reason", ""),
    );
    family(
        &mut out,
        "lb_conntrack_lookups_total",
        "counter",
        "Connection-table lookups and inserts by result.",
        samples(conntrack, "result", "conntrack_"),
    );

    family(
        &mut out,
        "lb_table_rebuilds_total",
        "counter",
        "Times the data path's tables were rewritten.",
        [(vec![], s.table_rebuilds as f64)],
    );
    family(
        &mut out,
        "lb_table_rebuild_seconds_total",
        "counter",
        "Time spent rewriting the data path's tables.",
        [(vec![], rebuild_seconds_sum)],
    );
    family(
        &mut out,
        "lb_last_table_rebuild_seconds",
        "gauge",
        "Duration of the last table rewrite.",
        [(vec![], s.last_rebuild_ms / 1e3)],
    );
    let failover = s.transitions.iter().rev().find_map(|t| t.table_live_after_us);
    family(
        &mut out,
        "lb_last_health_change_to_table_seconds",
        "gauge",
        "From the probe that decided the last health change to the updated table being live.",
        failover.map(|us| (vec![], us as f64 / 1e6)),
    );
    family(&mut out, "lb_uptime_seconds", "gauge", "Seconds since this agent started.", [(vec![], s.uptime_s as f64)]);
    out
}

/// Serves `/metrics` and `/v1/status` on `listen` until `cancel` fires.
pub async fn serve(listen: SocketAddr, handle: OwnerHandle, cancel: CancellationToken) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).await.with_context(|| format!("listening for metrics on {listen}"))?;
    info!(%listen, "metrics listening");
    serve_listener(listener, handle, cancel).await;
    Ok(())
}

pub async fn serve_listener<C: Control>(listener: TcpListener, control: C, cancel: CancellationToken) {
    let handler = move |req: http::Request| {
        let control = control.clone();
        async move {
            match (req.method.as_str(), req.path.as_str()) {
                ("GET", "/metrics") => match control.metrics().await {
                    Ok(text) => Response::text(200, CONTENT_TYPE, text),
                    Err(e) => Response::error(e.status, e.message),
                },
                ("GET", "/v1/status") => api::handle(&control, req).await,
                ("GET", "/") => super::statuspage::page(),
                (m, p @ ("/metrics" | "/v1/status")) => Response::error(405, format!("{p} takes GET, not {m}")),
                (_, p) => Response::error(404, format!("no such page {p}; try /, /metrics or /v1/status")),
            }
        }
    };
    http::serve(listener, handler, cancel).await;
}

mod hotspot;
#[cfg(test)]
mod tests;
