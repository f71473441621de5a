//! TLS for the relay's listeners (HTTPS/WSS and `--tcp-listen`): the same rustls setup as
//! `blazedb listen` ([`blazedb_net::transport::tls`]: `ring` provider, PEM files, optional
//! client certificates), plus the ALPN protocols the HTTP listener offers.

use std::sync::Arc;

use blazedb_net::transport::tls::TlsServerOptions;
use blazedb_net::transport::TransportError;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsFiles;
use crate::error::RelayError;

/// The acceptor for a certificate and key (and, with `client_ca`, required client
/// certificates); `alpn` is offered to clients (e.g. `http/1.1`).
pub fn acceptor(files: &TlsFiles, alpn: &[&[u8]]) -> Result<TlsAcceptor, RelayError> {
    let options = TlsServerOptions {
        cert_pem: files.cert.clone(),
        key_pem: files.key.clone(),
        client_ca_pem: files.client_ca.clone(),
        client_crl_pem: files.client_crls.clone(),
    };
    let config = options.server_config().map_err(|e| {
        // `RelayError::Tls` says "TLS: " already; the transport's own prefix would repeat it.
        RelayError::Tls(match e {
            TransportError::TlsConfig { path, reason } => format!("{}: {reason}", path.display()),
            TransportError::TlsOptions(m) => m,
            other => other.to_string(),
        })
    })?;
    let mut config = (*config).clone();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(TlsAcceptor::from(Arc::new(config)))
}
