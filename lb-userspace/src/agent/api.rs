//! The control API: JSON over HTTP/1.1 on a Unix socket that only root can
//! open. `lb status`, `lb vip add`, ... are its clients.

use std::{
    fmt,
    future::Future,
    io,
    net::IpAddr,
    os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    str::FromStr,
};

use anyhow::{Context, bail};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de::DeserializeOwned};
use serde_json::{Value, json};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{
    http::{self, Response},
    owner::{ApiError, Change, OwnerHandle, Status},
};
use crate::config::{AdminState, BackendSpec, VipId, VipSpec};

/// What the API and metrics listeners need from the owner; a trait so the
/// routing is tested without a data path.
pub trait Control: Clone + Send + Sync + 'static {
    fn status(&self) -> impl Future<Output = Result<Status, ApiError>> + Send;
    fn metrics(&self) -> impl Future<Output = Result<String, ApiError>> + Send;
    fn reload(&self) -> impl Future<Output = Result<String, ApiError>> + Send;
    fn change(&self, change: Change) -> impl Future<Output = Result<String, ApiError>> + Send;
    /// How the live maps route a 5-tuple (`None`: not a VIP).
    fn trace(
        &self,
        _flow: lb_common::FlowKey,
    ) -> impl Future<Output = Result<Option<crate::dataplane::Trace>, ApiError>> + Send {
        async { Err(ApiError::new(501, "tracing is not served here")) }
    }
    /// Starts or stops a packet capture.
    fn capture(&self, _op: super::capture::CaptureOp) -> impl Future<Output = Result<Value, ApiError>> + Send {
        async { Err(ApiError::new(501, "capture is not served here")) }
    }
    /// `lb drain-node` (true) / `lb undrain-node` (false).
    fn node(&self, _drained: bool) -> impl Future<Output = Result<String, ApiError>> + Send {
        async { Err(ApiError::new(501, "node drain is not served here")) }
    }
}

impl Control for OwnerHandle {
    fn status(&self) -> impl Future<Output = Result<Status, ApiError>> + Send {
        OwnerHandle::status(self)
    }
    fn metrics(&self) -> impl Future<Output = Result<String, ApiError>> + Send {
        OwnerHandle::metrics(self)
    }
    fn reload(&self) -> impl Future<Output = Result<String, ApiError>> + Send {
        OwnerHandle::reload(self)
    }
    fn change(&self, change: Change) -> impl Future<Output = Result<String, ApiError>> + Send {
        OwnerHandle::change(self, change)
    }
    fn trace(
        &self,
        flow: lb_common::FlowKey,
    ) -> impl Future<Output = Result<Option<crate::dataplane::Trace>, ApiError>> + Send {
        OwnerHandle::trace(self, flow)
    }
    fn capture(&self, op: super::capture::CaptureOp) -> impl Future<Output = Result<Value, ApiError>> + Send {
        OwnerHandle::capture(self, op)
    }
    fn node(&self, drained: bool) -> impl Future<Output = Result<String, ApiError>> + Send {
        OwnerHandle::node(self, drained)
    }
}

/// Body of `POST /v1/vips/del`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VipRef {
    #[serde(with = "as_str")]
    pub vip: VipId,
}

/// Body of `POST /v1/backends/add`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackendAdd {
    #[serde(with = "as_str")]
    pub vip: VipId,
    pub backend: BackendSpec,
}

/// Body of `POST /v1/backends/del`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackendRef {
    #[serde(with = "as_str")]
    pub vip: VipId,
    pub address: IpAddr,
}

/// Body of `POST /v1/backends/state`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackendState {
    #[serde(with = "as_str")]
    pub vip: VipId,
    pub address: IpAddr,
    pub state: AdminState,
}

/// VIPs travel as the strings the CLI takes (`198.18.100.1:80/tcp`).
mod as_str {
    use super::*;

    pub fn serialize<S: Serializer, T: fmt::Display>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>, T: FromStr<Err = String>>(d: D) -> Result<T, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// Every route: (method, path).
pub const ROUTES: [(&str, &str); 12] = [
    ("GET", "/v1/status"),
    ("POST", "/v1/reload"),
    ("POST", "/v1/vips/add"),
    ("POST", "/v1/vips/del"),
    ("POST", "/v1/backends/add"),
    ("POST", "/v1/backends/del"),
    ("POST", "/v1/backends/state"),
    ("POST", "/v1/trace"),
    ("POST", "/v1/capture/start"),
    ("POST", "/v1/capture/stop"),
    ("POST", "/v1/node/drain"),
    ("POST", "/v1/node/undrain"),
];

fn body<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::new(400, format!("request body ({what}): {e}")))
}

fn message(m: String) -> Value {
    json!({ "message": m })
}

