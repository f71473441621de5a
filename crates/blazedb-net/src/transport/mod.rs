//! Network transports: byte streams between two nodes, each carrying one sync session
//! ([`run_session`](crate::run_session)) with the same frames (docs/PROTOCOL.md §2).
//!
//! ```text
//!  client                                          listener
//!  "tcp://h:p" ─► Endpoint ─► connect ─► stream ═══► accept ─► (TLS handshake) ─► stream
//!                                          │                                       │
//!                                     run_session                            run_session
//!                                  (token in HELLO)             (TokenAuth checks HELLO.token)
//! ```
//!
//! - [`endpoint`]: parsing `tcp://`, `tls://`, `unix://`, `ws://`, `wss://` URLs.
//! - [`connect`]: the client side, any URL to a boxed byte stream.
//! - [`listen`](mod@listen): the server side, one session per accepted connection.
//! - [`tls`]: rustls configuration from PEM files; [`plaintext`]: what a TLS listener tells
//!   a client that does not speak TLS.
//! - [`auth`]: the listener's static token.
//!
//! Liveness is the session's: it pings after `SessionConfig::ping_interval_ms` without
//! sending and gives up after `SessionConfig::idle_timeout_ms` without receiving, whatever
//! the transport. Both are set through the `session` field of [`ConnectOptions`]' callers
//! ([`crate::reconnect::ClientOptions`]) and of [`ListenConfig`].

pub mod auth;
pub mod endpoint;
pub mod error;
pub mod listen;
pub mod plaintext;
pub mod tls;

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};
use tokio_tungstenite::client_async_with_config;

pub use auth::TokenAuth;
pub use endpoint::{Endpoint, HostPort, WsUrl};
pub use error::TransportError;
pub use listen::{listen, ListenConfig, ListenEvent, Listener};
pub use tls::{TlsClientOptions, TlsServerOptions};

use crate::limits::CONNECT_TIMEOUT_MS_DEFAULT;
use crate::ws::{websocket_config, WsStream};

/// A connected byte stream of any transport.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

/// A connected byte stream, whatever the transport; pass it to
/// [`run_session`](crate::run_session).
pub type BoxedStream = Box<dyn Stream>;

/// How [`connect`] connects.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// TLS settings for `tls://` and `wss://`.
    pub tls: TlsClientOptions,
    /// Limit for the whole connection setup (TCP, TLS, WebSocket upgrade), in ms.
    pub connect_timeout_ms: u64,
    /// Sent as `Authorization: Bearer …` on a WebSocket upgrade (a relay checks credentials
    /// before upgrading). Other transports carry the token in HELLO only.
    pub bearer_token: Option<String>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            tls: TlsClientOptions::default(),
            connect_timeout_ms: CONNECT_TIMEOUT_MS_DEFAULT,
            bearer_token: None,
        }
    }
}

/// Connect to `endpoint` and return the byte stream to run a session over.
///
/// ```no_run
/// # async fn f(db: std::sync::Arc<blazedb::Database>) -> Result<(), Box<dyn std::error::Error>> {
/// use blazedb::sync::SessionConfig;
/// use blazedb_net::transport::{connect, ConnectOptions, Endpoint};
/// use blazedb_net::{run_session, DriverOptions};
/// let peer: Endpoint = "tcp://127.0.0.1:7421".parse()?;
/// let stream = connect(&peer, &ConnectOptions::default()).await?;
/// let report = run_session(db, stream, SessionConfig::default(), DriverOptions::once()).await?;
/// println!("sent {} cells", report.stats.cells_sent);
/// # Ok(()) }
/// ```
pub async fn connect(
    endpoint: &Endpoint,
    opts: &ConnectOptions,
) -> Result<BoxedStream, TransportError> {
    // Build TLS settings first: a bad file is a configuration error, not a timeout.
    let connector = match endpoint {
        Endpoint::Tls(_) => Some(opts.tls.connector()?),
        Endpoint::WebSocket(w) if w.secure => Some(opts.tls.connector()?),
        _ => None,
    };
    let limit = Duration::from_millis(opts.connect_timeout_ms);
    let bearer = opts.bearer_token.as_deref().filter(|t| !t.is_empty());
    match tokio::time::timeout(limit, connect_inner(endpoint, connector, bearer)).await {
        Ok(r) => r,
        Err(_) => Err(TransportError::ConnectTimeout {
            endpoint: endpoint.to_string(),
            ms: opts.connect_timeout_ms,
        }),
    }
}

