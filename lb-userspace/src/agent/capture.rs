//! `POST /v1/capture/start` and `/v1/capture/stop` (`lb capture`). The agent
//! only flips the program's capture switch and bounds it in time; `lb
//! capture` reads the records from the pinned ring buffer itself, so frames
//! never pass through the owner task or the one-answer-per-request HTTP layer.

use std::{net::IpAddr, path::PathBuf, time::Duration};

use lb_common::capture::{CAPTURE_ANY, CAPTURE_SNAPLEN, CaptureConfig};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::info;

use super::{api::Control, owner::ApiError};
use crate::{config::VipId, dataplane::Dataplane};

/// Longest capture the agent allows; the program stops copying by itself then.
pub const MAX_DURATION_S: u64 = 3600;
/// A capture's duration when the request sets none.
pub const DEFAULT_DURATION_S: u64 = 60;
/// Records per second over all CPUs, by default and at most: bounds the CPU
/// and memory a capture costs on a busy balancer.
pub const DEFAULT_MAX_PER_SEC: u32 = 10_000;
pub const MAX_MAX_PER_SEC: u32 = 100_000;

/// Body of `POST /v1/capture/start`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureStart {
    /// `ADDR:PORT/PROTO`.
    pub vip: String,
    /// Only the frames sent to this backend of the VIP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<IpAddr>,
    /// Copy 1 in N frames [default: 1, every one].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample: Option<u32>,
    /// Stop after this many records [default: no bound but time and rate].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snaplen: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_sec: Option<u32>,
}

/// One backend id the records may carry.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct CaptureBackend {
    pub id: u32,
    pub address: IpAddr,
}

/// Answer to a start.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct CaptureStarted {
    pub session: u32,
    /// The pinned `CAPTURE` ring buffer to read the records from.
    pub ring: PathBuf,
    pub vip_slot: u32,
    pub backend_id: Option<u32>,
    pub sample: u32,
    pub snaplen: u32,
    pub duration_s: u64,
    pub max_per_sec: u32,
    /// The VIP's backends, to name the ids of the records.
    pub backends: Vec<CaptureBackend>,
}

/// Body of `POST /v1/capture/stop`: the session to stop (any when absent).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureStop {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<u32>,
}

/// Answer to a stop: the program's bookkeeping of the last capture.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct CaptureStopped {
    /// A capture was running and is now off.
    pub stopped: bool,
    pub records: u64,
    pub lost: u64,
    pub limited: u64,
}

/// What the owner is asked to do.
#[derive(Debug)]
pub enum CaptureOp {
    Start(CaptureStart),
    Stop(CaptureStop),
}

/// CLOCK_MONOTONIC in ns: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn dp_error(e: crate::dataplane::DataplaneError) -> ApiError {
    ApiError::new(500, format!("capture: {e}"))
}

/// Runs in the owner task, which owns the maps.
pub fn apply(dp: &mut Dataplane, op: CaptureOp) -> Result<Value, ApiError> {
    let answer = match op {
        CaptureOp::Start(req) => serde_json::to_value(start(dp, req)?),
        CaptureOp::Stop(req) => serde_json::to_value(stop(dp, req)?),
    };
    answer.map_err(|e| ApiError::new(500, format!("encoding the answer: {e}")))
}

