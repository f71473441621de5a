//! A side that presented a token learns when the peer checked none: the peer's HELLO says so
//! (`caps::TOKEN_UNCHECKED`) and the session reports `SessionEvent::TokenUnchecked` once,
//! and goes on syncing; a peer that checks the token, and one of a release that does not say,
//! raise nothing.

mod common;

use std::sync::Arc;

use blazedb::sync::frame::FrameEncoder;
use blazedb::sync::message::{caps, encode_simple};
use blazedb::sync::{AccessControl, Hello, Message, Session, SessionConfig, SessionEvent};
use blazedb::Database;
use common::{open, pump};

/// A listener's token check.
#[derive(Debug)]
struct Token(&'static str);

impl AccessControl for Token {
    fn authenticate(&self, hello: &Hello) -> Result<(), String> {
        (hello.token == self.0)
            .then_some(())
            .ok_or_else(|| "bad token".into())
    }
    fn checks_credential(&self) -> bool {
        true
    }
    fn hello_after_authentication(&self) -> bool {
        true
    }
}

fn with_token(token: &str) -> SessionConfig {
    SessionConfig {
        token: token.into(),
        ..Default::default()
    }
}

fn events(s: &mut Session) -> Vec<SessionEvent> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

fn unchecked(events: &[SessionEvent]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, SessionEvent::TokenUnchecked))
        .count()
}

/// Sync `client` (with `client_cfg`) with `server` (with `server_cfg`); the client's events.
fn client_events(
    server: &Database,
    server_cfg: SessionConfig,
    client: &Database,
    client_cfg: SessionConfig,
) -> (Vec<SessionEvent>, Session) {
    let mut ss = Session::new(server, server_cfg, 0).unwrap();
    let mut sc = Session::new(client, client_cfg, 0).unwrap();
    pump(client, &mut sc, server, &mut ss);
    (events(&mut sc), ss)
}

#[test]
fn a_token_presented_to_a_peer_that_checks_none_is_reported_once_and_sync_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (server, client) = (open(dir.path(), "s"), open(dir.path(), "c"));
    server.insert("notes", [("text", "hello")]).unwrap();
    let (ev, mut ss) = client_events(&server, SessionConfig::default(), &client, with_token("t"));
    assert_eq!(unchecked(&ev), 1, "{ev:?}");
    assert!(
        matches!(ev[0], SessionEvent::Connected { .. }),
        "right after Connected: {ev:?}"
    );
    assert_eq!(client.count("notes").unwrap(), 1, "the session went on");
    // The accepting side hears nothing of it (its peer checks nothing either, but it
    // presented no token).
    assert_eq!(unchecked(&events(&mut ss)), 0);
}

#[test]
fn a_peer_that_checks_the_token_says_nothing_of_the_kind() {
    let dir = tempfile::tempdir().unwrap();
    let (server, client) = (open(dir.path(), "s"), open(dir.path(), "c"));
    server.insert("notes", [("text", "hello")]).unwrap();
    let cfg = SessionConfig {
        access: Some(Arc::new(Token("t"))),
        ..Default::default()
    };
    let (ev, _) = client_events(&server, cfg, &client, with_token("t"));
    assert_eq!(unchecked(&ev), 0, "{ev:?}");
    assert_eq!(client.count("notes").unwrap(), 1);
}

#[test]
fn without_a_token_there_is_nothing_to_report() {
    let dir = tempfile::tempdir().unwrap();
    let (server, client) = (open(dir.path(), "s"), open(dir.path(), "c"));
    let (ev, _) = client_events(&server, SessionConfig::default(), &client, with_token(""));
    assert_eq!(unchecked(&ev), 0, "{ev:?}");
}

/// Access control that checks nothing (rules on writes only, say) still says it checks no
/// credential, so the default of `checks_credential` is false.
#[test]
fn access_control_that_checks_no_credential_says_so() {
    #[derive(Debug)]
    struct WritesOnly;
    impl AccessControl for WritesOnly {}
    let dir = tempfile::tempdir().unwrap();
    let (server, client) = (open(dir.path(), "s"), open(dir.path(), "c"));
    let cfg = SessionConfig {
        access: Some(Arc::new(WritesOnly)),
        ..Default::default()
    };
    let (ev, _) = client_events(&server, cfg, &client, with_token("t"));
    assert_eq!(unchecked(&ev), 1, "{ev:?}");
}

/// A peer of a release before the bit sends a HELLO without it whether or not it checks
/// tokens: its silence is no alarm.
#[test]
fn a_peer_that_does_not_say_raises_no_alarm() {
    let dir = tempfile::tempdir().unwrap();
    let (server, client) = (open(dir.path(), "s"), open(dir.path(), "c"));
    let mut sc = Session::new(&client, with_token("t"), 0).unwrap();
    let old = Hello {
        version: blazedb::limits::PROTOCOL_VERSION,
        node: server.node_id(),
        last_seq: server.last_seq().unwrap(),
        mode: blazedb::sync::SyncMode::Both,
        server: true,
        caps: caps::LZ4 | caps::SPLIT_RECORDS,
        token: String::new(),
    };
    let (k, p) = encode_simple(&Message::Hello(old.clone()));
    let frame = FrameEncoder::default().encode(k, false, &p);
    sc.handle_bytes(0, &frame, &client).unwrap();
    let ev = events(&mut sc);
    assert!(matches!(ev[0], SessionEvent::Connected { .. }), "{ev:?}");
    assert_eq!(unchecked(&ev), 0, "{ev:?}");
    // The same HELLO with the bit is reported.
    let mut sc = Session::new(&client, with_token("t"), 0).unwrap();
    let said = Hello {
        caps: old.caps | caps::TOKEN_UNCHECKED,
        ..old
    };
    assert!(said.token_unchecked());
    let (k, p) = encode_simple(&Message::Hello(said));
    sc.handle_bytes(0, &FrameEncoder::default().encode(k, false, &p), &client)
        .unwrap();
    assert_eq!(unchecked(&events(&mut sc)), 1);
}
