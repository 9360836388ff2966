//! The agent's reply: one line of words separated by spaces, tabs or
//! commas, as HAProxy's agent-check reads it. Words are case-insensitive;
//! when several of one kind appear, the last wins; a word not understood is
//! reported and ignored (the others still apply), as HAProxy does.

use std::fmt;

/// Longest reply read, newline included: a line that does not end within
/// it is ignored.
pub const MAX_REPLY: usize = 512;
/// Highest weight percentage taken: HAProxy caps the weight an agent sets
/// at its largest weight, 256; lb's weights go to 10000, so it caps the
/// percentage at 256% instead.
pub const MAX_AGENT_PCT: u32 = 256;

/// The admin state an agent asks for (`ready` clears its own drain/maint).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentAdmin {
    Ready,
    Drain,
    Maint,
}

/// What one reply asks for; `None`: not mentioned, left as it was.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Reply {
    pub weight_pct: Option<u32>,
    pub admin: Option<AgentAdmin>,
    /// `Some(true)`: `up`; `Some(false)`: `down`, `fail` or `stopped`.
    pub up: Option<bool>,
    /// The word that set `up`, and the text after `#` (HAProxy's description).
    pub health_word: Option<String>,
    pub reason: Option<String>,
    /// Words not understood, and values out of range, in order.
    pub warnings: Vec<String>,
}

impl Reply {
    /// True when the reply changes nothing.
    pub fn is_empty(&self) -> bool {
        self.weight_pct.is_none() && self.admin.is_none() && self.up.is_none()
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(p) = self.weight_pct {
            parts.push(format!("weight {p}%"));
        }
        if let Some(a) = self.admin {
            parts.push(format!("{a:?}").to_lowercase());
        }
        match (self.up, &self.health_word) {
            (Some(_), Some(w)) => parts.push(w.clone()),
            (Some(true), None) => parts.push("up".into()),
            (Some(false), None) => parts.push("down".into()),
            _ => {}
        }
        if let Some(r) = &self.reason {
            parts.push(format!("({r})"));
        }
        if parts.is_empty() {
            parts.push("no change".into());
        }
        for w in &self.warnings {
            parts.push(format!("[{w}]"));
        }
        f.write_str(&parts.join(" "))
    }
}

/// The line of `buf` (bytes up to the first CR or LF), or why there is none.
pub fn line(buf: &[u8]) -> Result<&str, String> {
    let Some(end) = buf.iter().position(|&b| b == b'\n' || b == b'\r') else {
        return Err(if buf.len() >= MAX_REPLY {
            format!("no end of line within {MAX_REPLY} bytes")
        } else {
            "incomplete line (no end of line before the connection closed)".into()
        });
    };
    std::str::from_utf8(&buf[..end]).map_err(|_| "the line is not UTF-8".into())
}

/// Parses one reply line (without its end of line).
pub fn parse(line: &str) -> Reply {
    let mut r = Reply::default();
    let (words, reason) = match line.split_once('#') {
        Some((w, d)) => (w, Some(d.trim())),
        None => (line, None),
    };
    for word in words.split([' ', '\t', ',']).filter(|w| !w.is_empty()) {
        match word.to_ascii_lowercase().as_str() {
            "up" => (r.up, r.health_word) = (Some(true), Some("up".into())),
            w @ ("down" | "fail" | "stopped") => (r.up, r.health_word) = (Some(false), Some(w.into())),
            "ready" => r.admin = Some(AgentAdmin::Ready),
            "drain" => r.admin = Some(AgentAdmin::Drain),
            "maint" => r.admin = Some(AgentAdmin::Maint),
            w if w.starts_with(|c: char| c.is_ascii_digit()) && w.contains('%') => match percent(w) {
                Some(p) if p > u64::from(MAX_AGENT_PCT) => {
                    r.weight_pct = Some(MAX_AGENT_PCT);
                    r.warnings.push(format!("{word} capped at {MAX_AGENT_PCT}%"));
                }
                Some(p) => r.weight_pct = Some(p as u32),
                None => r.warnings.push(format!("bad weight {word:?} ignored")),
            },
            // HAProxy's `maxconn:N` limits queued connections; an XDP
            // balancer queues nothing.
            w if w.starts_with("maxconn:") => r.warnings.push(format!("{word:?} ignored: lb has no maxconn")),
            _ => r.warnings.push(format!("unknown word {word:?} ignored")),
        }
    }
    // As HAProxy: the description only matters with a health word.
    r.reason = reason.filter(|d| !d.is_empty() && r.up.is_some()).map(str::to_string);
    r
}

/// The number of `N%`; `None` when anything else is in the word.
fn percent(word: &str) -> Option<u64> {
    let digits = word.strip_suffix('%').filter(|d| d.bytes().all(|b| b.is_ascii_digit()))?;
    // Too many digits for a u64: above the cap anyway.
    Some(digits.parse::<u64>().unwrap_or(u64::MAX))
}
