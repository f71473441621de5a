//! WebSocket as a byte stream: [`WsStream`] turns a tokio-tungstenite
//! [`WebSocketStream`] into the `AsyncRead + AsyncWrite` that [`run_session`] pumps.
//!
//! ```text
//!  run_session ── write(bytes) ──► split at frame boundaries ──► one binary message per frame
//!  run_session ◄── read(bytes) ─── payloads of binary messages ◄── WebSocket
//! ```
//!
//! docs/PROTOCOL.md §2: each WebSocket message carries exactly one protocol frame
//! (`varint len | body[len] | crc[4]`), so that a browser client can decode message by
//! message. The session writes frames in arbitrary pieces; the adapter buffers them until a
//! frame is complete (it reads the length prefix) and sends each as one binary message.
//!
//! Incoming:
//! - binary messages: their bytes, in order (a receiver built on the session copes with any
//!   split, so the adapter does not check that a message holds exactly one frame);
//! - text messages are not part of the protocol: reading fails with a [`WsInputError`]
//!   (`MALFORMED`) inside an `io::Error` of kind `InvalidData`;
//! - a message over [`WS_MESSAGE_BYTES_MAX`] fails the same way with `TOO_LARGE`;
//! - ping and pong are answered and skipped by tungstenite; a close message is end-of-file;
//! - messages that carry no protocol bytes (pings, pongs, empty binary messages) are allowed
//!   [`WS_EMPTY_MESSAGES_PER_SEC`] per second on average (bursts of
//!   [`WS_EMPTY_MESSAGES_BURST`]); past that, reading fails with `RATE_LIMITED`. The relay's
//!   rate limit counts protocol frames, which such messages do not carry, and each ping costs
//!   the reader a pong: without this bound a ping flood would be free for the sender.
//!
//! On a server ([`WsStream::server`]), the socket is read through a [`FirstFrameBudget`]: until
//! the client's first protocol frame (its HELLO, at most `FIRST_FRAME_BYTES_MAX`) has arrived
//! whole, at most [`WS_FIRST_FRAME_READ_BYTES_MAX`] bytes are read from it, and reading fails
//! with `TOO_LARGE` past that. tungstenite reads a whole message (up to
//! [`WS_MESSAGE_BYTES_MAX`]) before the adapter sees any of it, so without the budget an
//! unauthenticated client could make the server buffer 8 MiB before any check of its HELLO;
//! raw TCP refuses such a first frame from its length prefix alone (docs/PROTOCOL.md §4).
//! Messages that carry no protocol bytes (pings, pongs, empty messages) give their bytes back
//! to the budget once read: tungstenite holds nothing of them, and their number is bounded
//! by the rate above.
//!
//! Use [`websocket_config`] for both ends: it sets the message and frame limits to one
//! protocol frame (tungstenite's defaults accept 64 MiB messages) and small buffers. This
//! crate never negotiates permessage-deflate: frames are already compressed where it pays
//! (LZ4), and compression of attacker-chosen data inside TLS is a known side channel.
//!
//! ```no_run
//! # async fn f(db: std::sync::Arc<blazedb::Database>) -> Result<(), Box<dyn std::error::Error>> {
//! use blazedb::sync::SessionConfig;
//! use blazedb_net::ws::{websocket_config, WsStream};
//! use blazedb_net::{run_session, DriverOptions};
//!
//! let tcp = tokio::net::TcpStream::connect("127.0.0.1:7420").await?;
//! let request = "ws://127.0.0.1:7420/v1/sync";
//! let (ws, _response) =
//!     tokio_tungstenite::client_async_with_config(request, tcp, Some(websocket_config())).await?;
//! let report =
//!     run_session(db, WsStream::new(ws), SessionConfig::default(), DriverOptions::once()).await?;
//! println!("sent {} cells", report.stats.cells_sent);
//! # Ok(()) }
//! ```
//!
//! [`run_session`]: crate::run_session

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use blazedb::limits::{FIRST_FRAME_BYTES_MAX, FRAME_BYTES_MAX};
use blazedb::sync::message::{encode_simple, kind, Message};
use blazedb::sync::ErrorCode;
use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use tokio_tungstenite::WebSocketStream;

use crate::rate::TokenBucket;

/// Largest WebSocket message (and WebSocket frame) accepted: one protocol frame of the
/// largest body, its length prefix (at most 4 bytes for 8 MiB) and CRC, rounded up.
pub const WS_MESSAGE_BYTES_MAX: usize = FRAME_BYTES_MAX + 16;

