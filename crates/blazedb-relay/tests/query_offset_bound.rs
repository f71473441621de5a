//! `POST /v1/query` refuses an `offset` that, with its `limit`, reaches past
//! `QUERY_OFFSET_AND_LIMIT_MAX` records (`400`, saying how to page deeper), rather than decode
//! and hold the caller's whole collection to answer `[]`; paging within the bound still works.

mod common;

use blazedb_relay::limits::QUERY_OFFSET_AND_LIMIT_MAX;
use common::{ids, query, TestRelay, TOKEN};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offset_past_the_bound_is_refused_and_paging_within_it_works() {
    let relay = TestRelay::start(|_| {}).await;
    for n in 0..5 {
        relay.db.insert("docs", [("n", n)]).unwrap();
    }
    for (offset, limit) in [
        (1_000_000_000_000_000u64, 1u64),
        (QUERY_OFFSET_AND_LIMIT_MAX as u64, 1),
        (QUERY_OFFSET_AND_LIMIT_MAX as u64 - 99, 100),
        (u64::MAX, 10),
    ] {
        let r = query(
            relay.addr,
            TOKEN,
            json!({"collection": "docs", "offset": offset, "limit": limit}),
        )
        .await;
        assert_eq!(r.status, 400, "offset {offset}: {}", r.body);
        let body = r.json();
        assert_eq!(body["code"], "invalid_request", "{body}");
        let m = body["error"].as_str().unwrap();
        assert!(
            m.contains(&format!("offset {offset} with limit {limit}"))
                && m.contains(&QUERY_OFFSET_AND_LIMIT_MAX.to_string())
                && m.contains("filter on the sort key"),
            "{m}"
        );
    }
    // At the bound, and in ordinary paging, offsets are served.
    let r = query(
        relay.addr,
        TOKEN,
        json!({"collection": "docs", "offset": QUERY_OFFSET_AND_LIMIT_MAX - 10, "limit": 10}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(ids(&r).is_empty());
    let r = query(
        relay.addr,
        TOKEN,
        json!({"collection": "docs", "order_by": "n", "offset": 3, "limit": 10}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(ids(&r).len(), 2);
    relay.stop().await;
}
