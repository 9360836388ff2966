//! Developer tasks of the lb workspace: `cargo xtask <command>`.
//!
//! The eBPF crate (lb-ebpf) needs the nightly toolchain, rust-src and
//! bpf-linker; the host crates build with the workspace's stable toolchain.
//! xtask ties the two together. Every command except `setup` first runs the
//! setup checks (fast when everything is present).

mod bench;
mod build;
mod cmd;
mod run;
mod setup;
mod util;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::cmd::ChildFailed;
use crate::run::XdpMode;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Build, test and run the lb XDP load balancer",
    long_about = "Build, test and run the lb XDP load balancer.\n\n\
        The eBPF programs (crate lb-ebpf) are built with the `nightly` toolchain for \
        bpfel-unknown-none into target/ebpf; the host crates with the usual toolchain. \
        Every command except `setup` first runs the setup checks, which take a fraction \
        of a second when nothing is missing.",
    after_help = "Examples:\n  \
        cargo xtask setup\n  \
        cargo xtask build --release\n  \
        sudo -E cargo xtask test -- -p lb-tests maglev -- --nocapture\n  \
        sudo -E cargo xtask build-and-load --iface eth0 --config lb.toml --mode skb"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install or check what the build and the tests need (idempotent).
    ///
    /// Checks, and fixes when possible: the `nightly` rustup toolchain (must be
    /// installed by hand), its rust-src component, bpf-linker 0.13.0 built
    /// against the nightly's own libLLVM (rebuilt with `cargo install` when
    /// missing or linked to another LLVM, about a minute), the Debian packages
    /// the tests use (iproute2, ethtool, bird2; installed with apt-get when root) and
    /// bpffs mounted at /sys/fs/bpf (mounted when root). A no-op run uses
    /// neither the network nor a compiler.
    Setup,

    /// Build the eBPF objects (lb-balancer, lb-decap) with nightly.
    ///
    /// Runs `rustup run nightly cargo build -p lb-ebpf --release --target
    /// bpfel-unknown-none -Z build-std=core --target-dir target/ebpf` with
    /// rustflags `-C debuginfo=2 -C link-arg=--btf` (objects carry BTF). The
    /// objects land in target/ebpf/bpfel-unknown-none/release/.
    BuildEbpf,

    /// Build the eBPF objects, then lb and the test/demo binaries.
    ///
    /// After build-ebpf, runs `cargo build -p lb-userspace -p lb-tests --bins`
    /// with LB_EBPF_DIR set to the objects' directory.
    Build {
        /// Build the host crates in release mode (the eBPF objects always are).
        #[arg(long)]
        release: bool,
    },

    /// Build everything and run the whole test suite (needs root).
    ///
    /// Runs setup, build-ebpf, `cargo build -p lb-userspace --bin lb`, then
    /// `cargo test --workspace --exclude lb-ebpf --no-fail-fast` with
    /// LB_EBPF_DIR and LB_BIN (absolute path of target/debug/lb) set.
    /// Arguments after `--` go to `cargo test`; when they pick packages (`-p
    /// lb-tests`), `--workspace --exclude lb-ebpf` is left out. Example:
    /// `cargo xtask test -- -p lb-tests maglev -- --nocapture`. Exits with
    /// cargo's non-zero code when a test fails. Root is needed for XDP and
    /// network namespaces.
    Test {
        /// Extra arguments for `cargo test` (after `--`).
        #[arg(last = true, value_name = "CARGO_TEST_ARGS")]
        args: Vec<OsString>,
    },

    /// Build everything and run the end-to-end demo (needs root).
    ///
    /// Runs `target/debug/lb-demo --lb-bin <abs path of target/debug/lb>` plus
    /// the arguments after `--`, and exits with the demo's exit code.
    Demo {
        /// Extra arguments for lb-demo (after `--`).
        #[arg(last = true, value_name = "DEMO_ARGS")]
        args: Vec<OsString>,
    },

    /// Build everything in release mode and run the benchmarks (needs root).
    ///
    /// Runs setup, build-ebpf, `cargo build --release -p lb-userspace -p
    /// lb-tests --bins`, then `target/release/lb-bench --lb-bin
    /// target/release/lb [--quick]` plus the arguments after `--` (see
    /// `lb-bench --help`). Prints tables and writes target/bench/report.json
    /// and target/bench/report.svg. Debian's haproxy is installed with
    /// apt-get if missing (for the HAProxy comparison).
    Bench {
        /// Fewer rounds and shorter runs (under 3 minutes).
        #[arg(long)]
        quick: bool,
        /// Extra arguments for lb-bench (after `--`), e.g. `-- --only prog`.
        #[arg(last = true, value_name = "BENCH_ARGS")]
        args: Vec<OsString>,
    },

    /// Build lb in release mode and run it on an interface (needs root).
    ///
    /// Runs setup, build-ebpf, `cargo build --release -p lb-userspace --bin
    /// lb`, then replaces itself with `target/release/lb run --config FILE
    /// --iface IF [--xdp-mode skb]`. lb stays in the foreground until Ctrl-C,
    /// which detaches the programs.
    BuildAndLoad {
        /// Network interface to attach the balancer to.
        #[arg(long, value_name = "IF")]
        iface: String,
        /// lb configuration file (TOML).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// XDP attach mode; lb's default (native) when omitted.
        #[arg(long, value_enum)]
        mode: Option<XdpMode>,
    },
}

fn run(cli: Cli) -> Result<()> {
    let root = util::workspace_root();
    match cli.command {
        Command::Setup => {
            setup::setup()?;
            util::step("setup complete");
            Ok(())
        }
        Command::BuildEbpf => {
            let setup = setup::setup()?;
            build::build_ebpf(&root, &setup)?;
            Ok(())
        }
        Command::Build { release } => {
            let setup = setup::setup()?;
            build::build_all(&root, &setup, release)
        }
        Command::Test { args } => run::test(&root, &args),
        Command::Demo { args } => run::demo(&root, &args),
        Command::Bench { quick, args } => bench::bench(&root, quick, &args),
        Command::BuildAndLoad { iface, config, mode } => run::build_and_load(&root, &iface, &config, mode),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("[xtask] error: {err:#}");
            // Keep a failed child's exit code (e.g. the demo's); else 1.
            let code = err.chain().find_map(|e| e.downcast_ref::<ChildFailed>()).map(|c| c.code).unwrap_or(1);
            ExitCode::from(u8::try_from(code).ok().filter(|&c| c != 0).unwrap_or(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }
}