/// tungstenite's read buffer, allocated per connection up front. Small, so that many idle
/// connections stay cheap; large messages still arrive (the buffer only sets the read size).
pub const WS_READ_BUFFER_BYTES: usize = 8 * 1024;

/// tungstenite writes its buffer to the socket once it holds this much (or on flush, which
/// the session driver does after every batch of frames).
pub const WS_WRITE_BUFFER_BYTES: usize = 64 * 1024;

/// Most bytes a [`WsStream`] accepts from its writer before the messages holding them are
/// handed to the WebSocket: one maximum frame plus a margin, so that a complete frame always
/// fits.
pub const WS_PENDING_BYTES_MAX: usize = WS_MESSAGE_BYTES_MAX + 64 * 1024;

/// Messages without protocol bytes (WebSocket pings, pongs, empty binary messages) a
/// [`WsStream`] accepts per second on average. BlazeDB keeps connections alive with its own
/// PING frames every few seconds; a browser or proxy pinging now and then stays far below.
pub const WS_EMPTY_MESSAGES_PER_SEC: u32 = 20;

/// How many such messages may come at once before the average applies.
pub const WS_EMPTY_MESSAGES_BURST: u32 = 100;

/// Most bytes a server's WebSocket ([`WsStream::server`]) reads from its socket before the
/// client's first protocol frame has arrived whole: the largest first frame
/// (`FIRST_FRAME_BYTES_MAX`), what one read of tungstenite's buffer ([`WS_READ_BUFFER_BYTES`])
/// may take past its end, and 8 KiB for the frame's length prefix and CRC, the WebSocket
/// headers of its message (14 bytes, more if fragmented) and a few WebSocket pings. Past it,
/// reading fails with `TOO_LARGE`.
pub const WS_FIRST_FRAME_READ_BYTES_MAX: usize =
    FIRST_FRAME_BYTES_MAX + WS_READ_BUFFER_BYTES + 8 * 1024;

/// The WebSocket settings BlazeDB uses on both ends: messages and frames of at most
/// [`WS_MESSAGE_BYTES_MAX`], small buffers, and a bounded write buffer (a peer that stops
/// reading makes writes wait instead of growing memory).
pub fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(WS_READ_BUFFER_BYTES)
        .write_buffer_size(WS_WRITE_BUFFER_BYTES)
        .max_write_buffer_size(WS_WRITE_BUFFER_BYTES + WS_MESSAGE_BYTES_MAX)
        .max_message_size(Some(WS_MESSAGE_BYTES_MAX))
        .max_frame_size(Some(WS_MESSAGE_BYTES_MAX))
}

/// What was wrong with an incoming WebSocket message, with the protocol error code a relay
/// reports for it. Carried inside the `io::Error` (kind `InvalidData`) that reading returns;
/// get it back with [`WsInputError::from_io`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WsInputError {
    /// The protocol error code for the peer.
    pub code: ErrorCode,
    /// What happened.
    pub message: String,
}

impl WsInputError {
    /// The `WsInputError` inside an `io::Error` returned by [`WsStream`], if it is one.
    pub fn from_io(e: &io::Error) -> Option<&WsInputError> {
        e.get_ref().and_then(|inner| inner.downcast_ref())
    }

    fn into_io(self) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, self)
    }
}

impl fmt::Display for WsInputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for WsInputError {}

/// A WebSocket carrying one BlazeDB protocol frame per binary message, seen as a byte stream.
/// See the [module docs](self).
pub struct WsStream<S> {
    ws: WebSocketStream<S>,
    /// The rest of the binary message being read.
    read: Bytes,
    /// A close message or the end of the stream was seen.
    read_eof: bool,
    /// An input error met after bytes were already handed out in the same read: reported
    /// by the next read.
    read_failed: Option<io::Error>,
    /// The WebSocket returned an error. tokio-tungstenite ends its stream after any error
    /// (`None` from then on), which is not the peer's close: reads fail from then on instead
    /// of reporting the end of the stream.
    ws_failed: bool,
    /// Bytes written and not yet handed to the WebSocket: complete frames first, then at
    /// most one incomplete frame.
    pending: BytesMut,
    /// Messages handed to the WebSocket (= protocol frames sent).
    messages_sent: u64,
    /// Our close message (status 1000) was handed to the WebSocket.
    close_sent: bool,
    /// The budget of messages that carry no protocol bytes ([`WS_EMPTY_MESSAGES_PER_SEC`],
    /// bursts of [`WS_EMPTY_MESSAGES_BURST`]).
    empty_budget: TokenBucket,
    /// A server's wait for the client's first whole frame, after which the socket's read
    /// budget is lifted ([`WsStream::server`]); `None` on a client and once it has arrived.
    first_frame: Option<FirstFrame<S>>,
}

