//! The HTTP client for one registry endpoint: its TLS setup (system roots plus the
//! `ca` files, or no verification with `skip_verify`; `client` certificates for mutual
//! TLS), its `header` lines, timeouts; and telling TLS failures, which no retry can fix,
//! apart from network ones.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use rustls::client::ResolvesClientCert;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{AlertDescription, DigitallySignedStruct, SignatureScheme};

use super::error::{ImageError, Result};
use super::hosts::{ClientCertificate, Endpoint};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest silence while reading a response; a slow but moving download never trips it.
const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// An endpoint's HTTP client and the `header` lines every request to it carries
/// (token requests included, as containerd does).
pub(crate) struct EndpointClient {
    http: reqwest::Client,
    /// Applied per request: reqwest's default headers keep one value per name.
    headers: HeaderMap,
}

impl EndpointClient {
    pub fn get(&self, url: impl reqwest::IntoUrl) -> reqwest::RequestBuilder {
        self.http.get(url).headers(self.headers.clone())
    }

    pub fn post(&self, url: impl reqwest::IntoUrl) -> reqwest::RequestBuilder {
        self.http.post(url).headers(self.headers.clone())
    }
}

/// Builds the client for `endpoint`; errors name the file or header at fault.
pub(crate) fn http_client(endpoint: &Endpoint) -> Result<EndpointClient> {
    let bad = |reason: String| ImageError::HostsConfig {
        path: endpoint.url.clone().into(),
        reason,
    };
    let mut headers = HeaderMap::new();
    for (name, value) in &endpoint.headers {
        // Both were checked when the hosts file was read.
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| bad(format!("header {name:?}: {e}")))?;
        let value = HeaderValue::from_str(value).map_err(|e| bad(format!("header {name}: {e}")))?;
        headers.append(name, value);
    }
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("berth-cri/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT);
    if !endpoint.plain_http {
        builder = builder.tls_backend_preconfigured(tls_config(endpoint)?);
    }
    let http = builder
        .build()
        .map_err(|e| bad(format!("building the HTTP client: {e}")))?;
    Ok(EndpointClient { http, headers })
}

fn tls_config(endpoint: &Endpoint) -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let bad = |path: &Path, reason: String| ImageError::HostsConfig {
        path: path.to_path_buf(),
        reason,
    };
    let verifier: Arc<dyn ServerCertVerifier> = if endpoint.skip_verify {
        Arc::new(NoVerification(provider.clone()))
    } else {
        let mut roots = Vec::new();
        for path in &endpoint.ca_files {
            roots.extend(read_certificates(path).map_err(|r| bad(path, format!("ca: {r}")))?);
        }
        let verifier = if roots.is_empty() {
            rustls_platform_verifier::Verifier::new(provider.clone())
        } else {
            rustls_platform_verifier::Verifier::new_with_extra_roots(roots, provider.clone())
        };
        Arc::new(verifier.map_err(|e| bad(Path::new(&endpoint.url), format!("ca: {e}")))?)
    };
    let mut identities = Vec::new();
    for pair in &endpoint.client_certs {
        identities.push(Arc::new(load_identity(pair, &provider)?));
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(Path::new(&endpoint.url), format!("TLS setup: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    Ok(if identities.is_empty() {
        builder.with_no_client_auth()
    } else {
        builder.with_client_cert_resolver(Arc::new(ClientIdentities(identities)))
    })
}

fn read_certificates(path: &Path) -> std::result::Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| e.to_string())?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no PEM certificate in the file".into());
    }
    Ok(certs)
}

fn load_identity(pair: &ClientCertificate, provider: &CryptoProvider) -> Result<CertifiedKey> {
    let key_path = pair.key.as_deref().unwrap_or(&pair.cert);
    let bad = |path: &Path, reason: String| ImageError::HostsConfig {
        path: path.to_path_buf(),
        reason: format!("client: {reason}"),
    };
    let certs = read_certificates(&pair.cert).map_err(|r| bad(&pair.cert, r))?;
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| bad(key_path, format!("no usable PEM private key: {e}")))?;
    let key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| bad(key_path, format!("private key: {e}")))?;
    Ok(CertifiedKey::new(certs, key))
}

/// Offers the first configured identity whose key can sign with a scheme the server
/// accepts, as Go's TLS client (containerd) does with several `client` entries.
#[derive(Debug)]
struct ClientIdentities(Vec<Arc<CertifiedKey>>);

impl ResolvesClientCert for ClientIdentities {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.0
            .iter()
            .find(|id| id.key.choose_scheme(sigschemes).is_some())
            .cloned()
    }

    fn has_certs(&self) -> bool {
        !self.0.is_empty()
    }
}

/// `skip_verify`: any server certificate is accepted (handshake signatures are still
/// checked, so the session is at least bound to the presented key).
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Why a request failed at the TLS layer in a way that repeats on every attempt (an
/// untrusted certificate, a refused handshake), or None for other failures.
pub(crate) fn permanent_tls_failure(err: &reqwest::Error) -> Option<String> {
    let tls = tls_error(err)?;
    Some(match tls {
        rustls::Error::InvalidCertificate(reason) => {
            format!(
                "the server's TLS certificate was not trusted: {reason:?} (add its CA with `ca` in hosts.toml)"
            )
        }
        rustls::Error::NoCertificatesPresented | rustls::Error::UnsupportedNameType => {
            format!("the server's TLS certificate was not trusted: {tls}")
        }
        rustls::Error::AlertReceived(
            alert @ (AlertDescription::CertificateRequired
            | AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown
            | AlertDescription::HandshakeFailure),
        ) => format!(
            "the server refused the TLS handshake ({alert:?}); it may require a client certificate (`client` in hosts.toml)"
        ),
        rustls::Error::AlertReceived(_) | rustls::Error::PeerIncompatible(_) => {
            format!("TLS handshake failed: {tls}")
        }
        _ => return None,
    })
}

/// The rustls error somewhere in `err`'s source chain. An io::Error's `source()` skips
/// the error it wraps, so those are unwrapped by hand.
fn tls_error(err: &reqwest::Error) -> Option<&rustls::Error> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
                return Some(tls);
            }
            next = Some(inner);
            continue;
        }
        next = e.source();
    }
    None
}
