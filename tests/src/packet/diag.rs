//! Hex dumps and diffs for fixture failures, and a MAC parser.

use std::fmt::Write as _;

use super::*;

/// Hex dump, 16 bytes a line, with offsets.
pub fn hex_dump(data: &[u8]) -> String {
    let mut s = String::new();
    for (i, chunk) in data.chunks(16).enumerate() {
        let _ = write!(s, "{:04x}:", i * 16);
        for b in chunk {
            let _ = write!(s, " {b:02x}");
        }
        s.push('\n');
    }
    s
}

/// Side-by-side hex of expected vs actual, differing bytes marked with `*`,
/// plus the first differing offset and the lengths.
pub fn hex_diff(expected: &[u8], actual: &[u8]) -> String {
    let mut s = String::new();
    let first = expected
        .iter()
        .zip(actual)
        .position(|(a, b)| a != b)
        .or((expected.len() != actual.len()).then_some(expected.len().min(actual.len())));
    let _ = writeln!(
        s,
        "expected {} bytes, actual {} bytes, first difference at {}",
        expected.len(),
        actual.len(),
        first.map_or("none".to_string(), |o| format!("offset {o} (0x{o:x})"))
    );
    let _ = writeln!(s, "      {:<48}   actual", "expected");
    let n = expected.len().max(actual.len());
    for line in (0..n).step_by(16) {
        let _ = write!(s, "{line:04x}:");
        let mut marks = String::new();
        for side in [expected, actual] {
            for i in line..line + 16 {
                match side.get(i) {
                    Some(b) => {
                        let _ = write!(s, " {b:02x}");
                    }
                    None => s.push_str("   "),
                }
            }
            s.push_str("  |");
        }
        for i in line..(line + 16).min(n) {
            marks.push(if expected.get(i) == actual.get(i) { '.' } else { '*' });
        }
        let _ = writeln!(s, " {marks}");
    }
    s
}

/// Parses "02:00:00:00:00:01".
pub fn mac(s: &str) -> Mac {
    let v: Vec<u8> = s.split(':').map(|p| u8::from_str_radix(p, 16).expect("bad MAC")).collect();
    v.try_into().expect("MAC needs 6 bytes")
}
