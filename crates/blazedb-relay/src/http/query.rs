//! `POST /v1/query`: server-side queries over the relay's store.
//!
//! ```json
//! {"collection": "bugs", "where": "status == \"open\" && priority >= 5",
//!  "order_by": "priority:desc", "limit": 20, "offset": 0}
//! ```
//!
//! `where` is the query language (DESIGN decision 10) and may use the caller's claims
//! (`assignee == $auth.sub`); `order_by` is `"FIELD"`, `"FIELD:desc"` or a list of at most
//! [`ORDER_BY_KEYS_MAX`] of them (8), most significant first; `limit` defaults to [`QUERY_LIMIT_DEFAULT`] and is capped at
//! [`QUERY_LIMIT_MAX`]. The answer is a JSON array of records (`Record::to_json`: the fields
//! and `"_id"`), only those the caller's read rule allows — `limit` counts those. A
//! collection that does not exist, or that the rules close, answers `[]`. An invalid
//! expression is `400` with the parser's message, `line` and `column`.

use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State as AxumState};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use blazedb::limits::ORDER_BY_KEYS_MAX;
use blazedb::query::QueryError;
use blazedb::{OrderBy, Query};
use serde::Deserialize;

use super::{authenticate, check_origin_and_host, error};
use crate::auth::params;
use crate::limits::{QUERY_BODY_BYTES_MAX, QUERY_LIMIT_DEFAULT, QUERY_LIMIT_MAX};
use crate::rules::Rule;
use crate::state::State;

/// The request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryRequest {
    collection: String,
    #[serde(rename = "where")]
    filter: Option<String>,
    order_by: Option<OrderBySpec>,
    limit: Option<usize>,
    offset: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OrderBySpec {
    One(String),
    Many(Vec<String>),
}

/// Run a query.
pub(crate) async fn run(AxumState(state): AxumState<Arc<State>>, req: Request) -> Response {
    if let Err(r) = check_origin_and_host(&state, req.headers(), req.uri()) {
        return *r;
    }
    // Every answer to an allowed origin carries the CORS headers, errors too: without them
    // a browser hides a 401 from the page, which cannot tell an expired token from a
    // network failure.
    let cors = cors_origin(&state, req.headers());
    let mut response = match authenticate(&state, req.headers(), req.uri()) {
        Ok(claims) => answer(&state, claims, req.into_body()).await,
        Err(r) => *r,
    };
    if let Some(origin) = cors {
        response
            .headers_mut()
            .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        response
            .headers_mut()
            .insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    response
}

async fn answer(state: &Arc<State>, claims: crate::auth::Claims, body: Body) -> Response {
    let bytes = match to_bytes(body, QUERY_BODY_BYTES_MAX).await {
        Ok(b) => b,
        Err(e) if is_length_limit(&e) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the query body is limited to {QUERY_BODY_BYTES_MAX} bytes"),
            )
        }
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("could not read the request body ({e}): send it again, whole"),
            )
        }
    };
    let req: QueryRequest = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!(
                    "{e}: send {{\"collection\": \"...\", \"where\": \"EXPR\", \"order_by\": \
                     \"FIELD[:desc]\", \"limit\": N}}"
                ),
            )
        }
    };
    let filter = match req.filter.as_deref().map(blazedb::query::parse).transpose() {
        Ok(f) => f,
        Err(e) => return expression_error(&e),
    };
    if let Some(Err(m)) = filter
        .as_ref()
        .map(|f| crate::rules::check_params(f.root()))
    {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_expression",
            format!("where: {m}"),
        );
    }
    let order_by = match req.order_by {
        None => Ok(Vec::new()),
        Some(OrderBySpec::One(s)) => OrderBy::parse(&s).map(|o| vec![o]),
        Some(OrderBySpec::Many(v)) if v.len() > ORDER_BY_KEYS_MAX => Err(format!(
            "has {} keys, the limit is {ORDER_BY_KEYS_MAX}: sort by fewer fields",
            v.len()
        )),
        Some(OrderBySpec::Many(v)) => v.iter().map(|s| OrderBy::parse(s)).collect(),
    };
    let order_by = match order_by {
        Ok(o) => o,
        Err(m) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("order_by {m}"),
            )
        }
    };
    let limit = req
        .limit
        .unwrap_or(QUERY_LIMIT_DEFAULT)
        .min(QUERY_LIMIT_MAX);
    let offset = req.offset.unwrap_or(0);
    let collection = req.collection;
    if !state.rules.can_read_collection(&collection) {
        return Json(Vec::<serde_json::Value>::new()).into_response();
    }
    let params = params(&claims);
    // When every record is readable, the store can apply limit and offset itself.
    let everything_readable = match state.rules.collection(&collection) {
        None => !state.rules.is_restricted(),
        Some(r) => matches!(r.read, Rule::Constant(true)),
    };
    let query = Query {
        filter,
        params: params.clone(),
        order_by,
        limit: everything_readable.then_some(limit),
        offset: if everything_readable { offset } else { 0 },
        ..Query::default()
    };
    let st = state.clone();
    let result = tokio::task::spawn_blocking(move || {
        let records = st.db.query(&collection, &query)?;
        let readable = records
            .into_iter()
            .filter(|r| {
                everything_readable || st.rules.can_read(&collection, r.id, &r.fields, &params)
            })
            .skip(if everything_readable { 0 } else { offset })
            .take(limit)
            .map(|r| r.to_json())
            .collect::<Vec<_>>();
        Ok::<_, blazedb::Error>(readable)
    })
    .await;
    match result {
        Ok(Ok(records)) => Json(records).into_response(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e),
    }
}

/// CORS preflight for browsers on allowed origins.
pub(crate) async fn preflight(
    AxumState(state): AxumState<Arc<State>>,
    headers: HeaderMap,
) -> Response {
    let Some(origin) = cors_origin(&state, &headers) else {
        return StatusCode::NO_CONTENT.into_response();
    };
    let mut r = StatusCode::NO_CONTENT.into_response();
    let h = r.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization, content-type"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    r
}

/// The `Access-Control-Allow-Origin` value for a request from an allowed browser origin, when
/// the relay has an allow-list.
fn cors_origin(state: &State, headers: &HeaderMap) -> Option<HeaderValue> {
    if state.origins.is_empty() {
        return None;
    }
    let origin = headers.get(header::ORIGIN)?;
    state
        .origin_allowed(Some(origin.to_str().ok()?))
        .then(|| origin.clone())
}

/// Whether reading the body failed on its size limit (not a broken or malformed body).
fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = s.source();
    }
    false
}

fn expression_error(e: &QueryError) -> Response {
    let mut body = serde_json::json!({
        "code": "invalid_expression",
        "error": e.to_string(),
    });
    if let QueryError::Syntax { line, column, .. } = e {
        body["line"] = (*line).into();
        body["column"] = (*column).into();
    }
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}
