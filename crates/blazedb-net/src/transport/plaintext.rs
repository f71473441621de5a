//! A TLS port meeting a client that does not speak TLS (`tcp://` or `ws://` where `tls://`
//! or `wss://` was needed): the TLS handshake would fail on the first byte and close the
//! connection, and the client would see only "the peer closed the connection" or "invalid
//! HTTP version", with nothing to tell it which scheme to use. So before the handshake the
//! listener looks at the first byte without reading it; a client that did not open with a
//! TLS handshake record is answered in plaintext, in the only form it can read — an ERROR
//! frame for a sync client, an HTTP 400 for an HTTP client — saying to use TLS, and the
//! connection is closed.

use std::time::Duration;

use blazedb::sync::ErrorCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::ws::error_frame;

/// The first byte of a TLS record holding a handshake message (RFC 8446 §5.1,
/// `ContentType.handshake`): what a TLS client sends first, its ClientHello. No other first
/// byte starts a TLS connection. (A sync frame starts with its length as a varint, an HTTP
/// request with a method's letter.)
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// How much of a plaintext client's first bytes is read and dropped after the answer, so that
/// closing the socket with them unread does not reset the connection (a reset can make the
/// client's OS drop the answer before the client reads it).
const DRAIN_BYTES_MAX: usize = 64 * 1024;

/// How long the answer may take to write and the client to stop sending.
const ANSWER_TIME_MAX: Duration = Duration::from_secs(1);

/// The code and message of the refusal a plaintext client gets (HTTP: `{"code": …}`).
pub const TLS_REQUIRED_CODE: &str = "tls_required";

/// Whether the client's first byte opens a TLS handshake: `false` for anything else,
/// including a client that closed without sending. Waits for the first byte (the caller
/// bounds it by its handshake timeout).
pub async fn opens_with_tls(stream: &TcpStream) -> std::io::Result<bool> {
    let mut first = [0u8; 1];
    let n = stream.peek(&mut first).await?;
    Ok(n == 1 && first[0] == TLS_HANDSHAKE_RECORD)
}

/// The TLS handshake on `socket`; a client that did not open with one is sent `answer()` in
/// plaintext (what to use instead, [`tls_required_frame`] or [`tls_required_http_response`])
/// and refused. The error says which, for the listener's log.
pub async fn accept_tls(
    acceptor: &TlsAcceptor,
    socket: TcpStream,
    answer: fn() -> Vec<u8>,
) -> Result<TlsStream<TcpStream>, TlsAcceptError> {
    let failed = |e: std::io::Error| TlsAcceptError {
        message: format!("TLS: {e}"),
        client_certificate: refuses_client_certificate(&e),
    };
    match opens_with_tls(&socket).await {
        Ok(true) => acceptor.accept(socket).await.map_err(failed),
        Ok(false) => {
            answer_and_close(socket, &answer()).await;
            Err(TlsAcceptError {
                message: "TLS: the client did not open with a TLS handshake (told to use TLS)"
                    .into(),
                client_certificate: false,
            })
        }
        Err(e) => Err(failed(e)),
    }
}

/// Why [`accept_tls`] did not accept a connection; displayed, what the listener logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsAcceptError {
    message: String,
    client_certificate: bool,
}

impl TlsAcceptError {
    /// Whether the handshake failed on the client's certificate: none given where one is
    /// required, not from the client CA, expired, revoked, or not judged because a
    /// revocation list cannot be read. An operator wants to see these (a device locked out,
    /// a list gone bad); handshakes that fail otherwise are mostly scanners and noise.
    pub fn client_certificate_refused(&self) -> bool {
        self.client_certificate
    }
}

impl std::fmt::Display for TlsAcceptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Whether a failed server handshake failed on the client's certificate (see
/// [`TlsAcceptError::client_certificate_refused`]). `General` is what a client certificate
/// verifier answers when it cannot judge at all (`tls::RevocationChecked` with a list it
/// cannot read); rustls itself raises it for nothing a client sends.
fn refuses_client_certificate(e: &std::io::Error) -> bool {
    matches!(
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>()),
        Some(
            rustls::Error::InvalidCertificate(_)
                | rustls::Error::NoCertificatesPresented
                | rustls::Error::General(_)
        )
    )
}

/// The ERROR frame a sync client that connected without TLS to a TLS port gets. `Forbidden`,
/// so the client's reconnect loop gives up and shows it rather than trying the same again.
pub fn tls_required_frame() -> Vec<u8> {
    error_frame(
        0,
        ErrorCode::Forbidden,
        "this port accepts TLS connections only: connect with tls:// instead of tcp:// (and \
         --tls-ca FILE if the server's certificate is self-signed)",
    )
}

/// The HTTP response a client that sent plain HTTP to an HTTPS port gets.
pub fn tls_required_http_response() -> Vec<u8> {
    let body = serde_json::json!({
        "code": TLS_REQUIRED_CODE,
        "error": "this port accepts HTTPS only: use wss:// (or https://) instead of ws:// \
                  (http://), and --tls-ca FILE if the server's certificate is self-signed",
    })
    .to_string();
    format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Write `answer`, end our side, and read (and drop) what the client sent until it closes,
/// 64 KiB or 1 s (`DRAIN_BYTES_MAX`, `ANSWER_TIME_MAX`), so that it can read the answer.
/// (Any refusal written before the request is read wants this: the relay's 503 over a
/// connection limit too.)
pub async fn answer_and_close(mut stream: TcpStream, answer: &[u8]) {
    let _ = tokio::time::timeout(ANSWER_TIME_MAX, async {
        if stream.write_all(answer).await.is_err() || stream.shutdown().await.is_err() {
            return;
        }
        let mut buf = [0u8; 4096];
        let mut drained = 0;
        while drained < DRAIN_BYTES_MAX {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (server, _) = l.accept().await.unwrap();
        (client, server)
    }

    #[tokio::test]
    async fn a_tls_client_hello_is_told_from_plaintext_without_being_read() {
        let (mut client, server) = pair().await;
        // The start of a TLS 1.2/1.3 ClientHello record.
        client
            .write_all(&[0x16, 0x03, 0x01, 0x00, 0xc8])
            .await
            .unwrap();
        assert!(opens_with_tls(&server).await.unwrap());
        let mut kept = [0u8; 5];
        server.peek(&mut kept).await.unwrap();
        assert_eq!(
            kept[0], TLS_HANDSHAKE_RECORD,
            "the byte is left for the handshake"
        );

        for plaintext in [&b"GET /v1/sync HTTP/1.1\r\n"[..], &[0x30, 0x01, 0x00][..]] {
            let (mut client, server) = pair().await;
            client.write_all(plaintext).await.unwrap();
            assert!(!opens_with_tls(&server).await.unwrap(), "{plaintext:?}");
        }
        let (client, server) = pair().await;
        drop(client);
        assert!(
            !opens_with_tls(&server).await.unwrap(),
            "closed without a byte"
        );
    }

    #[tokio::test]
    async fn the_answer_reaches_a_client_that_keeps_sending() {
        let (mut client, server) = pair().await;
        client.write_all(&[0x30; 1000]).await.unwrap();
        let answer = tls_required_http_response();
        let served = tokio::spawn(async move { answer_and_close(server, &answer).await });
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        drop(client);
        served.await.unwrap();
        let text = String::from_utf8(got).unwrap();
        assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
        assert!(
            text.contains(TLS_REQUIRED_CODE) && text.contains("wss://"),
            "{text}"
        );
    }
}
