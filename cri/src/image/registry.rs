//! Talking to registries: oci-client does the distribution protocol (token and basic
//! auth handshakes, manifest and blob GETs with digest verification); this module picks
//! the endpoints from the hosts config, builds one client per endpoint and pull (so one
//! pull's credentials never leak into another's token cache), retries transient
//! failures, and turns oci-client's errors into ones naming the image and endpoint.
//!
//! Gaps of oci-client that this wrapper covers: it knows no mirrors with overridden
//! paths (handled by rewriting registry and repository, see hosts.rs), it never retries
//! (done here), and it does not check blob sizes (done here). Not covered: it hides the
//! Retry-After header of a 429, so the retry uses its own backoff.

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use tokio::io::AsyncWriteExt;

use super::digest::Digest;
use super::error::{ImageError, Result};
use super::hosts::{Endpoint, HostsConfig};
use super::media::{self, Descriptor};

/// Registry credentials as the CRI AuthConfig carries them (from image pull secrets).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    /// base64 of `username:password`, as in a docker config.json.
    pub auth: String,
    /// An OAuth refresh token; oci-client cannot exchange it, so it is refused.
    pub identity_token: String,
    /// A bearer token to send as is.
    pub registry_token: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    pub fn anonymous() -> Self {
        Credentials::default()
    }

    pub fn basic(username: &str, password: &str) -> Self {
        Credentials {
            username: username.into(),
            password: password.into(),
            ..Default::default()
        }
    }

    /// A digest of all fields: tells credentials apart without keeping them readable.
    pub(crate) fn fingerprint(&self) -> Digest {
        let joined = [
            &self.username,
            &self.password,
            &self.auth,
            &self.identity_token,
            &self.registry_token,
        ]
        .map(|f| format!("{}:{f}", f.len()))
        .concat();
        Digest::of_bytes(joined.as_bytes())
    }

    fn to_registry_auth(&self, image: &str) -> Result<RegistryAuth> {
        let bad = |reason: &str| ImageError::InvalidReference {
            reference: image.to_string(),
            reason: format!("credentials: {reason}"),
        };
        if !self.registry_token.is_empty() {
            return Ok(RegistryAuth::Bearer(self.registry_token.clone()));
        }
        if !self.auth.is_empty() {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(self.auth.trim())
                .map_err(|_| bad("auth is not base64"))?;
            let decoded = String::from_utf8(decoded).map_err(|_| bad("auth is not UTF-8"))?;
            let (user, pass) = decoded
                .split_once(':')
                .ok_or_else(|| bad("auth is not base64 of username:password"))?;
            return Ok(RegistryAuth::Basic(user.into(), pass.into()));
        }
        if !self.username.is_empty() {
            return Ok(RegistryAuth::Basic(
                self.username.clone(),
                self.password.clone(),
            ));
        }
        if !self.identity_token.is_empty() {
            return Err(bad("identity_token (OAuth refresh token) is not supported"));
        }
        Ok(RegistryAuth::Anonymous)
    }
}

/// A repository at one endpoint, with a client holding this pull's credentials.
pub(crate) struct Remote {
    pub endpoint: Endpoint,
    client: Client,
    /// The repository as named at this endpoint; tag/digest set per request.
    registry: String,
    repository: String,
    image: String,
}

/// The endpoints serving one image reference during one pull.
pub(crate) struct Session {
    remotes: Vec<Remote>,
    auth: RegistryAuth,
    image: String,
}

/// A manifest (or index) as the registry returned it.
pub(crate) struct FetchedManifest {
    pub body: bytes::Bytes,
    pub digest: Digest,
    pub media_type: String,
}

impl Session {
    pub async fn new(
        hosts: &HostsConfig,
        reference: &Reference,
        credentials: &Credentials,
        max_concurrent_downloads: usize,
    ) -> Result<Session> {
        let image = reference.whole();
        let auth = credentials.to_registry_auth(&image)?;
        let mut remotes = Vec::new();
        for endpoint in hosts.endpoints(reference.registry())? {
            let client = build_client(&endpoint, max_concurrent_downloads)?;
            let remote = Remote {
                registry: endpoint.registry.clone(),
                repository: endpoint.repository(reference.repository()),
                endpoint,
                client,
                image: image.clone(),
            };
            remote
                .client
                .store_auth_if_needed(&remote.registry, &auth)
                .await;
            remotes.push(remote);
        }
        Ok(Session {
            remotes,
            auth,
            image,
        })
    }