/// How far the client's first protocol frame has arrived, and how to lift the read budget
/// under the WebSocket once it is whole.
struct FirstFrame<S> {
    lift: fn(&mut S),
    /// Give bytes read back to the budget: a message without protocol bytes was consumed.
    refund: fn(&mut S, usize),
    /// The frame's first bytes, where its length prefix is (at most 10 bytes).
    head: [u8; 10],
    /// Protocol bytes received so far.
    received: usize,
}

impl<S> FirstFrame<S> {
    /// Count the protocol bytes of one binary message; whether the first frame is now whole.
    /// A length prefix that is not one of a frame never completes it: the session refuses
    /// such a frame itself (`TOO_LARGE` or `MALFORMED`) once it reads the prefix.
    fn arrived(&mut self, bytes: &[u8]) -> bool {
        let have = self.received.min(self.head.len());
        let take = bytes.len().min(self.head.len() - have);
        self.head[have..have + take].copy_from_slice(&bytes[..take]);
        self.received = self.received.saturating_add(bytes.len());
        match frame_size(&self.head[..have + take]) {
            Ok(Some(total)) => self.received >= total,
            Ok(None) | Err(_) => false,
        }
    }
}

impl<S> fmt::Debug for WsStream<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsStream")
            .field("read_buffered", &self.read.len())
            .field("read_eof", &self.read_eof)
            .field("pending", &self.pending.len())
            .field("messages_sent", &self.messages_sent)
            .field("first_frame_awaited", &self.first_frame.is_some())
            .finish_non_exhaustive()
    }
}

