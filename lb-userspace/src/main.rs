//! The `lb` binary.

mod cli;
mod run;

use std::{io::IsTerminal, process::ExitCode};

use clap::Parser;
use cli::{Cli, Command, ConfigCommand};
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

    let result = match cli.command {
        Command::Config { command: ConfigCommand::Check { file } } => Config::load(&file).map(|c| {
            println!("{}: valid ({} VIPs, {} backends)", file.display(), c.vips.len(), c.backend_entries());
        }).map_err(anyhow::Error::from),
        Command::Run { config, iface, xdp_mode } => {
            runtime().block_on(run::run(&config, iface, xdp_mode.map(Into::into)))
        }
        Command::Decap { iface, xdp_mode } => runtime().block_on(run::decap(&iface, xdp_mode.into())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lb: error: {e:#}");
            if e.downcast_ref::<ConfigError>().is_some() { ExitCode::from(EXIT_USAGE) } else { ExitCode::FAILURE }
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime")
}