    /// Fetches a manifest by tag or digest, trying each resolving endpoint in turn.
    pub async fn manifest(&self, tag_or_digest: &str) -> Result<FetchedManifest> {
        let mut last = None;
        for remote in self.remotes.iter().filter(|r| r.endpoint.can_resolve) {
            match remote.manifest(tag_or_digest, &self.auth).await {
                Ok(m) => return Ok(m),
                Err(e) => {
                    tracing::debug!(image = %self.image, endpoint = %remote.endpoint.url, error = %e, "manifest fetch failed, trying next endpoint");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| ImageError::Registry {
            image: self.image.clone(),
            endpoint: "-".into(),
            reason: "no endpoint with the resolve capability is configured".into(),
            status: None,
        }))
    }

    /// Downloads a blob into `dest` (created or truncated), verifying digest and size.
    pub async fn blob(&self, desc: &Descriptor, dest: &Path) -> Result<()> {
        let mut last = None;
        for remote in &self.remotes {
            match retry(|| remote.blob(desc, dest)).await {
                Ok(()) => return Ok(()),
                Err(e @ ImageError::Blob { .. }) => return Err(e),
                Err(e) => {
                    tracing::debug!(image = %self.image, endpoint = %remote.endpoint.url, blob = %desc.digest, error = %e, "blob fetch failed, trying next endpoint");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| ImageError::Registry {
            image: self.image.clone(),
            endpoint: "-".into(),
            reason: "no endpoint configured".into(),
            status: None,
        }))
    }
}

impl Remote {
    fn reference(&self, tag_or_digest: &str) -> Reference {
        if tag_or_digest.contains(':') {
            Reference::with_digest(
                self.registry.clone(),
                self.repository.clone(),
                tag_or_digest.into(),
            )
        } else {
            Reference::with_tag(
                self.registry.clone(),
                self.repository.clone(),
                tag_or_digest.into(),
            )
        }
    }

    async fn manifest(&self, tag_or_digest: &str, auth: &RegistryAuth) -> Result<FetchedManifest> {
        let reference = self.reference(tag_or_digest);
        let (body, digest) = retry(|| async {
            self.client
                .pull_manifest_raw(&reference, auth, media::ACCEPTED_MANIFESTS)
                .await
                .map_err(|e| self.error(e, tag_or_digest))
        })
        .await?;
        let digest = Digest::parse(&digest).map_err(|reason| ImageError::Manifest {
            image: self.image.clone(),
            digest: digest.clone(),
            reason,
        })?;
        let media_type = media::declared_media_type(&body, "");
        Ok(FetchedManifest {
            body,
            digest,
            media_type,
        })
    }

    async fn blob(&self, desc: &Descriptor, dest: &Path) -> Result<()> {
        let reference = self.reference(&desc.digest);
        let file = tokio::fs::File::create(dest)
            .await
            .map_err(ImageError::io(dest))?;
        let mut out = tokio::io::BufWriter::with_capacity(1 << 20, file);
        let oci_desc = OciDescriptor {
            media_type: desc.media_type.clone(),
            digest: desc.digest.clone(),
            size: desc.size,
            ..Default::default()
        };
        self.client
            .pull_blob(&reference, &oci_desc, &mut out)
            .await
            .map_err(|e| self.error(e, &desc.digest))?;
        out.flush().await.map_err(ImageError::io(dest))?;
        let file = out.into_inner();
        let len = file.metadata().await.map_err(ImageError::io(dest))?.len();
        if len != desc.size as u64 {
            return Err(ImageError::Blob {
                image: self.image.clone(),
                digest: desc.digest.clone(),
                reason: format!("size mismatch: descriptor says {}, got {len}", desc.size),
            });
        }
        file.sync_all().await.map_err(ImageError::io(dest))
    }

    fn error(&self, e: OciDistributionError, what: &str) -> ImageError {
        let status = match &e {
            OciDistributionError::ServerError { code, .. } => Some(*code),
            OciDistributionError::UnauthorizedError { .. }
            | OciDistributionError::AuthenticationFailure(_) => Some(401),
            OciDistributionError::ImageManifestNotFoundError(_) => Some(404),
            OciDistributionError::RegistryError { envelope, .. } => {
                envelope.errors.first().map(|err| match err.code {
                    OciErrorCode::BlobUnknown
                    | OciErrorCode::ManifestUnknown
                    | OciErrorCode::NameUnknown
                    | OciErrorCode::NotFound => 404,
                    OciErrorCode::Unauthorized => 401,
                    OciErrorCode::Denied => 403,
                    OciErrorCode::Toomanyrequests => 429,
                    _ => 400,
                })
            }
            OciDistributionError::DigestError(_) => {
                return ImageError::Blob {
                    image: self.image.clone(),
                    digest: what.to_string(),
                    reason: format!("content does not match its digest: {e}"),
                };
            }
            // Writing the download failed (a full disk): ours, not the registry's, and
            // not worth retrying.
            OciDistributionError::IoError(io) => {
                return ImageError::Blob {
                    image: self.image.clone(),
                    digest: what.to_string(),
                    reason: format!("writing to the store: {io}"),
                };
            }
            _ => None,
        };
        ImageError::Registry {
            image: self.image.clone(),
            endpoint: self.endpoint.url.clone(),
            reason: format!("{what}: {e}"),
            status,
        }
    }
}

fn build_client(endpoint: &Endpoint, max_concurrent_downloads: usize) -> Result<Client> {
    let mut extra_root_certificates = Vec::new();
    for path in &endpoint.ca_files {
        let data = std::fs::read(path).map_err(ImageError::io(path))?;
        extra_root_certificates.push(Certificate {
            encoding: CertificateEncoding::Pem,
            data,
        });
    }
    Ok(Client::new(ClientConfig {
        protocol: if endpoint.plain_http {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        accept_invalid_certificates: endpoint.skip_verify,
        extra_root_certificates,
        platform_resolver: None,
        max_concurrent_download: max_concurrent_downloads,
        connect_timeout: Some(Duration::from_secs(30)),
        read_timeout: Some(Duration::from_secs(120)),
        ..Default::default()
    }))
}

const RETRY_ATTEMPTS: u32 = 4;

/// Runs `op` again after transient failures (429, 5xx, connection errors) with
/// exponential backoff; other errors return at once.
async fn retry<T, F, Fut>(mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut delay = Duration::from_millis(200);
    let mut attempt = 1;
    loop {
        match op().await {
            Err(e) if e.is_transient() && attempt < RETRY_ATTEMPTS => {
                tracing::info!(error = %e, attempt, "transient registry error, retrying");
                tokio::time::sleep(delay).await;
                delay *= 3;
                attempt += 1;
            }
            other => return other,
        }
    }
}
