//! `POST /v1/trace` (`lb trace`): where the live maps send one 5-tuple now,
//! and why.

use std::net::IpAddr;

use lb_common::FlowKey;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{api::Control, owner::ApiError};
use crate::{
    config::{Protocol, VipId},
    dataplane::Trace,
};

/// Body of `POST /v1/trace`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TraceRequest {
    pub src: IpAddr,
    /// 0 when the caller does not know it.
    #[serde(default)]
    pub sport: u16,
    pub dst: IpAddr,
    pub dport: u16,
    #[serde(default = "tcp")]
    pub protocol: Protocol,
}

fn tcp() -> Protocol {
    Protocol::Tcp
}

impl TraceRequest {
    /// The VIP the destination names (whether or not it is configured).
    pub fn vip(&self) -> VipId {
        VipId { address: self.dst, port: self.dport, protocol: self.protocol }
    }

    /// The connection-table key, as the program builds it from a packet.
    pub fn flow(&self) -> Result<FlowKey, ApiError> {
        if self.src.is_ipv4() != self.dst.is_ipv4() {
            return Err(ApiError::new(400, format!("{} and {} are of different address families", self.src, self.dst)));
        }
        Ok(FlowKey::new(self.src, self.sport, self.dst, self.dport, self.protocol.number()))
    }
}

/// The answer: `trace` is null when the destination is not a VIP.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TraceAnswer {
    pub vip: String,
    pub trace: Option<Trace>,
}

pub async fn route<C: Control>(control: &C, bytes: &[u8]) -> Result<Value, ApiError> {
    let req: TraceRequest = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(400, format!(r#"request body ({{"src", "sport", "dst", "dport", "protocol"}}): {e}"#))
    })?;
    let trace = control.trace(req.flow()?).await?;
    let answer = TraceAnswer { vip: req.vip().to_string(), trace };
    serde_json::to_value(answer).map_err(|e| ApiError::new(500, format!("encoding the trace: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_parses_and_checks_families() {
        let r: TraceRequest = serde_json::from_str(r#"{"src":"198.18.0.1","dst":"198.18.100.1","dport":80}"#).unwrap();
        assert_eq!((r.sport, r.protocol), (0, Protocol::Tcp));
        assert_eq!(r.vip().to_string(), "198.18.100.1:80/tcp");
        assert_eq!(r.flow().unwrap().sport, 0);
        let r: TraceRequest =
            serde_json::from_str(r#"{"src":"2001:db8::1","sport":5,"dst":"198.18.100.1","dport":53,"protocol":"udp"}"#)
                .unwrap();
        assert_eq!(r.flow().unwrap_err().status, 400);
        assert!(serde_json::from_str::<TraceRequest>(r#"{"src":"x","dst":"198.18.100.1","dport":80}"#).is_err());
    }
}
