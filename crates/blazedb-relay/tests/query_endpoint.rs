//! `POST /v1/query`: answers the relay's records matching an expression, sorted and limited,
//! filtered by the caller's read rule (the limit counts readable records); `$auth` works in
//! `where`; a closed or unknown collection answers `[]`; an invalid expression is a 400 naming
//! the column; malformed, oversized and unauthenticated requests get JSON errors; a null
//! claim reads nothing; too many sort keys are refused.

mod common;

use blazedb::Value;
use blazedb_relay::AuthConfig;
use common::{http, ids, jwt_hs256, now_s, query, TestRelay};
use serde_json::json;

const SECRET: &str = "query-test-secret-0123456789";

fn token(sub: &str) -> String {
    jwt_hs256(SECRET, json!({"sub": sub, "exp": now_s() + 600}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_are_filtered_by_the_read_rule() {
    let rules_dir = tempfile::tempdir().unwrap();
    let rules = TestRelay::write_rules(
        rules_dir.path(),
        "[bugs]\nread = \"assignee == $auth.sub || public == true\"\nwrite = false\n\
         [news]\nread = true\n",
    );
    let relay = TestRelay::start(|c| {
        c.auth = AuthConfig::JwtSecret(SECRET.into());
        c.rules = Some(rules);
    })
    .await;
    let db = &relay.db;
    let mut alices = Vec::new();
    for p in 0..5i64 {
        alices.push(
            db.insert(
                "bugs",
                [
                    ("assignee", Value::from("alice")),
                    ("priority", p.into()),
                    ("public", false.into()),
                ],
            )
            .unwrap(),
        );
        db.insert(
            "bugs",
            [
                ("assignee", Value::from("bob")),
                ("priority", (p + 10).into()),
                ("public", false.into()),
            ],
        )
        .unwrap();
    }
    let public = db
        .insert(
            "bugs",
            [
                ("assignee", Value::from("bob")),
                ("priority", 7.into()),
                ("public", true.into()),
            ],
        )
        .unwrap();
    db.insert("admin", [("secret", "x")]).unwrap();
    for i in 0..3 {
        db.insert("news", [("n", i)]).unwrap();
    }
    let alice = token("alice");

    // Everything alice may read: her five and the public one; never bob's private bugs.
    let r = query(relay.addr, &alice, json!({"collection": "bugs"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mut expected: Vec<String> = alices
        .iter()
        .chain([&public])
        .map(|i| i.to_string())
        .collect();
    expected.sort();
    assert_eq!(ids(&r), expected);

    // Sorted and limited: the limit counts readable records only (the direction in any
    // case).
    for order in ["priority:desc", "priority:DESC"] {
        let r = query(
            relay.addr,
            &alice,
            json!({"collection": "bugs", "order_by": order, "limit": 2}),
        )
        .await;
        assert_eq!(priorities(&r), [7, 4], "{order}");
    }
    let r = query(
        relay.addr,
        &alice,
        json!({"collection": "bugs", "where": "priority >= 3 && assignee == $auth.sub",
               "order_by": ["priority"]}),
    )
    .await;
    let p = priorities(&r);
    assert_eq!(p, [3, 4]);
    let r = query(
        relay.addr,
        &alice,
        json!({"collection": "news", "limit": 2, "offset": 2}),
    )
    .await;
    assert_eq!(r.json().as_array().unwrap().len(), 1);

    // Closed and unknown collections answer nothing.
    for c in ["admin", "no_such_collection"] {
        let r = query(relay.addr, &alice, json!({"collection": c})).await;
        assert_eq!((r.status, r.body.as_str()), (200, "[]"));
    }

    // An invalid expression: 400 with the parser's message and column.
    let r = query(
        relay.addr,
        &alice,
        json!({"collection": "bugs", "where": "priority = 3"}),
    )
    .await;
    assert_eq!(r.status, 400);
    let e = r.json();
    assert_eq!(e["code"], "invalid_expression");
    assert_eq!(e["column"], 10);
    assert!(
        e["error"].as_str().unwrap().contains("did you mean `==`"),
        "{e}"
    );

    // Malformed and oversized bodies, unknown fields.
    let auth = format!("Bearer {alice}");
    let h = [("authorization", auth.as_str())];
    let r = http(relay.addr, "POST", "/v1/query", &h, "{not json").await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (400, Some("invalid_request"))
    );
    let r = http(
        relay.addr,
        "POST",
        "/v1/query",
        &h,
        r#"{"collection":"bugs","wher":"x"}"#,
    )
    .await;
    assert_eq!(r.status, 400);
    let big = format!(
        r#"{{"collection":"bugs","where":"{}"}}"#,
        "a".repeat(100_000)
    );
    let r = http(relay.addr, "POST", "/v1/query", &h, &big).await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (413, Some("body_too_large"))
    );
    let r = http(relay.addr, "GET", "/v1/nothing", &h, "").await;
    assert_eq!(r.status, 404);

    // A body that breaks off or is malformed is not "too large".
    let r = raw_http(
        relay.addr,
        &format!(
            "POST /v1/query HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {alice}\r\n\
             transfer-encoding: chunked\r\nconnection: close\r\n\r\nZZZ\r\nabc\r\n0\r\n\r\n"
        ),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    assert!(r.contains("could not read the request body"), "{r}");

    // A word after the colon that is no direction is refused, not taken for part of a field
    // name (which would answer unsorted).
    let r = query(
        relay.addr,
        &alice,
        json!({"collection": "bugs", "order_by": ["priority:descending"]}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("asc or desc"), "{}", r.body);
    // A collection name no collection can have is a 400 naming the limit, not `[]`.
    // It says what a write to that name is told.
    for name in ["c".repeat(200), String::new(), "tab\there".into()] {
        let r = query(relay.addr, &alice, json!({"collection": name})).await;
        assert_eq!(r.status, 400, "{}", r.body);
        let write = relay.db.insert(&name, [("a", 1)]).unwrap_err().to_string();
        assert_eq!(
            (r.json()["code"].as_str(), r.json()["error"].as_str()),
            (Some("invalid_request"), Some(write.as_str())),
        );
        if name.len() == 200 {
            assert!(r.body.contains("128"), "{}", r.body);
        }
    }
    // SQL's `FIELD desc` and `a,b`: refused the same way, saying how to write them.
    for (order_by, says) in [
        ("priority desc", "priority:desc"),
        ("priority,title", "one sort key each"),
        ("priority:", "nothing after ':'"),
        (":", "nothing after ':'"),
        ("priority:desc:desc", "one direction per key"),
    ] {
        let r = query(
            relay.addr,
            &alice,
            json!({"collection": "bugs", "order_by": order_by}),
        )
        .await;
        assert_eq!(r.status, 400, "{}", r.body);
        assert!(r.body.contains(says), "{order_by}: {}", r.body);
    }

    // Only `$auth` exists in a query: another parameter is a typo, not an empty answer.
    let r = query(
        relay.addr,
        &alice,
        json!({"collection": "bugs", "where": "assignee == $user"}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("unknown parameter $user"), "{}", r.body);
    relay.stop().await;
}

/// A request naming more sort keys than a query may have is refused before it reaches the
/// store: one body of 64 KiB held ~16,000 keys and kept the relay's store busy for a minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_order_by_keys_are_refused() {
    let relay = TestRelay::start(|c| c.auth = AuthConfig::JwtSecret(SECRET.into())).await;
    for p in [3i64, 1, 2] {
        relay.db.insert("bugs", [("priority", p)]).unwrap();
    }
    let alice = token("alice");
    let max = blazedb::limits::ORDER_BY_KEYS_MAX;
    let r = query(
        relay.addr,
        &alice,
        json!({"collection": "bugs", "order_by": vec!["priority"; max + 1]}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["code"], "invalid_request");
    let expected = format!("order_by has {} keys, the limit is {max}", max + 1);
    assert!(r.body.contains(&expected), "{}", r.body);
    let r = query(
        relay.addr,
        &alice,
        json!({"collection": "bugs", "order_by": vec!["priority:desc"; max]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(priorities(&r), [3, 2, 1]);
    relay.stop().await;
}

/// Request bodies of the wrong shape get a `400` that says what a body looks like (never a
/// type name of ours), and a limit over the most one answer holds is refused rather than cut:
/// a client paging until a page comes back shorter than its limit would stop early.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_and_limits_over_the_maximum_are_refused_with_the_shape_to_send() {
    let relay = TestRelay::start(|c| c.auth = AuthConfig::JwtSecret(SECRET.into())).await;
    for p in 0..3i64 {
        relay.db.insert("bugs", [("priority", p)]).unwrap();
    }
    let alice = token("alice");
    for (body, says) in [
        (json!({}), "missing field `collection`"),
        (json!({"collection": 5}), "invalid type"),
        (json!({"collection": "bugs", "limit": "10"}), "invalid type"),
        (json!({"collection": "bugs", "limit": -1}), "invalid value"),
        (
            json!({"collection": "bugs", "order_by": 5}),
            "a string \"FIELD\" or \"FIELD:desc\", or a list of such strings",
        ),
    ] {
        let r = query(relay.addr, &alice, body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert_eq!(r.json()["code"], "invalid_request", "{body}");
        let message = r.json()["error"].as_str().unwrap().to_owned();
        assert!(message.contains(says), "{body}: {message}");
        assert!(message.contains("\"offset\": N"), "{body}: {message}");
        assert!(!message.contains("OrderBySpec"), "{body}: {message}");
    }
    let max = blazedb_relay::limits::QUERY_LIMIT_MAX;
    let r = query(
        relay.addr,
        &alice,
        json!({"collection": "bugs", "limit": max + 1}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    let message = r.json()["error"].as_str().unwrap().to_owned();
    assert!(
        message.contains(&format!("limit {} is over the {max} records", max + 1))
            && message.contains("page with \"offset\""),
        "{message}"
    );
    let r = query(
        relay.addr,
        &alice,
        json!({"collection": "bugs", "limit": max}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json().as_array().unwrap().len(), 3);
    relay.stop().await;
}

/// A JWT claim whose value is null is one the token lacks: a rule comparing it matches
/// nothing, not every record without the field (null equals a missing field).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_null_claim_reads_nothing() {
    let rules_dir = tempfile::tempdir().unwrap();
    let rules = TestRelay::write_rules(
        rules_dir.path(),
        "[docs]\nread = \"org_id == $auth.org_id\"\nwrite = false\n",
    );
    let relay = TestRelay::start(|c| {
        c.auth = AuthConfig::JwtSecret(SECRET.into());
        c.rules = Some(rules);
    })
    .await;
    let acme = relay.db.insert("docs", [("org_id", "acme")]).unwrap();
    relay.db.insert("docs", [("title", "no org")]).unwrap();
    let null_org = jwt_hs256(
        SECRET,
        json!({"sub": "mallory", "org_id": null, "exp": now_s() + 600}),
    );
    let r = query(relay.addr, &null_org, json!({"collection": "docs"})).await;
    assert_eq!((r.status, r.body.as_str()), (200, "[]"));
    let member = jwt_hs256(
        SECRET,
        json!({"sub": "ann", "org_id": "acme", "exp": now_s() + 600}),
    );
    let r = query(relay.addr, &member, json!({"collection": "docs"})).await;
    assert_eq!(ids(&r), [acme.to_string()]);
    relay.stop().await;
}

/// The `priority` of each record a query answered, in order.
fn priorities(r: &common::HttpResponse) -> Vec<i64> {
    r.json()
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["priority"].as_i64().unwrap())
        .collect()
}

/// One raw HTTP exchange: the request as written, the response as read.
async fn raw_http(addr: std::net::SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A query reads through a handle of its own: while the handle the sessions apply through
/// is held (here by a long write transaction; in service, by a sync apply), queries still
/// answer, from the last committed state. And so a long query scan never holds up sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_answer_while_the_sessions_handle_is_busy() {
    let relay = TestRelay::start(|c| {
        c.auth = AuthConfig::JwtSecret(SECRET.into());
    })
    .await;
    let committed = relay.db.insert("bugs", [("n", 1)]).unwrap();
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let db = relay.db.clone();
    let holder = std::thread::spawn(move || {
        db.transaction(|tx| {
            tx.insert("bugs", [("n", 2)])?;
            held_tx.send(()).unwrap();
            // Held until the query has answered (or for 20 s, which fails the test).
            let _ = done_rx.recv_timeout(std::time::Duration::from_secs(20));
            Ok(())
        })
        .unwrap();
    });
    held_rx.recv().unwrap();
    let started = std::time::Instant::now();
    let r = query(relay.addr, &token("alice"), json!({"collection": "bugs"})).await;
    let waited = started.elapsed();
    done_tx.send(()).unwrap();
    holder.join().unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(ids(&r), [committed.to_string()], "the committed state");
    assert!(
        waited < std::time::Duration::from_secs(10),
        "the query waited {waited:?} for the sessions' handle"
    );
    // And once the transaction is in, queries see it.
    let r = query(relay.addr, &token("alice"), json!({"collection": "bugs"})).await;
    assert_eq!(r.json().as_array().unwrap().len(), 2);
    relay.stop().await;
}
