//! `lb-bench`: lb's benchmarks (issue 4). Per-packet cost through
//! BPF_PROG_TEST_RUN, throughput on veth with a live-frames generator,
//! control-plane speed, and lb against HAProxy. Prints tables, writes
//! `report.json` (flat keys; null + `.reason` for what could not be
//! measured) and `report.svg`. Asserts nothing about time.

#[path = "../bench/mod.rs"]
mod bench;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use bench::report::Report;
use bench::{Budget, config, control, haproxy, prog, svg, sys, veth};
use lb::dataplane::Dataplane;
use lb_tests::netns::{install_abort_on_signals, is_root};
use lb_tests::topology::default_lb_bin;

const USAGE: &str = "\
Usage: lb-bench [--quick] [--lb-bin PATH] [--only PARTS] [--out DIR]
                [--rounds N] [--prog-runs N] [--compare NAME=OBJ,...]
                [--compare-capacity N,...]

Measures lb (needs root; builds its own namespaces and veths from
198.18.0.0/15 and removes them again):
  prog     cost per packet of lb_balancer (BPF_PROG_TEST_RUN, fresh frame
           per run, net of lb_drop), compared with Katran's figures
  control  Maglev builds (M=65537, N=10..4000), table swap into the kernel,
           failover with `lb run` in a veth topology
  veth     Mpps on veth, one core, 64-byte frames: lb_drop ceiling,
           MAC-swap XDP_TX, lb ipip and l2dsr, 1 / 1000 / 1000000 flows
  haproxy  lb vs Debian's HAProxy (installed with apt-get when missing):
           new connections/s, packets/s, latency

Options:
  --quick          fewer rounds and shorter runs (under 3 minutes)
  --lb-bin PATH    the lb binary (default: $LB_BIN, else next to lb-bench)
  --only PARTS     comma-separated subset of prog,control,veth,haproxy
  --out DIR        where report.json and report.svg go (default:
                   target/bench next to the binary's target directory)
  --rounds N       rounds of every measurement (default 5, quick 3)
  --prog-runs N    BPF_PROG_TEST_RUN runs per case and round
  --compare NAME=OBJ,...
                   only the per-packet harness, on each given build of the
                   balancer object (e.g. a copy of target/ebpf/.../lb-balancer
                   before a change) and on lb's own (\"lb\"), rounds
                   interleaved; writes compare.<NAME>.<case>
  --compare-capacity N,...
                   the same, with lb's own build loaded with a connection
                   table of N entries (global.conntrack_capacity) as build
                   \"ct<N>\", next to the default size
  --redraw         measure nothing: draw report.svg again from the
                   report.json in --out
  -h, --help       this text
";

const PARTS: [&str; 4] = ["prog", "control", "veth", "haproxy"];

struct Args {
    budget: Budget,
    lb_bin: PathBuf,
    only: Vec<String>,
    out: PathBuf,
    compare: Vec<(String, PathBuf)>,
    /// Connection-table sizes to compare lb's own build at.
    capacities: Vec<u32>,
    /// Only draw report.svg again from report.json.
    redraw: bool,
}

fn default_out() -> PathBuf {
    // target/<profile>/lb-bench -> target/bench
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent()?.parent().map(|t| t.join("bench")))
        .unwrap_or_else(|| PathBuf::from("target/bench"))
}

fn parse_args() -> Result<Option<Args>> {
    let mut quick = false;
    let (mut lb_bin, mut only, mut out, mut rounds, mut prog_runs) = (None, None, None, None, None);
    let mut compare = Vec::new();
    let mut capacities = Vec::new();
    let mut redraw = false;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        let mut value = |name: &str| -> Result<String> {
            inline.clone().or_else(|| it.next()).with_context(|| format!("{name} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(None);
            }
            "--quick" => quick = true,
            "--redraw" => redraw = true,
            "--lb-bin" => lb_bin = Some(PathBuf::from(value("--lb-bin")?)),
            "--out" => out = Some(PathBuf::from(value("--out")?)),
            "--only" => {
                let v: Vec<String> = value("--only")?.split(',').map(|s| s.trim().to_string()).collect();
                if let Some(bad) = v.iter().find(|p| !PARTS.contains(&p.as_str())) {
                    bail!("--only: unknown part {bad:?} (parts: {})", PARTS.join(","));
                }
                only = Some(v);
            }
            "--rounds" => rounds = Some(value("--rounds")?.parse::<usize>().context("--rounds")?),
            "--prog-runs" => prog_runs = Some(value("--prog-runs")?.parse::<usize>().context("--prog-runs")?),
            "--compare" => {
                for item in value("--compare")?.split(',') {
                    let (name, path) =
                        item.split_once('=').with_context(|| format!("--compare: {item:?} is not NAME=OBJ"))?;
                    compare.push((name.to_string(), PathBuf::from(path)));
                }
            }
            "--compare-capacity" => {
                for n in value("--compare-capacity")?.split(',') {
                    capacities.push(n.trim().parse::<u32>().with_context(|| format!("--compare-capacity: {n:?}"))?);
                }
            }
            other => bail!("unknown argument {other:?}\n\n{USAGE}"),
        }
    }
    let mut budget = if quick { Budget::quick() } else { Budget::full() };
    if let Some(r) = rounds {
        budget.rounds = r.max(1);
    }
    if let Some(n) = prog_runs {
        budget.prog_runs = n.max(10);
    }
    Ok(Some(Args {
        budget,
        lb_bin: lb_bin.unwrap_or_else(default_lb_bin),
        only: only.unwrap_or_else(|| PARTS.iter().map(|s| s.to_string()).collect()),
        out: out.unwrap_or_else(default_out),
        compare,
        capacities,
        redraw,
    }))
}