/// Answers one request: (status, JSON). Bodies are parsed completely before
/// the owner is asked anything, so a bad one changes nothing.
pub async fn route<C: Control>(control: &C, method: &str, path: &str, bytes: &[u8]) -> (u16, Value) {
    let Some(&(want, _)) = ROUTES.iter().find(|(_, p)| *p == path) else {
        let known: Vec<_> = ROUTES.iter().map(|(m, p)| format!("{m} {p}")).collect();
        return (404, json!({ "error": format!("no such route {path}; the API has {}", known.join(", ")) }));
    };
    if method != want {
        return (405, json!({ "error": format!("{path} takes {want}, not {method}") }));
    }
    let result = async {
        match path {
            "/v1/status" => {
                let status = control.status().await?;
                let mut v = serde_json::to_value(status)
                    .map_err(|e| ApiError::new(500, format!("encoding the status: {e}")))?;
                // The agent's clock when the counters were read: rates computed
                // by clients (status page, lb top) need no clock of their own.
                v["sampled_unix_ms"] = json!(crate::unix_ms());
                Ok(v)
            }
            "/v1/reload" => control.reload().await.map(message),
            "/v1/vips/add" => {
                let spec: VipSpec = body(bytes, "a VIP: the keys of a [[vip]] table")?;
                control.change(Change::AddVip(spec)).await.map(message)
            }
            "/v1/vips/del" => {
                let r: VipRef = body(bytes, r#"{"vip": "ADDR:PORT/PROTO"}"#)?;
                control.change(Change::DelVip(r.vip)).await.map(message)
            }
            "/v1/backends/add" => {
                let r: BackendAdd = body(bytes, r#"{"vip": ..., "backend": {"address": ..., ...}}"#)?;
                control.change(Change::AddBackend(r.vip, r.backend)).await.map(message)
            }
            "/v1/backends/del" => {
                let r: BackendRef = body(bytes, r#"{"vip": ..., "address": ...}"#)?;
                control.change(Change::DelBackend(r.vip, r.address)).await.map(message)
            }
            "/v1/backends/state" => {
                let r: BackendState = body(bytes, r#"{"vip": ..., "address": ..., "state": "up|drain|maint"}"#)?;
                control.change(Change::SetState(r.vip, r.address, r.state)).await.map(message)
            }
            "/v1/trace" => super::trace::route(control, bytes).await,
            "/v1/capture/start" => super::capture::route_start(control, bytes).await,
            "/v1/capture/stop" => super::capture::route_stop(control, bytes).await,
            "/v1/node/drain" => control.node(true).await.map(message),
            "/v1/node/undrain" => control.node(false).await.map(message),
            _ => unreachable!("every route is matched"),
        }
    };
    match result.await {
        Ok(v) => (200, v),
        Err(e) => (e.status, json!({ "error": e.message })),
    }
}

pub async fn handle<C: Control>(control: &C, req: http::Request) -> Response {
    let (status, value) = route(control, &req.method, &req.path, &req.body).await;
    Response::json(status, &value)
}

/// Serves the API on `socket_path` until `cancel` fires, then removes it.
pub async fn serve(socket_path: &Path, handle: OwnerHandle, cancel: CancellationToken) -> anyhow::Result<()> {
    serve_with(socket_path, handle, cancel).await
}

pub async fn serve_with<C: Control>(socket_path: &Path, control: C, cancel: CancellationToken) -> anyhow::Result<()> {
    serve_socket(ControlSocket::bind(socket_path).await?, control, cancel).await;
    Ok(())
}

/// Serves on an already bound socket until `cancel` fires, then removes it.
pub async fn serve_socket<C: Control>(mut socket: ControlSocket, control: C, cancel: CancellationToken) {
    let listener = socket.listener.take().expect("a bound socket has its listener");
    info!(socket = %socket.path.display(), "control API listening");
    let handler = move |req| {
        let control = control.clone();
        async move { handle(&control, req).await }
    };
    http::serve(listener, handler, cancel).await;
}

/// The bound control socket (mode 0600). Binding it before touching the data
/// path makes a second agent fail before it changes anything; dropping it
/// removes the file.
pub struct ControlSocket {
    listener: Option<UnixListener>,
    path: PathBuf,
    ino: u64,
}

impl ControlSocket {
    pub async fn bind(path: &Path) -> anyhow::Result<ControlSocket> {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        match std::fs::symlink_metadata(path) {
            Ok(m) if !m.file_type().is_socket() => {
                bail!("{} exists and is not a socket; not replacing it", path.display())
            }
            Ok(_) => match UnixStream::connect(path).await {
                Ok(_) => bail!("another lb agent is running on {}", path.display()),
                // Nobody answers: a crashed agent's leftover.
                Err(_) => {
                    std::fs::remove_file(path).with_context(|| format!("removing the stale {}", path.display()))?
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("checking {}", path.display())),
        }
        // Bound under a temporary name, restricted, then renamed into place, so
        // no one can connect while the socket is still world-accessible.
        let name = path.file_name().context("the control socket path has no file name")?;
        let tmp = dir.join(format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let listener = UnixListener::bind(&tmp).with_context(|| format!("binding {}", tmp.display()))?;
        let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
            .and_then(|()| std::fs::rename(&tmp, path))
            .and_then(|()| std::fs::metadata(path));
        match placed {
            Ok(m) => Ok(ControlSocket { listener: Some(listener), path: path.to_path_buf(), ino: m.ino() }),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(e).with_context(|| format!("placing the control socket at {}", path.display()))
            }
        }
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        // Only our own file: never one a later agent bound.
        if std::fs::metadata(&self.path).is_ok_and(|m| m.ino() == self.ino)
            && let Err(e) = std::fs::remove_file(&self.path)
        {
            warn!(socket = %self.path.display(), error = %e, "removing the control socket failed");
        }
    }
}

#[cfg(test)]
mod tests;
