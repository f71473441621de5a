//! [`Guard`]: the relay's hardening layer between a transport and the session driver, the same
//! for WebSocket, TCP and Unix connections.
//!
//! ```text
//!  transport ──► Guard ──► run_session
//!               ├─ counts incoming frames: token bucket (RATE_LIMITED), first frame deadline
//!               │  (TIMEOUT: no HELLO in time)
//!               ├─ passes outgoing frames through whole, counting them
//!               └─ ends the connection itself when needed: an ERROR frame at the right frame
//!                  index (the checksum covers it), then shutdown, then drain the input
//!                  until the client closes (so no reset destroys the ERROR)
//! ```
//!
//! The session can end itself with an ERROR for anything it sees (malformed frames, bad
//! credentials, forbidden input), but not for what happens below it: a client that floods
//! messages, never says HELLO, or sends a WebSocket message that is not a frame (text, over
//! the size limit). For those, the guard stops passing input up, writes an ERROR frame with
//! the next outgoing frame index (so the client's checksum accepts it) after the last whole
//! frame the session wrote, shuts the transport down and fails the session's read. Only that
//! connection ends; the session sees a transport error.
//!
//! To always be able to insert a frame between two frames, the guard writes the session's
//! bytes to the transport one whole frame at a time: it buffers an incomplete frame (at most
//! one maximum frame, so writes wait instead of growing the buffer).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use blazedb::sync::ErrorCode;
use blazedb_net::rate::TokenBucket;
use blazedb_net::ws::{error_frame, frame_len, WsInputError, WS_PENDING_BYTES_MAX};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::limits::CLOSE_FLUSH_MS;

/// How the guard ended a connection, read by the relay after the session finished.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuardClose {
    /// The code sent in the ERROR frame.
    pub code: ErrorCode,
    /// The message sent with it.
    pub message: String,
}

/// Where the guard reports why it ended a connection.
pub type GuardReport = Arc<Mutex<Option<GuardClose>>>;

/// The guard's settings for one connection.
#[derive(Clone, Debug)]
pub struct GuardOptions {
    /// Sustained frames per second from the client; 0: unlimited.
    pub rate_per_s: u32,
    /// Burst above the sustained rate.
    pub burst: u32,
    /// The client's first frame (HELLO) must arrive within this long; `None`: no deadline.
    pub hello_timeout: Option<Duration>,
    /// Where to count the frames and framed bytes that go out (`frames_sent_total`,
    /// `bytes_sent_total`), each when it is queued whole for the transport: counted here,
    /// the guard's own ERROR frame is in them and what it swallowed while closing is not
    /// (the session would count neither right). A frame still queued when the connection
    /// fails is counted all the same.
    pub sent: Option<SentCounters>,
}

/// The relay's counters of frames and framed bytes sent.
#[derive(Clone, Debug, Default)]
pub struct SentCounters {
    /// Whole frames handed to the transport.
    pub frames: prometheus_client::metrics::counter::Counter,
    /// Their bytes.
    pub bytes: prometheus_client::metrics::counter::Counter,
}

/// See the [module docs](self).
#[derive(Debug)]
pub struct Guard<T> {
    inner: T,
    // Input.
    /// Length-prefix bytes of the incoming frame being read (`header_len` of them).
    header: [u8; 10],
    header_len: usize,
    /// Bytes of the current incoming frame's body and CRC still to come; 0 at a boundary.
    in_remaining: u64,
    /// The prefix was not a varint: stop counting (the session reports the error itself).
    in_untracked: bool,
    frames_in: u64,
    bucket: Option<TokenBucket>,
    hello_deadline: Option<Pin<Box<Sleep>>>,
    // Output.
    /// Bytes from the session not yet written; `out[..out_whole]` are whole frames.
    out: BytesMut,
    out_whole: usize,
    /// Whole frames the session wrote (the index of the next one).
    frames_out: u64,
    sent: Option<SentCounters>,
    // Ending.
    closing: Option<Closing>,
    report: GuardReport,
}

#[derive(Debug)]
struct Closing {
    error: GuardClose,
    stage: Stage,
    deadline: Pin<Box<Sleep>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Writing,
    Flushing,
    ShuttingDown,
    /// Read and discard the client's input until it closes too. Dropping a socket with
    /// unread input makes the kernel reset the connection, and a reset can destroy the ERROR
    /// frame before the client reads it (a client still flooding always has input in flight).
    Draining,
    Done,
}

impl<T: AsyncRead + AsyncWrite + Unpin> Guard<T> {
    /// Guard `inner`; the returned report says, after the session ended, whether the guard
    /// ended it and why.
    pub fn new(inner: T, opts: &GuardOptions) -> (Guard<T>, GuardReport) {
        let report = GuardReport::default();
        let g = Guard {
            inner,
            header: [0; 10],
            header_len: 0,
            in_remaining: 0,
            in_untracked: false,
            frames_in: 0,
            bucket: (opts.rate_per_s > 0).then(|| TokenBucket::new(opts.rate_per_s, opts.burst)),
            hello_deadline: opts.hello_timeout.map(|d| Box::pin(tokio::time::sleep(d))),
            out: BytesMut::new(),
            out_whole: 0,
            frames_out: 0,
            sent: opts.sent.clone(),
            closing: None,
            report: report.clone(),
        };
        (g, report)
    }

