//! Just enough HTTP/1.1 for the control API, the metrics listener and the
//! CLI: one request per connection, `Content-Length` bodies only, bounded
//! sizes and times. Anything fancier (chunked bodies, keep-alive) is refused
//! rather than half-supported.

use std::{fmt, future::Future, io, time::Duration};

use serde::Serialize;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{TcpListener, TcpStream, UnixListener, UnixStream},
    task::JoinSet,
    time::timeout,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Largest header section accepted (request line and headers).
pub const MAX_HEAD: usize = 16 * 1024;
/// Largest request body accepted.
pub const MAX_BODY: usize = 1024 * 1024;
/// Time a client has to send its whole request.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time the handler has to answer; a table rebuild of many large VIPs is the
/// slowest thing behind it.
const HANDLER_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("malformed HTTP message: {0}")]
    Malformed(String),
    #[error("{0}")]
    TooLarge(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl HttpError {
    /// The status a server answers this error with.
    pub fn status(&self) -> u16 {
        match self {
            HttpError::TooLarge(_) => 413,
            _ => 400,
        }
    }
}

fn malformed(what: impl Into<String>) -> HttpError {
    HttpError::Malformed(what.into())
}

#[derive(Debug)]
pub struct Request {
    pub method: String,
    /// The target without its query string.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

pub const JSON: &str = "application/json";

impl Response {
    pub fn json(status: u16, value: &impl Serialize) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => Response { status, content_type: JSON, body },
            Err(e) => Response::error(500, format!("encoding the answer: {e}")),
        }
    }

    /// `{"error": message}`: how every failure is answered.
    pub fn error(status: u16, message: impl fmt::Display) -> Self {
        let body = serde_json::json!({ "error": message.to_string() });
        Response { status, content_type: JSON, body: body.to_string().into_bytes() }
    }

    pub fn text(status: u16, content_type: &'static str, body: String) -> Self {
        Response { status, content_type, body: body.into_bytes() }
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// A message's start line and headers.
#[derive(Debug)]
struct Head {
    start: String,
    headers: Vec<(String, String)>,
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn parse_head(bytes: &[u8]) -> Result<Head, HttpError> {
    let text = std::str::from_utf8(bytes).map_err(|_| malformed("the header section is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let start = lines.next().unwrap_or_default().to_string();
    let mut headers = Vec::new();
    for line in lines {
        if line.starts_with([' ', '\t']) {
            return Err(malformed("folded header lines are not supported"));
        }
        let (name, value) =
            line.split_once(':').ok_or_else(|| malformed(format!("header line {line:?} has no colon")))?;
        if !is_token(name) {
            return Err(malformed(format!("{name:?} is not a valid header name")));
        }
        headers.push((name.to_string(), value.trim_matches([' ', '\t']).to_string()));
    }
    Ok(Head { start, headers })
}

/// Method and path of a request line `GET /v1/status HTTP/1.1`.
fn parse_request_line(line: &str) -> Result<(String, String), HttpError> {
    let bad = || malformed(format!("bad request line {line:?}; expected METHOD /path HTTP/1.1"));
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    if !is_token(method) || !target.starts_with('/') {
        return Err(bad());
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(malformed(format!("unsupported version {version:?}; expected HTTP/1.1")));
    }
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    Ok((method.to_string(), path.to_string()))
}

/// Status of a status line `HTTP/1.1 200 OK`.
fn parse_status_line(line: &str) -> Result<u16, HttpError> {
    let mut parts = line.splitn(3, ' ');
    match (parts.next(), parts.next()) {
        (Some(v), Some(code)) if v.starts_with("HTTP/1.") && code.len() == 3 => {
            code.parse().map_err(|_| malformed(format!("bad status line {line:?}")))
        }
        _ => Err(malformed(format!("bad status line {line:?}"))),
    }
}

fn content_length(headers: &[(String, String)]) -> Result<Option<usize>, HttpError> {
    if header(headers, "transfer-encoding").is_some() {
        return Err(malformed("Transfer-Encoding is not supported; send a Content-Length"));
    }
    let mut lengths = headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case("content-length")).map(|(_, v)| v);
    let Some(first) = lengths.next() else { return Ok(None) };
    if lengths.any(|v| v != first) {
        return Err(malformed("conflicting Content-Length headers"));
    }
    if first.is_empty() || !first.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed(format!("Content-Length {first:?} is not a number")));
    }
    // Too many digits for usize is too large, not malformed.
    Ok(Some(first.parse().unwrap_or(usize::MAX)))
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Request,
    Response,
}

/// Reads a head and a body of at most `max_body` bytes.
async fn read_message<R: AsyncRead + Unpin>(
    r: &mut R,
    kind: Kind,
    max_body: usize,
) -> Result<(Head, Vec<u8>), HttpError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD {
            return Err(HttpError::TooLarge(format!("header section larger than {MAX_HEAD} bytes")));
        }
        let n = r.read(&mut chunk).await?;
        if n == 0 {
            return Err(malformed(if buf.is_empty() {
                "empty message".to_string()
            } else {
                "connection closed before the end of the header section".to_string()
            }));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    if end > MAX_HEAD {
        return Err(HttpError::TooLarge(format!("header section larger than {MAX_HEAD} bytes")));
    }
    let head = parse_head(&buf[..end])?;
    let mut body = buf.split_off(end + 4);
    let too_large = |n: usize| HttpError::TooLarge(format!("body of {n} bytes is larger than the limit of {max_body}"));
    match (content_length(&head.headers)?, kind) {
        (Some(n), _) if n > max_body => return Err(too_large(n)),
        (Some(n), _) if body.len() > n => {
            return Err(malformed(format!("more than the Content-Length of {n} bytes (one request per connection)")));
        }
        (Some(n), _) => {
            let have = body.len();
            r.take((n - have) as u64).read_to_end(&mut body).await?;
            if body.len() < n {
                return Err(malformed(format!("body shorter than its Content-Length ({} of {n} bytes)", body.len())));
            }
        }
        (None, Kind::Request) if !body.is_empty() => {
            return Err(malformed("a body without a Content-Length header"));
        }
        (None, Kind::Request) => {}
        // A response without a length ends with the connection.
        (None, Kind::Response) => {
            r.take((max_body + 1 - body.len().min(max_body)) as u64).read_to_end(&mut body).await?;
            if body.len() > max_body {
                return Err(too_large(body.len()));
            }
        }
    }
    Ok((head, body))
}

pub async fn read_request<R: AsyncRead + Unpin>(r: &mut R) -> Result<Request, HttpError> {
    let (head, body) = read_message(r, Kind::Request, MAX_BODY).await?;
    let (method, path) = parse_request_line(&head.start)?;
    Ok(Request { method, path, headers: head.headers, body })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

pub async fn write_response<W: AsyncWrite + Unpin>(w: &mut W, resp: &Response) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        resp.status,
        reason(resp.status),
        resp.content_type,
        resp.body.len()
    );
    w.write_all(head.as_bytes()).await?;
    w.write_all(&resp.body).await?;
    w.flush().await?;
    w.shutdown().await
}

/// Sends one request and reads the answer: (status, body).
pub async fn send<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    max_body: usize,
) -> Result<(u16, Vec<u8>), HttpError> {
    let mut msg = format!("{method} {path} HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n").into_bytes();
    if let Some(body) = body {
        msg.extend_from_slice(format!("Content-Type: {JSON}\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes());
        msg.extend_from_slice(body);
    } else {
        msg.extend_from_slice(b"\r\n");
    }
    // A server refusing the request (413) may close before reading all of
    // it; its answer is still there to read.
    let written = stream.write_all(&msg).await;
    match read_message(stream, Kind::Response, max_body).await {
        Ok((head, body)) => Ok((parse_status_line(&head.start)?, body)),
        Err(e) => Err(written.err().map(HttpError::Io).unwrap_or(e)),
    }
}

/// A listener the server loop accepts from (Unix for the API, TCP for metrics).
pub trait Listener: Send + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept_stream(&self) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

impl Listener for UnixListener {
    type Stream = UnixStream;
    async fn accept_stream(&self) -> io::Result<UnixStream> {
        self.accept().await.map(|(s, _)| s)
    }
}

impl Listener for TcpListener {
    type Stream = TcpStream;
    async fn accept_stream(&self) -> io::Result<TcpStream> {
        self.accept().await.map(|(s, _)| s)
    }
}

/// Serves connections until `cancel` fires, each in its own task, at most
/// [`MAX_CONNECTIONS`] at once; answers in flight get a moment to finish.
pub async fn serve<L, H, F>(listener: L, handler: H, cancel: CancellationToken)
where
    L: Listener,
    H: Fn(Request) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response> + Send + 'static,
{
    let mut tasks = JoinSet::new();
    loop {
        while tasks.try_join_next().is_some() {}
        if tasks.len() >= MAX_CONNECTIONS {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tasks.join_next() => continue,
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept_stream() => match accepted {
                Ok(stream) => {
                    tasks.spawn(connection(stream, handler.clone()));
                }
                Err(e) => {
                    // Out of file descriptors, typically: don't spin.
                    warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    let _ = timeout(Duration::from_secs(2), async { while tasks.join_next().await.is_some() {} }).await;
    tasks.shutdown().await;
}

async fn connection<S, H, F>(mut stream: S, handler: H)
where
    S: AsyncRead + AsyncWrite + Unpin,
    H: Fn(Request) -> F,
    F: Future<Output = Response>,
{
    let response = match timeout(READ_TIMEOUT, read_request(&mut stream)).await {
        Err(_) => Response::error(408, format!("the request did not arrive within {}s", READ_TIMEOUT.as_secs())),
        Ok(Err(HttpError::Io(e))) => {
            debug!(error = %e, "reading a request failed");
            return;
        }
        Ok(Err(e)) => Response::error(e.status(), &e),
        Ok(Ok(req)) => match timeout(HANDLER_TIMEOUT, handler(req)).await {
            Ok(resp) => resp,
            Err(_) => Response::error(504, format!("no answer within {}s", HANDLER_TIMEOUT.as_secs())),
        },
    };
    if let Ok(Err(e)) | Err(e) =
        timeout(WRITE_TIMEOUT, write_response(&mut stream, &response)).await.map_err(io::Error::other)
    {
        debug!(error = %e, "writing a response failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(bytes: &[u8]) -> Result<Request, HttpError> {
        read_request(&mut &bytes[..]).await
    }

    #[tokio::test]
    async fn good_request() {
        let req =
            parse(b"POST /v1/vips/del?x=1 HTTP/1.1\r\nHost: lb\r\ncontent-LENGTH:  5 \r\n\r\nhello").await.unwrap();
        assert_eq!((req.method.as_str(), req.path.as_str()), ("POST", "/v1/vips/del"));
        assert_eq!(req.header("Content-Length"), Some("5"));
        assert_eq!(req.body, b"hello");
        let req = parse(b"GET /v1/status HTTP/1.0\r\n\r\n").await.unwrap();
        assert!(req.body.is_empty());
    }

    #[tokio::test]
    async fn body_without_length() {
        let e = parse(b"POST /v1/reload HTTP/1.1\r\n\r\n{}").await.unwrap_err();
        assert_eq!(e.status(), 400);
        assert!(e.to_string().contains("without a Content-Length"), "{e}");
        let e = parse(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n").await.unwrap_err();
        assert!(e.to_string().contains("Transfer-Encoding"), "{e}");
    }

    #[tokio::test]
    async fn short_or_long_body() {
        let e = parse(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc").await.unwrap_err();
        assert!(e.to_string().contains("3 of 10"), "{e}");
        let e = parse(b"POST / HTTP/1.1\r\nContent-Length: 1\r\n\r\nabc").await.unwrap_err();
        assert_eq!(e.status(), 400);
    }

    #[tokio::test]
    async fn oversized() {
        let mut big = b"GET / HTTP/1.1\r\nX-Pad: ".to_vec();
        big.resize(MAX_HEAD + 100, b'a');
        big.extend_from_slice(b"\r\n\r\n");
        assert_eq!(parse(&big).await.unwrap_err().status(), 413);
        let e =
            parse(format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", MAX_BODY + 1).as_bytes()).await.unwrap_err();
        assert_eq!(e.status(), 413);
        let e = parse(b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n").await.unwrap_err();
        assert_eq!(e.status(), 413);
    }

    #[tokio::test]
    async fn garbage() {
        for bytes in [
            &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"[..],
            b"hello\r\n\r\n",
            b"GET /x HTTP/2\r\n\r\n",
            b"GET /x HTTP/1.1 extra\r\n\r\n",
            b"GET x HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nno colon here\r\n\r\n",
            b"GET / HTTP/1.1\r\nbad name: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            b"GET / HTTP/1.1\r\n",
            b"",
        ] {
            let e = parse(bytes).await.unwrap_err();
            assert_eq!(e.status(), 400, "{bytes:?}: {e}");
        }
    }

    #[tokio::test]
    async fn round_trip() {
        let (mut client, mut server) = tokio::io::duplex(4096);
        let serve = async {
            let req = read_request(&mut server).await.unwrap();
            assert_eq!(req.body, br#"{"a":1}"#);
            write_response(&mut server, &Response::error(404, "no such thing")).await.unwrap();
        };
        let (_, answer) = tokio::join!(serve, send(&mut client, "POST", "/x", Some(br#"{"a":1}"#), 1024));
        let (status, body) = answer.unwrap();
        assert_eq!(status, 404);
        assert_eq!(body, br#"{"error":"no such thing"}"#);
    }
}
