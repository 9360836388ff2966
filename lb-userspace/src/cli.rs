//! Command-line definition (nouns and verbs, xdp-tools style).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use lb::config::XdpModeSetting;

#[derive(Parser)]
#[command(
    name = "lb",
    version,
    about = "An XDP Layer-4 load balancer: Maglev consistent hashing, a connection table, IP-in-IP or L2 DSR forwarding",
    long_about = None,
)]
pub struct Cli {
    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides it.
    #[arg(long, global = true, default_value = "info")]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Load the balancer, attach it to the interface and apply the config;
    /// runs until SIGINT/SIGTERM (then detaches). SIGHUP re-reads the file.
    Run {
        /// Configuration file (TOML); see examples/lb.toml.
        #[arg(long, short)]
        config: PathBuf,
        /// Interface to attach to; overrides `global.interface`.
        #[arg(long)]
        iface: Option<String>,
        /// XDP mode; overrides `global.xdp_mode`.
        #[arg(long, value_enum)]
        xdp_mode: Option<ModeArg>,
    },
    /// Work with configuration files.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// On a backend: strip lb's IP-in-IP header in XDP before the kernel sees
    /// the packet (for hosts without the ipip / ip6_tunnel modules). Runs until
    /// SIGINT/SIGTERM.
    Decap {
        /// The backend's interface that receives the tunnelled packets.
        #[arg(long)]
        iface: String,
        #[arg(long, value_enum, default_value = "native")]
        xdp_mode: ModeArg,
    },
}

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Validate a configuration file without touching the kernel; exit 0 when
    /// valid, 64 with the offending key and the reason otherwise.
    Check {
        file: PathBuf,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ModeArg {
    Native,
    Skb,
}

impl From<ModeArg> for XdpModeSetting {
    fn from(m: ModeArg) -> Self {
        match m {
            ModeArg::Native => XdpModeSetting::Native,
            ModeArg::Skb => XdpModeSetting::Skb,
        }
    }
}