impl<S> WsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Wrap an established WebSocket (client or server side).
    pub fn new(ws: WebSocketStream<S>) -> WsStream<S> {
        WsStream {
            ws,
            read: Bytes::new(),
            read_eof: false,
            read_failed: None,
            ws_failed: false,
            pending: BytesMut::new(),
            messages_sent: 0,
            close_sent: false,
            empty_budget: TokenBucket::new(WS_EMPTY_MESSAGES_PER_SEC, WS_EMPTY_MESSAGES_BURST),
            first_frame: None,
        }
    }

    /// Binary messages sent so far: the number of protocol frames written.
    pub fn messages_sent(&self) -> u64 {
        self.messages_sent
    }

    /// The WebSocket, e.g. to read its configuration.
    pub fn get_ref(&self) -> &WebSocketStream<S> {
        &self.ws
    }

    /// Hand every complete frame in `pending` to the WebSocket. `Ready(Ok)` when none is left.
    fn poll_send_frames(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(len) = frame_len(&self.pending)? {
            ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(write_error)?;
            let frame = self.pending.split_to(len).freeze();
            Pin::new(&mut self.ws)
                .start_send(WsMessage::Binary(frame))
                .map_err(write_error)?;
            self.messages_sent += 1;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T> WsStream<FirstFrameBudget<T>>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    /// The server end of a connection upgraded to a WebSocket (the HTTP handshake is done):
    /// [`websocket_config`], and a read budget of [`WS_FIRST_FRAME_READ_BYTES_MAX`] bytes
    /// until the client's first protocol frame has arrived whole (see the
    /// [module docs](self)).
    pub async fn server(io: T) -> WsStream<FirstFrameBudget<T>> {
        let budget = FirstFrameBudget {
            inner: io,
            left: Some(WS_FIRST_FRAME_READ_BYTES_MAX),
        };
        let ws =
            WebSocketStream::from_raw_socket(budget, Role::Server, Some(websocket_config())).await;
        let mut stream = WsStream::new(ws);
        stream.first_frame = Some(FirstFrame {
            lift: FirstFrameBudget::lift,
            refund: FirstFrameBudget::refund,
            head: [0; 10],
            received: 0,
        });
        stream
    }
}

impl<S> AsyncRead for WsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // One read takes every message already received, up to the buffer's size: the
        // session then applies the units they complete in one transaction (group commit)
        // instead of one transaction per message.
        let mut filled = false;
        loop {
            if !this.read.is_empty() {
                let n = this.read.len().min(buf.remaining());
                buf.put_slice(&this.read[..n]);
                this.read.advance(n);
                filled = true;
                if buf.remaining() == 0 {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            if let Some(e) = this.read_failed.take() {
                if filled {
                    this.read_failed = Some(e);
                    return Poll::Ready(Ok(()));
                }
                return Poll::Ready(Err(e));
            }
            if this.read_eof {
                return Poll::Ready(Ok(()));
            }
            let message = match Pin::new(&mut this.ws).poll_next(cx) {
                Poll::Ready(m) => m,
                Poll::Pending if filled => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            };
            let empty = match &message {
                Some(Ok(WsMessage::Binary(b))) => b.is_empty(),
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_))) => true,
                _ => false,
            };
            if let (true, Some(first), Some(Ok(m))) = (empty, &this.first_frame, &message) {
                // Such a message is consumed whole: its bytes no longer count against the
                // first frame's budget, which bounds what tungstenite holds. Without this, a
                // client pinging after the relay's ERROR (which the relay reads and discards
                // until the client's close) exhausted the budget; tokio-tungstenite then
                // ended its stream, the relay took that for the client's close and reset the
                // connection with the client's pings unread, destroying the ERROR unread.
                (first.refund)(this.ws.get_mut(), client_message_bytes_min(m));
            }
            if empty && !this.empty_budget.take(tokio::time::Instant::now()) {
                this.read_failed = Some(
                    WsInputError {
                        code: ErrorCode::RateLimited,
                        message: format!(
                            "more than {WS_EMPTY_MESSAGES_PER_SEC} WebSocket pings, pongs or \
                             empty messages per second (bursts of {WS_EMPTY_MESSAGES_BURST}): \
                             BlazeDB keeps the connection alive with its own PING frames, so \
                             ping less often or not at all"
                        ),
                    }
                    .into_io(),
                );
                continue;
            }
            match message {
                Some(Ok(WsMessage::Binary(b))) => {
                    if let Some(first) = &mut this.first_frame {
                        if first.arrived(&b) {
                            (first.lift)(this.ws.get_mut());
                            this.first_frame = None;
                        }
                    }
                    this.read = b;
                }
                Some(Ok(WsMessage::Text(_))) => {
                    this.read_failed = Some(
                        WsInputError {
                            code: ErrorCode::Malformed,
                            message: "a text WebSocket message: BlazeDB sends one protocol frame \
                                      per binary message and no text messages"
                                .into(),
                        }
                        .into_io(),
                    )
                }
                None if this.ws_failed => {
                    this.read_failed = Some(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "the WebSocket failed on an earlier error: no more input can be read",
                    ))
                }
                Some(Ok(WsMessage::Close(_))) | None => this.read_eof = true,
                // Pings are answered by tungstenite; pongs and raw frames carry nothing.
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_))) => {}
                Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => {
                    this.read_eof = true
                }
                Some(Err(e)) => {
                    this.ws_failed = true;
                    this.read_failed = Some(read_error(e));
                }
            }
        }
    }
}

/// The fewest bytes a client's message without protocol bytes (a ping, a pong, an empty
/// binary message) took on the wire: a two-byte header, the four-byte mask a client must
/// send, and the payload. Never more than it took (a longer length encoding, or a message
/// in fragments, took more), so a refund of it never grows a budget past what was read.
fn client_message_bytes_min(m: &WsMessage) -> usize {
    let payload = match m {
        WsMessage::Ping(p) | WsMessage::Pong(p) => p.len(),
        _ => 0,
    };
    2 + 4 + payload
}

impl<S> AsyncWrite for WsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        // Complete frames go out first; while the WebSocket cannot take them, wait.
        if this.poll_send_frames(cx)?.is_pending() {
            return Poll::Pending;
        }
        // Only an incomplete frame (shorter than the largest frame) is left, so there is room.
        let n = data
            .len()
            .min(WS_PENDING_BYTES_MAX.saturating_sub(this.pending.len()));
        this.pending.extend_from_slice(&data[..n]);
        // Best effort: the frames now complete wait for the next write or flush otherwise.
        let _ = this.poll_send_frames(cx)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_frames(cx))?;
        Pin::new(&mut this.ws).poll_flush(cx).map_err(write_error)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_frames(cx))?;
        // A close message with a status code: without one (tungstenite's `poll_close`) the
        // peer's WebSocket reports 1005, "no status received", which reads like a fault. The
        // protocol's ERROR frame, sent before, says why a session ended; 1000 says the close
        // was meant.
        if !this.close_sent {
            let closed = |e: &WsError| {
                matches!(
                    e,
                    WsError::ConnectionClosed
                        | WsError::AlreadyClosed
                        | WsError::Protocol(ProtocolError::SendAfterClosing)
                )
            };
            match ready!(Pin::new(&mut this.ws).poll_ready(cx)) {
                Ok(()) => {
                    let normal = CloseFrame {
                        code: CloseCode::Normal,
                        reason: "".into(),
                    };
                    match Pin::new(&mut this.ws).start_send(WsMessage::Close(Some(normal))) {
                        Ok(()) => {}
                        Err(e) if closed(&e) => {}
                        Err(e) => return Poll::Ready(Err(write_error(e))),
                    }
                }
                Err(e) if closed(&e) => {}
                Err(e) => return Poll::Ready(Err(write_error(e))),
            }
            this.close_sent = true;
        }
        // Flushes (and sends a close message if none went above); an incomplete frame left
        // behind is dropped (the session never ends mid-frame).
        match ready!(Pin::new(&mut this.ws).poll_close(cx)) {
            Ok(()) | Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(write_error(e))),
        }
    }
}

