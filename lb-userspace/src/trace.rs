//! `lb trace SRC[:PORT] DST:PORT [tcp|udp]`: which backend a 5-tuple goes
//! to right now and why, from the agent's reading of the live maps; with
//! `--instances`, from every lb instance listed, and whether they agree.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use lb::{agent::trace::TraceRequest, config::Protocol};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::client::{Client, ClientError};

#[derive(Args)]
#[command(after_help = "\
Examples:
  lb trace 198.18.0.1:40312 198.18.100.1:80
  lb trace [2001:db8::1]:5353 [2001:db8:100::1]:53 udp
  lb trace 198.18.0.1 198.18.100.1:443/tcp --instances /etc/lb/instances

Without a source port, the answer is the ring decision for a SYN from port 0
(a real client's port changes the hash, and so possibly the backend).
The instances file lists control sockets, one per line (# starts a comment).")]
pub struct TraceArgs {
    /// Client address, with its port when known: 198.18.0.1:40312, [2001:db8::1]:40312.
    #[arg(value_name = "SRC[:PORT]")]
    pub src: String,
    /// The VIP: 198.18.100.1:80, [2001:db8::1]:443, or 198.18.100.1:80/udp.
    #[arg(value_name = "DST:PORT")]
    pub dst: String,
    /// Transport protocol [default: tcp, or the one DST names].
    #[arg(value_enum)]
    pub protocol: Option<ProtoArg>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Ask every lb instance whose control socket this file lists.
    #[arg(long, value_name = "FILE")]
    pub instances: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProtoArg {
    Tcp,
    Udp,
}

/// `ADDR`, `ADDR:PORT`, `[V6]`, `[V6]:PORT` or a bare IPv6 address.
fn endpoint(s: &str) -> Result<(IpAddr, Option<u16>), String> {
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Ok((sa.ip(), Some(sa.port())));
    }
    let bare = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')).unwrap_or(s);
    bare.parse::<IpAddr>()
        .map(|ip| (ip, None))
        .map_err(|_| format!("{s:?} is not an address like 198.18.0.1, 198.18.0.1:40312 or [2001:db8::1]:40312"))
}

/// The request the arguments describe, and whether the source port was given.
pub fn request(args: &TraceArgs) -> Result<(TraceRequest, bool), String> {
    let (src, sport) = endpoint(&args.src)?;
    let (dst, named) = match args.dst.rsplit_once('/') {
        Some((d, "tcp")) => (d, Some(Protocol::Tcp)),
        Some((d, "udp")) => (d, Some(Protocol::Udp)),
        Some(_) => return Err(format!("{:?}: the protocol after / must be tcp or udp", args.dst)),
        None => (args.dst.as_str(), None),
    };
    let (dst, dport) = endpoint(dst)?;
    let dport =
        dport.ok_or_else(|| format!("{:?} needs a port, like 198.18.100.1:80 or [2001:db8::1]:443", args.dst))?;
    let given = args.protocol.map(|p| match p {
        ProtoArg::Tcp => Protocol::Tcp,
        ProtoArg::Udp => Protocol::Udp,
    });
    let protocol = match (given, named) {
        (Some(a), Some(b)) if a != b => {
            return Err(format!("{:?} names {b}, but the protocol argument is {a}", args.dst));
        }
        (a, b) => a.or(b).unwrap_or(Protocol::Tcp),
    };
    if src.is_ipv4() != dst.is_ipv4() {
        return Err(format!("{src} and {dst} are of different address families"));
    }
    Ok((TraceRequest { src, sport: sport.unwrap_or(0), dst, dport, protocol }, sport.is_some()))
}

/// What the agent read from its maps.
pub type TraceView = lb::dataplane::Trace;

#[derive(Clone, Debug, Deserialize)]
struct Answer {
    vip: String,
    trace: Option<TraceView>,
}

/// Where the next packet of the flow goes, and by which rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    NotVip,
    /// A valid connection-table entry.
    Established(IpAddr),
    /// The ring (a new flow, or a re-pick of a stale entry): `None` is a drop.
    Ring {
        backend: Option<IpAddr>,
        repick: bool,
    },
    /// A new flow of a round-robin or least-connections VIP: the backend
    /// depends on the instance's state at that moment.
    PerInstance,
}

impl Decision {
    pub fn of(trace: Option<&TraceView>) -> Decision {
        match trace {
            None => Decision::NotVip,
            Some(TraceView { conntrack_backend: Some(b), .. }) => Decision::Established(*b),
            Some(t) if t.algorithm.per_instance() => Decision::PerInstance,
            Some(t) => Decision::Ring { backend: t.ring_backend, repick: t.conntrack_stale },
        }
    }

    pub fn backend(self) -> Option<IpAddr> {
        match self {
            Decision::NotVip | Decision::PerInstance => None,
            Decision::Established(b) => Some(b),
            Decision::Ring { backend, .. } => backend,
        }
    }

    fn by(self) -> &'static str {
        match self {
            Decision::NotVip => "not-a-vip",
            Decision::Established(_) => "connection-table",
            Decision::Ring { repick: true, .. } => "ring-repick",
            Decision::Ring { .. } => "ring",
            Decision::PerInstance => "per-instance",
        }
    }
}

