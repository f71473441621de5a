//! Errors of opening connections and listeners: everything that can fail before a sync
//! session starts. Errors of a running session are [`crate::NetError`].

use std::io;
use std::path::PathBuf;

/// Why a connection or a listener could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The peer URL could not be parsed.
    #[error("invalid peer URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong and what to write instead.
        reason: String,
    },
    /// This build cannot use this kind of URL.
    #[error("{scheme}:// is not supported: {reason}")]
    Unsupported {
        /// The URL scheme.
        scheme: &'static str,
        /// Why, and what to use instead.
        reason: String,
    },
    /// Connecting failed (refused, unreachable, name not found).
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        /// The peer.
        endpoint: String,
        /// The socket error.
        source: io::Error,
    },
    /// Connecting (TCP, TLS and WebSocket handshakes together) took too long.
    #[error("connecting to {endpoint} timed out after {ms} ms: is the peer up and reachable?")]
    ConnectTimeout {
        /// The peer.
        endpoint: String,
        /// The limit that passed.
        ms: u64,
    },
    /// The TLS handshake failed: the certificate was not trusted (self-signed, wrong name,
    /// expired), the peer wanted a client certificate, or the peer does not speak TLS.
    #[error(
        "TLS handshake with {endpoint} failed: {source} (for a self-signed development \
         certificate pass its CA with --tls-ca, or --danger-accept-invalid-certs)"
    )]
    TlsHandshake {
        /// The peer.
        endpoint: String,
        /// The error from rustls, wrapped by tokio-rustls.
        source: io::Error,
    },
    /// The WebSocket upgrade failed (HTTP error status, not a WebSocket endpoint).
    #[error("WebSocket handshake with {endpoint} failed: {reason}")]
    WebSocket {
        /// The peer.
        endpoint: String,
        /// What the server or the library said.
        reason: String,
    },
    /// The peer answered the WebSocket upgrade with 401 or 403: it refused our credentials
    /// (or, for a browser, its origin). Trying again with the same ones cannot help.
    #[error("{endpoint} refused the connection (HTTP {status}): {reason}")]
    Refused {
        /// The peer.
        endpoint: String,
        /// The HTTP status.
        status: u16,
        /// What the peer said, and what to do.
        reason: String,
    },
    /// A certificate, key or CA file could not be used.
    #[error("TLS setup: {path}: {reason}", path = path.display())]
    TlsConfig {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A TLS setting is inconsistent (e.g. a client certificate without its key).
    #[error("TLS setup: {0}")]
    TlsOptions(String),
    /// A listening socket could not be opened.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address or socket path.
        addr: String,
        /// The socket error.
        source: io::Error,
    },
    /// A listener was configured without any address.
    #[error("nothing to listen on: give a TCP address or a Unix socket path")]
    NoAddress,
}

impl TransportError {
    /// True when trying again cannot help (a bad URL or configuration), as opposed to a
    /// peer that is down or unreachable for now.
    pub fn is_permanent(&self) -> bool {
        match self {
            TransportError::InvalidUrl { .. }
            | TransportError::Unsupported { .. }
            | TransportError::TlsConfig { .. }
            | TransportError::TlsOptions(_)
            | TransportError::NoAddress
            | TransportError::Refused { .. } => true,
            TransportError::TlsHandshake { source, .. } => certificate_refused(source),
            _ => false,
        }
    }
}

/// Whether a failed TLS handshake failed on a certificate: the peer's, which we could not
/// verify (unknown CA, another name, expired), or ours, which the peer refused. Trying
/// again with the same settings meets the same certificate; a peer that drops the
/// connection or does not speak TLS (yet) may be restarting, and is tried again.
fn certificate_refused(e: &io::Error) -> bool {
    use rustls::AlertDescription as Alert;
    let Some(e) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return false;
    };
    match e {
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => true,
        rustls::Error::AlertReceived(alert) => matches!(
            alert,
            Alert::BadCertificate
                | Alert::UnsupportedCertificate
                | Alert::CertificateRevoked
                | Alert::CertificateExpired
                | Alert::CertificateUnknown
                | Alert::UnknownCA
                | Alert::CertificateRequired
        ),
        _ => false,
    }
}