/// The socket under a server's WebSocket ([`WsStream::server`]): reads fail with `TOO_LARGE`
/// once [`WS_FIRST_FRAME_READ_BYTES_MAX`] bytes have been read and the client's first frame
/// has still not arrived whole. [`WsStream`] lifts the budget when it has. Writes pass through.
///
/// tungstenite reserves a message's announced length up front (address space, which the
/// kernel backs with memory only as bytes are written into it), then reads it in pieces of
/// [`WS_READ_BUFFER_BYTES`]; each piece passes here, so what it holds of a client that never
/// sends a HELLO stays within the budget. The error reaches [`WsStream`] as `WsError::Io` and
/// is handed on as it is, a [`WsInputError`] inside an `io::Error`.
pub struct FirstFrameBudget<S> {
    inner: S,
    /// Bytes that may still be read; `None` once the budget is lifted.
    left: Option<usize>,
}

impl<S> FirstFrameBudget<S> {
    /// The first frame has arrived: reads pass through from now on.
    fn lift(&mut self) {
        self.left = None;
    }

    /// `n` bytes read were consumed whole (a ping, say) and count no more; never above the
    /// budget it started with.
    fn refund(&mut self, n: usize) {
        if let Some(left) = &mut self.left {
            *left = left.saturating_add(n).min(WS_FIRST_FRAME_READ_BYTES_MAX);
        }
    }
}

impl<S> fmt::Debug for FirstFrameBudget<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FirstFrameBudget")
            .field("left", &self.left)
            .finish_non_exhaustive()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FirstFrameBudget<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(left) = this.left else {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        };
        if left == 0 {
            return Poll::Ready(Err(WsInputError {
                code: ErrorCode::TooLarge,
                message: format!(
                    "more than {WS_FIRST_FRAME_READ_BYTES_MAX} bytes arrived before the first \
                     frame was whole, and a HELLO has at most {FIRST_FRAME_BYTES_MAX}: the peer \
                     does not speak this protocol, or its HELLO is not a HELLO"
                ),
            }
            .into_io()));
        }
        let n = if buf.remaining() <= left {
            let before = buf.filled().len();
            ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
            buf.filled().len() - before
        } else {
            // Never read past the budget: the bytes beyond it stay in the socket.
            let mut limited = ReadBuf::new(buf.initialize_unfilled_to(left));
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut limited))?;
            let n = limited.filled().len();
            buf.advance(n);
            n
        };
        this.left = Some(left - n);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FirstFrameBudget<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The length of the first frame in `buf` (prefix, body and CRC) if all of it is there,
/// `None` if more bytes are needed. A length prefix that is not a varint or announces a body
/// over `FRAME_BYTES_MAX` is an `InvalidData` error: the byte stream is not BlazeDB frames.
pub fn frame_len(buf: &[u8]) -> io::Result<Option<usize>> {
    Ok(frame_size(buf)?.filter(|&total| buf.len() >= total))
}

/// The length of the frame that `buf` starts (prefix, body and CRC), read from its length
/// prefix; `None` while the prefix is incomplete. Errors as [`frame_len`].
fn frame_size(buf: &[u8]) -> io::Result<Option<usize>> {
    let mut body: u64 = 0;
    for (i, &b) in buf.iter().enumerate().take(10) {
        body |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            if body > FRAME_BYTES_MAX as u64 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("frame of {body} bytes exceeds the limit of {FRAME_BYTES_MAX}"),
                ));
            }
            return Ok(Some(i + 1 + body as usize + 4));
        }
    }
    if buf.len() >= 10 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "frame length prefix is not a varint",
        ));
    }
    Ok(None)
}

