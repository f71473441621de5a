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
    #[error(
        "cannot connect to {endpoint}: {source}{}",
        connect_advice(endpoint, source)
    )]
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
        "TLS handshake with {endpoint} failed: {source} ({})",
        handshake_advice(source)
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
    /// (or, for a browser, its origin); or with 400 `tls_required`: `ws://` to an HTTPS
    /// port. Trying again with the same ones cannot help.
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
    /// A listener setting is out of range (e.g. the window of the failure limit per
    /// address).
    #[error("listener setup: {0}")]
    ListenOptions(String),
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
            | TransportError::ListenOptions(_)
            | TransportError::Refused { .. } => true,
            TransportError::TlsHandshake { source, .. } => certificate_refused(source),
            _ => false,
        }
    }
}

/// What to do about a failed TLS handshake: about our client certificate when the peer
/// refused it, else about the server's certificate, or about a peer that does not speak TLS.
fn handshake_advice(e: &io::Error) -> &'static str {
    use rustls::CertificateError as Cert;
    if let Some(advice) = client_certificate_refusal(e) {
        return advice;
    }
    let rustls_error = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match rustls_error {
        Some(rustls::Error::InvalidCertificate(Cert::Other(other)))
            if matches!(
                other.0.downcast_ref::<webpki::Error>(),
                Some(webpki::Error::CaUsedAsEndEntity)
            ) =>
        {
            "the server's certificate is a CA certificate (basicConstraints CA:TRUE, what \
             `openssl req -x509` makes by default), which TLS does not accept as a server's \
             own, not even with --tls-ca: give the server a certificate signed by that CA, or \
             make the self-signed one with `-addext basicConstraints=critical,CA:FALSE`"
        }
        Some(rustls::Error::InvalidCertificate(
            Cert::NotValidForName | Cert::NotValidForNameContext { .. },
        )) => {
            "the server's certificate is not issued for the host in the URL: connect with a \
             name or address its subjectAltName lists, or reissue it with this one"
        }
        Some(rustls::Error::InvalidCertificate(
            Cert::Expired
            | Cert::ExpiredContext { .. }
            | Cert::NotValidYet
            | Cert::NotValidYetContext { .. },
        )) => {
            "the server's certificate is expired or not valid yet: renew it, or check the \
             clocks of both machines (a continuous sync tries again)"
        }
        Some(rustls::Error::InvalidCertificate(Cert::BadSignature)) => {
            "the server's certificate names an issuer in --tls-ca (or the system's roots) but \
             is not signed by it: pass the CA that signed it with --tls-ca"
        }
        Some(rustls::Error::InvalidMessage(_)) => {
            "the peer did not answer in TLS: if it listens without TLS, connect with tcp:// \
             (or ws://) instead"
        }
        Some(_) => {
            "for a self-signed development certificate pass its CA with --tls-ca, or \
             --danger-accept-invalid-certs"
        }
        // Not a certificate problem: the connection ended or failed mid-handshake (a relay
        // at its connection limit closes at once; so does a port that is not TLS at all).
        None => {
            "the connection ended during the TLS handshake: the peer may be at its connection \
             limit or restarting (a continuous sync tries again), or not serve TLS on this port"
        }
    }
}

/// What to check when a connection could not be opened: nobody listening, a Unix path that
/// is not a socket, a host name that does not resolve.
fn connect_advice(endpoint: &str, e: &io::Error) -> &'static str {
    let unix = endpoint.starts_with("unix:");
    match e.kind() {
        io::ErrorKind::ConnectionRefused if unix => {
            " (nothing accepts connections at that path: is it the socket a `blazedb listen \
             --unix` or `serve --unix` made, and is that process running?)"
        }
        io::ErrorKind::ConnectionRefused => {
            " (nothing listens there: is `blazedb listen` or `blazedb serve` running on that \
             host and port?)"
        }
        io::ErrorKind::NotFound if unix => {
            " (no socket at that path: start `blazedb listen --unix PATH` or `serve --unix \
             PATH` first, and check the path)"
        }
        _ if e.to_string().contains("lookup") => {
            " (the host name does not resolve: check its spelling, or use an IP address)"
        }
        _ => "",
    }
}

/// When `e` is the peer's TLS alert refusing the client certificate we presented (or did
/// not), what happened and what to pass instead.
///
/// With TLS 1.3 the server checks the client's certificate after the client has finished its
/// side of the handshake, so the client meets the alert on its first read: inside the
/// WebSocket upgrade (`wss://`), or on the session's first read (`tls://`, a
/// [`NetError::Io`](crate::NetError::Io)). Both say this, not just "received fatal alert".
pub fn client_certificate_refusal(e: &io::Error) -> Option<&'static str> {
    use rustls::AlertDescription as Alert;
    let rustls::Error::AlertReceived(alert) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())?
    else {
        return None;
    };
    Some(match alert {
        Alert::CertificateRequired => {
            "the peer requires a TLS client certificate: pass one signed by a CA it trusts \
             with --tls-client-cert and --tls-client-key"
        }
        Alert::CertificateRevoked => {
            "the peer revoked this client's TLS certificate (it is on the peer's revocation \
             list): ask its administrator for a new one and pass it with --tls-client-cert and \
             --tls-client-key"
        }
        Alert::UnknownCA
        | Alert::BadCertificate
        | Alert::UnsupportedCertificate
        | Alert::CertificateUnknown => {
            "the peer refused this client's TLS certificate: pass one signed by a CA the peer \
             trusts with --tls-client-cert and --tls-client-key"
        }
        Alert::CertificateExpired => {
            "the peer says this client's TLS certificate is expired or not yet valid: renew \
             it (--tls-client-cert, --tls-client-key) or check the clocks of both machines"
        }
        _ => return None,
    })
}

