//! A minimal protocol speaker for clients that hold an authenticated session open without a
//! database: HELLO, SUBSCRIBE, CAUGHT_UP and PONG out; PING, SUBSCRIBE, ERROR in. It uses the
//! core crate's own frame and message codecs (`blazedb::sync::{frame, message}`), so it speaks
//! whatever protocol version the relay speaks. 10,000 real `Database` clients would measure
//! SQLite files, not the relay's memory per connection.

use anyhow::{Context as _, Result};
use blazedb::limits::PROTOCOL_VERSION;
use blazedb::sync::frame::{FrameDecoder, FrameEncoder};
use blazedb::sync::message::{decode_simple, encode_simple, kind};
use blazedb::sync::{Hello, Message, SnapshotWish, SyncMode, SyncPolicy};
use blazedb::{NodeId, Seq};

/// What a received frame asks of a minimal client.
#[derive(Debug, PartialEq)]
pub(super) enum Incoming {
    /// The relay's HELLO: the session is established (the relay checked the token first).
    Hello,
    /// The relay subscribed to our (empty) feed: answer CAUGHT_UP.
    Subscribe,
    /// Answer with a PONG of this nonce.
    Ping(u64),
    /// The relay ended the session.
    Error(String),
    /// Anything else (CAUGHT_UP, PONG, …): nothing to do.
    Other(u8),
}

/// One session's worth of framing state, both directions (the CRC of frame `n` covers `n`).
#[derive(Debug, Default)]
pub(super) struct MiniSession {
    out: FrameEncoder,
    input: FrameDecoder,
}

impl MiniSession {
    fn frame(&mut self, m: &Message) -> Vec<u8> {
        let (k, payload) = encode_simple(m);
        self.out.encode(k, false, &payload)
    }

    /// HELLO: mode both, an empty feed, not a server, no capabilities (no LZ4: there is no
    /// data to compress), and the token.
    pub(super) fn hello(&mut self, node: NodeId, token: &str) -> Vec<u8> {
        self.frame(&Message::Hello(Hello {
            version: PROTOCOL_VERSION,
            node,
            last_seq: Seq(0),
            mode: SyncMode::Both,
            server: false,
            caps: 0,
            token: token.to_owned(),
        }))
    }

    /// SUBSCRIBE from 0, everything, no snapshot.
    pub(super) fn subscribe(&mut self) -> Vec<u8> {
        self.frame(&Message::Subscribe {
            from: Seq(0),
            policy: SyncPolicy::default(),
            snapshot: SnapshotWish::No,
            acked: Seq(0),
        })
    }

    /// CAUGHT_UP(0): our feed is empty.
    pub(super) fn caught_up(&mut self) -> Vec<u8> {
        self.frame(&Message::CaughtUp { seq: Seq(0) })
    }

    /// PONG(nonce).
    pub(super) fn pong(&mut self, nonce: u64) -> Vec<u8> {
        self.frame(&Message::Pong { nonce })
    }

    /// The frames in `bytes` (a WebSocket message holds one), checked and decoded.
    pub(super) fn receive(&mut self, bytes: &[u8]) -> Result<Vec<Incoming>> {
        self.input.push(bytes);
        let mut out = Vec::new();
        while let Some(f) = self
            .input
            .next_frame()
            .context("a bad frame from the relay")?
        {
            out.push(match f.kind {
                kind::HELLO => Incoming::Hello,
                kind::SUBSCRIBE => Incoming::Subscribe,
                kind::PING | kind::ERROR => match decode_simple(f.kind, &f.payload)
                    .context("a bad message from the relay")?
                {
                    Message::Ping { nonce } => Incoming::Ping(nonce),
                    Message::Error { code, message } => {
                        Incoming::Error(format!("{code:?}: {message}"))
                    }
                    _ => Incoming::Other(f.kind),
                },
                k => Incoming::Other(k),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two minimal sessions talking to each other: each decodes what the other encodes, in
    /// order (frame numbers in the CRC line up).
    #[test]
    fn minimal_sessions_understand_each_other() {
        let (mut a, mut b) = (MiniSession::default(), MiniSession::default());
        let mut wire = Vec::new();
        wire.extend(a.hello(NodeId([7; 16]), "t"));
        wire.extend(a.subscribe());
        wire.extend(a.caught_up());
        wire.extend(a.pong(9));
        let got = b.receive(&wire).unwrap();
        assert_eq!(
            got,
            [
                Incoming::Hello,
                Incoming::Subscribe,
                Incoming::Other(kind::CAUGHT_UP),
                Incoming::Other(kind::PONG)
            ]
        );
        let (k, p) = encode_simple(&Message::Ping { nonce: 42 });
        let ping = FrameEncoder::default().encode(k, false, &p);
        assert_eq!(
            MiniSession::default().receive(&ping).unwrap(),
            [Incoming::Ping(42)]
        );
        // A frame out of order fails its checksum.
        let mut c = MiniSession::default();
        let _skipped = a.pong(1);
        assert!(c.receive(&a.pong(2)).is_err());
    }
}