    /// Stop passing input up and end the connection with an ERROR frame.
    fn start_close(&mut self, code: ErrorCode, message: String) {
        if self.closing.is_some() {
            return;
        }
        // Drop the session's incomplete frame; the ERROR takes the next index.
        self.out.truncate(self.out_whole);
        let frame = error_frame(self.frames_out, code, &message);
        self.count_sent(frame.len());
        self.out.extend_from_slice(&frame);
        self.out_whole = self.out.len();
        self.frames_out += 1;
        let error = GuardClose { code, message };
        *self.report.lock().unwrap_or_else(|e| e.into_inner()) = Some(error.clone());
        self.closing = Some(Closing {
            error,
            stage: Stage::Writing,
            deadline: Box::pin(tokio::time::sleep(Duration::from_millis(CLOSE_FLUSH_MS))),
        });
    }

    /// A whole frame of `bytes` is on its way out.
    fn count_sent(&self, bytes: usize) {
        if let Some(c) = &self.sent {
            c.frames.inc();
            c.bytes.inc_by(bytes as u64);
        }
    }

    /// Deliver the ERROR frame and shut down; `Ready` once done (or given up).
    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let closing = self.closing.as_mut().expect("closing");
            if closing.stage == Stage::Done {
                return Poll::Ready(());
            }
            if closing.deadline.as_mut().poll(cx).is_ready() {
                closing.stage = Stage::Done;
                continue;
            }
            let stage = closing.stage;
            let r = match stage {
                Stage::Writing => self.poll_write_whole(cx),
                Stage::Flushing => Pin::new(&mut self.inner).poll_flush(cx),
                Stage::ShuttingDown => Pin::new(&mut self.inner).poll_shutdown(cx),
                Stage::Draining => self.poll_drain(cx),
                Stage::Done => unreachable!("handled above"),
            };
            let closing = self.closing.as_mut().expect("closing");
            closing.stage = match ready!(r) {
                Err(_) => Stage::Done,
                Ok(()) => match stage {
                    Stage::Writing => Stage::Flushing,
                    Stage::Flushing => Stage::ShuttingDown,
                    Stage::ShuttingDown => Stage::Draining,
                    _ => Stage::Done,
                },
            };
        }
    }

    /// Discard input until the client closes (`Ready(Ok)`) or the transport fails. Input the
    /// WebSocket layer refuses (more pings over its budget) is discarded the same way.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut scratch = [0u8; 4096];
        loop {
            let mut buf = ReadBuf::new(&mut scratch);
            match ready!(Pin::new(&mut self.inner).poll_read(cx, &mut buf)) {
                Ok(()) if buf.filled().is_empty() => return Poll::Ready(Ok(())),
                Ok(()) => {}
                Err(e) if WsInputError::from_io(&e).is_some() => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn closed_error(&self) -> io::Error {
        let e = &self.closing.as_ref().expect("closing").error;
        io::Error::new(
            io::ErrorKind::ConnectionAborted,
            format!(
                "the relay ended the connection ({:?}): {}",
                e.code, e.message
            ),
        )
    }

    /// Write the whole frames waiting in `out`.
    fn poll_write_whole(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_whole > 0 {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out[..self.out_whole]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out.advance(n);
            self.out_whole -= n;
        }
        Poll::Ready(Ok(()))
    }

    /// Track incoming frame boundaries over `bytes`. Returns the offset of a frame that may
    /// not start (over the rate limit), if any.
    fn track_input(&mut self, bytes: &[u8]) -> Option<usize> {
        let mut i = 0;
        while i < bytes.len() && !self.in_untracked {
            if self.in_remaining > 0 {
                let take = (self.in_remaining).min((bytes.len() - i) as u64);
                i += take as usize;
                self.in_remaining -= take;
                if self.in_remaining == 0 {
                    self.frame_received();
                }
                continue;
            }
            if self.header_len == 0 {
                if let Some(b) = &mut self.bucket {
                    if !b.take(Instant::now()) {
                        return Some(i);
                    }
                }
            }
            let byte = bytes[i];
            i += 1;
            self.header[self.header_len] = byte;
            self.header_len += 1;
            if byte & 0x80 == 0 {
                let body = self.header[..self.header_len]
                    .iter()
                    .enumerate()
                    .fold(0u64, |acc, (k, b)| acc | (u64::from(b & 0x7f) << (7 * k)));
                self.header_len = 0;
                self.in_remaining = body.saturating_add(4);
            } else if self.header_len == self.header.len() {
                self.in_untracked = true;
            }
        }
        None
    }

    fn frame_received(&mut self) {
        self.frames_in += 1;
        if self.frames_in == 1 {
            self.hello_deadline = None;
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Guard<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.closing.is_some() {
                ready!(this.poll_close(cx));
                return Poll::Ready(Err(this.closed_error()));
            }
            if let Some(d) = &mut this.hello_deadline {
                if d.as_mut().poll(cx).is_ready() {
                    this.hello_deadline = None;
                    this.start_close(
                        ErrorCode::Timeout,
                        "no HELLO within the handshake timeout: send HELLO first".into(),
                    );
                    continue;
                }
            }
            let before = buf.filled().len();
            match ready!(Pin::new(&mut this.inner).poll_read(cx, buf)) {
                Ok(()) => {}
                Err(e) => match WsInputError::from_io(&e) {
                    Some(w) => {
                        let (code, message) = (w.code, w.message.clone());
                        this.start_close(code, message);
                        continue;
                    }
                    None => return Poll::Ready(Err(e)),
                },
            }
            let new = buf.filled()[before..].to_vec();
            if let Some(at) = this.track_input(&new) {
                // Hand up only the frames before the one over the limit.
                buf.set_filled(before + at);
                this.start_close(
                    ErrorCode::RateLimited,
                    "too many messages: slow down, then reconnect".into(),
                );
                if at == 0 {
                    continue;
                }
            }
            return Poll::Ready(Ok(()));
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Guard<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.closing.is_some() {
            // The session's output is no longer wanted; reading reports the end.
            let _ = this.poll_close(cx);
            return Poll::Ready(Ok(data.len()));
        }
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.poll_write_whole(cx)?.is_pending() {
            return Poll::Pending;
        }
        let n = data
            .len()
            .min(WS_PENDING_BYTES_MAX.saturating_sub(this.out.len()));
        this.out.extend_from_slice(&data[..n]);
        while let Some(len) = frame_len(&this.out[this.out_whole..])? {
            this.out_whole += len;
            this.frames_out += 1;
            this.count_sent(len);
        }
        let _ = this.poll_write_whole(cx)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.closing.is_some() {
            ready!(this.poll_close(cx));
            return Poll::Ready(Ok(()));
        }
        ready!(this.poll_write_whole(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.closing.is_some() {
            ready!(this.poll_close(cx));
            return Poll::Ready(Ok(()));
        }
        ready!(this.poll_write_whole(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blazedb::sync::frame::{FrameDecoder, FrameEncoder};
    use blazedb::sync::message::{decode_simple, kind, Message};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn rate_limit_ends_with_an_error_frame_at_the_right_index() {
        let (client, server) = tokio::io::duplex(1 << 20);
        let opts = GuardOptions {
            rate_per_s: 1,
            burst: 3,
            hello_timeout: None,
            sent: None,
        };
        let (mut g, report) = Guard::new(server, &opts);
        let (mut crd, mut cwr) = tokio::io::split(client);
        // The "session" sends two frames, one of them split across writes.
        let mut enc = FrameEncoder::default();
        let f1 = enc.encode(kind::PING, false, &[1]);
        let f2 = enc.encode(kind::PING, false, &[2]);
        g.write_all(&f1).await.unwrap();
        g.write_all(&f2[..3]).await.unwrap();
        // The client floods five frames; three pass.
        let mut cenc = FrameEncoder::default();
        let mut flood = Vec::new();
        for i in 0..5 {
            flood.extend(cenc.encode(kind::PING, false, &[i]));
        }
        cwr.write_all(&flood).await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        let err = loop {
            match g.read(&mut buf).await {
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
        let mut dec = FrameDecoder::default();
        dec.push(&got);
        let mut n = 0;
        while dec.next_frame().unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, 3, "frames handed up before the limit");
        assert_eq!(
            report.lock().unwrap().as_ref().unwrap().code,
            ErrorCode::RateLimited
        );
        // The client reads frame 0 and then the ERROR as frame 1: the incomplete frame 1 of
        // the session was dropped.
        let mut out = Vec::new();
        crd.read_to_end(&mut out).await.unwrap();
        let mut dec = FrameDecoder::default();
        dec.push(&out);
        assert_eq!(dec.next_frame().unwrap().unwrap().kind, kind::PING);
        let e = dec.next_frame().unwrap().unwrap();
        assert!(matches!(
            decode_simple(e.kind, &e.payload).unwrap(),
            Message::Error {
                code: ErrorCode::RateLimited,
                ..
            }
        ));
    }

    #[tokio::test]
    async fn silent_client_times_out() {
        let (_client, server) = tokio::io::duplex(1024);
        let opts = GuardOptions {
            rate_per_s: 0,
            burst: 0,
            hello_timeout: Some(Duration::from_millis(50)),
            sent: None,
        };
        let (mut g, report) = Guard::new(server, &opts);
        let mut buf = [0u8; 8];
        let e = g.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionAborted);
        assert_eq!(
            report.lock().unwrap().as_ref().unwrap().code,
            ErrorCode::Timeout
        );
    }
}
