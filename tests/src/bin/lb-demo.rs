//! `lb-demo --lb-bin PATH`: builds a namespace topology (client, lb, router,
//! 3 backends), starts `lb run` in native XDP mode with three VIPs, sends
//! TCP and UDP traffic from the client and prints which backend served
//! what. Exits non-zero if any connection failed or moved between
//! backends, or if a backend got no connection. Cleans everything up on
//! exit, on failure and on Ctrl-C.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use lb_tests::netns::{abort_requested, install_abort_on_signals, is_root};
use lb_tests::topology::{Forwarding, Proto, Topology, TopologyOptions, VIP_V4, VIP_V6, VipSpec, default_lb_bin};
use lb_tests::traffic::{Summary, TcpLoad, UdpLoad, tcp_client, udp_client};

const USAGE: &str = "\
Usage: lb-demo [--lb-bin PATH]

Builds a test network in namespaces (client, lb, router, 3 backends; only
198.18.0.0/15 and 2001:db8::/32, nothing routed to the host), runs
`lb run` on the lb's veth in native XDP mode and sends traffic through it:
  TCP 198.18.100.1:80      ipip   300 connections x 3 requests
  UDP 198.18.100.1:5353    ipip    50 sockets x 3 datagrams
  TCP [2001:db8:100::1]:80 l2dsr  100 connections x 3 requests
then prints per VIP and backend how many connections each backend got.
Needs root.

Options:
  --lb-bin PATH   the lb binary (default: $LB_BIN, else target/debug/lb)
  -h, --help      this text
";

struct Case {
    vip: VipSpec,
    count: usize,
    per_conn: usize,
}

struct Outcome {
    /// Packets the router forwarded meanwhile (IPIP goes through it,
    /// l2dsr does not).
    routed: u64,
    label: String,
    forwarding: &'static str,
    unit: &'static str,
    summary: Summary,
    secs: f64,
}

fn parse_args() -> Result<Option<PathBuf>> {
    let mut lb_bin = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(None);
            }
            "--lb-bin" => lb_bin = Some(PathBuf::from(args.next().context("--lb-bin needs a PATH")?)),
            s if s.starts_with("--lb-bin=") => lb_bin = Some(PathBuf::from(&s["--lb-bin=".len()..])),
            other => bail!("unknown argument {other:?}\n\n{USAGE}"),
        }
    }
    Ok(Some(lb_bin.unwrap_or_else(default_lb_bin)))
}

fn label(v: &VipSpec) -> String {
    format!("{} {}", v.protocol.as_str(), v.target())
}

fn check_abort() -> Result<()> {
    if abort_requested() {
        bail!("interrupted");
    }
    Ok(())
}

