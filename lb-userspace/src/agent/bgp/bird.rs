//! A client of BIRD's control socket, the protocol `birdc` speaks: the
//! daemon greets with `0001 BIRD x.y ready.`, then answers each command
//! with lines `DDDD-text` (more follows), ` text` (continues the previous
//! code) and a last `DDDD text`. Codes below 8000 report success (0xxx
//! actions, 1xxx table rows, 2xxx headings); 8xxx are run-time errors and
//! 9xxx parse errors. Speaking it directly needs no `birdc` binary and
//! keeps the agent's runtime free of blocking child processes.

use std::{
    io,
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::UnixStream,
};

/// Longest reply accepted (a `configure` answers with a few lines).
const MAX_REPLY_LINES: usize = 10_000;
const MAX_LINE: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum BirdError {
    #[error("cannot connect to BIRD's control socket {path}: {source} ({hint})")]
    Connect { path: PathBuf, source: io::Error, hint: &'static str },
    #[error("talking to BIRD at {path}: {reason}")]
    Protocol { path: PathBuf, reason: String },
    #[error("no answer from BIRD at {path} within {timeout:?}")]
    Timeout { path: PathBuf, timeout: Duration },
    #[error("BIRD refused `{command}` ({code}): {message}")]
    Refused { command: String, code: u16, message: String },
}

/// One line of a reply.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// `DDDD-text`: more lines follow.
    More(u16, &'a str),
    /// ` text`: continues the previous code.
    Continued(&'a str),
    /// `DDDD text`: the reply's last line.
    Last(u16, &'a str),
}

pub fn parse_line(line: &str) -> Option<Line<'_>> {
    if let Some(text) = line.strip_prefix(' ') {
        return Some(Line::Continued(text));
    }
    let (digits, rest) = (line.get(..4)?, &line[4..]);
    let code = digits.parse().ok().filter(|_| digits.bytes().all(|b| b.is_ascii_digit()))?;
    match rest.chars().next() {
        Some('-') => Some(Line::More(code, &rest[1..])),
        Some(' ') => Some(Line::Last(code, &rest[1..])),
        None => Some(Line::Last(code, "")),
        _ => None,
    }
}

/// A complete reply: its final code and the text of every line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    pub fn ok(&self) -> bool {
        self.code < 8000
    }
    pub fn text(&self) -> String {
        self.lines.join("; ")
    }
}

async fn read_reply(reader: &mut BufReader<UnixStream>, path: &Path) -> Result<Reply, BirdError> {
    let proto = |reason: String| BirdError::Protocol { path: path.to_path_buf(), reason };
    let mut lines = Vec::new();
    let mut buf = String::new();
    loop {
        buf.clear();
        let n = reader.read_line(&mut buf).await.map_err(|e| proto(e.to_string()))?;
        if n == 0 {
            return Err(proto("the daemon closed the connection inside a reply".into()));
        }
        if buf.len() > MAX_LINE || lines.len() >= MAX_REPLY_LINES {
            return Err(proto("reply too long".into()));
        }
        let line = buf.trim_end_matches(['\n', '\r']);
        match parse_line(line) {
            Some(Line::More(_, t) | Line::Continued(t)) => lines.push(t.to_string()),
            Some(Line::Last(code, t)) => {
                lines.push(t.to_string());
                return Ok(Reply { code, lines });
            }
            None => return Err(proto(format!("unexpected line {line:?}"))),
        }
    }
}

fn hint(e: &io::Error) -> &'static str {
    match e.kind() {
        // Debian's BIRD runs as bird:bird with a 0660 socket.
        io::ErrorKind::PermissionDenied => "the socket is BIRD's group's: run the agent in that group too",
        _ => "is bird running with this `-s` socket?",
    }
}

/// Runs one command (`configure`, `show protocols`, ...) and returns its
/// reply; a reply with an error code is `BirdError::Refused`.
pub async fn command(socket: &Path, command: &str, timeout: Duration) -> Result<Reply, BirdError> {
    let exchange = async {
        let stream = UnixStream::connect(socket).await.map_err(|source| BirdError::Connect {
            path: socket.to_path_buf(),
            hint: hint(&source),
            source,
        })?;
        let mut reader = BufReader::new(stream);
        let hello = read_reply(&mut reader, socket).await?;
        if hello.code != 1 {
            let reason = format!("expected the 0001 greeting, got {} {}", hello.code, hello.text());
            return Err(BirdError::Protocol { path: socket.to_path_buf(), reason });
        }
        let line = format!("{command}\n");
        reader.get_mut().write_all(line.as_bytes()).await.map_err(|e| BirdError::Protocol {
            path: socket.to_path_buf(),
            reason: format!("sending `{command}`: {e}"),
        })?;
        read_reply(&mut reader, socket).await
    };
    let reply = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| BirdError::Timeout { path: socket.to_path_buf(), timeout })??;
    if !reply.ok() {
        return Err(BirdError::Refused { command: command.to_string(), code: reply.code, message: reply.text() });
    }
    Ok(reply)
}
