//! HTTP/1.1 framing shared by the servers and the clients: finding the end of a head, reading one response.

use std::io::Read;
use std::net::TcpStream;

use anyhow::{Context, Result, bail};

/// Largest request head a server accepts.
pub(super) const MAX_HEAD: usize = 16 * 1024;

pub(super) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads one HTTP response (head + Content-Length body); `pending` keeps
/// bytes read past it.
pub(super) fn read_response(s: &mut TcpStream, pending: &mut Vec<u8>) -> Result<String> {
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = find(pending, b"\r\n\r\n") {
            break end;
        }
        if pending.len() > MAX_HEAD {
            bail!("response head too long");
        }
        let n = s.read(&mut buf).context("read head")?;
        if n == 0 {
            bail!("connection closed before a response");
        }
        pending.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&pending[..head_end]).into_owned();
    let status = head.lines().next().unwrap_or("");
    if !status.starts_with("HTTP/1.1 200") {
        bail!("unexpected status line {status:?}");
    }
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case("content-length").then(|| v.trim().parse().ok())?
        })
        .context("no Content-Length")?;
    if len > MAX_HEAD {
        bail!("body too long ({len})");
    }
    pending.drain(..head_end + 4);
    while pending.len() < len {
        let n = s.read(&mut buf).context("read body")?;
        if n == 0 {
            bail!("connection closed inside the body");
        }
        pending.extend_from_slice(&buf[..n]);
    }
    let body: Vec<u8> = pending.drain(..len).collect();
    Ok(String::from_utf8_lossy(&body).into_owned())
}
