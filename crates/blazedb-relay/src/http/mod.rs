//! The HTTP side of the relay: one router, four endpoints.
//!
//! | endpoint | auth | what |
//! |---|---|---|
//! | `GET /v1/sync` | yes | WebSocket upgrade; one protocol frame per binary message ([`sync`]) |
//! | `POST /v1/query` | yes | records of a collection matching an expression, filtered by the read rule ([`query`]) |
//! | `GET /health` | no | status, version, uptime, connected clients, store size ([`status`]) |
//! | `GET /metrics` | no | Prometheus / OpenMetrics text ([`status`], [`crate::metrics`]) |
//!
//! Every error is JSON: `{"code": "auth_failed", "error": "what happened and what to do"}`.
//! Authentication failures are `401` and happen before the WebSocket upgrade, so nothing flows.

pub mod query;
pub mod status;
pub mod sync;

use std::sync::{Arc, Mutex};

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::sync::OwnedSemaphorePermit;

use crate::auth::{credential_from_http, AuthError, Claims};
use crate::state::State;

/// The relay's routes.
pub(crate) fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/v1/sync", get(sync::upgrade))
        .route("/v1/query", post(query::run).options(query::preflight))
        .route("/health", get(status::health))
        .route("/metrics", get(status::metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// The connection slot of the HTTP connection a request arrived on. A WebSocket upgrade takes
/// it, so the slot stays held for as long as the sync session runs.
#[derive(Clone, Debug)]
pub(crate) struct ConnectionSlot(pub Arc<Mutex<Option<OwnedSemaphorePermit>>>);

impl ConnectionSlot {
    pub fn new(permit: OwnedSemaphorePermit) -> ConnectionSlot {
        ConnectionSlot(Arc::new(Mutex::new(Some(permit))))
    }

    pub fn take(&self) -> Option<OwnedSemaphorePermit> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
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

/// Authenticate an HTTP request, or the `401` to answer it with.
pub(crate) fn authenticate(
    state: &State,
    headers: &HeaderMap,
    uri: &axum::http::Uri,
) -> Result<Claims, Box<Response>> {
    let credential = credential_from_http(headers, uri);
    let verified = match &credential {
        // A header we cannot read as a bearer token is not "no credentials": say what to send.
        None if state.auth.required() && headers.contains_key(header::AUTHORIZATION) => {
            Err(AuthError::NotBearer)
        }
        _ => state.auth.verify(credential.as_deref()),
    };
    verified.map_err(|e| {
        state.metrics.auth_failures.inc();
        let mut r = error(StatusCode::UNAUTHORIZED, "auth_failed", &e);
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

/// Refuse a browser origin that is not on the allow-list (`403`).
pub(crate) fn check_origin(state: &State, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let origin = headers
        .get(header::ORIGIN)
        .map(|o| o.to_str().unwrap_or("\u{fffd}"));
    if state.origin_allowed(origin) {
        Ok(())
    } else {
        Err(Box::new(error(
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            format!(
                "origin {} is not allowed: start the relay with --origin {} to allow it",
                origin.unwrap_or_default(),
                origin.unwrap_or_default()
            ),
        )))
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
