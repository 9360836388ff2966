//! The LAST PROBE text of `lb status` and `lb top`: one wording for both.

/// A health probe's last result, as the status API reports it.
pub struct Probe<'a> {
    pub last_result: &'a str,
    /// `interval`, `fastinter` or `downinter` (older agents: none).
    pub pace: Option<&'a str>,
    pub interval_ms: u64,
}

/// The probe's result, its pace when it is not the plain interval, and,
/// when the backend has an agent check (`agent` is `Some`), what the agent
/// last said (`None`: nothing yet). `-` when there is neither.
pub fn last_probe(probe: Option<Probe>, agent: Option<Option<&str>>) -> String {
    let probe = probe.map(|p| match p.pace {
        Some(pace) if pace != "interval" => format!("{} ({pace} {} ms)", p.last_result, p.interval_ms),
        _ => p.last_result.to_string(),
    });
    let agent = agent.map(|said| format!("agent: {}", said.unwrap_or("no reply yet")));
    match (probe, agent) {
        (Some(p), Some(a)) => format!("{p}; {a}"),
        (Some(one), None) | (None, Some(one)) => one,
        (None, None) => "-".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wording() {
        let refused = || Some(Probe { last_result: "connect: refused", pace: Some("downinter"), interval_ms: 400 });
        assert_eq!(
            last_probe(refused(), Some(Some("weight 50%"))),
            "connect: refused (downinter 400 ms); agent: weight 50%"
        );
        assert_eq!(
            last_probe(Some(Probe { last_result: "ok", pace: Some("interval"), interval_ms: 2000 }), None),
            "ok"
        );
        assert_eq!(last_probe(None, Some(None)), "agent: no reply yet");
        assert_eq!(last_probe(None, None), "-");
    }
}