/// An ERROR frame (docs/PROTOCOL.md §5.6) as the `index`-th frame of its direction, for a
/// transport that must end a session itself (rate limit, handshake timeout, a text message)
/// after `index` frames of the session went out.
pub fn error_frame(index: u64, code: ErrorCode, message: &str) -> Vec<u8> {
    let (k, payload) = encode_simple(&Message::Error {
        code,
        message: message.to_owned(),
    });
    debug_assert_eq!(k, kind::ERROR);
    let mut body = Vec::with_capacity(payload.len() + 2);
    body.push(k);
    body.push(0);
    body.extend_from_slice(&payload);
    let mut h = crc32fast::Hasher::new();
    h.update(&index.to_le_bytes());
    h.update(&body);
    let crc = h.finalize();
    let mut out = Vec::with_capacity(body.len() + 8);
    blazedb::codec::varint::write_u64(&mut out, body.len() as u64);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn read_error(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        WsError::Capacity(c) => WsInputError {
            code: ErrorCode::TooLarge,
            message: format!("WebSocket message too large: {c} (limit {WS_MESSAGE_BYTES_MAX})"),
        }
        .into_io(),
        // A peer that was killed, or a browser tab that closed, drops the connection without
        // a close frame: that is a disconnection, as on raw TCP, not malformed input.
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => io::Error::new(
            io::ErrorKind::ConnectionReset,
            "the peer closed the connection without a WebSocket close frame",
        ),
        WsError::Protocol(p) => WsInputError {
            code: ErrorCode::Malformed,
            message: format!("WebSocket protocol error: {p}"),
        }
        .into_io(),
        other => io::Error::other(other),
    }
}

