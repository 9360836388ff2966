//! The LAST PROBE text of `lb status` and `lb top`: the status API's probe
//! and agent-check views, and one wording for both commands.

use serde::Deserialize;

/// A backend's health probe, as the status API reports it.
#[derive(Clone, Debug, Deserialize)]
pub struct Probe {
    pub last_result: String,
    /// `interval`, `fastinter` or `downinter` (older agents: none).
    #[serde(default)]
    pub pace: Option<String>,
    #[serde(default)]
    pub interval_ms: u64,
}

/// A backend's agent check, as the status API reports it.
#[derive(Clone, Debug, Deserialize)]
pub struct Agent {
    pub last_effect: Option<String>,
    pub last_error: Option<String>,
}

/// The probe's result, its pace when it is not the plain interval, and,
/// when the backend has an agent check, what the agent last said. `-` when
/// there is neither.
pub fn last_probe(probe: Option<&Probe>, agent: Option<&Agent>) -> String {
    let probe = probe.map(|p| match p.pace.as_deref() {
        Some(pace) if pace != "interval" => format!("{} ({pace} {} ms)", p.last_result, p.interval_ms),
        _ => p.last_result.clone(),
    });
    let agent = agent
        .map(|a| format!("agent: {}", a.last_effect.as_deref().or(a.last_error.as_deref()).unwrap_or("no reply yet")));
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
        let probe =
            |pace: &str, ms| Probe { last_result: "connect: refused".into(), pace: Some(pace.into()), interval_ms: ms };
        let said = Agent { last_effect: Some("weight 50%".into()), last_error: None };
        let silent = Agent { last_effect: None, last_error: None };
        assert_eq!(
            last_probe(Some(&probe("downinter", 400)), Some(&said)),
            "connect: refused (downinter 400 ms); agent: weight 50%"
        );
        assert_eq!(last_probe(Some(&probe("interval", 2000)), None), "connect: refused");
        assert_eq!(last_probe(None, Some(&silent)), "agent: no reply yet");
        assert_eq!(last_probe(None, None), "-");
    }
}
