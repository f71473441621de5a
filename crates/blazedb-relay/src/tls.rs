//! TLS for the relay's listeners (HTTPS/WSS and `--tcp-listen`): the same rustls setup as
//! `blazedb listen` ([`blazedb_net::transport::tls`]: `ring` provider, PEM files, optional
//! client certificates and their revocation lists), plus the ALPN protocols the HTTP
//! listener offers.

use blazedb_net::transport::tls::{ServerTls, TlsServerOptions};
use blazedb_net::transport::TransportError;

use crate::config::TlsFiles;
use crate::error::RelayError;

/// The TLS of a certificate and key (and, with `client_ca`, required client certificates,
/// checked against `client_crls`). Both listeners share it, revocation lists included: the
/// HTTP one offers `http/1.1` by ALPN ([`ServerTls::with_alpn`]).
pub fn server_tls(files: &TlsFiles) -> Result<ServerTls, RelayError> {
    let options = TlsServerOptions {
        cert_pem: files.cert.clone(),
        key_pem: files.key.clone(),
        client_ca_pem: files.client_ca.clone(),
        client_crl_pem: files.client_crls.clone(),
    };
    options.server_tls().map_err(|e| {
        // `RelayError::Tls` says "TLS: " already; the transport's own prefix would repeat it.
        RelayError::Tls(match e {
            TransportError::TlsConfig { path, reason } => format!("{}: {reason}", path.display()),
            TransportError::TlsOptions(m) => m,
            other => other.to_string(),
        })
    })
}