async fn connect_inner(
    endpoint: &Endpoint,
    connector: Option<tokio_rustls::TlsConnector>,
    bearer: Option<&str>,
) -> Result<BoxedStream, TransportError> {
    let name = endpoint.to_string();
    match endpoint {
        Endpoint::Tcp(hp) => Ok(Box::new(tcp(hp, &name).await?)),
        Endpoint::Tls(hp) => {
            let connector = connector.expect("built for tls");
            let server = tls::server_name(&hp.host)?;
            let socket = tcp(hp, &name).await?;
            let stream = connector.connect(server, socket).await.map_err(|source| {
                TransportError::TlsHandshake {
                    endpoint: name.clone(),
                    source,
                }
            })?;
            Ok(Box::new(stream))
        }
        Endpoint::Unix(path) => {
            let connect = async {
                listen::check_unix_path(path)?;
                UnixStream::connect(path).await
            };
            let socket = connect.await.map_err(|source| TransportError::Connect {
                endpoint: name,
                source,
            })?;
            Ok(Box::new(socket))
        }
        Endpoint::WebSocket(w) => websocket(w, connector, bearer).await,
    }
}

/// A TCP connection with Nagle's algorithm off: frames are written whole, and an ACK or a
/// small commit must not wait for the previous segment's acknowledgement.
async fn tcp(hp: &HostPort, name: &str) -> Result<TcpStream, TransportError> {
    let socket = TcpStream::connect((hp.host.as_str(), hp.port))
        .await
        .map_err(|source| TransportError::Connect {
            endpoint: name.to_owned(),
            source,
        })?;
    // Only a latency setting: a failure changes nothing about correctness.
    let _ = socket.set_nodelay(true);
    Ok(socket)
}

