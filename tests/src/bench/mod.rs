//! The benchmarks of `lb-bench` (see `src/bin/lb-bench.rs` for the command
//! line): per-packet cost through BPF_PROG_TEST_RUN ([`prog`]), throughput
//! on veth with a live-frames generator ([`veth`]), control-plane speed
//! ([`control`]), lb against HAProxy ([`haproxy`]), and the report
//! ([`report`], [`svg`]).

pub mod config;
pub mod connload;
pub mod control;
pub mod cpus;
pub mod haproxy;
pub mod harness;
pub mod httpsrv;
pub mod onecpu;
pub mod peers;
pub mod prog;
/// The live-frames generator and hand-written programs, shared with the tests.
pub use lb_tests::livegen as raw;
pub mod report;
pub mod svg;
pub mod sys;
pub mod veth;

/// The benchmarks' topology: 3 backends behind one IPv4 VIP on TCP port 80,
/// no built-in servers (each benchmark brings its own).
pub fn topology_options(lb_bin: &std::path::Path, start_decap: bool) -> lb_tests::topology::TopologyOptions {
    lb_tests::topology::TopologyOptions {
        backends: 3,
        vips_v4: vec![lb_tests::topology::VIP_V4],
        vips_v6: vec![],
        tcp_ports: vec![80],
        udp_ports: vec![],
        start_decap,
        servers: false,
        lb_bin: Some(lb_bin.to_path_buf()),
        xdp_mode: "native".into(),
        ..lb_tests::topology::TopologyOptions::default()
    }
}

/// How long and how often to measure.
#[derive(Clone, Debug)]
pub struct Budget {
    pub quick: bool,
    /// Rounds of every measurement (each round measures every case once,
    /// so ratios come from the same round).
    pub rounds: usize,
    /// BPF_PROG_TEST_RUN runs per case and round.
    pub prog_runs: usize,
    /// Seconds per live-frames run.
    pub veth_secs: f64,
    pub maglev_reps: usize,
    pub swap_reps: usize,
    pub failover_cycles: usize,
    /// Seconds per HAProxy / lb load run.
    pub load_secs: f64,
    pub latency_requests: usize,
}

impl Budget {
    pub fn full() -> Budget {
        Budget {
            quick: false,
            rounds: 5,
            prog_runs: 20_000,
            veth_secs: 3.0,
            maglev_reps: 15,
            swap_reps: 30,
            failover_cycles: 8,
            load_secs: 5.0,
            latency_requests: 2000,
        }
    }

    pub fn quick() -> Budget {
        Budget {
            quick: true,
            rounds: 3,
            prog_runs: 5_000,
            veth_secs: 1.0,
            maglev_reps: 5,
            swap_reps: 10,
            failover_cycles: 3,
            load_secs: 2.0,
            latency_requests: 500,
        }
    }
}

/// Whether the user asked to stop (Ctrl-C).
pub fn aborted() -> anyhow::Result<()> {
    if lb_tests::netns::abort_requested() {
        anyhow::bail!("interrupted");
    }
    Ok(())
}
