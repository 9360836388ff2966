//! The commands that talk to a running agent: one request each over the
//! control socket, and human views of the answers.

use std::{collections::HashMap, fmt::Write, io, path::PathBuf, time::Duration};

use lb::{
    agent::{
        api::{BackendAdd, BackendRef, BackendState, VipRef},
        http,
    },
    config::{AdminState, BackendSpec, VipId},
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::net::UnixStream;

use crate::cli::{BackendCommand, ForwardingArg, HealthArg, VipAdd, VipCommand};

/// Longest wait for an answer: a reload rebuilds every table.
const TIMEOUT: Duration = Duration::from_secs(90);
/// Largest answer read (a status of every VIP and backend).
const MAX_ANSWER: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the lb agent at {path} ({reason}). {hint}")]
    Unreachable { path: PathBuf, reason: String, hint: &'static str },
    #[error("{message}")]
    Answered { status: u16, message: String },
    #[error("talking to the agent at {path}: {reason}")]
    Protocol { path: PathBuf, reason: String },
}

impl ClientError {
    /// sysexits-style: 69 unreachable, 64 refused request, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Unreachable { .. } => 69,
            ClientError::Answered { status: 400..=499, .. } => 64,
            _ => 1,
        }
    }
}

/// `io::Error`'s text without the " (os error N)" suffix.
fn plain(e: &io::Error) -> String {
    let s = e.to_string();
    s.split(" (os error").next().unwrap_or(&s).to_string()
}

pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(socket: PathBuf) -> Self {
        Client { socket }
    }

    pub(crate) fn call(&self, method: &str, path: &str, body: Option<&impl Serialize>) -> Result<Value, ClientError> {
        let body = body.map(|b| serde_json::to_vec(b).expect("request bodies serialize"));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
        let exchange = async {
            let mut stream = UnixStream::connect(&self.socket).await.map_err(|e| self.unreachable(&e))?;
            http::send(&mut stream, method, path, body.as_deref(), MAX_ANSWER).await.map_err(|e| self.protocol(e))
        };
        // The timer needs the runtime: create it inside.
        let answer = rt.block_on(async { tokio::time::timeout(TIMEOUT, exchange).await });
        let (status, bytes) = answer.map_err(|_| ClientError::Unreachable {
            path: self.socket.clone(),
            reason: format!("no answer within {}s", TIMEOUT.as_secs()),
            hint: "The agent may be stuck; see its log.",
        })??;
        let value: Value =
            serde_json::from_slice(&bytes).map_err(|e| self.protocol(format!("the answer is not JSON: {e}")))?;
        if status == 200 {
            return Ok(value);
        }
        let message = value["error"].as_str().map_or_else(|| value.to_string(), str::to_string);
        Err(ClientError::Answered { status, message })
    }

    fn unreachable(&self, e: &io::Error) -> ClientError {
        let hint = match e.kind() {
            io::ErrorKind::PermissionDenied => "The control socket is root-only: run lb as root.",
            _ => "Is `lb run` running? Use --socket to point elsewhere.",
        };
        ClientError::Unreachable { path: self.socket.clone(), reason: plain(e), hint }
    }

    fn protocol(&self, e: impl std::fmt::Display) -> ClientError {
        ClientError::Protocol { path: self.socket.clone(), reason: e.to_string() }
    }

    fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.call("GET", path, None::<&()>)
    }

    /// POSTs `body` and prints the agent's message.
    fn post(&self, path: &str, body: &impl Serialize) -> Result<(), ClientError> {
        let answer = self.call("POST", path, Some(body))?;
        println!("{}", answer["message"].as_str().unwrap_or("done"));
        Ok(())
    }

    fn status(&self) -> Result<(Value, StatusView), ClientError> {
        let raw = self.get("/v1/status")?;
        let view = StatusView::deserialize(&raw).map_err(|e| self.protocol(format!("unexpected status: {e}")))?;
        Ok((raw, view))
    }

    pub fn show_status(&self, json: bool) -> Result<(), ClientError> {
        let (raw, status) = self.status()?;
        if json {
            println!("{}", serde_json::to_string_pretty(&raw).expect("JSON"));
        } else {
            print!("{}", status_text(&status, lb::unix_ms()));
        }
        Ok(())
    }

    pub fn show_stats(&self, json: bool) -> Result<(), ClientError> {
        let (_, status) = self.status()?;
        if json {
            println!("{}", serde_json::to_string_pretty(&stats_json(&status)).expect("JSON"));
        } else {
            print!("{}", stats_text(&status));
        }
        Ok(())
    }

    pub fn reload(&self) -> Result<(), ClientError> {
        self.post("/v1/reload", &json!({}))
    }

    /// `lb drain-node` (true) / `lb undrain-node` (false).
    pub fn node(&self, drained: bool) -> Result<(), ClientError> {
        self.post(if drained { "/v1/node/drain" } else { "/v1/node/undrain" }, &json!({}))
    }

    pub fn vip(&self, command: VipCommand) -> Result<(), ClientError> {
        match command {
            VipCommand::List => {
                let (_, status) = self.status()?;
                print!("{}", vip_list(&status));
                Ok(())
            }
            VipCommand::Add(args) => self.post("/v1/vips/add", &vip_spec(args)),
            VipCommand::Del { vip } => self.post("/v1/vips/del", &VipRef { vip }),
        }
    }

    pub fn backend(&self, command: BackendCommand) -> Result<(), ClientError> {
        let state = |vip, address, state| self.post("/v1/backends/state", &BackendState { vip, address, state });
        match command {
            BackendCommand::List { vip } => {
                let (_, status) = self.status()?;
                let name = vip.to_string();
                let v = status.vips.iter().find(|v| v.vip == name);
                let v = v.ok_or_else(|| ClientError::Answered { status: 404, message: format!("no VIP {vip}") })?;
                print!("{}", backend_table(v));
                Ok(())
            }
            BackendCommand::Add { vip, address, weight, mac } => {
                let backend = BackendSpec { address, weight, mac, state: None };
                self.post("/v1/backends/add", &BackendAdd { vip, backend })
            }
            BackendCommand::Del { vip, address } => self.post("/v1/backends/del", &BackendRef { vip, address }),
            BackendCommand::Drain { vip, address } => state(vip, address, AdminState::Drain),
            BackendCommand::Undrain { vip, address } => state(vip, address, AdminState::Up),
            BackendCommand::Maint { vip, address } => state(vip, address, AdminState::Maint),
        }
    }
}

