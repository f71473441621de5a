//! The HTTP side of the relay: one router, four endpoints.
//!
//! | endpoint | auth | what |
//! |---|---|---|
//! | `GET /v1/sync` | yes | WebSocket upgrade; one protocol frame per binary message ([`sync`]) |
//! | `POST /v1/query` | yes | records of a collection matching an expression, filtered by the read rule ([`query`]) |
//! | `GET /health` | no | status (`ok`, `degraded`: disk full, `failing` 503: store deleted or read-only) and why, version, storage format and protocol version, uptime, connected clients (past their HELLO), store size; nothing of the relay's set-up: no node id, authentication kind, path or process id ([`status`]) |
//! | `GET /metrics` | no | Prometheus / OpenMetrics text ([`status`], [`crate::metrics`]) |
//!
//! Every error the relay answers is JSON: `{"code": "auth_failed", "error": "what happened and
//! what to do"}`. (A request whose head HTTP cannot parse, or one over 64 KiB, is answered by
//! hyper before any of this runs: a bare `400` or `431`.)
//! Authentication failures are `401` and happen before the WebSocket upgrade, so nothing flows.
//! A client address that presented `Limits::auth_failures_per_address_max` wrong credentials
//! within `Limits::auth_failure_window_ms` is answered `429` (`auth_rate_limited`, with
//! `Retry-After`) for a window, its credentials not looked at (`blazedb_net::auth_failures`).
//! A request's client address (`ClientAddress`) is its TCP peer's, or, from a trusted
//! proxy (`--trusted-proxy`), the right-most untrusted address of its `X-Forwarded-For`
//! (`crate::forwarded`): what that limit counts and the log names.
//! Requests refused for their credential, origin or host, and queries refused before they
//! run (`413`, `408`, `400`, `503 busy`), are logged as `request_refused` (endpoint, client
//! address, status, reason, the message the client got unless it quotes the body; never the
//! credential), throttled like failed sessions (`crate::log_throttle`): a client can repeat
//! them in a loop. Each is counted in `requests_refused_total{reason}`.

pub mod query;
pub mod status;
pub mod sync;

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use blazedb_net::auth_failures::RefusingSide;
use tokio::time::Instant;

use crate::auth::{credential_from_http, AuthError, Claims};
use crate::log_throttle::{LogKey, RequestRefusal};
use crate::slots::Slot;
use crate::state::{lock_auth_failures, State};

/// The relay's routes.
pub(crate) fn router(state: Arc<State>) -> Router {
    // `/v1/sync` and `/v1/query` check `Host` with `Origin` themselves (their answers to
    // refused origins differ); the status endpoints need the `Host` check alone.
    let status = Router::new()
        .route("/health", get(status::health))
        .route("/metrics", get(status::metrics))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            host_only,
        ));
    Router::new()
        .route("/v1/sync", get(sync::upgrade))
        .route("/v1/query", post(query::run).options(query::preflight))
        .merge(status)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// [`check_host`] in front of a route.
async fn host_only(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    match check_host(&state, &req) {
        Ok(()) => next.run(req).await,
        Err(r) => *r,
    }
}

/// The connection slot of the HTTP connection a request arrived on, and the TCP peer's
/// address, which the slot counts under (`Limits::connections_per_address_max`: behind a
/// proxy, the proxy's; [`ClientAddress`] is the client's). A WebSocket upgrade takes the
/// slot, so it stays held for as long as the sync session runs.
#[derive(Clone, Debug)]
pub(crate) struct ConnectionSlot {
    slot: Arc<Mutex<Option<Slot>>>,
    pub ip: IpAddr,
}

/// The address of the client a request came from: the TCP peer's, or, when the peer is a
/// trusted proxy (`--trusted-proxy`), the one its `X-Forwarded-For` names
/// (`crate::forwarded`). What the failure limit counts and the log names. Set per request,
/// not per connection: a proxy may carry many clients' requests over one connection.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ClientAddress(pub IpAddr);

