//! `GET /health` and `GET /metrics`. Neither needs credentials (load balancers and Prometheus
//! scrape them); neither shows record data, and `/health` nothing about the relay's set-up
//! (node id, authentication, paths: [`health`]). `/metrics` names the node ids of the peers
//! furthest behind; put the relay behind a proxy that restricts `/metrics` if that matters.
//! A relay without authentication answers them, as every endpoint, only when addressed to a
//! loopback name (`check_host` in the router: a DNS-rebinding page must not read them either).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State as AxumState;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::error;
use crate::limits::CONFLICTS_REFRESH_MS;
use crate::metrics::gauge_value;
use crate::state::State;
use crate::store_watch::StoreStatus;

/// `{"status", "reason", "version", "storage_format", "protocol", "uptime_s",
/// "connected_clients", "store_bytes"}`: `storage_format` is the newest file format this
/// build reads (it upgrades older files), `protocol` the sync protocol version it speaks
/// (peers must speak the same: README, "Upgrading"). `connected_clients` counts the sessions
/// whose HELLO the relay accepted (authenticated), not sockets still in their handshake: the
/// `connections` metric counts those too.
///
/// `status` is `ok`; `degraded` when the store's disk is full (reads are served, writes
/// refused: still 200, a load balancer keeps sending readers); or `failing`, `503`, when the
/// store was deleted, or its file system turned read-only, while the relay runs (the
/// operator must act). `reason` (null when `ok`) says why and what to do. See
/// `store_watch.rs`.
///
/// Nothing else: whoever can reach the port reads this, without credentials. The relay's
/// node id, its kind of authentication, whether rules are in force (the `relay_started` log
/// line), and the store's path and the process holding it (the `store_gone`,
/// `store_read_only` and `store_disk_full` lines) are in the relay's log, where its operator
/// reads them and a stranger does not. (Until 2026-12-07: `node`, `auth`, `rules` here, and the
/// path and PID in `reason`.)
pub(crate) async fn health(AxumState(state): AxumState<Arc<State>>) -> Response {
    let store = state.check_store();
    let code = match store {
        StoreStatus::Gone | StoreStatus::ReadOnly => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::OK,
    };
    let body = Json(serde_json::json!({
        "status": store.name(),
        "reason": store.reason(),
        "version": env!("CARGO_PKG_VERSION"),
        "storage_format": blazedb::limits::FORMAT_VERSION,
        "protocol": blazedb::limits::PROTOCOL_VERSION,
        "uptime_s": state.started.elapsed().as_secs(),
        "connected_clients": state.client_count(),
        "store_bytes": state.store_bytes(),
    }));
    (code, body).into_response()
}

/// The Prometheus / OpenMetrics text, with the slot and store gauges refreshed first.
pub(crate) async fn metrics(AxumState(state): AxumState<Arc<State>>) -> Response {
    let st = state.clone();
    match tokio::task::spawn_blocking(move || refresh(&st)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e),
    }
    let mut r = state.metrics.encode().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    r
}

/// Connection slots, store size, open conflicts (at most every [`CONFLICTS_REFRESH_MS`]) and
/// per-peer lag.
fn refresh(state: &State) -> Result<(), blazedb::Error> {
    let m = &state.metrics;
    let (slots_used, slots_max) = state.connection_slots();
    m.connection_slots_used.set(gauge_value(slots_used as u64));
    m.connection_slots_max.set(gauge_value(slots_max as u64));
    m.store_bytes.set(gauge_value(state.store_bytes()));
    let now_ms = state.started.elapsed().as_millis() as u64 + 1;
    let last = m.conflicts_counted_ms.load(Ordering::Relaxed);
    if last == 0 || now_ms.saturating_sub(last) >= CONFLICTS_REFRESH_MS {
        m.conflicts_counted_ms.store(now_ms, Ordering::Relaxed);
        m.conflicts
            .set(gauge_value(state.db.open_conflict_count()?));
    }
    let head = state.db.last_seq()?;
    let lags = state
        .sessions()
        .iter()
        .filter_map(|s| {
            let snap = s.monitor.snapshot();
            let peer = snap.peer?;
            let lag = if snap.caught_up {
                0
            } else {
                // The session's own cursor: the stored one of a peer being served its first
                // snapshot holds GC where the peer was before anything is acknowledged.
                head.0.saturating_sub(snap.acked.0)
            };
            Some((peer.to_string(), lag))
        })
        .collect();
    m.set_lags(lags);
    Ok(())
}
