//! The optional `[bgp]` table: how the agent drives the local BIRD that
//! announces this instance's VIPs to the upstream router.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{ConfigError, invalid};

/// Debian's bird2 control socket.
pub const DEFAULT_BIRD_SOCKET: &str = "/run/bird/bird.ctl";
/// The include file the agent writes, read by the operator's bird.conf. In
/// /run itself: cleared at boot (never announced before the agent runs), and
/// there even while no agent runs (packaging/lb.service removes /run/lb when
/// it stops; BIRD refuses an include pattern whose directory is missing).
pub const DEFAULT_CONFIG_FILE: &str = "/run/lb-bird-vips.conf";
/// Name of the generated static protocols (`lb_vips4`, `lb_vips6`).
pub const DEFAULT_PROTOCOL: &str = "lb_vips";
/// Time between withdrawing and stopping: long enough for the router to
/// receive the withdrawal and move the flows.
pub const DEFAULT_WITHDRAW_GRACE_MS: u64 = 2000;
/// Longest accepted grace (10 minutes).
pub const MAX_WITHDRAW_GRACE_MS: u64 = 600_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BgpConfig {
    /// BIRD's control socket (`bird -s`).
    pub bird_socket: PathBuf,
    /// The BIRD include file with one static route per announced VIP address.
    pub config_file: PathBuf,
    /// Prefix of the generated protocol names: `<protocol>4`, `<protocol>6`.
    pub protocol: String,
    pub withdraw_grace_ms: u64,
    /// Present while the node is drained (`lb drain-node`), so a restarted
    /// agent stays drained until `lb undrain-node`.
    pub drain_file: PathBuf,
}

/// Default drain marker: beside the include file, so instances with their
/// own include files keep their own state. Under /run it lasts until a
/// reboot; point it at /var/lib to keep a drain across reboots too.
pub fn default_drain_file(config_file: &Path) -> PathBuf {
    let mut name = config_file.as_os_str().to_owned();
    name.push(".drained");
    name.into()
}

// The table as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBgp {
    bird_socket: Option<PathBuf>,
    config_file: Option<PathBuf>,
    protocol: Option<String>,
    withdraw_grace_ms: Option<u64>,
    drain_file: Option<PathBuf>,
}

fn absolute(key: &str, p: &Path) -> Result<(), ConfigError> {
    if !p.is_absolute() || p.file_name().is_none() {
        return Err(invalid(format!("bgp.{key}"), format!("{} must be an absolute file path", p.display())));
    }
    Ok(())
}

pub(super) fn validate(raw: RawBgp) -> Result<BgpConfig, ConfigError> {
    let config_file: PathBuf = raw.config_file.unwrap_or_else(|| DEFAULT_CONFIG_FILE.into());
    let bgp = BgpConfig {
        bird_socket: raw.bird_socket.unwrap_or_else(|| DEFAULT_BIRD_SOCKET.into()),
        drain_file: raw.drain_file.unwrap_or_else(|| default_drain_file(&config_file)),
        config_file,
        protocol: raw.protocol.unwrap_or_else(|| DEFAULT_PROTOCOL.into()),
        withdraw_grace_ms: raw.withdraw_grace_ms.unwrap_or(DEFAULT_WITHDRAW_GRACE_MS),
    };
    absolute("bird_socket", &bgp.bird_socket)?;
    absolute("config_file", &bgp.config_file)?;
    absolute("drain_file", &bgp.drain_file)?;
    if bgp.config_file == bgp.bird_socket {
        return Err(invalid("bgp.config_file", "must differ from bgp.bird_socket"));
    }
    if bgp.drain_file == bgp.config_file || bgp.drain_file == bgp.bird_socket {
        return Err(invalid("bgp.drain_file", "must differ from bgp.config_file and bgp.bird_socket"));
    }
    // It becomes a BIRD symbol: letters, digits and underscores, not first a digit.
    let p = &bgp.protocol;
    let symbol = p.len() <= 32
        && p.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !symbol {
        return Err(invalid("bgp.protocol", format!("{p:?} must be a BIRD name: letters, digits, _ (at most 32)")));
    }
    if bgp.withdraw_grace_ms > MAX_WITHDRAW_GRACE_MS {
        return Err(invalid(
            "bgp.withdraw_grace_ms",
            format!("{} is above the maximum {MAX_WITHDRAW_GRACE_MS}", bgp.withdraw_grace_ms),
        ));
    }
    Ok(bgp)
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError};

    use crate::config::tests::{MINIMAL_GLOBAL as BASE, key_of};

    fn parse(bgp: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(&format!("{BASE}[bgp]\n{bgp}"))
    }

    #[test]
    fn absent_means_no_bgp_and_empty_table_means_defaults() {
        assert_eq!(Config::from_toml_str(BASE).unwrap().bgp, None);
        let b = parse("").unwrap().bgp.unwrap();
        assert_eq!(b.bird_socket.to_str(), Some(super::DEFAULT_BIRD_SOCKET));
        assert_eq!(b.config_file.to_str(), Some(super::DEFAULT_CONFIG_FILE));
        assert_eq!((b.protocol.as_str(), b.withdraw_grace_ms), ("lb_vips", 2000));
        assert_eq!(b.drain_file.to_str(), Some("/run/lb-bird-vips.conf.drained"));
    }

    #[test]
    fn every_key() {
        let b = parse(
            "bird_socket = \"/x/bird.ctl\"\nconfig_file = \"/x/vips.conf\"\nprotocol = \"edge_1\"\nwithdraw_grace_ms = 0\n\
             drain_file = \"/var/lib/lb/drained\"\n",
        )
        .unwrap()
        .bgp
        .unwrap();
        assert_eq!((b.bird_socket.to_str(), b.config_file.to_str()), (Some("/x/bird.ctl"), Some("/x/vips.conf")));
        assert_eq!((b.protocol.as_str(), b.withdraw_grace_ms), ("edge_1", 0));
        assert_eq!(b.drain_file.to_str(), Some("/var/lib/lb/drained"));
        let derived = parse("config_file = \"/x/vips.conf\"").unwrap().bgp.unwrap();
        assert_eq!(derived.drain_file.to_str(), Some("/x/vips.conf.drained"));
    }

    #[test]
    fn errors_name_the_key() {
        assert_eq!(key_of(parse("bird_socket = \"bird.ctl\"").unwrap_err()), "bgp.bird_socket");
        assert_eq!(key_of(parse("config_file = \"/\"").unwrap_err()), "bgp.config_file");
        assert_eq!(key_of(parse("config_file = \"/run/bird/bird.ctl\"").unwrap_err()), "bgp.config_file");
        assert_eq!(key_of(parse("protocol = \"1x\"").unwrap_err()), "bgp.protocol");
        assert_eq!(key_of(parse("protocol = \"a-b\"").unwrap_err()), "bgp.protocol");
        assert_eq!(key_of(parse("withdraw_grace_ms = 600001").unwrap_err()), "bgp.withdraw_grace_ms");
        assert_eq!(key_of(parse("drain_file = \"drained\"").unwrap_err()), "bgp.drain_file");
        assert_eq!(key_of(parse("drain_file = \"/run/lb-bird-vips.conf\"").unwrap_err()), "bgp.drain_file");
        let unknown = parse("next_hop = \"self\"").unwrap_err().to_string();
        assert!(unknown.contains("next_hop"), "{unknown}");
    }
}