/// A request's [`ClientAddress`] (none for a request that did not come through
/// `serve_http`).
pub(crate) fn client_address<B>(req: &axum::http::Request<B>) -> Option<IpAddr> {
    req.extensions().get::<ClientAddress>().map(|c| c.0)
}

impl ConnectionSlot {
    pub fn new(slot: Slot, ip: IpAddr) -> ConnectionSlot {
        ConnectionSlot {
            slot: Arc::new(Mutex::new(Some(slot))),
            ip,
        }
    }

    pub fn take(&self) -> Option<Slot> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// A JSON error response.
pub(crate) fn error(status: StatusCode, code: &str, message: impl std::fmt::Display) -> Response {
    (
        status,
        Json(serde_json::json!({ "code": code, "error": message.to_string() })),
    )
        .into_response()
}

/// Refuse a request before it reaches a session or a query: the JSON error, and a
/// `request_refused` log line ([`log_refusal`]) with the same message.
fn refuse(
    state: &State,
    req: &Request,
    refusal: RequestRefusal,
    status: StatusCode,
    message: String,
) -> Response {
    let client = client_address(req);
    log_refusal(
        state,
        req.uri().path(),
        client,
        refusal,
        status,
        Some(&message),
    );
    error(status, refusal.code(), message)
}

/// Count a refused request in `requests_refused_total{reason}` and log it as
/// `request_refused` (throttled: a client can repeat it in a loop) with the endpoint (its
/// path alone: a `?token=` stays out of the log), the client's address, the status, the
/// reason and `message`, the client's message, where it quotes nothing of the request's body
/// (`None`: a `400` of a query repeats the body's parts, which a log keeps no more than it
/// keeps credentials).
pub(crate) fn log_refusal(
    state: &State,
    endpoint: &str,
    client: Option<IpAddr>,
    refusal: RequestRefusal,
    status: StatusCode,
    message: Option<&str>,
) {
    state
        .metrics
        .requests_refused
        .get_or_create(&crate::metrics::RequestRefusalLabel { reason: refusal })
        .inc();
    let key = LogKey::Request(refusal);
    state.log_throttled(key, client, || {
        let mut line = serde_json::json!({
            "event": key.event(),
            "endpoint": endpoint,
            "client": client.map(|ip| ip.to_string()),
            "status": status.as_u16(),
            "reason": key.reason(),
        });
        if let Some(m) = message {
            line["message"] = m.into();
        }
        line
    });
}

/// Authenticate an HTTP request, or the `401` to answer it with — or, for a client whose
/// address presented too many wrong credentials lately, the `429` (`auth_rate_limited`, with
/// `Retry-After`), given without looking at the credential (`blazedb_net::auth_failures`).
pub(crate) fn authenticate(state: &State, req: &Request) -> Result<Claims, Box<Response>> {
    let client = client_address(req);
    let address = client.filter(|_| state.auth.required());
    if let Some(ip) = address {
        let checked = lock_auth_failures(&state.auth_failures).check(ip, Instant::now());
        if let Err(refusal) = checked {
            let mut r = refuse(
                state,
                req,
                RequestRefusal::AuthRateLimited,
                StatusCode::TOO_MANY_REQUESTS,
                refusal.message(RefusingSide::Relay),
            );
            r.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(refusal.retry_after_s()),
            );
            return Err(Box::new(r));
        }
    }
    let headers = req.headers();
    let credential = credential_from_http(headers, req.uri());
    let verified = match &credential {
        // A header we cannot read as a bearer token is not "no credentials": say what to send.
        None if state.auth.required() && headers.contains_key(header::AUTHORIZATION) => {
            Err(AuthError::NotBearer)
        }
        Some(c) if c.is_empty() && state.auth.required() => Err(AuthError::EmptyCredential),
        _ => state.auth.verify(credential.as_deref()),
    };
    verified.map_err(|e| {
        // None presented is no failure: it is how an HTTP client learns that one is needed.
        if let Some(kind) = e.failure_kind() {
            state.metrics.auth_failed(kind);
        }
        if let Some(ip) = address.filter(|_| e.is_guess()) {
            lock_auth_failures(&state.auth_failures).failed(ip, Instant::now());
        }
        let mut r = refuse(
            state,
            req,
            RequestRefusal::AuthFailed,
            StatusCode::UNAUTHORIZED,
            e.to_string(),
        );
        let challenge = match e {
            AuthError::Missing => "Bearer",
            _ => "Bearer error=\"invalid_token\"",
        };
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
        Box::new(r)
    })
}