fn target(b: Option<IpAddr>) -> String {
    b.map_or_else(|| "no backend: dropped (drop_no_backend)".into(), |b| b.to_string())
}

fn ring_text(t: &TraceView) -> String {
    if t.algorithm.per_instance() {
        return format!(
            "{}: picked from this instance's state when the flow starts (not predictable; \
             another instance may pick another backend)",
            t.algorithm
        );
    }
    format!(
        "hash {:#010x}, ring entry {} of {} (generation {}, {}) -> {}",
        t.hash,
        t.entry,
        t.ring_size,
        t.ring_generation,
        t.algorithm,
        target(t.ring_backend)
    )
}

/// One line (two for an established flow whose tuple a SYN would move).
pub fn explain(vip: &str, trace: Option<&TraceView>, protocol: Protocol) -> String {
    let Some(t) = trace else {
        return format!("{vip} is not a VIP: the program passes the packet to the kernel");
    };
    match Decision::of(trace) {
        Decision::Established(b) => {
            let mut s = format!("established: connection-table entry -> {b}");
            if protocol == Protocol::Tcp && t.ring_backend != Some(b) && !t.algorithm.per_instance() {
                let _ = write!(s, "\n  (a SYN reusing this tuple would be re-picked: {})", ring_text(t));
            }
            s
        }
        Decision::Ring { repick: true, .. } => {
            format!("re-pick: its connection-table entry names a removed backend; {}", ring_text(t))
        }
        _ => format!("new flow: {}", ring_text(t)),
    }
}

fn flow_text(r: &TraceRequest) -> String {
    let src = if r.sport == 0 { r.src.to_string() } else { SocketAddr::new(r.src, r.sport).to_string() };
    format!("{src} -> {}", r.vip())
}

fn ask(client: &Client, req: &TraceRequest) -> Result<Answer, ClientError> {
    let v = client.call("POST", "/v1/trace", Some(req))?;
    serde_json::from_value(v).map_err(|e| ClientError::Protocol {
        path: PathBuf::from("(trace answer)"),
        reason: format!("unexpected trace answer: {e}"),
    })
}

fn as_json(req: &TraceRequest, answer: &Answer) -> Value {
    let d = Decision::of(answer.trace.as_ref());
    json!({
        "flow": flow_text(req),
        "vip": answer.vip,
        "backend": d.backend(),
        "by": d.by(),
        "trace": answer.trace,
    })
}

/// The control sockets an instances file lists.
pub fn instances(text: &str) -> Vec<PathBuf> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .filter(|l| !l.is_empty())
        .map(PathBuf::from)
        .collect()
}

