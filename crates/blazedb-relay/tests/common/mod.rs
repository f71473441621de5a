//! Helpers for the relay's tests: a relay on 127.0.0.1 with port 0, WebSocket clients that are
//! real BlazeDB databases running sessions over the WebSocket adapter, and a tiny HTTP client.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use blazedb::sync::SessionConfig;
use blazedb::{Database, OpenOptions};
use blazedb_net::ws::{websocket_config, WsStream};
use blazedb_net::{run_session, DriverOptions, NetError, SessionMonitor, SessionReport};
use blazedb_relay::{AuthConfig, Relay, RelayConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

pub const TOKEN: &str = "t0k3n-for-the-tests";

/// A relay serving in the background.
pub struct TestRelay {
    pub addr: SocketAddr,
    pub tcp_addr: Option<SocketAddr>,
    pub db: Arc<Database>,
    pub dir: tempfile::TempDir,
    stop: CancellationToken,
    task: JoinHandle<Result<(), blazedb_relay::RelayError>>,
}

impl TestRelay {
    /// Start a relay with a static token; `tweak` changes the configuration first.
    pub async fn start(tweak: impl FnOnce(&mut RelayConfig)) -> TestRelay {
        TestRelay::start_with(tweak, |_| {}).await
    }

    /// [`TestRelay::start`], and `before_run` changes the bound relay before it serves (its
    /// GC interval, say).
    pub async fn start_with(
        tweak: impl FnOnce(&mut RelayConfig),
        before_run: impl FnOnce(&mut Relay),
    ) -> TestRelay {
        let dir = tempfile::tempdir().unwrap();
        let mut config = RelayConfig {
            data_dir: dir.path().join("relay"),
            listen: "127.0.0.1:0".parse().unwrap(),
            auth: AuthConfig::Token(TOKEN.into()),
            ..RelayConfig::default()
        };
        tweak(&mut config);
        let mut relay = Relay::bind(config).await.expect("relay starts");
        before_run(&mut relay);
        let (addr, tcp_addr, db) = (relay.local_addr(), relay.tcp_addr(), relay.database());
        let stop = CancellationToken::new();
        let s = stop.clone();
        let task = tokio::spawn(relay.run(async move { s.cancelled().await }));
        TestRelay {
            addr,
            tcp_addr,
            db,
            dir,
            stop,
            task,
        }
    }

    /// Shut down and wait for the relay to finish.
    pub async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("relay stops in time")
            .unwrap()
            .unwrap();
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/v1/sync", self.addr)
    }

    /// A rules file in the relay's temporary directory.
    pub fn write_rules(dir: &Path, text: &str) -> std::path::PathBuf {
        let p = dir.join("rules.toml");
        std::fs::write(&p, text).unwrap();
        p
    }
}

/// A database file in `dir`.
pub fn open(dir: &Path, name: &str) -> Arc<Database> {
    Arc::new(Database::open(dir.join(format!("{name}.db")), OpenOptions::default()).unwrap())
}

/// Open a WebSocket to the relay with `token` in the Authorization header (or none).
pub async fn connect_ws(
    addr: SocketAddr,
    token: Option<&str>,
) -> Result<WebSocketStream<TcpStream>, WsError> {
    connect_ws_url(addr, &format!("ws://{addr}/v1/sync"), token, &[]).await
}

/// Open a WebSocket to `/v1/sync` from the local address `source` (any of 127.0.0.0/8 on
/// Linux: another client address on one machine).
pub async fn connect_ws_from(
    addr: SocketAddr,
    source: std::net::IpAddr,
    token: Option<&str>,
) -> Result<WebSocketStream<TcpStream>, WsError> {
    let socket = tokio::net::TcpSocket::new_v4().map_err(WsError::Io)?;
    socket
        .bind(SocketAddr::new(source, 0))
        .map_err(WsError::Io)?;
    let tcp = socket.connect(addr).await.map_err(WsError::Io)?;
    ws_handshake(tcp, &format!("ws://{addr}/v1/sync"), token, &[]).await
}