fn write_error(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        WsError::ConnectionClosed | WsError::AlreadyClosed => {
            io::Error::new(io::ErrorKind::BrokenPipe, "the WebSocket is closed")
        }
        other => io::Error::other(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blazedb::sync::frame::{FrameDecoder, FrameEncoder};

    #[test]
    fn frame_len_reads_the_prefix() {
        let mut enc = FrameEncoder::default();
        let f = enc.encode(kind::PING, false, &[1, 2, 3]);
        assert_eq!(frame_len(&f).unwrap(), Some(f.len()));
        assert_eq!(frame_len(&f[..f.len() - 1]).unwrap(), None);
        assert_eq!(frame_len(&[]).unwrap(), None);
        assert_eq!(frame_len(&[0x80]).unwrap(), None);
        assert!(frame_len(&[0xff; 10]).is_err());
        // 16 MiB announced: over the limit before the body arrives.
        assert!(frame_len(&[0x80, 0x80, 0x80, 0x08]).is_err());
    }

    /// A client WebSocket and the server end of it wrapped as a stream, over an in-memory pipe.
    async fn ws_pair() -> (
        WebSocketStream<tokio::io::DuplexStream>,
        WsStream<tokio::io::DuplexStream>,
    ) {
        use tokio_tungstenite::tungstenite::protocol::Role;
        let (a, b) = tokio::io::duplex(64 * 1024);
        let client =
            WebSocketStream::from_raw_socket(a, Role::Client, Some(websocket_config())).await;
        let server =
            WebSocketStream::from_raw_socket(b, Role::Server, Some(websocket_config())).await;
        (client, WsStream::new(server))
    }

    /// One read hands over every message already received (so the session can apply the
    /// units they complete in one transaction); an input error met after some of them is
    /// reported by the next read, after those bytes.
    #[tokio::test(flavor = "current_thread")]
    async fn one_read_takes_every_message_already_received() {
        use futures_util::SinkExt;
        use tokio::io::AsyncReadExt;

        let (mut sender, mut stream) = ws_pair().await;
        let mut enc = FrameEncoder::default();
        let frames: Vec<Vec<u8>> = (0..3u8)
            .map(|k| enc.encode(kind::PING, false, &[k; 5]))
            .collect();
        for f in &frames {
            sender.send(WsMessage::binary(f.clone())).await.unwrap();
        }
        sender.send(WsMessage::text("hello")).await.unwrap();
        sender.flush().await.unwrap();

        let mut buf = vec![0u8; 4096];
        let n = stream.read(&mut buf).await.unwrap();
        assert_eq!(
            &buf[..n],
            frames.concat().as_slice(),
            "all three in one read"
        );
        let err = stream.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("text WebSocket message"), "{err}");

        // A read buffer smaller than the messages still gets them in order.
        let (mut sender, mut stream) = ws_pair().await;
        for f in &frames {
            sender.send(WsMessage::binary(f.clone())).await.unwrap();
        }
        sender.close(None).await.unwrap();
        let mut got = Vec::new();
        let mut small = [0u8; 7];
        loop {
            let n = stream.read(&mut small).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&small[..n]);
        }
        assert_eq!(got, frames.concat());
    }

    /// Pings, pongs and empty messages are allowed in bursts up to the budget; a flood past
    /// it fails the read with RATE_LIMITED after the protocol bytes that came before, and a
    /// steady trickle never does.
    #[tokio::test(flavor = "current_thread")]
    async fn a_ping_flood_is_rate_limited_but_pings_within_the_budget_pass() {
        use futures_util::SinkExt;
        use tokio::io::AsyncReadExt;

        let mut enc = FrameEncoder::default();
        let frame = enc.encode(kind::PING, false, &[7; 5]);
        let (mut sender, mut stream) = ws_pair().await;
        // Within the burst: a frame, then as many empty messages as the budget holds, mixed.
        sender.send(WsMessage::binary(frame.clone())).await.unwrap();
        for k in 0..WS_EMPTY_MESSAGES_BURST - 5 {
            let m = match k % 3 {
                0 => WsMessage::Ping(Bytes::from_static(b"p")),
                1 => WsMessage::Pong(Bytes::new()),
                _ => WsMessage::binary(Vec::new()),
            };
            sender.feed(m).await.unwrap();
        }
        sender.send(WsMessage::binary(frame.clone())).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        while got.len() < 2 * frame.len() {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "end of stream before both frames");
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, [frame.clone(), frame.clone()].concat());

        // A flood: the frame before it is handed over, then the read fails.
        let (mut sender, mut stream) = ws_pair().await;
        sender.send(WsMessage::binary(frame.clone())).await.unwrap();
        let flood = tokio::spawn(async move {
            for _ in 0..WS_EMPTY_MESSAGES_BURST * 3 {
                if sender.send(WsMessage::Ping(Bytes::new())).await.is_err() {
                    break;
                }
            }
            sender
        });
        let mut got = Vec::new();
        let err = loop {
            match stream.read(&mut buf).await {
                Ok(0) => panic!("end of stream instead of a rate-limit error"),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => break e,
            }
        };
        assert_eq!(got, frame);
        let w = WsInputError::from_io(&err).expect("a WebSocket input error");
        assert_eq!(w.code, ErrorCode::RateLimited);
        assert!(w.message.contains("ping less often"), "{}", w.message);
        drop(stream);
        let _ = flood.await;
    }

    /// A client WebSocket and a server stream ([`WsStream::server`]) over an in-memory pipe.
    async fn server_pair() -> (
        WebSocketStream<tokio::io::DuplexStream>,
        WsStream<FirstFrameBudget<tokio::io::DuplexStream>>,
    ) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let client =
            WebSocketStream::from_raw_socket(a, Role::Client, Some(websocket_config())).await;
        (client, WsStream::server(b).await)
    }

    /// A message announcing 4 MiB that never sends its HELLO: the server reads exactly its
    /// budget from the socket, leaves the rest there, and fails the read with TOO_LARGE.
    #[tokio::test(flavor = "current_thread")]
    async fn a_server_reads_only_its_budget_before_the_first_frame() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let (mut client, b) = tokio::io::duplex(64 * 1024);
        let mut stream = WsStream::server(b).await;
        // A masked binary message header (mask 0: the payload goes as it is), then 200 KiB.
        let mut sent = vec![0x82, 0x80 | 127];
        sent.extend_from_slice(&(4u64 << 20).to_be_bytes());
        sent.extend_from_slice(&[0; 4]);
        sent.extend_from_slice(&vec![0x55; 200 * 1024]);
        let total = sent.len();
        let writer = tokio::spawn(async move {
            client.write_all(&sent).await.unwrap();
        });

        let mut buf = vec![0u8; 4096];
        let err = stream.read(&mut buf).await.unwrap_err();
        let w = WsInputError::from_io(&err).expect("a WebSocket input error");
        assert_eq!(w.code, ErrorCode::TooLarge);
        assert!(
            w.message.contains("first frame")
                && w.message.contains(&FIRST_FRAME_BYTES_MAX.to_string()),
            "{}",
            w.message
        );
        // tokio-tungstenite ends its stream after the error; that is no close by the peer, so
        // reading fails on (before, it read as the end of the stream).
        for _ in 0..2 {
            let again = stream.read(&mut buf).await;
            assert!(again.is_err(), "{again:?}");
        }
        // What the server did not read is still in the pipe (the writer ends once it is).
        let mut rest = Vec::new();
        stream
            .ws
            .get_mut()
            .inner
            .read_to_end(&mut rest)
            .await
            .unwrap();
        writer.await.unwrap();
        assert_eq!(total - rest.len(), WS_FIRST_FRAME_READ_BYTES_MAX);
    }

    /// Pings before the first frame give their bytes back to the budget: a client that pings
    /// past the rate limit reads RATE_LIMITED each time (the relay discards them while it
    /// closes), never TOO_LARGE, and the stream goes on (before, three times the budget in
    /// pings ended it, and the relay took that end for the client's close).
    #[tokio::test(flavor = "current_thread")]
    async fn pings_before_the_first_frame_do_not_use_up_the_budget() {
        use futures_util::SinkExt;
        use tokio::io::AsyncReadExt;

        let mut enc = FrameEncoder::default();
        let first = enc.encode(kind::HELLO, false, &[1; 10]);
        let (mut sender, mut stream) = server_pair().await;
        // Each ping is 6 + 3 bytes on the wire.
        let pings = 3 * WS_FIRST_FRAME_READ_BYTES_MAX / 9;
        let message = WsMessage::binary(first.clone());
        let send = tokio::spawn(async move {
            for _ in 0..pings {
                sender
                    .feed(WsMessage::Ping(Bytes::from_static(b"abc")))
                    .await
                    .unwrap();
            }
            sender.send(message).await.unwrap();
            sender
        });
        let mut buf = vec![0u8; 4096];
        let mut limited = 0;
        let n = loop {
            match stream.read(&mut buf).await {
                Ok(n) => break n,
                Err(e) => {
                    let w = WsInputError::from_io(&e).expect("a WebSocket input error");
                    assert_eq!(w.code, ErrorCode::RateLimited, "{}", w.message);
                    limited += 1;
                }
            }
        };
        assert_eq!(&buf[..n], &first[..]);
        assert!(limited > pings / 2, "{limited} of {pings} over the rate");
        drop(send.await.unwrap());
    }

    /// The budget holds until the first frame is whole, even when its length prefix is split
    /// across messages; after that, a message larger than the budget passes.
    #[tokio::test(flavor = "current_thread")]
    async fn the_budget_is_lifted_once_the_first_frame_is_whole() {
        use futures_util::SinkExt;
        use tokio::io::AsyncReadExt;

        let mut enc = FrameEncoder::default();
        // A body of 300 bytes: a two-byte length prefix.
        let first = enc.encode(kind::HELLO, false, &[1; 298]);
        let big = enc.encode(
            kind::PING,
            false,
            &vec![2; 2 * WS_FIRST_FRAME_READ_BYTES_MAX],
        );
        let (mut sender, mut stream) = server_pair().await;
        let mut buf = vec![0u8; 1 << 20];
        for piece in [&first[..1], &first[1..100]] {
            sender
                .send(WsMessage::binary(piece.to_vec()))
                .await
                .unwrap();
            let n = stream.read(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], piece);
            assert!(stream.first_frame.is_some(), "not whole yet");
            assert!(stream.ws.get_ref().left.is_some());
        }
        sender
            .send(WsMessage::binary(first[100..].to_vec()))
            .await
            .unwrap();
        let n = stream.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], &first[100..]);
        assert!(stream.first_frame.is_none(), "whole");
        assert_eq!(stream.ws.get_ref().left, None, "lifted");

        let message = WsMessage::binary(big.clone());
        let send = tokio::spawn(async move {
            sender.send(message).await.unwrap();
            sender
        });
        let mut got = Vec::new();
        while got.len() < big.len() {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "end of stream before the large frame");
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, big);
        drop(send.await.unwrap());
    }

    #[test]
    fn error_frame_decodes_at_its_index() {
        let mut enc = FrameEncoder::default();
        let mut dec = FrameDecoder::default();
        for _ in 0..3 {
            dec.push(&enc.encode(kind::PING, false, &[0]));
            dec.next_frame().unwrap().unwrap();
        }
        dec.push(&error_frame(3, ErrorCode::RateLimited, "slow down"));
        let f = dec.next_frame().unwrap().unwrap();
        assert_eq!(f.kind, kind::ERROR);
        let m = blazedb::sync::message::decode_simple(f.kind, &f.payload).unwrap();
        assert_eq!(
            m,
            Message::Error {
                code: ErrorCode::RateLimited,
                message: "slow down".into()
            }
        );
    }
}