pub fn run(agent: &Client, args: &TraceArgs) -> anyhow::Result<()> {
    let (req, port_given) = request(args).map_err(|e| ClientError::Answered { status: 400, message: e })?;
    let note = (!port_given).then_some(
        "no source port given: the ring decision for a SYN from port 0 (a client's real port may land elsewhere)",
    );
    let Some(file) = &args.instances else {
        let answer = ask(agent, &req)?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&as_json(&req, &answer))?);
        } else {
            println!("{}", flow_text(&req));
            if let Some(n) = note {
                println!("{n}");
            }
            println!("{}", explain(&answer.vip, answer.trace.as_ref(), req.protocol));
        }
        return Ok(());
    };
    several(file, &req, args.json, note)
}

fn several(file: &Path, req: &TraceRequest, json: bool, note: Option<&str>) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let sockets = instances(&text);
    if sockets.is_empty() {
        bail!("{} lists no control sockets", file.display());
    }
    let answers: Vec<(PathBuf, Result<Answer, ClientError>)> =
        sockets.into_iter().map(|s| (s.clone(), ask(&Client::new(s), req))).collect();
    let mut votes: BTreeMap<String, usize> = BTreeMap::new();
    for (_, a) in &answers {
        if let Ok(a) = a {
            let vote = match Decision::of(a.trace.as_ref()) {
                Decision::PerInstance => "each instance's own pick (round-robin / least-connections)".into(),
                d => target(d.backend()),
            };
            *votes.entry(vote).or_default() += 1;
        }
    }
    let answered = answers.iter().filter(|(_, a)| a.is_ok()).count();
    let agree = votes.len() <= 1;
    if json {
        let list: Vec<Value> = answers
            .iter()
            .map(|(s, a)| match a {
                Ok(a) => json!({ "instance": s, "answer": as_json(req, a) }),
                Err(e) => json!({ "instance": s, "error": e.to_string() }),
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "instances": list, "agree": agree, "answered": answered }))?
        );
    } else {
        println!("{}", flow_text(req));
        if let Some(n) = note {
            println!("{n}");
        }
        let width = answers.iter().map(|(s, _)| s.display().to_string().len()).max().unwrap_or(0);
        for (s, a) in &answers {
            let line = match a {
                Ok(a) => {
                    explain(&a.vip, a.trace.as_ref(), req.protocol).replace('\n', &format!("\n{:w$}  ", "", w = width))
                }
                Err(e) => format!("no answer: {e}"),
            };
            println!("{:<width$}  {line}", s.display().to_string());
        }
        match votes.iter().next() {
            Some((b, _)) if agree => println!("the {answered} instances that answered agree: -> {b}"),
            None => {}
            Some(_) => {
                let list: Vec<String> = votes.iter().map(|(b, n)| format!("{b} ({n})")).collect();
                println!("the instances DISAGREE: {}", list.join(", "));
            }
        }
    }
    if let Some((_, Err(e))) = answers.into_iter().find(|(_, a)| a.is_err()) {
        return Err(e.into());
    }
    if !agree {
        bail!("the instances disagree");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(src: &str, dst: &str, protocol: Option<ProtoArg>) -> TraceArgs {
        TraceArgs { src: src.into(), dst: dst.into(), protocol, json: false, instances: None }
    }

    #[test]
    fn arguments() {
        let (r, given) = request(&args("198.18.0.1:40312", "198.18.100.1:80", None)).unwrap();
        assert!(given);
        assert_eq!((r.sport, r.dport, r.protocol), (40312, 80, Protocol::Tcp));
        let (r, given) = request(&args("198.18.0.1", "198.18.100.1:53", Some(ProtoArg::Udp))).unwrap();
        assert!(!given);
        assert_eq!((r.sport, r.protocol), (0, Protocol::Udp));
        let (r, _) = request(&args("[2001:db8::1]:443", "[2001:db8:100::1]:443", None)).unwrap();
        assert_eq!(
            (r.src.to_string(), r.sport, r.dst.to_string()),
            ("2001:db8::1".into(), 443, "2001:db8:100::1".into())
        );
        for src in ["2001:db8::1", "[2001:db8::1]"] {
            let (r, given) = request(&args(src, "[2001:db8:100::1]:80", None)).unwrap();
            assert_eq!((r.src.to_string(), given), ("2001:db8::1".into(), false));
        }
        let (r, _) = request(&args("198.18.0.1", "198.18.100.1:53/udp", None)).unwrap();
        assert_eq!(r.protocol, Protocol::Udp);
    }

    #[test]
    fn bad_arguments() {
        let e = |s: &str, d: &str, p| request(&args(s, d, p)).unwrap_err();
        assert!(e("198.18.0.1", "198.18.100.1", None).contains("needs a port"));
        assert!(e("nope", "198.18.100.1:80", None).contains("not an address"));
        assert!(e("2001:db8::1", "198.18.100.1:80", None).contains("different address families"));
        assert!(e("198.18.0.1", "198.18.100.1:80/udp", Some(ProtoArg::Tcp)).contains("names udp"));
        assert!(e("198.18.0.1", "198.18.100.1:80/sctp", None).contains("tcp or udp"));
    }

    fn trace(ct: Option<&str>, ring: Option<&str>, stale: bool) -> TraceView {
        TraceView {
            algorithm: Default::default(),
            vip_slot: 0,
            ring_size: 65537,
            ring_generation: 1,
            hash: 0xdead_beef,
            entry: 1234,
            ring_backend: ring.map(|r| r.parse().unwrap()),
            conntrack_backend: ct.map(|r| r.parse().unwrap()),
            conntrack_stale: stale,
            conntrack_open: ct.is_some(),
        }
    }

    #[test]
    fn explanations() {
        let vip = "198.18.100.1:80/tcp";
        let t = trace(None, Some("198.18.0.11"), false);
        assert_eq!(
            explain(vip, Some(&t), Protocol::Tcp),
            "new flow: hash 0xdeadbeef, ring entry 1234 of 65537 (generation 1, maglev) -> 198.18.0.11"
        );
        let t = trace(Some("198.18.0.12"), Some("198.18.0.12"), false);
        assert_eq!(explain(vip, Some(&t), Protocol::Tcp), "established: connection-table entry -> 198.18.0.12");
        let t = trace(Some("198.18.0.12"), Some("198.18.0.11"), false);
        assert!(explain(vip, Some(&t), Protocol::Tcp).contains("a SYN reusing this tuple"));
        assert!(!explain(vip, Some(&t), Protocol::Udp).contains("SYN"));
        let mut t = trace(Some("198.18.0.12"), None, false);
        t.algorithm = lb::config::Algorithm::RoundRobin;
        assert_eq!(explain(vip, Some(&t), Protocol::Tcp), "established: connection-table entry -> 198.18.0.12");
        t.conntrack_backend = None;
        assert!(explain(vip, Some(&t), Protocol::Tcp).starts_with("new flow: round-robin: picked from this instance"));
        assert_eq!(Decision::of(Some(&t)).by(), "per-instance");
        let t = trace(None, None, true);
        let s = explain(vip, Some(&t), Protocol::Tcp);
        assert!(s.starts_with("re-pick") && s.ends_with("no backend: dropped (drop_no_backend)"), "{s}");
        assert!(explain(vip, None, Protocol::Tcp).contains("not a VIP"));
        assert_eq!(Decision::of(Some(&trace(Some("198.18.0.12"), None, false))).backend(), "198.18.0.12".parse().ok());
    }

    #[test]
    fn instances_file() {
        let list = instances("# lb pair\n/run/lb/a.sock\n\n  /run/lb/b.sock  # second\n");
        assert_eq!(list, vec![PathBuf::from("/run/lb/a.sock"), PathBuf::from("/run/lb/b.sock")]);
    }
}