/// The body of `POST /v1/vips/add`; unset options are left out so the agent
/// applies the file's defaults.
fn vip_spec(a: VipAdd) -> Value {
    let VipId { address, port, protocol } = a.vip;
    let mut spec = json!({ "address": address, "port": port, "protocol": protocol, "backend": a.backends });
    if let Some(f) = a.forwarding {
        spec["forwarding"] = json!(match f {
            ForwardingArg::Ipip => "ipip",
            ForwardingArg::L2dsr => "l2dsr",
        });
    }
    if let Some(n) = a.ring_size {
        spec["ring_size"] = json!(n);
    }
    if let Some(algo) = a.algorithm {
        spec["algorithm"] = json!(algo);
    }
    if a.per_instance {
        spec["per_instance"] = json!(true);
    }
    if let Some(kind) = a.health {
        let mut hc = json!({ "kind": match kind { HealthArg::Tcp => "tcp", HealthArg::Http => "http" } });
        let options = [
            ("port", a.health_port.map(Value::from)),
            ("path", a.health_path.map(Value::from)),
            ("interval_ms", a.interval_ms.map(Value::from)),
            ("timeout_ms", a.timeout_ms.map(Value::from)),
            ("rise", a.rise.map(Value::from)),
            ("fall", a.fall.map(Value::from)),
        ];
        for (key, value) in options {
            if let Some(v) = value {
                hc[key] = v;
            }
        }
        spec["health_check"] = hc;
    }
    spec
}

// What the CLI reads of the agent's status; extra fields are ignored so a
// newer agent still works.
#[derive(Deserialize)]
struct StatusView {
    interface: String,
    config_file: String,
    uptime_s: u64,
    vips: Vec<VipView>,
    counters: HashMap<String, u64>,
    transitions: Vec<TransitionView>,
    table_rebuilds: u64,
    last_rebuild_ms: f64,
    #[serde(default)]
    bgp: Option<bgp::BgpView>,
    #[serde(default)]
    hot_spot: Option<hotspot::HotSpotView>,
    #[serde(default)]
    active_recount: Option<RecountView>,
}

#[derive(Deserialize)]
struct RecountView {
    recounts: u64,
    entries: u64,
    #[serde(default)]
    capacity: u32,
}

#[derive(Deserialize)]
struct VipView {
    vip: String,
    forwarding: String,
    #[serde(default)]
    algorithm: Option<String>,
    #[serde(default)]
    per_instance: Vec<String>,
    ring_size: u32,
    health_check: Option<String>,
    failing_open: bool,
    fingerprint: String,
    packets: u64,
    bytes: u64,
    backends: Vec<BackendView>,
}

