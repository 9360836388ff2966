//! Per-backend counts of a client run, and the end-to-end invariants checked on them.

use std::collections::BTreeMap;
use std::fmt;

use anyhow::{Result, bail};

use super::client::ConnResult;

/// Per-backend counts and failures of a client run.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Connections (or UDP sockets) attempted.
    pub total: usize,
    /// Connections that failed (connect error, timeout, bad answer...).
    pub failures: usize,
    /// Connections whose answers did not all name the same backend.
    pub not_sticky: usize,
    /// Connections per backend, by the backend of their first answer.
    /// Every expected backend has an entry (possibly 0).
    pub per_backend: BTreeMap<String, usize>,
    /// Answers (requests or datagrams) in all.
    pub answers: usize,
    /// The first few distinct errors, for messages.
    pub errors: Vec<String>,
    /// Connections without error whose answers all named one backend.
    pub good: usize,
}

impl Summary {
    /// Summarises `results`; `backends` lists the names that should appear
    /// (an answer naming another backend still gets its own entry).
    pub fn new(results: &[ConnResult], backends: &[String]) -> Summary {
        let mut s = Summary { total: results.len(), ..Default::default() };
        for b in backends {
            s.per_backend.insert(b.clone(), 0);
        }
        for r in results {
            s.answers += r.backends.len();
            if let Some(e) = &r.error {
                s.failures += 1;
                if s.errors.len() < 10 && !s.errors.contains(e) {
                    s.errors.push(e.clone());
                }
            }
            if r.error.is_none() && r.sticky() {
                s.good += 1;
            }
            if let Some(first) = r.backends.first() {
                *s.per_backend.entry(first.clone()).or_insert(0) += 1;
                if !r.sticky() {
                    s.not_sticky += 1;
                    if s.errors.len() < 10 {
                        s.errors.push(format!("moved between backends: {:?}", r.backends));
                    }
                }
            }
        }
        s
    }

    /// Connections that succeeded and stayed on one backend.
    pub fn sticky_ok(&self) -> usize {
        self.good
    }

    /// Backends that got no connection.
    pub fn idle_backends(&self) -> Vec<String> {
        self.per_backend.iter().filter(|(_, n)| **n == 0).map(|(b, _)| b.clone()).collect()
    }

    /// Checks the end-to-end invariants: every connection succeeded and was
    /// sticky, every backend got at least one, and each backend's share lies
    /// in `[min_share, max_share]` (fractions of `total`).
    pub fn check(&self, min_share: f64, max_share: f64) -> Result<()> {
        let mut problems = Vec::new();
        if self.total == 0 {
            problems.push("no connection was attempted".to_string());
        }
        if self.failures > 0 {
            problems.push(format!("{} of {} connections failed", self.failures, self.total));
        }
        if self.not_sticky > 0 {
            problems.push(format!("{} connections moved between backends", self.not_sticky));
        }
        for (b, n) in &self.per_backend {
            let share = *n as f64 / self.total.max(1) as f64;
            if *n == 0 {
                problems.push(format!("{b} got no connection"));
            } else if share < min_share || share > max_share {
                problems.push(format!(
                    "{b} got {n}/{} connections ({:.0}%), outside {:.0}%..{:.0}%",
                    self.total,
                    share * 100.0,
                    min_share * 100.0,
                    max_share * 100.0
                ));
            }
        }
        if problems.is_empty() { Ok(()) } else { bail!("{}\n{self}", problems.join("; ")) }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (b, n) in &self.per_backend {
            let pct = 100.0 * *n as f64 / self.total.max(1) as f64;
            writeln!(f, "  {b:<12} {n:>5} ({pct:5.1}%)")?;
        }
        write!(
            f,
            "  {}/{} stayed on one backend, {} failed, {} moved, {} answers",
            self.sticky_ok(),
            self.total,
            self.failures,
            self.not_sticky,
            self.answers
        )?;
        for e in &self.errors {
            write!(f, "\n  error: {e}")?;
        }
        Ok(())
    }
}
