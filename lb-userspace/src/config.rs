//! The configuration file: parsed strictly (unknown keys are errors), then
//! validated as a whole before anything touches the kernel. Every error names
//! the key it is about.

use std::{collections::HashSet, path::Path};

use lb_common::{MAX_BACKENDS, MAX_VIPS};
use serde::Deserialize;

mod algorithm;
mod bgp;
mod checks;
pub use algorithm::Algorithm;
pub use bgp::BgpConfig;
pub use checks::{AgentCheck, INTERVAL_RANGE_MS, MAX_AGENT_SEND, MAX_SLOWSTART_MS};
mod hotspot;
pub use hotspot::HotSpotConfig;
mod values;
pub use values::{AdminState, AllDown, CheckKind, Forwarding, Mac, NextHop, OnDown, Protocol, XdpModeSetting};
mod global;
pub use global::{
    ACTIVE_RECONCILE_MS_RANGE, CONNTRACK_CAPACITY_RANGE, DEFAULT_ACTIVE_RECONCILE_MS, DEFAULT_CONTROL_SOCKET,
    DEFAULT_METRICS_LISTEN, DEFAULT_NEW_FLOW_LIMIT, DEFAULT_PIN_PATH, DEFAULT_TCP_IDLE_TIMEOUT_S,
    DEFAULT_UDP_IDLE_TIMEOUT_S, Global, IDLE_TIMEOUT_S_RANGE, MTU_RANGE, TooBig,
};
mod health;
pub use health::HealthCheck;
mod vip;
pub use vip::{BackendConfig, BackendSpec, MAX_WEIGHT, Vip, VipId, VipSpec, is_prime};
use vip::{check_backends, validate_vip};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{0}")]
    Parse(String),
    #[error("{key}: {reason}")]
    Invalid { key: String, reason: String },
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), reason: reason.into() }
}

/// A validated configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub global: Global,
    pub vips: Vec<Vip>,
    /// `[bgp]`: announce the VIPs through the local BIRD; read at start only.
    pub bgp: Option<BgpConfig>,
    /// `[hot_spot]`: detection (and optional per-instance correction) of
    /// backends taking more than their weighted share.
    pub hot_spot: HotSpotConfig,
}

// The file's shape, exactly as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    global: global::RawGlobal,
    #[serde(default)]
    vip: Vec<VipSpec>,
    bgp: Option<bgp::RawBgp>,
    hot_spot: Option<hotspot::RawHotSpot>,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        Self::from_toml_str(&text)
    }

    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        validate(raw)
    }

    /// Backend entries the data path needs: one per backend of each VIP.
    pub fn backend_entries(&self) -> usize {
        self.vips.iter().map(|v| v.backends.len()).sum()
    }

    pub fn vip(&self, id: &VipId) -> Option<&Vip> {
        self.vips.iter().find(|v| v.id() == *id)
    }

    /// This configuration plus one VIP, validated like the file.
    pub fn with_vip(&self, spec: VipSpec) -> Result<Config, ConfigError> {
        let key = format!("vip[{}]", self.vips.len());
        let vip = validate_vip(&key, spec, self.global.forwarding, &self.global)?;
        let mut next = self.clone();
        next.vips.push(vip);
        next.check_whole()?;
        Ok(next)
    }

    /// This configuration with the VIP's backends changed by `edit`, validated.
    pub fn with_backends(
        &self,
        id: &VipId,
        edit: impl FnOnce(&mut Vec<BackendConfig>) -> Result<(), ConfigError>,
    ) -> Result<Config, ConfigError> {
        let mut next = self.clone();
        let (i, vip) = next
            .vips
            .iter_mut()
            .enumerate()
            .find(|(_, v)| v.id() == *id)
            .ok_or_else(|| invalid("vip", format!("no VIP {id}")))?;
        edit(&mut vip.backends)?;
        check_backends(&format!("vip[{i}]"), vip)?;
        next.check_whole()?;
        Ok(next)
    }

    /// Warnings for VIPs whose algorithm is per instance and not
    /// acknowledged (`per_instance = true`): logged at load and reload.
    pub fn per_instance_warnings(&self) -> Vec<String> {
        self.vips
            .iter()
            .filter(|v| v.algorithm.per_instance() && !v.per_instance)
            .map(|v| {
                format!(
                    "{v} uses {}: each lb instance decides from its own state, so several instances behind \
                     ECMP may send one flow to different backends; set per_instance = true to acknowledge",
                    v.algorithm
                )
            })
            .collect()
    }

    /// Rules about the configuration as a whole.
    fn check_whole(&self) -> Result<(), ConfigError> {
        if self.vips.len() > MAX_VIPS as usize {
            return Err(invalid("vip", format!("{} VIPs configured, at most {MAX_VIPS}", self.vips.len())));
        }
        let mut seen = HashSet::new();
        for (i, vip) in self.vips.iter().enumerate() {
            if !seen.insert(vip.key()) {
                return Err(invalid(format!("vip[{i}]"), format!("{vip} is configured twice")));
            }
        }
        if self.bgp.is_some()
            && let Some((i, vip)) =
                self.vips.iter().enumerate().find(|(_, v)| v.algorithm.per_instance() && !v.per_instance)
        {
            return Err(invalid(
                format!("vip[{i}].per_instance"),
                format!(
                    "{vip} uses {}, which each lb instance decides from its own state; with [bgp] several \
                     instances share the VIP behind ECMP, and a flow whose route moves to another instance \
                     may reach another backend. Set per_instance = true to accept that, or use maglev or source-hash",
                    vip.algorithm
                ),
            ));
        }
        let backends = self.backend_entries();
        if backends > MAX_BACKENDS as usize {
            return Err(invalid("vip.backend", format!("{backends} backends over all VIPs, at most {MAX_BACKENDS}")));
        }
        Ok(())
    }
}

fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
    let global = global::validate(raw.global)?;
    if raw.vip.len() > MAX_VIPS as usize {
        return Err(invalid("vip", format!("{} VIPs configured, at most {MAX_VIPS}", raw.vip.len())));
    }
    let mut vips = Vec::with_capacity(raw.vip.len());
    for (i, v) in raw.vip.into_iter().enumerate() {
        vips.push(validate_vip(&format!("vip[{i}]"), v, global.forwarding, &global)?);
    }
    let bgp = raw.bgp.map(bgp::validate).transpose()?;
    let hot_spot = hotspot::validate(raw.hot_spot)?;
    let config = Config { global, vips, bgp, hot_spot };
    config.check_whole()?;
    Ok(config)
}

#[cfg(test)]
pub(crate) mod tests;