fn start(dp: &mut Dataplane, req: CaptureStart) -> Result<CaptureStarted, ApiError> {
    let ring = dp.capture_ring_path().ok_or_else(|| ApiError::new(500, "capture needs the pinned data path"))?;
    let (running, _) = dp.capture_state().map_err(dp_error)?;
    if running.session != 0 && monotonic_ns() <= running.expires_ns {
        return Err(ApiError::new(
            409,
            format!(
                "a capture is already running (session {}); one at a time. If its reader is gone, \
                 `lb capture --stop` ends it",
                running.session
            ),
        ));
    }
    let vip: VipId = req.vip.parse().map_err(|e: String| ApiError::new(400, e))?;
    let key = lb_common::VipKey::new(vip.address, vip.port, vip.protocol.number());
    let vip_slot = dp.vip_slot(&key).ok_or_else(|| ApiError::new(404, format!("no VIP {vip}")))?;
    let backend_id = match req.backend {
        Some(address) => Some(dp.backend_id(&key, address).ok_or_else(|| {
            ApiError::new(404, format!("no backend {address} of {vip} in the data path (maintenance, or not one)"))
        })?),
        None => None,
    };
    let bad = |m: String| Err(ApiError::new(400, m));
    let sample = req.sample.unwrap_or(1);
    let snaplen = req.snaplen.unwrap_or(CAPTURE_SNAPLEN);
    let duration_s = req.duration_s.unwrap_or(DEFAULT_DURATION_S);
    let max_per_sec = req.max_per_sec.unwrap_or(DEFAULT_MAX_PER_SEC);
    if sample == 0 {
        return bad("sample must be 1 or more (1 in N frames)".into());
    }
    if !(1..=CAPTURE_SNAPLEN).contains(&snaplen) {
        return bad(format!("snaplen must be 1-{CAPTURE_SNAPLEN}"));
    }
    if !(1..=MAX_DURATION_S).contains(&duration_s) {
        return bad(format!("duration_s must be 1-{MAX_DURATION_S}"));
    }
    if !(1..=MAX_MAX_PER_SEC).contains(&max_per_sec) {
        return bad(format!("max_per_sec must be 1-{MAX_MAX_PER_SEC}"));
    }
    if req.count == Some(0) {
        return bad("count must be 1 or more".into());
    }
    // Distinct from earlier sessions, whose records may still be in the ring.
    let session =
        (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() as u32) | 1;
    let config = CaptureConfig {
        session,
        sample,
        vip_slot,
        backend: backend_id.unwrap_or(CAPTURE_ANY),
        snaplen,
        max_per_sec,
        expires_ns: monotonic_ns() + duration_s * 1_000_000_000,
        max_records: req.count.unwrap_or(0),
    };
    dp.capture_start(config).map_err(dp_error)?;
    info!(%vip, backend = ?req.backend, sample, duration_s, session, "capture started");
    let backends = dp
        .backend_ids()
        .into_iter()
        .filter(|(_, v, _)| *v == key)
        .map(|(id, _, address)| CaptureBackend { id, address })
        .collect();
    Ok(CaptureStarted { session, ring, vip_slot, backend_id, sample, snaplen, duration_s, max_per_sec, backends })
}

fn stop(dp: &mut Dataplane, req: CaptureStop) -> Result<CaptureStopped, ApiError> {
    let (running, state) = dp.capture_state().map_err(dp_error)?;
    // Never end another client's capture (a late timer of an earlier one).
    let ours = running.session != 0 && req.session.is_none_or(|s| s == running.session);
    let state = if ours { dp.capture_stop().map_err(dp_error)? } else { state };
    if ours {
        info!(session = running.session, records = state.records, lost = state.lost, "capture stopped");
    }
    Ok(CaptureStopped { stopped: ours, records: state.records, lost: state.lost, limited: state.limited })
}

fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::new(400, format!("request body ({what}): {e}")))
}

/// `POST /v1/capture/start`. Besides the program's own expiry, the agent
/// turns the switch off at the deadline, so no capture outlives its bound.
pub async fn route_start<C: Control>(control: &C, bytes: &[u8]) -> Result<Value, ApiError> {
    let req: CaptureStart = parse(bytes, r#"{"vip": "ADDR:PORT/PROTO", "backend"?, "sample"?, "count"?, ...}"#)?;
    let answer = control.capture(CaptureOp::Start(req)).await?;
    if let Ok(started) = serde_json::from_value::<CaptureStarted>(answer.clone()) {
        let control = control.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(started.duration_s)).await;
            let _ = control.capture(CaptureOp::Stop(CaptureStop { session: Some(started.session) })).await;
        });
    }
    Ok(answer)
}

/// `POST /v1/capture/stop`.
pub async fn route_stop<C: Control>(control: &C, bytes: &[u8]) -> Result<Value, ApiError> {
    let req: CaptureStop = if bytes.is_empty() { CaptureStop::default() } else { parse(bytes, r#"{"session"?: N}"#)? };
    control.capture(CaptureOp::Stop(req)).await
}
