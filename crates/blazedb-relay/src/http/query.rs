//! `POST /v1/query`: server-side queries over the relay's store.
//!
//! ```json
//! {"collection": "bugs", "where": "status == \"open\" && priority >= 5",
//!  "order_by": "priority:desc", "limit": 20, "offset": 0}
//! ```
//!
//! `where` is the query language (DESIGN decision 10) and may use the caller's claims
//! (`assignee == $auth.sub`); `order_by` is `"FIELD"`, `"FIELD:desc"` or a list of at most
//! [`ORDER_BY_KEYS_MAX`] of them (8), most significant first (`FIELD` is a top-level field of
//! that name, dots and all, or else a path into maps, `a.b`); `limit` defaults to
//! [`QUERY_LIMIT_DEFAULT`], and one over [`QUERY_LIMIT_MAX`] is `400` (cutting it silently
//! would end a client's paging early: it stops at the first page shorter than its limit;
//! page with `offset` instead); `offset + limit` over [`QUERY_OFFSET_AND_LIMIT_MAX`] is `400`
//! too (the scan reads every record before the page). The answer is a JSON array of
//! records (`Record::to_json`: the fields and `"_id"`), only those the caller's read rule
//! allows — `limit` counts those (the rule is applied in the store's scan, which stops once it
//! has `offset + limit` of them). A collection that does not exist, or that the rules close,
//! answers `[]`. An invalid expression is `400` with the parser's message, `line` and
//! `column`. A body over [`QUERY_BODY_BYTES_MAX`] is `413`; one that takes longer than the
//! handshake timeout to arrive is `408`. Queries run one at a time; one that waits longer than
//! [`QUERY_TURN_WAIT_MS`] for its turn is `503` with the code `busy` (retry later).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State as AxumState};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use blazedb::limits::ORDER_BY_KEYS_MAX;
use blazedb::query::{Expr, Params, QueryError};
use blazedb::{OrderBy, Query, Record};
use serde::Deserialize;

use super::{authenticate, check_origin_and_host, client_address, error, log_refusal};
use crate::auth::params;
use crate::limits::{
    QUERY_BODY_BYTES_MAX, QUERY_LIMIT_DEFAULT, QUERY_LIMIT_MAX, QUERY_OFFSET_AND_LIMIT_MAX,
    QUERY_TURN_WAIT_MS,
};
use crate::log_throttle::RequestRefusal;
use crate::rules::{Rule, Rules};
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
#[serde(
    untagged,
    expecting = "a string \"FIELD\" or \"FIELD:desc\", or a list of such strings"
)]
enum OrderBySpec {
    One(String),
    Many(Vec<String>),
}

/// What a valid body looks like, for the `400` of one that is not.
const QUERY_BODY_EXAMPLE: &str = "{\"collection\": \"NAME\", \"where\": \"EXPR\", \"order_by\": \
     \"FIELD[:desc]\" or [\"FIELD[:desc]\", ...], \"limit\": N, \"offset\": N} (all but \
     collection optional; limit and offset are whole numbers)";