/// Whether a failed TLS handshake failed on a certificate: the peer's, which we could not
/// verify (unknown CA, another name, bad signature), or ours, which the peer refused. Trying
/// again with the same settings meets the same certificate; a peer that drops the
/// connection or does not speak TLS (yet) may be restarting, and is tried again.
///
/// A certificate outside its validity period is the exception: time fixes it. An expired
/// server certificate gets renewed (and the server reloaded), and a device that boots
/// without a real-time clock sees every certificate as not valid yet until its clock is set.
/// Giving up would leave a replica that never syncs again without a restart; trying again
/// (with the caller's backoff) resumes by itself. The `certificate_expired` alert is the
/// same case seen by the peer (RFC 8446: "expired or not currently valid"), whose clock may
/// be the one not set yet.
pub(crate) fn certificate_refused(e: &io::Error) -> bool {
    use rustls::AlertDescription as Alert;
    use rustls::CertificateError as Cert;
    let Some(e) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return false;
    };
    match e {
        rustls::Error::InvalidCertificate(
            Cert::Expired
            | Cert::ExpiredContext { .. }
            | Cert::NotValidYet
            | Cert::NotValidYetContext { .. },
        ) => false,
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => true,
        rustls::Error::AlertReceived(alert) => matches!(
            alert,
            Alert::BadCertificate
                | Alert::UnsupportedCertificate
                | Alert::CertificateRevoked
                | Alert::CertificateUnknown
                | Alert::UnknownCA
                | Alert::CertificateRequired
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::UnixTime;
    use rustls::{AlertDescription as Alert, CertificateError as Cert};

    fn handshake_failed(e: rustls::Error) -> TransportError {
        TransportError::TlsHandshake {
            endpoint: "tls://db.example.com:7541".to_owned(),
            source: io::Error::new(io::ErrorKind::InvalidData, e),
        }
    }

    #[test]
    fn a_certificate_outside_its_validity_period_is_tried_again() {
        let now = UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_800_000_000));
        for e in [
            Cert::Expired,
            Cert::ExpiredContext {
                time: now,
                not_after: now,
            },
            Cert::NotValidYet,
            Cert::NotValidYetContext {
                time: now,
                not_before: now,
            },
        ] {
            let error = handshake_failed(rustls::Error::InvalidCertificate(e.clone()));
            assert!(!error.is_permanent(), "{e:?}");
        }
        let error = handshake_failed(rustls::Error::AlertReceived(Alert::CertificateExpired));
        assert!(!error.is_permanent());
    }

    #[test]
    fn a_certificate_that_cannot_be_trusted_is_permanent() {
        for e in [
            Cert::UnknownIssuer,
            Cert::NotValidForName,
            Cert::BadSignature,
            Cert::BadEncoding,
            Cert::Revoked,
        ] {
            let error = handshake_failed(rustls::Error::InvalidCertificate(e.clone()));
            assert!(error.is_permanent(), "{e:?}");
        }
        for alert in [Alert::UnknownCA, Alert::BadCertificate] {
            assert!(handshake_failed(rustls::Error::AlertReceived(alert)).is_permanent());
        }
        assert!(handshake_failed(rustls::Error::NoCertificatesPresented).is_permanent());
        // A peer that does not speak TLS (yet) may be restarting.
        let error = handshake_failed(rustls::Error::InvalidMessage(
            rustls::InvalidMessage::InvalidContentType,
        ));
        assert!(!error.is_permanent());
    }

    /// A refusal of our client certificate names the client flags; a refusal of the server's
    /// certificate keeps naming --tls-ca.
    #[test]
    fn a_refused_client_certificate_is_said_to_be_ours() {
        for alert in [
            Alert::CertificateRequired,
            Alert::UnknownCA,
            Alert::BadCertificate,
            Alert::CertificateExpired,
        ] {
            let text = handshake_failed(rustls::Error::AlertReceived(alert)).to_string();
            assert!(text.contains("--tls-client-cert"), "{text}");
            assert!(!text.contains("--tls-ca"), "{text}");
        }
        let text = handshake_failed(rustls::Error::InvalidCertificate(Cert::UnknownIssuer));
        assert!(text.to_string().contains("--tls-ca"), "{text}");
        let other = io::Error::new(io::ErrorKind::InvalidData, rustls::Error::DecryptError);
        assert_eq!(client_certificate_refusal(&other), None);
        assert_eq!(
            client_certificate_refusal(&io::ErrorKind::BrokenPipe.into()),
            None
        );
    }
}