/// Open a WebSocket with any URL and extra headers.
pub async fn connect_ws_url(
    addr: SocketAddr,
    url: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> Result<WebSocketStream<TcpStream>, WsError> {
    let tcp = TcpStream::connect(addr).await.map_err(WsError::Io)?;
    ws_handshake(tcp, url, token, headers).await
}

async fn ws_handshake(
    tcp: TcpStream,
    url: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> Result<WebSocketStream<TcpStream>, WsError> {
    let mut req = url.into_client_request()?;
    if let Some(t) = token {
        req.headers_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    for (k, v) in headers {
        let name: tokio_tungstenite::tungstenite::http::HeaderName = k.parse().unwrap();
        req.headers_mut().insert(name, v.parse().unwrap());
    }
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(req, tcp, Some(websocket_config())).await?;
    Ok(ws)
}

/// Write a credential file as a deployment does: a new file renamed over the old, so that the
/// relay never reads it half-written. `parts` are concatenated (PEM blocks, lines).
pub fn publish(path: &Path, parts: &[&str]) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, parts.concat()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Wait (at most 20 s) until `token` is accepted (`true`) or refused (`false`) at `/v1/sync`:
/// until the relay has read its changed credential file. A relay tried this way needs
/// `auth_failures_per_address_max = 0`, or the address is soon refused for its failures.
pub async fn until_accepted(addr: SocketAddr, token: &str, accepted: bool) {
    let start = Instant::now();
    while connect_ws(addr, Some(token)).await.is_ok() != accepted {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the token is never {}",
            if accepted { "accepted" } else { "refused" }
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The status and JSON body of a refused WebSocket handshake.
pub fn refused(e: WsError) -> (u16, serde_json::Value) {
    match e {
        WsError::Http(r) => {
            let body = r.body().clone().unwrap_or_default();
            (
                r.status().as_u16(),
                serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
            )
        }
        other => panic!("expected an HTTP refusal, got {other}"),
    }
}

/// A client database syncing with the relay over a WebSocket, in the background.
pub struct Client {
    pub db: Arc<Database>,
    pub monitor: SessionMonitor,
    pub stop: CancellationToken,
    pub task: JoinHandle<Result<SessionReport, NetError>>,
}

impl Client {
    /// Connect `db` to the relay and sync continuously.
    pub async fn connect(relay: &TestRelay, db: Arc<Database>, token: &str) -> Client {
        let ws = connect_ws(relay.addr, Some(token)).await.expect("connects");
        let monitor = SessionMonitor::new();
        let stop = CancellationToken::new();
        let opts = DriverOptions {
            shutdown: stop.clone(),
            monitor: Some(monitor.clone()),
            ..DriverOptions::default()
        };
        let task = tokio::spawn(run_session(
            db.clone(),
            WsStream::new(ws),
            SessionConfig::default(),
            opts,
        ));
        Client {
            db,
            monitor,
            stop,
            task,
        }
    }

    /// Wait until the session says it is caught up in both directions.
    pub async fn caught_up(&self) {
        let m = self.monitor.clone();
        let db = self.db.clone();
        wait_until(Duration::from_secs(10), || {
            let s = m.snapshot();
            s.caught_up && db.last_seq().unwrap() <= s.local_seq
        })
        .await;
    }

    /// End the session politely and return its report.
    pub async fn finish(self) -> Result<SessionReport, NetError> {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("client ends in time")
            .unwrap()
    }
}

/// Poll `cond` every 10 ms until it holds; panics after `limit`.
pub async fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Await `f` for at most `limit`.
pub async fn within<T>(limit: Duration, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, f).await.expect("in time")
}

/// An HTTP/1.1 response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP request on a fresh connection (`Connection: close`).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> HttpResponse {
    let s = TcpStream::connect(addr).await.unwrap();
    http_on(s, addr, method, path, headers, body).await
}

/// [`http`] from the local address `source` (any of 127.0.0.0/8 on Linux: another client
/// address on one machine).
pub async fn http_from(
    addr: SocketAddr,
    source: std::net::IpAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> HttpResponse {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    let s = socket.connect(addr).await.unwrap();
    http_on(s, addr, method, path, headers, body).await
}

async fn http_on(
    mut s: TcpStream,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> HttpResponse {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    within(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .unwrap();
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> HttpResponse {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    HttpResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n").unwrap();
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
}

/// `POST /v1/query` with the test token.
pub async fn query(addr: SocketAddr, token: &str, body: serde_json::Value) -> HttpResponse {
    http(
        addr,
        "POST",
        "/v1/query",
        &[
            ("authorization", &format!("Bearer {token}")),
            ("content-type", "application/json"),
        ],
        &body.to_string(),
    )
    .await
}

/// The ids (as strings) of the records a query answered.
pub fn ids(r: &HttpResponse) -> Vec<String> {
    let mut v: Vec<String> = r
        .json()
        .as_array()
        .expect("an array")
        .iter()
        .map(|rec| rec["_id"].as_str().unwrap().to_owned())
        .collect();
    v.sort();
    v
}

/// A metric's value in the OpenMetrics text: the first series whose name and labels start
/// with `prefix`, where a prefix without labels is a whole name (`blazedb_relay_conflicts`
/// is not `blazedb_relay_conflicts_recorded_total`).
pub fn metric(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.strip_prefix(prefix)
                .is_some_and(|rest| prefix.contains('{') || rest.starts_with([' ', '{']))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The sum of every series of the metric `name` (whatever their labels), `None` when it has
/// none.
pub fn metric_sum(text: &str, name: &str) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with([' ', '{']))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// `GET /metrics` over HTTPS with these client TLS settings (the CA to trust, a client
/// certificate to present): the whole response, which must be `200`.
pub async fn metrics_over_tls(
    addr: SocketAddr,
    tls: &blazedb_net::transport::TlsClientOptions,
) -> String {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut s = tls.connector().unwrap().connect(name, tcp).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text
}

/// `blazedb_relay_auth_failures_total` for one kind, from a `/metrics` text.
pub fn auth_failures(metrics: &str, kind: &str) -> Option<f64> {
    metric(
        metrics,
        &format!("blazedb_relay_auth_failures_total{{kind=\"{kind}\"}}"),
    )
}

/// `blazedb_relay_sessions_closed_total` for one close reason, from a `/metrics` text.
pub fn sessions_closed(metrics: &str, reason: &str) -> Option<f64> {
    metric(
        metrics,
        &format!("blazedb_relay_sessions_closed_total{{reason=\"{reason}\"}}"),
    )
}

/// An HS256 JWT with these claims.
pub fn jwt_hs256(secret: &str, claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// Seconds since the epoch.
pub fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `/health`'s `connected_clients` (sessions past their HELLO), once it equals `expected` (or
/// after 5 s, whatever it is).
pub async fn connected_clients(addr: SocketAddr, expected: u64) -> u64 {
    let start = Instant::now();
    loop {
        let n = http(addr, "GET", "/health", &[], "").await.json()["connected_clients"]
            .as_u64()
            .unwrap();
        if n == expected || start.elapsed() > Duration::from_secs(5) {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sync connections open, handshake done or not (the sum of the `connections` gauge), once it
/// equals `expected` (or after 5 s, whatever it is).
pub async fn open_connections(addr: SocketAddr, expected: u64) -> u64 {
    let start = Instant::now();
    loop {
        let m = http(addr, "GET", "/metrics", &[], "").await.body;
        let n = metric_sum(&m, "blazedb_relay_connections").expect("the gauge") as u64;
        if n == expected || start.elapsed() > Duration::from_secs(5) {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A hand-written protocol client over a WebSocket: frames it sends, frames it reads.
pub struct RawClient {
    pub ws: WebSocketStream<TcpStream>,
    enc: blazedb::sync::frame::FrameEncoder,
    dec: blazedb::sync::frame::FrameDecoder,
}

impl RawClient {
    pub async fn connect(addr: SocketAddr) -> RawClient {
        RawClient {
            ws: connect_ws(addr, Some(TOKEN)).await.unwrap(),
            enc: Default::default(),
            dec: Default::default(),
        }
    }

    /// Send one message as one frame in one WebSocket message.
    pub async fn send(&mut self, m: &blazedb::sync::Message) -> Result<(), WsError> {
        use futures_util::SinkExt;
        let (k, payload) = blazedb::sync::message::encode_simple(m);
        let f = self.enc.encode(k, false, &payload);
        self.ws
            .send(tokio_tungstenite::tungstenite::Message::binary(f))
            .await
    }

    /// A HELLO of a fresh pull-only node; returns its node id.
    pub async fn hello(&mut self) -> blazedb::NodeId {
        let node = blazedb::NodeId::random();
        let h = blazedb::sync::Hello {
            version: blazedb::limits::PROTOCOL_VERSION,
            node,
            last_seq: blazedb::Seq(0),
            mode: blazedb::sync::SyncMode::Pull,
            server: false,
            caps: 0,
            token: String::new(),
        };
        self.send(&blazedb::sync::Message::Hello(h)).await.unwrap();
        node
    }

    /// Read until the relay closes; the code of its ERROR frame, if it sent one.
    pub async fn error_code(&mut self) -> Option<blazedb::sync::ErrorCode> {
        use futures_util::StreamExt;
        let mut code = None;
        within(Duration::from_secs(10), async {
            while let Some(Ok(m)) = self.ws.next().await {
                if let tokio_tungstenite::tungstenite::Message::Binary(b) = m {
                    self.dec.push(&b);
                    while let Some(f) = self.dec.next_frame().expect("the relay's frames decode") {
                        if let Ok(blazedb::sync::Message::Error { code: c, .. }) =
                            blazedb::sync::message::decode_simple(f.kind, &f.payload)
                        {
                            code = Some(c);
                        }
                    }
                }
            }
        })
        .await;
        code
    }
}

/// Wait (at most 20 s) until a record the relay writes now reaches `db`, which syncs with it:
/// its session goes on.
pub async fn still_syncing(relay: &TestRelay, db: &Database) {
    let id = relay.db.insert("notes", [("n", 2)]).unwrap();
    let start = Instant::now();
    while db.get("notes", id).unwrap().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the open session stopped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