static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

fn step(msg: &str) {
    let t = START.get_or_init(Instant::now).elapsed().as_secs_f64();
    eprintln!("lb-bench [{t:6.1}s]: {msg}");
}

fn reason(e: &anyhow::Error) -> String {
    let s: Vec<String> = format!("{e:#}").lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect();
    s.join(" | ").chars().take(300).collect()
}

/// Per core, from figures of this run: lb's one-core veth rate (IPIP)
/// against HAProxy's packets per second of its own CPU time. HAProxy's
/// kernel TCP work in softirq is not all charged to its process, which
/// flatters HAProxy; lb's figure includes the generator and the sink.
fn derived_capacity(r: &mut Report) {
    match (r.get("veth_mpps.ipip"), r.get("haproxy.pps"), r.get("haproxy.cpu_cores_during_pps")) {
        (Some(ipip), Some(pps), Some(cores)) if cores > 0.0 => {
            let per_core = pps / cores;
            r.number("haproxy.pps_per_core", per_core);
            r.number("lb.pps_per_core", ipip * 1e6);
            r.number("lb_vs_haproxy.pps_per_core", ipip * 1e6 / per_core);
        }
        _ => r.null(
            "lb_vs_haproxy.pps_per_core",
            "needs veth_mpps.ipip (part veth) and HAProxy's packets/s and CPU use (part haproxy) from this run",
        ),
    }
}