fn run(lb_bin: PathBuf) -> Result<bool> {
    let t0 = Instant::now();
    let opts = TopologyOptions { lb_bin: Some(lb_bin), ..Default::default() };
    println!("building the topology (client, lb, router, 3 backends) ...");
    let mut topo = Topology::new(opts)?;
    check_abort()?;
    println!("  namespaces {}{{switch,client,lb,router,backend1..3}}, built in {:.2?}", topo.prefix(), t0.elapsed());
    let cases = [
        Case { vip: VipSpec::tcp(VIP_V4, 80, Forwarding::Ipip), count: 300, per_conn: 3 },
        Case { vip: VipSpec::udp(VIP_V4, 5353, Forwarding::Ipip), count: 50, per_conn: 3 },
        Case { vip: VipSpec::tcp(VIP_V6, 80, Forwarding::L2dsr), count: 100, per_conn: 3 },
    ];
    let vips: Vec<VipSpec> = cases.iter().map(|c| c.vip.clone()).collect();
    let config = topo.write_config(&vips);
    println!("starting `lb run --config {}` in {} ...", config.display(), topo.lb().ns);
    let t1 = Instant::now();
    topo.start_lb(&config)?;
    println!("  lb ready after {:.2?} (native XDP on {})", t1.elapsed(), topo.lb().ifname);

    let client = topo.client().ns.clone();
    let names = topo.backend_names();
    let mut outcomes = Vec::new();
    for c in &cases {
        check_abort()?;
        let t = Instant::now();
        let fwd_before = topo.router_forwarded()?;
        let (results, unit) = match c.vip.protocol {
            Proto::Tcp => {
                let mut load = TcpLoad::new(c.vip.target(), c.count);
                load.requests = c.per_conn;
                (tcp_client(&client, &load)?, "connections")
            }
            Proto::Udp => {
                let mut load = UdpLoad::new(c.vip.target(), c.count);
                load.datagrams = c.per_conn;
                (udp_client(&client, &load)?, "sockets")
            }
        };
        check_abort()?;
        let fwd_after = topo.router_forwarded()?;
        let routed = if c.vip.address.is_ipv4() { fwd_after.0 - fwd_before.0 } else { fwd_after.1 - fwd_before.1 };
        outcomes.push(Outcome {
            routed,
            label: label(&c.vip),
            forwarding: c.vip.forwarding.as_str(),
            unit,
            summary: Summary::new(&results, &names),
            secs: t.elapsed().as_secs_f64(),
        });
    }
    let children = topo.check_children();
    // lb's own view of the same traffic (informative; not checked).
    let lb_stats = topo.lb_cli(&["stats"]);

    // Table.
    println!();
    let mut header = format!("{:<28} {:<6} {:>6}", "VIP", "fwd", "total");
    for n in &names {
        header.push_str(&format!(" {n:>13}"));
    }
    header.push_str(&format!(" {:>7} {:>6} {:>6} {:>7} {:>7}", "sticky", "moved", "failed", "routed", "time"));
    println!("{header}");
    println!("{}", "-".repeat(header.len()));
    for o in &outcomes {
        let s = &o.summary;
        let mut line = format!("{:<28} {:<6} {:>6}", o.label, o.forwarding, s.total);
        for n in &names {
            let k = s.per_backend.get(n).copied().unwrap_or(0);
            let pct = 100.0 * k as f64 / s.total.max(1) as f64;
            line.push_str(&format!(" {:>13}", format!("{k} ({pct:.0}%)")));
        }
        line.push_str(&format!(
            " {:>7} {:>6} {:>6} {:>7} {:>6.2}s",
            s.sticky_ok(),
            s.not_sticky,
            s.failures,
            o.routed,
            o.secs
        ));
        println!("{line}");
    }
    println!("(routed: packets the router forwarded meanwhile; IPIP goes lb -> router -> backend,");
    println!(" l2dsr goes lb -> backend directly; answers always go backend -> client directly)");
    println!();

    let mut ok = true;
    let (mut good, mut total) = (0, 0);
    for o in &outcomes {
        let s = &o.summary;
        good += s.sticky_ok();
        total += s.total;
        println!("{}/{} {} stayed on one backend ({})", s.sticky_ok(), s.total, o.unit, o.label);
        for e in &s.errors {
            println!("  {}: {e}", o.label);
        }
        let idle = s.idle_backends();
        if !idle.is_empty() {
            println!("  {}: no connection reached {}", o.label, idle.join(", "));
        }
        ok &= s.failures == 0 && s.not_sticky == 0 && idle.is_empty();
    }
    println!("total: {good}/{total} connections and sockets stayed on one backend");
    match lb_stats {
        Ok(out) => println!("\n`lb stats` in {}:\n{}", topo.lb().ns, out.trim_end()),
        Err(e) => println!("\n(`lb stats` unavailable: {e:#})"),
    }
    if let Err(e) = children {
        println!("{e:#}");
        ok = false;
    }
    if !ok {
        println!("\n{}", topo.logs());
    }
    if let Err(e) = topo.stop_lb() {
        println!("{e:#}");
        ok = false;
    }
    drop(topo);
    println!("cleaned up; {:.2?} in all", t0.elapsed());
    Ok(ok)
}

fn main() -> ExitCode {
    let lb_bin = match parse_args() {
        Ok(Some(p)) => p,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lb-demo: {e:#}");
            return ExitCode::from(2);
        }
    };
    if !is_root() {
        eprintln!("lb-demo: needs root (network namespaces and XDP)");
        return ExitCode::from(2);
    }
    if let Err(e) = install_abort_on_signals() {
        eprintln!("lb-demo: {e:#}");
        return ExitCode::from(2);
    }
    // `run` owns the topology: it is torn down (Drop) before we return,
    // whether the demo passed, failed or was interrupted.
    match run(lb_bin) {
        Ok(true) => {
            println!("demo passed");
            ExitCode::SUCCESS
        }
        Ok(false) => {
            println!("demo FAILED");
            ExitCode::FAILURE
        }
        Err(e) if abort_requested() => {
            eprintln!("lb-demo: interrupted ({e:#}); cleaned up");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("lb-demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}
