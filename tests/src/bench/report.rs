//! Results: summaries of repeated measurements, the flat JSON report, and
//! the table printed on stdout.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{Value, json};

/// Median, min and max of repeated measurements.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Stat {
    /// `None` for no samples. NaNs are ignored.
    pub fn of(samples: &[f64]) -> Option<Stat> {
        let mut v: Vec<f64> = samples.iter().copied().filter(|x| !x.is_nan()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        Some(Stat { median: median_sorted(&v), min: v[0], max: v[v.len() - 1], n: v.len() })
    }
}

/// Median of sorted values (mean of the two middle ones for an even count).
pub fn median_sorted(v: &[f64]) -> f64 {
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

/// Median of u32 samples (sorts in place).
pub fn median_u32(v: &mut [u32]) -> f64 {
    v.sort_unstable();
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 { f64::from(v[n / 2]) } else { (f64::from(v[n / 2 - 1]) + f64::from(v[n / 2])) / 2.0 }
}

/// Percentile (0..=100) of sorted values, nearest rank.
pub fn percentile_sorted(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn round(x: f64) -> Value {
    // Three significant decimals are plenty for every figure here.
    let r = if x.abs() >= 100.0 { (x * 10.0).round() / 10.0 } else { (x * 1000.0).round() / 1000.0 };
    json!(r)
}

/// The flat report: `key` -> number, bool, string or null; a null `key`
/// comes with `key.reason`.
#[derive(Default)]
pub struct Report {
    pub values: BTreeMap<String, Value>,
}

impl Report {
    /// `key` = median, `key.min`, `key.max`, `key.runs`.
    pub fn stat(&mut self, key: &str, s: Stat) {
        self.values.insert(key.to_string(), round(s.median));
        self.values.insert(format!("{key}.min"), round(s.min));
        self.values.insert(format!("{key}.max"), round(s.max));
        self.values.insert(format!("{key}.runs"), json!(s.n));
    }

    pub fn number(&mut self, key: &str, x: f64) {
        self.values.insert(key.to_string(), if x.is_finite() { round(x) } else { Value::Null });
    }

    pub fn set(&mut self, key: &str, v: Value) {
        self.values.insert(key.to_string(), v);
    }

    /// `key` = null, `key.reason` = why.
    pub fn null(&mut self, key: &str, reason: &str) {
        self.values.insert(key.to_string(), Value::Null);
        self.values.insert(format!("{key}.reason"), json!(reason));
    }

    /// Marks every key in `keys` null with `reason`, unless already set.
    pub fn null_all(&mut self, keys: &[&str], reason: &str) {
        for k in keys {
            if !self.values.contains_key(*k) {
                self.null(k, reason);
            }
        }
    }

    pub fn get(&self, key: &str) -> Option<f64> {
        self.values.get(key).and_then(Value::as_f64)
    }

    pub fn reason(&self, key: &str) -> Option<&str> {
        self.values.get(&format!("{key}.reason")).and_then(Value::as_str)
    }

    /// A report as `write_json` wrote it.
    pub fn read_json(path: &Path) -> Result<Report> {
        let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        let Value::Object(obj) = serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))?
        else {
            anyhow::bail!("{} is not a JSON object", path.display());
        };
        Ok(Report { values: obj.into_iter().collect() })
    }

    /// The picture's title for this report's machine and budget.
    pub fn title(&self) -> String {
        let quick = self.values.get("meta.quick").and_then(Value::as_bool).unwrap_or(false);
        let kernel = self.values.get("meta.kernel").and_then(Value::as_str).unwrap_or("?");
        let cpus = self.get("meta.cpus").unwrap_or(0.0);
        format!("lb benchmarks{} - kernel {kernel}, {cpus} CPUs", if quick { " (--quick)" } else { "" })
    }

    pub fn write_json(&self, path: &Path) -> Result<()> {
        let obj: serde_json::Map<String, Value> = self.values.clone().into_iter().collect();
        let text = serde_json::to_string_pretty(&Value::Object(obj))?;
        std::fs::write(path, text + "\n").with_context(|| format!("write {}", path.display()))
    }

    /// `median [min .. max]` of a key, or `null (reason)`.
    pub fn show(&self, key: &str, decimals: usize) -> String {
        match self.get(key) {
            Some(m) => match (self.get(&format!("{key}.min")), self.get(&format!("{key}.max"))) {
                (Some(lo), Some(hi)) => format!("{m:.decimals$} [{lo:.decimals$} .. {hi:.decimals$}]"),
                _ => format!("{m:.decimals$}"),
            },
            None => format!("null ({})", self.reason(key).unwrap_or("not measured")),
        }
    }
}

/// A plain-text table with a title, a header and aligned columns.
pub struct Table {
    title: String,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(title: &str, header: &[&str]) -> Table {
        Table { title: title.into(), header: header.iter().map(|s| s.to_string()).collect(), rows: vec![] }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let cols = self.header.len();
        let mut w = vec![0usize; cols];
        for r in std::iter::once(&self.header).chain(&self.rows) {
            for (i, c) in r.iter().enumerate().take(cols) {
                w[i] = w[i].max(c.chars().count());
            }
        }
        let mut s = String::new();
        let _ = writeln!(s, "\n== {} ==", self.title);
        let line = |s: &mut String, r: &[String]| {
            let cells: Vec<String> = r.iter().enumerate().map(|(i, c)| format!("{c:<width$}", width = w[i])).collect();
            let _ = writeln!(s, "  {}", cells.join("  ").trim_end());
        };
        line(&mut s, &self.header);
        let _ = writeln!(s, "  {}", w.iter().map(|n| "-".repeat(*n)).collect::<Vec<_>>().join("  "));
        for r in &self.rows {
            line(&mut s, r);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats() {
        let s = Stat::of(&[3.0, 1.0, 2.0, f64::NAN]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        assert_eq!(Stat::of(&[1.0, 2.0]).unwrap().median, 1.5);
        assert!(Stat::of(&[]).is_none());
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile_sorted(&v, 99.0), 99.0);
        assert_eq!(percentile_sorted(&v, 50.0), 50.0);
    }
}
