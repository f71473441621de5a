//! Two WebSocket clients — each a local database running a session over the WebSocket
//! adapter — sync through the relay in real time: every write on one appears on the other
//! while both stay connected, in both directions, and the relay's own store holds it all
//! (`POST /v1/query` sees it).

mod common;

use std::time::{Duration, Instant};

use blazedb::{Patch, Value};
use common::{ids, open, query, wait_until, Client, TestRelay, TOKEN};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_reach_the_other_client_and_the_relay_store() {
    let relay = TestRelay::start(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
    let first = a
        .insert("notes", [("text", "written before connecting")])
        .unwrap();

    let ca = Client::connect(&relay, a.clone(), TOKEN).await;
    let cb = Client::connect(&relay, b.clone(), TOKEN).await;
    wait_until(Duration::from_secs(10), || {
        b.get("notes", first).unwrap().is_some()
    })
    .await;

    // Real time: each write reaches the other client with both sessions still running.
    let mut slowest = Duration::ZERO;
    let mut written = vec![first];
    for i in 0..20 {
        let t = Instant::now();
        let id = a
            .insert("notes", [("text", format!("from a #{i}"))])
            .unwrap();
        wait_until(Duration::from_secs(5), || {
            b.get("notes", id).unwrap().is_some()
        })
        .await;
        slowest = slowest.max(t.elapsed());
        written.push(id);
    }
    b.update("notes", first, Patch::new().set("text", "edited on b"))
        .unwrap();
    wait_until(Duration::from_secs(5), || {
        a.get("notes", first).unwrap().unwrap().fields["text"] == Value::from("edited on b")
    })
    .await;
    assert!(
        !ca.task.is_finished() && !cb.task.is_finished(),
        "still connected"
    );
    eprintln!("slowest A → relay → B delivery: {slowest:?}");

    // The relay applied everything to its own store.
    let r = query(relay.addr, TOKEN, json!({"collection": "notes"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mut expected: Vec<String> = written.iter().map(|id| id.to_string()).collect();
    expected.sort();
    assert_eq!(ids(&r), expected);
    let r = query(
        relay.addr,
        TOKEN,
        json!({"collection": "notes", "where": "text == \"edited on b\""}),
    )
    .await;
    assert_eq!(ids(&r), vec![first.to_string()]);
    assert_eq!(relay.db.count("notes").unwrap(), 21);

    ca.caught_up().await;
    cb.caught_up().await;
    ca.finish().await.unwrap();
    cb.finish().await.unwrap();
    relay.stop().await;
}

/// A chain of ~93k linked cells (every transaction also updates one hot record) goes from A
/// through the relay to B as one unit each hop: both receivers stage it on disk and apply it
/// whole, so B's watcher never sees the hot record at an intermediate value, nor an item
/// before the hot record reached its final value.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_long_chain_of_linked_transactions_arrives_whole_through_the_relay() {
    let relay = TestRelay::start(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
    // Both known to the relay first, so the chain travels in the feed. Then 1,000
    // transactions, each linked to the next through `hot`.
    a.insert("notes", [("text", "hello")]).unwrap();
    let ca = Client::connect(&relay, a.clone(), TOKEN).await;
    let cb = Client::connect(&relay, b.clone(), TOKEN).await;
    ca.caught_up().await;
    cb.caught_up().await;
    ca.finish().await.unwrap();
    cb.finish().await.unwrap();

    let hot = blazedb::RecordId(1u128.to_be_bytes());
    for i in 1..=1_000i64 {
        a.transaction(|tx| {
            tx.upsert("hot", hot, [("n", Value::Int(i))])?;
            for k in 0..30u128 {
                let id = blazedb::RecordId(((i as u128) << 32 | k | 1 << 100).to_be_bytes());
                tx.insert_with_id(
                    "items",
                    id,
                    [("batch", Value::Int(i)), ("x", Value::Int(7))],
                )?;
            }
            Ok(())
        })
        .unwrap();
    }
    let hot_events = b.watch("hot", None, Some(10_000)).unwrap();
    let item_events = b.watch("items", None, Some(100_000)).unwrap();
    let ca = Client::connect(&relay, a.clone(), TOKEN).await;
    let cb = Client::connect(&relay, b.clone(), TOKEN).await;
    wait_until(Duration::from_secs(60), || {
        b.count("items").unwrap() == 30_000
    })
    .await;
    let mut hot_seen = 0;
    // Events are published just after the commit that the count saw: the first may lag.
    let mut hot_items: Vec<blazedb::WatchItem> = hot_events
        .recv_timeout(Duration::from_secs(10))
        .into_iter()
        .collect();
    hot_items.extend(std::iter::from_fn(|| hot_events.try_recv()));
    for item in hot_items {
        match item {
            blazedb::WatchItem::Event(e) => {
                assert_eq!(
                    e.record.fields["n"],
                    Value::Int(1_000),
                    "a part of the chain showed"
                );
                hot_seen += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(hot_seen >= 1);
    let mut items_seen = 0;
    while let Some(item) = item_events.recv_timeout(Duration::from_secs(10)) {
        assert!(matches!(item, blazedb::WatchItem::Event(_)), "{item:?}");
        items_seen += 1;
        if items_seen == 30_000 {
            break;
        }
    }
    assert_eq!(items_seen, 30_000);
    assert!(item_events.try_recv().is_none(), "one event per item");
    assert_eq!(relay.db.count("items").unwrap(), 30_000);
    ca.caught_up().await;
    cb.caught_up().await;
    ca.finish().await.unwrap();
    cb.finish().await.unwrap();
    relay.stop().await;
}

/// Another process writing the relay's store (an operator's `blazedb put`, a service beside
/// the relay) reaches connected clients at once, with nothing written through the relay: its
/// sessions are woken by the relay's head watch (the file system's notice of the write), not
/// left until something else wakes them. The relay's pings are an hour apart here and the
/// client's own come after 5 s without sending (each would make the relay's session read its
/// feed), so within 3 s only the watch can.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_into_the_relays_store_by_another_process_reaches_clients() {
    let relay = TestRelay::start(|c| {
        c.limits.ping_interval_ms = 3_600_000;
        c.limits.idle_timeout_ms = 4 * 3_600_000;
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path(), "a");
    let ca = Client::connect(&relay, a.clone(), TOKEN).await;
    ca.caught_up().await;

    // A second handle is another process as far as the relay's handle knows: its commits
    // fire none of the relay's listeners.
    let operator =
        blazedb::Database::open(relay.db.path(), blazedb::OpenOptions::default()).unwrap();
    for i in 0..3 {
        let id = operator
            .insert("notices", [("text", format!("from the operator #{i}"))])
            .unwrap();
        wait_until(Duration::from_secs(3), || {
            a.get("notices", id).unwrap().is_some()
        })
        .await;
    }
    assert!(!ca.task.is_finished(), "still connected");
    ca.finish().await.unwrap();
    relay.stop().await;
}
