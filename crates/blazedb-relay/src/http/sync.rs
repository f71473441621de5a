//! `GET /v1/sync`: the WebSocket upgrade for sync sessions.
//!
//! In order: the `Host` and `Origin` checks (`403`), authentication (`401`, JSON body: nothing else
//! happens for an unauthenticated client), the WebSocket handshake headers (`426` / `400`),
//! then `101 Switching Protocols`. The upgraded connection becomes a server [`WsStream`]
//! ([`WsStream::server`]: explicit message limits, and a read budget until the client's first
//! frame has arrived whole) and runs a session ([`crate::session`]). No extension is
//! negotiated: permessage-deflate stays off.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State as AxumState};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use blazedb_net::ws::WsStream;
use blazedb_net::CredentialRecheck;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::{authenticate, check_origin_and_host, client_address, error, ConnectionSlot};
use crate::metrics::Transport;
use crate::session::Caller;
use crate::state::State;

/// Handle the upgrade request.
pub(crate) async fn upgrade(AxumState(state): AxumState<Arc<State>>, mut req: Request) -> Response {
    if let Err(r) = check_origin_and_host(&state, &req) {
        return *r;
    }
    let claims = match authenticate(&state, &req) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let h = req.headers();
    if !has_token(h, header::CONNECTION, "upgrade") || !has_token(h, header::UPGRADE, "websocket") {
        let mut r = error(
            StatusCode::UPGRADE_REQUIRED,
            "websocket_required",
            "GET /v1/sync is a WebSocket endpoint: connect with a WebSocket client \
             (ws:// or wss:// URL)",
        );
        r.headers_mut()
            .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        return r;
    }
    if h.get(header::SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13") {
        let mut r = error(
            StatusCode::UPGRADE_REQUIRED,
            "websocket_version",
            "unsupported WebSocket version: this relay speaks version 13 (RFC 6455)",
        );
        r.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return r;
    }
    let Some(key) = h.get(header::SEC_WEBSOCKET_KEY) else {
        return error(
            StatusCode::BAD_REQUEST,
            "websocket_key",
            "missing Sec-WebSocket-Key header",
        );
    };
    let accept = derive_accept_key(key.as_bytes());
    // The connection slot moves from the HTTP connection to the session; it stays counted
    // under the TCP peer's address, while the session's failures and log lines go under the
    // client's (behind a trusted proxy, the one it forwarded).
    let connection = req.extensions().get::<ConnectionSlot>().cloned();
    let client = client_address(&req);
    // Over TLS with a client certificate and revocation lists: judged again while the
    // session runs.
    let certificate = req.extensions().get::<CredentialRecheck>().cloned();
    let slot = match connection.as_ref().and_then(ConnectionSlot::take) {
        Some(s) => s,
        None => match state.take_slot(connection.map(|c| c.ip)) {
            Ok(s) => s,
            Err(why) => {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    why.code(),
                    state.refusal_message(why),
                )
            }
        },
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let handshake = Duration::from_millis(state.limits.handshake_timeout_ms);
    let st = state.clone();
    state.tasks.spawn(async move {
        let upgraded = match tokio::time::timeout(handshake, on_upgrade).await {
            Ok(Ok(u)) => u,
            // The client went away between the request and the upgrade.
            _ => return,
        };
        // Until the client's first frame has arrived whole, at most
        // `WS_FIRST_FRAME_READ_BYTES_MAX` bytes are read: otherwise tungstenite would buffer
        // a whole 8 MiB message before the session could refuse it as a HELLO (on a relay
        // without credentials, for anyone who connects).
        let ws = WsStream::server(TokioIo::new(upgraded)).await;
        let caller = Caller {
            address: client,
            certificate,
        };
        crate::session::run(st, ws, Transport::Ws, Some(claims), slot, caller).await;
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Body::empty())
        .expect("valid response")
}

/// Whether a comma-separated header holds `token` (case-insensitive).
fn has_token(h: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    h.get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}
