//! The `lb` binary.

mod capture;
mod cli;
mod client;
mod dist;
mod notify;
mod pcap;
mod probe_text;
mod run;
mod top;
mod trace;
mod version;

use std::{io::IsTerminal, process::ExitCode};

use clap::Parser;
use cli::{Cli, Command, ConfigCommand};
use client::{Client, ClientError};
use lb::config::{Config, ConfigError};
use tracing_subscriber::EnvFilter;

/// sysexits' EX_USAGE: bad command line or configuration.
const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(EXIT_USAGE) } else { ExitCode::SUCCESS };
        }
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cli.log_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let agent = Client::new(cli.socket());
    let result = match cli.command {
        Command::Config { command: ConfigCommand::Check { file } } => Config::load(&file)
            .map(|c| {
                println!("{}: valid ({} VIPs, {} backends)", file.display(), c.vips.len(), c.backend_entries());
            })
            .map_err(anyhow::Error::from),
        Command::Run { config, iface, xdp_mode, detach_on_exit } => {
            runtime().block_on(run::run(&config, iface, xdp_mode.map(Into::into), detach_on_exit))
        }
        Command::Decap { iface, xdp_mode } => runtime().block_on(run::decap(&iface, xdp_mode.into())),
        Command::Detach { iface, pin_path } => lb::agent::detach_pinned(&pin_path, &iface).map(|()| {
            println!("detached the balancer from {iface} and removed its pins");
        }),
        Command::Status { json } => agent.show_status(json).map_err(Into::into),
        Command::Stats { json } => agent.show_stats(json).map_err(Into::into),
        Command::Reload => agent.reload().map_err(Into::into),
        Command::DrainNode => agent.node(true).map_err(Into::into),
        Command::UndrainNode => agent.node(false).map_err(Into::into),
        Command::Vip { command } => agent.vip(command).map_err(Into::into),
        Command::Backend { command } => agent.backend(command).map_err(Into::into),
        Command::Trace(args) => trace::run(&agent, &args),
        Command::Top(args) => top::run(&agent, &args),
        Command::Capture(args) => capture::run(&agent, &args),
        Command::Completions { shell } => {
            dist::completions(shell);
            Ok(())
        }
        Command::Man { dir } => dist::man(&dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<ClientError>() => ExitCode::from(client::report(e.downcast_ref().expect("checked"))),
        Err(e) => {
            eprintln!("lb: error: {e:#}");
            if e.downcast_ref::<ConfigError>().is_some() { ExitCode::from(EXIT_USAGE) } else { ExitCode::FAILURE }
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime")
}