/// Run a query.
pub(crate) async fn run(AxumState(state): AxumState<Arc<State>>, req: Request) -> Response {
    if let Err(r) = check_origin_and_host(&state, &req) {
        return *r;
    }
    // Every answer to an allowed origin carries the CORS headers, errors too: without them
    // a browser hides a 401 from the page, which cannot tell an expired token from a
    // network failure.
    let cors = cors_origin(&state, req.headers());
    let client = client_address(&req);
    let mut response = match authenticate(&state, &req) {
        Ok(claims) => answer(&state, claims, client, req.into_body()).await,
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

async fn answer(
    state: &Arc<State>,
    claims: crate::auth::Claims,
    client: Option<IpAddr>,
    body: Body,
) -> Response {
    let refuse = |refusal, status, message| refuse(state, client, refusal, status, message);
    // The body gets the handshake timeout, as the request head does: a client that sends it
    // a byte at a time would otherwise hold its connection slot for as long as it likes
    // (every byte resets the idle timer, and hyper's head timeout is over). At most 64 KiB
    // arrive in far less on any working connection.
    let limit = Duration::from_millis(state.limits.handshake_timeout_ms);
    let read = tokio::time::timeout(limit, to_bytes(body, QUERY_BODY_BYTES_MAX)).await;
    let Ok(read) = read else {
        let mut r = refuse(
            RequestRefusal::BodyTimeout,
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the query body did not arrive within {} ms: send it whole, at once",
                limit.as_millis()
            ),
        );
        // The rest of the body is never read: this connection cannot serve another request.
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return r;
    };
    let bytes = match read {
        Ok(b) => b,
        Err(e) if is_length_limit(&e) => {
            return refuse(
                RequestRefusal::BodyTooLarge,
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the query body is limited to {QUERY_BODY_BYTES_MAX} bytes"),
            )
        }
        Err(e) => {
            return refuse(
                RequestRefusal::InvalidRequest,
                StatusCode::BAD_REQUEST,
                format!("could not read the request body ({e}): send it again, whole"),
            )
        }
    };
    let req: QueryRequest = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => {
            return refuse(
                RequestRefusal::InvalidRequest,
                StatusCode::BAD_REQUEST,
                format!("{e}: send {QUERY_BODY_EXAMPLE}"),
            )
        }
    };
    let filter = match req.filter.as_deref().map(blazedb::query::parse).transpose() {
        Ok(f) => f,
        Err(e) => {
            log_refusal(
                state,
                QUERY_ENDPOINT,
                client,
                RequestRefusal::InvalidExpression,
                StatusCode::BAD_REQUEST,
                None,
            );
            return expression_error(&e);
        }
    };
    if let Some(Err(m)) = filter
        .as_ref()
        .map(|f| crate::rules::check_params(f.root()))
    {
        return refuse(
            RequestRefusal::InvalidExpression,
            StatusCode::BAD_REQUEST,
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
            return refuse(
                RequestRefusal::InvalidRequest,
                StatusCode::BAD_REQUEST,
                format!("order_by {m}"),
            )
        }
    };
    let limit = req.limit.unwrap_or(QUERY_LIMIT_DEFAULT);
    if limit > QUERY_LIMIT_MAX {
        return refuse(
            RequestRefusal::InvalidRequest,
            StatusCode::BAD_REQUEST,
            format!(
                "limit {limit} is over the {QUERY_LIMIT_MAX} records this relay answers at \
                 once: ask for at most {QUERY_LIMIT_MAX} and page with \"offset\""
            ),
        );
    }
    let offset = req.offset.unwrap_or(0);
    if offset.saturating_add(limit) > QUERY_OFFSET_AND_LIMIT_MAX {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!(
                "offset {offset} with limit {limit} reaches past record \
                 {QUERY_OFFSET_AND_LIMIT_MAX}, the deepest this relay pages with \
                 \"offset\" (it reads every record before the page): page further with a \
                 filter on the sort key instead, e.g. \"order_by\": \"FIELD\" with \
                 \"where\": \"FIELD > LAST\", LAST being the previous page's last value"
            ),
        );
    }
    let collection = req.collection;
    // A name no collection can have (too long, empty) is a mistake to report, not an empty
    // answer.
    if let Err(e) = blazedb::validate_collection_name(&collection) {
        return refuse(
            RequestRefusal::InvalidRequest,
            StatusCode::BAD_REQUEST,
            e.to_string(),
        );
    }
    let rules = state.rules();
    if !rules.can_read_collection(&collection) {
        return Json(Vec::<serde_json::Value>::new()).into_response();
    }
    let query = store_query(
        &rules,
        &collection,
        filter,
        params(&claims),
        order_by,
        limit,
        offset,
    );
    let turn = tokio::time::timeout(
        Duration::from_millis(QUERY_TURN_WAIT_MS),
        state.query_turn.acquire(),
    )
    .await;
    let Ok(Ok(_turn)) = turn else {
        return refuse(
            RequestRefusal::Busy,
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the relay answered other queries for the last {} s and this one did not get \
                 its turn: retry in a moment (a narrower \"where\", or a smaller \"limit\", \
                 makes queries quicker)",
                QUERY_TURN_WAIT_MS / 1000
            ),
        );
    };
    let st = state.clone();
    let result = tokio::task::spawn_blocking(move || {
        let records = st.query_db.query(&collection, &query)?;
        Ok::<_, blazedb::Error>(records.iter().map(Record::to_json).collect::<Vec<_>>())
    })
    .await;
    match result {
        Ok(Ok(records)) => Json(records).into_response(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e),
    }
}