/// Refuse (`403`) a request addressed to a host the relay does not answer (DNS rebinding,
/// see [`State::host_allowed`]) or from a browser origin that may not connect
/// ([`State::origin_allowed`]).
pub(crate) fn check_origin_and_host(state: &State, req: &Request) -> Result<(), Box<Response>> {
    check_host(state, req)?;
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .map(|o| o.to_str().unwrap_or("\u{fffd}"));
    if state.origin_allowed(origin) {
        return Ok(());
    }
    let message = origin_refused(state, origin.unwrap_or_default());
    Err(Box::new(refuse(
        state,
        req,
        RequestRefusal::OriginNotAllowed,
        StatusCode::FORBIDDEN,
        message,
    )))
}

/// The `Host` check alone (every endpoint, `/health` and `/metrics` too: they name the
/// node, its uptime and its peers' lag, nothing a rebinding page elsewhere should read).
pub(crate) fn check_host(state: &State, req: &Request) -> Result<(), Box<Response>> {
    let host = match req.headers().get(header::HOST) {
        Some(h) => Some(h.to_str().unwrap_or("\u{fffd}")),
        None => req.uri().authority().map(|a| a.as_str()),
    };
    if !state.host_allowed(host) {
        return Err(Box::new(refuse(
            state,
            req,
            RequestRefusal::HostNotAllowed,
            StatusCode::FORBIDDEN,
            format!(
                "requests to {} are not served: a relay without authentication answers only \
                 requests addressed to localhost (or a name under it), 127.0.0.1 or [::1] \
                 (another name may be a DNS rebinding attack); connect to ws://127.0.0.1:PORT, \
                 or require credentials with --token or --jwt-secret",
                blazedb::error::excerpt(host.unwrap_or_default())
            ),
        )));
    }
    Ok(())
}

/// What a client whose `Origin` the relay does not allow is told. The header is cut
/// ([`blazedb::error::excerpt`]): it is the client's, as long as a request head may be, and
/// was echoed whole (a 50 KB header came back in the 403).
fn origin_refused(state: &State, origin: &str) -> String {
    // The flag to suggest is the one `--origin` accepts for this origin; a header no
    // `--origin` can name (a malformed one) gets no suggestion that would fail at startup.
    let parsed = crate::origin::Origin::parse(origin);
    let origin = blazedb::error::excerpt(origin);
    let Some(flag) = parsed.map(|o| blazedb::error::excerpt(&o.to_string())) else {
        return format!(
            "origin {origin:?} is not allowed: it is not an origin (scheme://host[:port] \
             or null) that --origin could name"
        );
    };
    if state.origins.is_empty() && !state.auth.required() {
        format!(
            "origin {origin} is not allowed: a relay without authentication lets only pages \
             served from this machine (localhost and names under it, 127.0.0.1, [::1]) \
             connect; start it with --origin {flag} to allow that site (its pages then read \
             and write the whole store), or require credentials with --token or --jwt-secret"
        )
    } else {
        format!("origin {origin} is not allowed: start the relay with --origin {flag} to allow it")
    }
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{method} is not served on {}: use GET /v1/sync, POST /v1/query, GET /health, \
             GET /metrics",
            uri.path()
        ),
    )
}

async fn not_found(uri: axum::http::Uri) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "no endpoint {}: the relay serves GET /v1/sync, POST /v1/query, GET /health and \
             GET /metrics",
            uri.path()
        ),
    )
}