/// Why the WebSocket upgrade failed. A refusal (401: the credentials; 403: e.g. an origin
/// not on the relay's allow-list; 400 `tls_required`: `ws://` to a relay's HTTPS port) is
/// permanent and carries the peer's own explanation (the relay answers
/// `{"code": ..., "error": ...}`); anything else may pass.
///
/// Over `wss://`, a TLS 1.3 peer refuses our client certificate only after the client's side
/// of the handshake, so the refusal arrives while the upgrade reads its response: it is the
/// TLS handshake's failure ([`TransportError::TlsHandshake`], permanent, and says what to pass).
fn upgrade_error(endpoint: &str, e: tokio_tungstenite::tungstenite::Error) -> TransportError {
    use tokio_tungstenite::tungstenite::Error;
    let e = match e {
        Error::Io(source) if error::client_certificate_refusal(&source).is_some() => {
            return TransportError::TlsHandshake {
                endpoint: endpoint.to_owned(),
                source,
            }
        }
        other => other,
    };
    let body = |r: &tokio_tungstenite::tungstenite::http::Response<Option<Vec<u8>>>| {
        r.body()
            .as_deref()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
    };
    // The relay's own explanation (`{"code": ..., "error": ...}`), when the body has one.
    let said = |r: &tokio_tungstenite::tungstenite::http::Response<Option<Vec<u8>>>| {
        body(r).and_then(|v| v.get("error").and_then(|m| m.as_str()).map(str::to_owned))
    };
    let response = match &e {
        Error::Http(r) if matches!(r.status().as_u16(), 401 | 403) => r,
        Error::Http(r)
            if r.status().as_u16() == 400
                && body(r).is_some_and(|v| v["code"] == plaintext::TLS_REQUIRED_CODE) =>
        {
            r
        }
        // What a TLS server's alert looks like to an HTTP parser.
        Error::Protocol(tokio_tungstenite::tungstenite::error::ProtocolError::HttparseError(_))
            if endpoint.starts_with("ws://") =>
        {
            return TransportError::WebSocket {
                endpoint: endpoint.to_owned(),
                reason: format!(
                    "{e} (the peer did not answer in HTTP: if it speaks TLS on this port, \
                     use wss://; if it is a `blazedb listen --tcp` or a relay's --tcp-listen \
                     port, use tcp:// or tls://)"
                ),
            }
        }
        // The right server, the wrong path (`ws://host:7420`, `/`, `/v1/query`).
        Error::Http(r) if matches!(r.status().as_u16(), 404 | 405) => {
            return TransportError::WebSocket {
                endpoint: endpoint.to_owned(),
                reason: format!(
                    "{e} (a BlazeDB relay syncs at the path /v1/sync: ws://HOST:PORT/v1/sync)"
                ),
            }
        }
        // A redirect (often http → https), a web page, or a relay that is full.
        Error::Http(r) => {
            let status = r.status().as_u16();
            let advice = match (status, said(r)) {
                (_, Some(m)) => m,
                (301 | 302 | 307 | 308, None) => {
                    let to = r
                        .headers()
                        .get("location")
                        .and_then(|l| l.to_str().ok())
                        .unwrap_or("elsewhere");
                    format!(
                        "the server redirects to {to}: connect there (wss:// where it is https)"
                    )
                }
                (200..=299, None) => "a web server answered, not a BlazeDB relay: check the \
                                      host, port and path (ws://HOST:PORT/v1/sync)"
                    .to_owned(),
                (_, None) => {
                    "not a BlazeDB relay's /v1/sync, or one that cannot serve now".to_owned()
                }
            };
            return TransportError::WebSocket {
                endpoint: endpoint.to_owned(),
                reason: format!("{e} ({advice})"),
            };
        }
        _ => {
            return TransportError::WebSocket {
                endpoint: endpoint.to_owned(),
                reason: e.to_string(),
            }
        }
    };
    let status = response.status().as_u16();
    let reason = match (status, said(response)) {
        (401, Some(m)) => format!("{m}: check the token (--token or BLAZEDB_TOKEN)"),
        (401, None) => {
            "the credentials were refused: check the token (--token or BLAZEDB_TOKEN)".to_owned()
        }
        (_, Some(m)) => m,
        (_, None) => "the peer refused the connection".to_owned(),
    };
    TransportError::Refused {
        endpoint: endpoint.to_owned(),
        status,
        reason,
    }
}

/// TCP (and TLS for `wss://`), then the HTTP upgrade; the WebSocket then carries one
/// protocol frame per binary message ([`WsStream`], limits from [`websocket_config`]).
async fn websocket(
    w: &WsUrl,
    connector: Option<tokio_rustls::TlsConnector>,
    bearer: Option<&str>,
) -> Result<BoxedStream, TransportError> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let name = w.url.clone();
    let ws_error = |e: tokio_tungstenite::tungstenite::Error| upgrade_error(&name, e);
    let mut request = w.url.as_str().into_client_request().map_err(ws_error)?;
    if let Some(token) = bearer {
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| TransportError::InvalidUrl {
                url: name.clone(),
                reason: "the token cannot be sent in an HTTP header (it holds control \
                         characters): check --token or BLAZEDB_TOKEN"
                    .into(),
            })?;
        request.headers_mut().insert("authorization", value);
    }
    let socket = tcp(&w.addr, &name).await?;
    let config = Some(websocket_config());
    match connector {
        Some(connector) => {
            let server = tls::server_name(&w.addr.host)?;
            let stream = connector.connect(server, socket).await.map_err(|source| {
                TransportError::TlsHandshake {
                    endpoint: name.clone(),
                    source,
                }
            })?;
            let (ws, _) = client_async_with_config(request, stream, config)
                .await
                .map_err(ws_error)?;
            Ok(Box::new(WsStream::new(ws)))
        }
        None => {
            let (ws, _) = client_async_with_config(request, socket, config)
                .await
                .map_err(ws_error)?;
            Ok(Box::new(WsStream::new(ws)))
        }
    }
}
