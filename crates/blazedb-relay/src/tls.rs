//! TLS for the relay's listeners (HTTPS/WSS and `--tcp-listen`): rustls with the `ring`
//! provider, from PEM files. The provider is passed explicitly so that another crate of the
//! process enabling a second rustls provider cannot make building the config ambiguous.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsFiles;
use crate::error::RelayError;

/// The acceptor for a certificate and key; `alpn` is offered to clients (e.g. `http/1.1`).
pub fn acceptor(files: &TlsFiles, alpn: &[&[u8]]) -> Result<TlsAcceptor, RelayError> {
    let certs = certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        RelayError::Tls(format!(
            "cannot read a private key from {}: {e}",
            files.key.display()
        ))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| RelayError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            RelayError::Tls(format!(
                "{} and {} do not make a usable certificate: {e}",
                files.cert.display(),
                files.key.display()
            ))
        })?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, RelayError> {
    let err = |e: String| {
        RelayError::Tls(format!(
            "cannot read certificates from {}: {e}",
            path.display()
        ))
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no CERTIFICATE block in the file".into()));
    }
    Ok(certs)
}
