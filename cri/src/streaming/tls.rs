//! TLS for the streaming endpoints (containerd: `enable_tls_streaming` with
//! `x509_key_pair_streaming`, or a self-signed certificate when no pair is given).

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

use super::StreamingError;

/// Where the server's certificate comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM certificate chain; with `key_file`. Neither: a self-signed certificate.
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
}

fn tls_error(what: impl std::fmt::Display) -> StreamingError {
    StreamingError::Tls(what.to_string())
}

fn load_pair(
    cert_file: &PathBuf,
    key_file: &PathBuf,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), StreamingError> {
    let certs = CertificateDer::pem_file_iter(cert_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| tls_error(format!("tls_cert_file {}: {e}", cert_file.display())))?;
    if certs.is_empty() {
        return Err(tls_error(format!(
            "tls_cert_file {}: no certificate",
            cert_file.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| tls_error(format!("tls_key_file {}: {e}", key_file.display())))?;
    Ok((certs, key))
}

/// A certificate for `localhost` and the listening address, valid for a year.
fn self_signed(
    address: IpAddr,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), StreamingError> {
    let names = vec!["localhost".to_owned(), address.to_string()];
    let generated = rcgen::generate_simple_self_signed(names)
        .map_err(|e| tls_error(format!("self-signed certificate: {e}")))?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(generated.key_pair.serialize_der()));
    Ok((vec![generated.cert.der().clone()], key))
}

pub(crate) fn acceptor(config: &TlsConfig, address: IpAddr) -> Result<TlsAcceptor, StreamingError> {
    let (certs, key) = match (&config.cert_file, &config.key_file) {
        (Some(cert), Some(key)) => load_pair(cert, key)?,
        (None, None) => self_signed(address)?,
        _ => {
            return Err(tls_error(
                "tls_cert_file and tls_key_file must be given together",
            ));
        }
    };
    let server =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(tls_error)?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| tls_error(format!("certificate and key do not form a pair: {e}")))?;
    Ok(TlsAcceptor::from(Arc::new(server)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_a_key_pair_is_refused() {
        let config = TlsConfig {
            cert_file: Some("/tmp/cert.pem".into()),
            key_file: None,
        };
        let err = acceptor(&config, [127, 0, 0, 1].into()).err().unwrap();
        assert!(err.to_string().contains("must be given together"), "{err}");
    }

    #[test]
    fn missing_files_are_named() {
        let config = TlsConfig {
            cert_file: Some("/nonexistent/cert.pem".into()),
            key_file: Some("/nonexistent/key.pem".into()),
        };
        let err = acceptor(&config, [127, 0, 0, 1].into()).err().unwrap();
        assert!(err.to_string().contains("/nonexistent/cert.pem"), "{err}");
    }

    #[test]
    fn a_self_signed_certificate_is_made_when_none_is_given() {
        assert!(acceptor(&TlsConfig::default(), [127, 0, 0, 1].into()).is_ok());
    }
}
