//! Command-line definition (nouns and verbs, xdp-tools style).

use std::{net::IpAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand};

use lb::config::{BackendSpec, DEFAULT_CONTROL_SOCKET, Mac, VipId, XdpModeSetting};

const AFTER_HELP: &str = "\
VIPs are written ADDRESS:PORT/PROTOCOL: 198.18.100.1:80/tcp, [2001:db8::1]:443/udp.

Commands other than run, decap and config talk to the running agent over its
control socket (root only). Changes made through them last until the next
reload or restart: put them in the configuration file to keep them.

Exit status: 0 success; 64 bad command line, invalid configuration or a request
the agent refused; 69 agent unreachable; 1 other failures.";

#[derive(Parser)]
#[command(
    name = "lb",
    version = crate::version::text(),
    about = "An XDP Layer-4 load balancer: Maglev consistent hashing, a connection table, IP-in-IP or L2 DSR forwarding",
    after_help = AFTER_HELP,
)]
pub struct Cli {
    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides it.
    #[arg(long, global = true, default_value = "info", help_heading = "Global options")]
    pub log_level: String,
    /// The agent's control socket [default: $LB_SOCKET, else /run/lb/lb.sock].
    #[arg(long, global = true, value_name = "PATH", help_heading = "Global options")]
    pub socket: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// `--socket`, else `$LB_SOCKET`, else the default path.
    pub fn socket(&self) -> PathBuf {
        self.socket
            .clone()
            .or_else(|| std::env::var_os("LB_SOCKET").filter(|s| !s.is_empty()).map(PathBuf::from))
            .unwrap_or_else(|| DEFAULT_CONTROL_SOCKET.into())
    }
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the agent: attach the balancer, probe backends, serve the control socket and metrics.
    ///
    /// Loads the balancer (or adopts the one a previous agent left running),
    /// applies the configuration, attaches to the interface, then health-checks
    /// backends and serves the control socket and the metrics listener until
    /// SIGINT/SIGTERM. SIGHUP or `lb reload` re-reads the file.
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
        /// Detach the XDP program and remove its pins when the agent stops
        /// (default: leave forwarding running for the next agent to adopt).
        #[arg(long)]
        detach_on_exit: bool,
    },
    /// Show VIPs, backends, drops and the latest health transitions.
    ///
    /// Per VIP: forwarding, ring size, table fingerprint and packets, then its
    /// backends' admin state, health, placement, weight (configured/effective),
    /// traffic and last probe result. Then non-zero drop counters and the
    /// latest health transitions.
    Status {
        /// Print the agent's raw JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Show packet counters by reason, and the traffic of every VIP and backend.
    Stats {
        /// Print JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Withdraw this instance's VIPs from BGP; the agent keeps forwarding.
    ///
    /// Needs a `[bgp]` table. The local BIRD stops announcing every VIP
    /// address, so the router moves the flows to the other instances; the
    /// data path stays attached for packets still on their way. Runtime
    /// state: a restart of the agent announces again.
    DrainNode,
    /// Announce this instance's ready VIPs again after `lb drain-node`.
    UndrainNode,
    /// Make the agent re-read its configuration file, as SIGHUP does.
    ///
    /// An invalid file changes nothing; the error names the offending key.
    Reload,
    /// List, add and remove VIPs.
    Vip {
        #[command(subcommand)]
        command: VipCommand,
    },
    /// List, add and remove backends; drain them or put them in maintenance.
    Backend {
        #[command(subcommand)]
        command: BackendCommand,
    },
    /// Work with configuration files.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// On a backend: strip lb's IP-in-IP header in XDP.
    ///
    /// For backends without the ipip / ip6_tunnel modules: the outer header is
    /// removed before the kernel sees the packet. Runs until SIGINT/SIGTERM.
    Decap {
        /// The backend's interface that receives the tunnelled packets.
        #[arg(long)]
        iface: String,
        #[arg(long, value_enum, default_value = "native")]
        xdp_mode: ModeArg,
    },
    /// Detach a balancer that a stopped agent left running, and remove its pins.
    ///
    /// `lb run` leaves forwarding in place when it stops so that the next
    /// agent adopts it without dropping a packet; this ends it instead.
    Detach {
        /// The interface the balancer is attached to.
        #[arg(long)]
        iface: String,
        /// bpffs directory of the pins (`global.pin_path`).
        #[arg(long, default_value = lb::config::DEFAULT_PIN_PATH)]
        pin_path: std::path::PathBuf,
    },
    /// Which backend a 5-tuple goes to right now, and why.
    ///
    /// Asks the agent, which reads the live maps: an established flow follows
    /// its connection-table entry; a new one (or a SYN) takes the Maglev ring
    /// entry its hash selects.
    Trace(crate::trace::TraceArgs),
    /// Live view of VIPs and backends: rates, new-flow shares, hot spots, drops.
    ///
    /// The terminal twin of the status page (http://METRICS_LISTEN/). Refreshes
    /// every interval with plain ANSI sequences, so it works over ssh; q or
    /// Ctrl-C quits.
    Top(crate::top::TopArgs),
    /// Copy the frames the XDP program handles for a VIP into a pcap file.
    ///
    /// tcpdump cannot see what XDP forwards. The program copies the first
    /// bytes of matching frames, as it sends them, into a ring buffer that
    /// this command reads; sampled, bounded in rate and time, and switched
    /// off when this command exits.
    Capture(crate::capture::CaptureArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (lb.1 and one per command) into a directory.
    Man {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Validate a configuration file without touching the kernel.
    ///
    /// Exits 0 when valid, 64 with the offending key and the reason otherwise.
    Check { file: PathBuf },
}

#[derive(Subcommand)]
pub enum VipCommand {
    /// One line per VIP: forwarding, ring size, check, backends in the table, traffic.
    List,
    /// Add a VIP, validated like a `[[vip]]` table of the file.
    #[command(
        after_help = "Example:\n  lb vip add 198.18.100.1:80/tcp --backend 198.18.0.11,weight=2 --backend 198.18.0.12 --health http --health-path /healthz"
    )]
    Add(VipAdd),
    /// Remove a VIP; its traffic goes to the host's stack again.
    Del { vip: VipId },
}

#[derive(Args)]
pub struct VipAdd {
    /// The VIP, ADDRESS:PORT/PROTOCOL.
    pub vip: VipId,
    /// How packets reach the backends [default: global.forwarding].
    #[arg(long, value_enum)]
    pub forwarding: Option<ForwardingArg>,
    /// Maglev table size, a prime up to 65537 [default: 65537].
    #[arg(long, value_name = "N")]
    pub ring_size: Option<u32>,
    /// How new flows are spread: maglev, source-hash, round-robin,
    /// least-connections [default: maglev].
    #[arg(long, value_name = "NAME")]
    pub algorithm: Option<lb::config::Algorithm>,
    /// Acknowledge that the algorithm is per instance (required for
    /// round-robin and least-connections when the agent announces over BGP).
    #[arg(long)]
    pub per_instance: bool,
    /// A backend, repeatable: ADDR[,weight=W][,mac=MAC] (the MAC is required
    /// with l2dsr).
    #[arg(long = "backend", value_name = "ADDR[,weight=W][,mac=M]", value_parser = parse_backend)]
    pub backends: Vec<BackendSpec>,
    /// Health check of the backends [default: none, always healthy].
    #[arg(long, value_enum)]
    pub health: Option<HealthArg>,
    /// Port probed on each backend [default: the VIP's].
    #[arg(long, value_name = "P", requires = "health")]
    pub health_port: Option<u16>,
    /// HTTP check: path requested [default: /].
    #[arg(long, value_name = "/PATH", requires = "health")]
    pub health_path: Option<String>,
    /// Time between checks [default: 2000].
    #[arg(long, value_name = "N", requires = "health")]
    pub interval_ms: Option<u64>,
    /// Time a check may take [default: 1000].
    #[arg(long, value_name = "N", requires = "health")]
    pub timeout_ms: Option<u64>,
    /// Consecutive successes that bring a down backend up [default: 2].
    #[arg(long, value_name = "N", requires = "health")]
    pub rise: Option<u32>,
    /// Consecutive failures that take an up backend down [default: 3].
    #[arg(long, value_name = "N", requires = "health")]
    pub fall: Option<u32>,
}

#[derive(Subcommand)]
pub enum BackendCommand {
    /// Show a VIP's backends: state, health, placement, weights, traffic, last probe.
    List { vip: VipId },
    /// Add a backend to a VIP.
    Add {
        vip: VipId,
        address: IpAddr,
        /// Share of new flows, 0-10000 [default: 1].
        #[arg(long, value_name = "W")]
        weight: Option<u32>,
        /// The backend's MAC (required when the VIP uses l2dsr).
        #[arg(long, value_parser = parse_mac)]
        mac: Option<String>,
    },
    /// Remove a backend from a VIP; its established flows are re-picked.
    Del { vip: VipId, address: IpAddr },
    /// Send the backend no new flows; its established flows stay (state drain).
    Drain { vip: VipId, address: IpAddr },
    /// Put the backend back in service after drain or maint (state up).
    Undrain { vip: VipId, address: IpAddr },
    /// Take the backend out of service: flows re-picked, checks paused (state maint).
    Maint { vip: VipId, address: IpAddr },
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

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ForwardingArg {
    /// IP-in-IP through the next-hop router.
    Ipip,
    /// L2 direct server return: backends on this segment.
    L2dsr,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum HealthArg {
    /// The TCP handshake completes.
    Tcp,
    /// A GET of the path answers 200.
    Http,
}

fn parse_mac(s: &str) -> Result<String, String> {
    s.parse::<Mac>().map(|m| m.to_string())
}

/// `ADDR[,weight=W][,mac=M]`.
fn parse_backend(s: &str) -> Result<BackendSpec, String> {
    let mut parts = s.split(',');
    let addr = parts.next().unwrap_or_default();
    let address = addr.parse().map_err(|_| format!("{addr:?} is not an IP address"))?;
    let mut spec = BackendSpec { address, weight: None, mac: None, state: None };
    for part in parts {
        match part.split_once('=') {
            Some(("weight", w)) => spec.weight = Some(w.parse().map_err(|_| format!("weight {w:?} is not a number"))?),
            Some(("mac", m)) => spec.mac = Some(parse_mac(m)?),
            _ => return Err(format!("{part:?}: expected weight=W or mac=MAC")),
        }
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definition_is_consistent() {
        <Cli as clap::CommandFactory>::command().debug_assert();
    }

    #[test]
    fn backend_argument() {
        let b = parse_backend("198.18.0.11,weight=2,mac=02:00:00:00:00:0A").unwrap();
        assert_eq!(
            (b.address.to_string(), b.weight, b.mac.as_deref()),
            ("198.18.0.11".into(), Some(2), Some("02:00:00:00:00:0a"))
        );
        assert!(parse_backend("2001:db8::1").is_ok());
        assert!(parse_backend("198.18.0.11,weight=x").unwrap_err().contains("weight"));
        assert!(parse_backend("198.18.0.11,colour=red").unwrap_err().contains("expected weight=W"));
        assert!(parse_backend("nope").is_err());
    }

    #[test]
    fn health_options_need_a_check() {
        let e = Cli::try_parse_from(["lb", "vip", "add", "198.18.100.1:80/tcp", "--rise", "3"]).err().unwrap();
        assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        assert!(Cli::try_parse_from(["lb", "vip", "add", "198.18.100.1:80", "--rise", "3"]).is_err());
    }
}