/// The path of this endpoint, for log lines.
const QUERY_ENDPOINT: &str = "/v1/query";

/// Refuse a query before it runs: the JSON error, and a `request_refused` line
/// ([`log_refusal`]) with the message unless it may quote the body (a `400`'s does: a JSON
/// error repeats the value it could not take, an expression's its text).
fn refuse(
    state: &State,
    client: Option<IpAddr>,
    refusal: RequestRefusal,
    status: StatusCode,
    message: String,
) -> Response {
    let quotes_body = status == StatusCode::BAD_REQUEST;
    let logged = (!quotes_body).then_some(message.as_str());
    log_refusal(state, QUERY_ENDPOINT, client, refusal, status, logged);
    error(status, refusal.code(), message)
}

/// The store's query for a request on a collection the caller may read: the caller's read
/// rule joins the filter, so the store's scan applies it, and `limit` and `offset` count
/// readable records there. (Filtering the store's answer instead meant asking it for every
/// match: each request read the whole collection under the database's lock.)
fn store_query(
    rules: &Rules,
    collection: &str,
    filter: Option<Expr>,
    params: Params,
    order_by: Vec<OrderBy>,
    limit: usize,
    offset: usize,
) -> Query {
    let read_rule = match rules.collection(collection).map(|r| &r.read) {
        Some(Rule::Expr(rule)) => Some(rule),
        // No rules file, or a constant rule: `true` here (a closed collection answers `[]`
        // before asking the store).
        None | Some(Rule::Constant(_)) => None,
    };
    let filter = match (filter, read_rule) {
        (Some(f), Some(rule)) => Some(f.and(rule)),
        (None, Some(rule)) => Some(rule.clone()),
        (f, None) => f,
    };
    Query {
        filter,
        params,
        order_by,
        limit: Some(limit),
        offset,
        ..Query::default()
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use blazedb::{Database, OpenOptions, Value};

    use super::*;
    use crate::auth::Claims;

    /// The read rule is part of the store's scan: with a limit, the store reads the
    /// collection only up to the last readable record the answer needs, and sorts only
    /// readable records.
    #[test]
    fn the_read_rule_limits_the_store_scan() {
        let rules = Rules::parse(
            "[bugs]\nread = \"owner == $auth.sub\"\n",
            Path::new("rules.toml"),
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path().join("relay.db"), OpenOptions::default()).unwrap();
        db.transaction(|tx| {
            for n in 0..40i64 {
                let owner = if n % 4 == 0 { "alice" } else { "bob" };
                tx.insert("bugs", [("owner", Value::from(owner)), ("n", n.into())])?;
            }
            Ok(())
        })
        .unwrap();
        let all = db.scan("bugs").unwrap();
        let alices: Vec<usize> = (0..all.len())
            .filter(|&i| all[i].fields["owner"] == Value::from("alice"))
            .collect();
        let mut claims = Claims::new();
        claims.insert("sub".into(), Value::from("alice"));

        let q = store_query(&rules, "bugs", None, params(&claims), Vec::new(), 2, 1);
        let (records, stats) = db.query_with_stats("bugs", &q).unwrap();
        assert_eq!(records, [all[alices[1]].clone(), all[alices[2]].clone()]);
        assert_eq!(stats.records_decoded, alices[2] as u64 + 1);

        let filter = blazedb::query::parse("n >= 10").ok();
        let order_by = vec![OrderBy::parse("n:desc").unwrap()];
        let q = store_query(&rules, "bugs", filter, params(&claims), order_by, 3, 0);
        let n: Vec<Value> = db
            .query("bugs", &q)
            .unwrap()
            .into_iter()
            .map(|r| r.fields["n"].clone())
            .collect();
        assert_eq!(n, [36, 32, 28].map(Value::Int));
    }
}
