use std::{
    collections::HashMap,
    os::unix::fs::PermissionsExt,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use super::*;

/// An owner that records the changes it is asked for.
#[derive(Clone, Default)]
struct Fake {
    changes: Arc<Mutex<Vec<String>>>,
}

impl Control for Fake {
    async fn status(&self) -> Result<Status, ApiError> {
        Ok(Status {
            interface: "eth0".into(),
            config_file: "/etc/lb.toml".into(),
            layout_version: 1,
            uptime_s: 5,
            vips: vec![],
            counters: HashMap::from([("tx_ipip".to_string(), 3)]),
            transitions: vec![],
            table_rebuilds: 1,
            last_rebuild_ms: 0.5,
            bgp: None,
            hot_spot: Default::default(),
            active_recount: Default::default(),
        })
    }
    async fn metrics(&self) -> Result<String, ApiError> {
        Ok("lb_uptime_seconds 5\n".into())
    }
    async fn reload(&self) -> Result<String, ApiError> {
        Err(ApiError::new(400, "vip[0].port: must be 1-65535"))
    }
    async fn change(&self, change: Change) -> Result<String, ApiError> {
        if let Change::DelVip(id) = &change
            && id.port == 81
        {
            return Err(ApiError::new(404, format!("no VIP {id}")));
        }
        self.changes.lock().unwrap().push(format!("{change:?}"));
        Ok("done".into())
    }
}

async fn call(fake: &Fake, method: &str, path: &str, body: &str) -> (u16, Value) {
    route(fake, method, path, body.as_bytes()).await
}

fn error_of(v: &Value) -> &str {
    v["error"].as_str().unwrap_or_else(|| panic!("no error in {v}"))
}

#[tokio::test]
async fn routes() {
    let fake = Fake::default();
    let (st, v) = call(&fake, "GET", "/v1/status", "").await;
    assert_eq!((st, v["interface"].as_str(), v["counters"]["tx_ipip"].as_u64()), (200, Some("eth0"), Some(3)));
    let (st, v) = call(&fake, "POST", "/v1/reload", "").await;
    assert_eq!((st, error_of(&v)), (400, "vip[0].port: must be 1-65535"));
    let ok = [
        (
            "/v1/vips/add",
            r#"{"address":"198.18.100.1","port":80,"protocol":"tcp","backend":[{"address":"198.18.0.11","weight":2}]}"#,
        ),
        ("/v1/vips/del", r#"{"vip":"[2001:db8::1]:443/udp"}"#),
        ("/v1/backends/add", r#"{"vip":"198.18.100.1:80/tcp","backend":{"address":"198.18.0.12"}}"#),
        ("/v1/backends/del", r#"{"vip":"198.18.100.1:80/tcp","address":"198.18.0.12"}"#),
        ("/v1/backends/state", r#"{"vip":"198.18.100.1:80/tcp","address":"198.18.0.11","state":"drain"}"#),
    ];
    for (path, body) in ok {
        assert_eq!(call(&fake, "POST", path, body).await, (200, json!({"message": "done"})), "{path}");
    }
    let changes = fake.changes.lock().unwrap().clone();
    assert_eq!(changes.len(), 5);
    assert!(changes[0].starts_with("AddVip(VipSpec { address: 198.18.100.1, port: 80"), "{}", changes[0]);
    assert!(changes[1].contains("address: 2001:db8::1, port: 443, protocol: Udp"), "{}", changes[1]);
    assert!(changes[4].ends_with("198.18.0.11, Drain)"), "{}", changes[4]);
    let (st, v) = call(&fake, "POST", "/v1/vips/del", r#"{"vip":"198.18.100.1:81/tcp"}"#).await;
    assert_eq!((st, error_of(&v)), (404, "no VIP 198.18.100.1:81/tcp"));
}

#[tokio::test]
async fn wrong_route_or_method() {
    let fake = Fake::default();
    let (st, v) = call(&fake, "GET", "/v1/nope", "").await;
    assert_eq!(st, 404);
    assert!(error_of(&v).contains("POST /v1/vips/add"));
    let (st, v) = call(&fake, "POST", "/v1/status", "").await;
    assert_eq!((st, error_of(&v)), (405, "/v1/status takes GET, not POST"));
    assert_eq!(call(&fake, "GET", "/v1/vips/add", "").await.0, 405);
}

#[tokio::test]
async fn bad_bodies_change_nothing() {
    let fake = Fake::default();
    let cases = [
        ("/v1/vips/add", r#"{"address":"198.18.100.1","port":80"#, "EOF while parsing"),
        ("/v1/vips/add", r#"{"address":"198.18.100.1","port":"80","protocol":"tcp"}"#, "invalid type: string \"80\""),
        (
            "/v1/vips/add",
            r#"{"address":"198.18.100.1","port":80,"protocol":"tcp","colour":1}"#,
            "unknown field `colour`",
        ),
        (
            "/v1/vips/add",
            r#"{"address":"198.18.100.1","port":80,"protocol":"tcp","backend":[{"address":"x"}]}"#,
            "invalid IP address syntax",
        ),
        ("/v1/vips/add", "", "EOF while parsing"),
        ("/v1/vips/del", r#"{"vip":"198.18.100.1:80"}"#, "is not a VIP like"),
        ("/v1/vips/del", r#"{}"#, "missing field `vip`"),
        (
            "/v1/backends/add",
            r#"{"vip":"198.18.100.1:80/tcp","backend":{"address":"198.18.0.1","colour":2}}"#,
            "unknown field `colour`",
        ),
        ("/v1/backends/del", r#"{"vip":"198.18.100.1:80/tcp","address":"198.18.0.300"}"#, "invalid IP address"),
        (
            "/v1/backends/state",
            r#"{"vip":"198.18.100.1:80/tcp","address":"198.18.0.1","state":"down"}"#,
            "unknown variant `down`",
        ),
        ("/v1/backends/state", "42", "invalid type: integer `42`, expected struct BackendState"),
    ];
    for (path, body, wanted) in cases {
        let (st, v) = call(&fake, "POST", path, body).await;
        assert_eq!(st, 400, "{path} {body}: {v}");
        let e = error_of(&v);
        assert!(e.starts_with("request body (") && e.contains(wanted), "{path} {body}: {e}");
    }
    assert!(fake.changes.lock().unwrap().is_empty());
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A fresh socket path in a directory that does not exist yet.
fn socket_path() -> PathBuf {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("lb-api-test-{}-{n}", std::process::id())).join("run/lb.sock")
}

async fn request(path: &Path, method: &str, target: &str, body: Option<&[u8]>) -> (u16, Value) {
    let mut s = UnixStream::connect(path).await.unwrap();
    let (st, body) = http::send(&mut s, method, target, body, 1 << 20).await.unwrap();
    (st, serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn serves_on_a_socket() {
    let path = socket_path();
    let root = path.parent().unwrap().parent().unwrap().to_path_buf();
    let (fake, cancel) = (Fake::default(), CancellationToken::new());
    let server = tokio::spawn(serve_with_owned(path.clone(), fake.clone(), cancel.clone()));
    while !path.exists() {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o755);

    let (st, v) = request(&path, "GET", "/v1/status", None).await;
    assert_eq!((st, v["uptime_s"].as_u64()), (200, Some(5)));
    let (st, _) =
        request(&path, "POST", "/v1/backends/del", Some(br#"{"vip":"198.18.100.1:80/tcp","address":"198.18.0.1"}"#))
            .await;
    assert_eq!(st, 200);
    // Over the limit: refused before it is read, answered all the same.
    let huge = format!(r#"{{"vip":"198.18.100.1:80/tcp","address":"{}"}}"#, "1".repeat(2 << 20));
    let (st, v) = request(&path, "POST", "/v1/backends/del", Some(huge.as_bytes())).await;
    assert_eq!(st, 413, "{v}");
    assert!(error_of(&v).contains("larger than the limit"));
    // Garbage gets a 400 naming the problem.
    let mut s = UnixStream::connect(&path).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut s, b"hello there\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut s, &mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 400 Bad Request\r\n") && answer.contains("bad request line"), "{answer}");

    // A second agent on the same socket is refused.
    let e = serve_with(&path, fake.clone(), CancellationToken::new()).await.unwrap_err();
    assert_eq!(e.to_string(), format!("another lb agent is running on {}", path.display()));

    cancel.cancel();
    server.await.unwrap().unwrap();
    assert!(!path.exists(), "the socket is removed on shutdown");
    assert_eq!(fake.changes.lock().unwrap().len(), 1);
    std::fs::remove_dir_all(root).unwrap();
}

async fn serve_with_owned(path: PathBuf, fake: Fake, cancel: CancellationToken) -> anyhow::Result<()> {
    serve_with(&path, fake, cancel).await
}

#[tokio::test]
async fn replaces_a_stale_socket_only() {
    let path = socket_path();
    let root = path.parent().unwrap().parent().unwrap().to_path_buf();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists(), "a crashed agent's socket file");
    let cancel = CancellationToken::new();
    let server = tokio::spawn(serve_with_owned(path.clone(), Fake::default(), cancel.clone()));
    // The stale file is replaced by a live socket.
    let answered = async {
        loop {
            if let Ok(s) = UnixStream::connect(&path).await {
                return s;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), answered).await.unwrap();
    cancel.cancel();
    server.await.unwrap().unwrap();

    // Bound but never served (the agent failed to start): still cleaned up.
    let socket = ControlSocket::bind(&path).await.unwrap();
    assert!(path.exists());
    drop(socket);
    assert!(!path.exists());

    std::fs::write(&path, "not a socket").unwrap();
    let e = serve_with(&path, Fake::default(), CancellationToken::new()).await.unwrap_err();
    assert!(e.to_string().contains("is not a socket"), "{e}");
    std::fs::remove_dir_all(root).unwrap();
}