fn run(args: Args) -> Result<()> {
    let started = *START.get_or_init(Instant::now);
    let b = &args.budget;
    let on = |p: &str| args.only.iter().any(|o| o == p);
    std::fs::create_dir_all(&args.out).with_context(|| format!("create {}", args.out.display()))?;
    let json_path = args.out.join("report.json");
    let svg_path = args.out.join("report.svg");
    if args.redraw {
        draw(&Report::read_json(&json_path)?, &svg_path)?;
        println!("drew {} from {}", svg_path.display(), json_path.display());
        return Ok(());
    }
    let mut r = Report::default();
    let (kernel, cpu) = sys::machine();
    r.set("meta.kernel", serde_json::json!(kernel));
    r.set("meta.cpu", serde_json::json!(cpu));
    r.number("meta.cpus", sys::cpus() as f64);
    r.set("meta.quick", serde_json::json!(b.quick));
    r.number("meta.rounds", b.rounds as f64);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    r.number("meta.unix_time", now as f64);
    r.set("meta.parts", serde_json::json!(args.only.join(",")));
    let skipped = "not run (--only)";

    // One data path for prog, the table swap and veth: 5 VIPs x 100 backends.
    if !args.compare.is_empty() || !args.capacities.is_empty() {
        return compare(&args, &mut r, &json_path);
    }

    let mut dp: Option<Dataplane> = None;
    let mut dp_error = String::new();
    if on("prog") || on("control") || on("veth") {
        step("loading lb_balancer and applying 5 VIPs x 100 backends (65537-entry tables)");
        match Dataplane::load().map_err(anyhow::Error::from).and_then(|mut d| {
            d.apply(&config::config(0)?)?;
            Ok(d)
        }) {
            Ok(d) => dp = Some(d),
            Err(e) => dp_error = format!("loading the data path failed: {}", reason(&e)),
        }
    }

    // 1. per packet
    if on("prog") {
        step(&format!("1. cost per packet: {} rounds x {} runs per case", b.rounds, b.prog_runs));
        let res = match dp.as_mut() {
            Some(d) => prog::run(d, b, &mut r),
            None => Err(anyhow::anyhow!("{dp_error}")),
        };
        if let Err(e) = res {
            step(&format!("per-packet part failed: {e:#}"));
            r.null_all(&prog::KEYS, &reason(&e));
        }
        step("1. done");
        print!("{}", prog::table(&r).render());
    } else {
        r.null_all(&prog::KEYS, skipped);
    }
    r.write_json(&json_path)?;

    // 3. control plane
    if on("control") {
        step("3. control plane: Maglev builds");
        if let Err(e) = control::maglev_builds(b, &mut r) {
            let keys: Vec<String> = control::MAGLEV_NS.iter().map(|n| format!("maglev_build_ms.n{n}")).collect();
            r.null_all(&keys.iter().map(String::as_str).collect::<Vec<_>>(), &reason(&e));
        }
        step("3. control plane: table swap");
        let res = match dp.as_mut() {
            Some(d) => control::table_swap(d, b, &mut r),
            None => Err(anyhow::anyhow!("{dp_error}")),
        };
        if let Err(e) = res {
            r.null("table_swap_ms", &reason(&e));
        }
        step("3. control plane: failover with `lb run` in a veth topology");
        if let Err(e) = control::failover(&args.lb_bin, b, &mut r) {
            step(&format!("failover failed: {e:#}"));
            r.null("failover_ms", &reason(&e));
        }
        print!("{}", control::table(&r).render());
    } else {
        r.null_all(&["maglev_build_ms.n1000", "table_swap_ms", "failover_ms"], skipped);
    }
    r.write_json(&json_path)?;

    // 2. veth
    if on("veth") {
        step(&format!("2. throughput on veth: {} rounds x {} s per case", b.rounds, b.veth_secs));
        let res = match dp.as_mut() {
            Some(d) => veth::run(d, b, &mut r),
            None => Err(anyhow::anyhow!("{dp_error}")),
        };
        if let Err(e) = res {
            step(&format!("veth part failed: {e:#}"));
            r.null_all(&veth::KEYS, &reason(&e));
        }
        print!("{}", veth::table(&r).render());
    } else {
        r.null_all(&veth::KEYS, skipped);
    }
    // The data path (and its ~250 MB of maps) is not needed any more.
    drop(dp);
    r.write_json(&json_path)?;

    // 4. HAProxy
    if on("haproxy") {
        step("4. lb vs HAProxy");
        if let Err(e) = haproxy::run(&args.lb_bin, b, &mut r) {
            step(&format!("HAProxy part failed: {e:#}"));
            r.null_all(&haproxy::KEYS, &reason(&e));
        }
        derived_capacity(&mut r);
        print!("{}", haproxy::table(&r).render());
    } else {
        r.null_all(&haproxy::KEYS, skipped);
    }

    r.number("meta.seconds", started.elapsed().as_secs_f64());
    r.write_json(&json_path)?;
    draw(&r, &svg_path)?;
    println!("\nwrote {} and {} in {:.0} s", json_path.display(), svg_path.display(), started.elapsed().as_secs_f64());
    Ok(())
}

/// Writes the report's picture.
fn draw(r: &Report, svg_path: &std::path::Path) -> Result<()> {
    std::fs::write(svg_path, svg::render(r, &r.title())).with_context(|| format!("write {}", svg_path.display()))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lb-bench: {e:#}");
            return ExitCode::from(64);
        }
    };
    if !is_root() {
        eprintln!("lb-bench: needs root (BPF, XDP, network namespaces)");
        return ExitCode::from(64);
    }
    if let Err(e) = install_abort_on_signals() {
        eprintln!("lb-bench: {e:#}");
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lb-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--compare` and `--compare-capacity`: each build loaded with the benchmark's configuration, then
/// the per-packet harness on all of them.
fn compare(args: &Args, r: &mut Report, json_path: &std::path::Path) -> Result<()> {
    let mut builds = vec![("lb".to_string(), Dataplane::load()?)];
    for (name, path) in &args.compare {
        let obj = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        // Ebpf::load wants the object 8-byte aligned.
        let mut aligned = vec![0u64; obj.len().div_ceil(8)];
        // SAFETY: the u64 buffer holds at least obj.len() bytes, any byte value is valid.
        let bytes = unsafe { std::slice::from_raw_parts_mut(aligned.as_mut_ptr() as *mut u8, obj.len()) };
        bytes.copy_from_slice(&obj);
        let dp = Dataplane::load_object(bytes).with_context(|| format!("loading {}", path.display()))?;
        builds.push((name.clone(), dp));
    }
    for &n in &args.capacities {
        let dp = Dataplane::load_sized(n).with_context(|| format!("loading lb with a connection table of {n}"))?;
        builds.push((format!("ct{n}"), dp));
    }
    for (name, dp) in &mut builds {
        dp.apply(&config::config(0)?).with_context(|| format!("applying the configuration to {name}"))?;
    }
    step(&format!(
        "comparing {} builds: {} rounds x {} runs per case",
        builds.len(),
        args.budget.rounds,
        args.budget.prog_runs
    ));
    let t = prog::compare_builds(&mut builds, &args.budget, r)?;
    print!("{}", t.render());
    r.write_json(json_path)
}