#[derive(Deserialize)]
struct BackendView {
    address: String,
    weight: u32,
    effective_weight: u32,
    state: String,
    health: String,
    placement: String,
    packets: u64,
    bytes: u64,
    #[serde(default)]
    active_connections: u64,
    probe: Option<crate::probe_text::Probe>,
    #[serde(default)]
    agent: Option<crate::probe_text::Agent>,
    hot_spot: Option<hotspot::BackendHotSpotView>,
}

#[derive(Deserialize)]
struct TransitionView {
    at_unix_ms: u64,
    vip: String,
    backend: String,
    health: String,
    reason: String,
}

/// Transitions shown by `lb status`.
const TRANSITIONS_SHOWN: usize = 5;

/// `3d4h`, `2h5m`, `3m12s`, `12s`.
fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match () {
        _ if d > 0 => format!("{d}d{h}h"),
        _ if h > 0 => format!("{h}h{m}m"),
        _ if m > 0 => format!("{m}m{s}s"),
        _ => format!("{s}s"),
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let (mut v, mut unit) = (n as f64 / 1024.0, 0);
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// Left-aligned columns, two spaces apart; the first row is the header.
fn table(out: &mut String, indent: &str, rows: &[Vec<String>]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let mut line = indent.to_string();
        for (c, cell) in row.iter().enumerate() {
            let _ = write!(line, "{cell:<w$}  ", w = widths[c]);
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
}

fn strs<const N: usize>(cells: [&str; N]) -> Vec<String> {
    cells.iter().map(|s| s.to_string()).collect()
}

fn backend_rows(v: &VipView) -> Vec<Vec<String>> {
    let mut rows =
        vec![strs(["BACKEND", "STATE", "HEALTH", "PLACEMENT", "WEIGHT", "ACTIVE", "PACKETS", "BYTES", "LAST PROBE"])];
    for b in &v.backends {
        rows.push(vec![
            b.address.clone(),
            b.state.clone(),
            if v.health_check.is_some() { b.health.clone() } else { "-".into() },
            b.placement.clone(),
            format!("{}/{}", b.weight, b.effective_weight),
            b.active_connections.to_string(),
            b.packets.to_string(),
            bytes(b.bytes),
            crate::probe_text::last_probe(b.probe.as_ref(), b.agent.as_ref()),
        ]);
    }
    rows
}

fn vip_header(v: &VipView) -> String {
    let mut line = format!(
        "{}  {}  ring {}  fingerprint {}  {} packets",
        v.vip,
        v.forwarding,
        v.ring_size,
        if v.fingerprint.is_empty() { "-" } else { &v.fingerprint },
        v.packets
    );
    if let Some(check) = &v.health_check {
        let _ = write!(line, "  check {check}");
    }
    if let Some(algo) = v.algorithm.as_ref().filter(|a| *a != "maglev") {
        let _ = write!(line, "  {algo}");
    }
    if v.failing_open {
        line.push_str("  FAILING OPEN: every backend is down, all are used");
    }
    for reason in &v.per_instance {
        let _ = write!(line, "\n  per instance: {reason}");
    }
    line
}

fn backend_table(v: &VipView) -> String {
    let mut out = format!("{}\n", vip_header(v));
    if v.backends.is_empty() {
        out.push_str("  no backends\n");
    } else {
        table(&mut out, "  ", &backend_rows(v));
    }
    for b in &v.backends {
        if let Some(h) = &b.hot_spot {
            out.push_str(&hotspot::backend_lines(&b.address, h));
        }
    }
    out
}

fn status_text(s: &StatusView, now_ms: u64) -> String {
    let mut out = format!(
        "lb on {} ({}), up {}, {} table rebuilds (last {:.1} ms)\n",
        s.interface,
        s.config_file,
        duration(s.uptime_s),
        s.table_rebuilds,
        s.last_rebuild_ms
    );
    if let Some(r) = s.active_recount.as_ref().filter(|r| r.capacity > 0) {
        let held = if r.recounts > 0 { format!("{} of ", r.entries) } else { String::new() };
        out.push_str(&format!("connection table: {held}{} entries", r.capacity));
        // Counted by the program since it was loaded (`conntrack_evicted`).
        match s.counters.get("conntrack_evicted") {
            Some(&n) if n > 0 => out.push_str(&format!(
                "; {n} entries of flows not closed taken by new flows (see global.conntrack_capacity)\n"
            )),
            _ => out.push('\n'),
        }
    }
    if let Some(b) = &s.bgp {
        out.push_str(&bgp::text(b, now_ms));
    }
    if s.vips.is_empty() {
        out.push_str("\nno VIPs\n");
    }
    for v in &s.vips {
        out.push('\n');
        out.push_str(&backend_table(v));
    }
    let mut drops: Vec<_> = s.counters.iter().filter(|(k, n)| k.starts_with("drop_") && **n > 0).collect();
    drops.sort();
    if drops.is_empty() {
        out.push_str("\nno drops\n");
    } else {
        out.push_str("\ndrops:\n");
        let rows: Vec<_> = drops.iter().map(|(k, n)| vec![k.to_string(), n.to_string()]).collect();
        table(&mut out, "  ", &rows);
    }
    if !s.transitions.is_empty() {
        out.push_str("\nlatest health transitions:\n");
        let skip = s.transitions.len().saturating_sub(TRANSITIONS_SHOWN);
        let rows: Vec<_> = s.transitions[skip..]
            .iter()
            .map(|t| {
                let ago = format!("{} ago", duration(now_ms.saturating_sub(t.at_unix_ms) / 1000));
                vec![ago, t.vip.clone(), t.backend.clone(), t.health.clone(), t.reason.clone()]
            })
            .collect();
        table(&mut out, "  ", &rows);
    }
    if let Some(h) = &s.hot_spot {
        out.push_str(&hotspot::adjustments(h, now_ms, duration));
    }
    out
}

fn vip_list(s: &StatusView) -> String {
    if s.vips.is_empty() {
        return "no VIPs\n".into();
    }
    let mut rows = vec![strs(["VIP", "FORWARDING", "RING", "CHECK", "IN TABLE", "PACKETS", "BYTES", "NOTE"])];
    for v in &s.vips {
        let in_table = v.backends.iter().filter(|b| b.placement == "in-table").count();
        rows.push(vec![
            v.vip.clone(),
            v.forwarding.clone(),
            v.ring_size.to_string(),
            v.health_check.clone().unwrap_or_else(|| "-".into()),
            format!("{in_table}/{}", v.backends.len()),
            v.packets.to_string(),
            bytes(v.bytes),
            if v.failing_open { "failing open".into() } else { String::new() },
        ]);
    }
    let mut out = String::new();
    table(&mut out, "", &rows);
    out
}

/// Counters in the data path's order, unknown ones after.
fn ordered_counters(s: &StatusView) -> Vec<(&str, u64)> {
    let rank = |k: &str| lb_common::stats::LABELS.iter().position(|l| *l == k).unwrap_or(usize::MAX);
    let mut list: Vec<_> = s.counters.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    list.sort_by_key(|(k, _)| (rank(k), *k));
    list
}

fn stats_text(s: &StatusView) -> String {
    let mut out = String::new();
    let mut rows = vec![strs(["COUNTER", "PACKETS"])];
    rows.extend(ordered_counters(s).into_iter().map(|(k, v)| vec![k.to_string(), v.to_string()]));
    table(&mut out, "", &rows);
    out.push('\n');
    let mut rows = vec![strs(["VIP / BACKEND", "PACKETS", "BYTES"])];
    for v in &s.vips {
        rows.push(vec![v.vip.clone(), v.packets.to_string(), v.bytes.to_string()]);
        for b in &v.backends {
            rows.push(vec![format!("  {}", b.address), b.packets.to_string(), b.bytes.to_string()]);
        }
    }
    table(&mut out, "", &rows);
    out
}

fn stats_json(s: &StatusView) -> Value {
    let counters: serde_json::Map<_, _> =
        ordered_counters(s).into_iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    let vips: Vec<_> = s
        .vips
        .iter()
        .map(|v| {
            let backends: Vec<_> = v
                .backends
                .iter()
                .map(|b| json!({ "address": b.address, "packets": b.packets, "bytes": b.bytes }))
                .collect();
            json!({ "vip": v.vip, "packets": v.packets, "bytes": v.bytes, "backends": backends })
        })
        .collect();
    json!({ "counters": counters, "vips": vips })
}

/// Where to print the error, and the exit code, of a failed client command.
pub fn report(e: &ClientError) -> u8 {
    match e {
        ClientError::Unreachable { .. } => eprintln!("lb: {e}"),
        _ => eprintln!("lb: error: {e}"),
    }
    e.exit_code()
}

mod bgp;
mod hotspot;
#[cfg(test)]
mod tests;
