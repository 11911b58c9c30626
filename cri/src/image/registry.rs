//! Talking to registries (the OCI distribution protocol, pull side): picks the
//! endpoints from the hosts config, builds one HTTP client per endpoint and pull (so one
//! pull's credentials never leak into another's tokens), answers authentication
//! challenges, fetches manifests and blobs (checking digests and sizes while they
//! stream), retries transient failures (honouring Retry-After) and turns failures into
//! errors naming the image and endpoint.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::{self, HeaderValue};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;

use super::auth::{self, AuthFailure, Credential};
use super::digest::Digest;
use super::error::{ImageError, Result};
use super::hosts::{Endpoint, HostsConfig};
use super::media::{self, Descriptor};
use super::transport::{self, EndpointClient};

/// Registry credentials as the CRI AuthConfig carries them (from image pull secrets).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    /// base64 of `username:password`, as in a docker config.json.
    pub auth: String,
    /// An OAuth2 refresh token, exchanged at the registry's token server.
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
}

/// The endpoints serving one image reference during one pull.
pub(crate) struct Session {
    remotes: Vec<Remote>,
    image: String,
}

/// A repository at one endpoint, with a client holding this pull's credentials.
struct Remote {
    endpoint: Endpoint,
    http: EndpointClient,
    /// `<scheme>://<registry>/v2/<repository>`: requests append `/manifests/..` or `/blobs/..`.
    base: String,
    /// The repository as named at this endpoint (for token scopes).
    repository: String,
    image: String,
    credential: Credential,
    /// The Authorization header that last worked, reused by later requests.
    authorization: Mutex<Option<HeaderValue>>,
}

/// A manifest (or index) as the registry returned it.
pub(crate) struct FetchedManifest {
    pub body: bytes::Bytes,
    pub digest: Digest,
    pub media_type: String,
}

/// Manifests are small; a registry sending more is broken or hostile (containerd's
/// limit too).
const MAX_MANIFEST_SIZE: u64 = 4 << 20;
const RETRY_ATTEMPTS: u32 = 4;
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// The longest Retry-After honoured; a registry asking for more gets retried sooner.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// How soon a failed request may be tried again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Retry {
    Never,
    Backoff,
    After(Duration),
}

/// A failed attempt: the error to report if no retry follows.
struct Failure {
    error: ImageError,
    retry: Retry,
}

impl Session {
    pub async fn new(
        hosts: &HostsConfig,
        reference: &oci_client::Reference,
        credentials: &Credentials,
    ) -> Result<Session> {
        let image = reference.whole();
        let credential = Credential::from_credentials(credentials).map_err(|reason| {
            ImageError::InvalidReference {
                reference: image.clone(),
                reason: format!("credentials: {reason}"),
            }
        })?;
        let mut remotes = Vec::new();
        for endpoint in hosts.endpoints(reference.registry())? {
            let repository = endpoint.repository(reference.repository());
            let scheme = if endpoint.plain_http { "http" } else { "https" };
            remotes.push(Remote {
                http: transport::http_client(&endpoint)?,
                base: format!("{scheme}://{}/v2/{repository}", endpoint.registry),
                repository,
                image: image.clone(),
                authorization: Mutex::new(credential.preemptive()),
                credential: credential.clone(),
                endpoint,
            });
        }
        Ok(Session { remotes, image })
    }

    /// Fetches a manifest by tag or digest, trying each resolving endpoint in turn.
    pub async fn manifest(&self, tag_or_digest: &str) -> Result<FetchedManifest> {
        let mut last = None;
        for remote in self.remotes.iter().filter(|r| r.endpoint.can_resolve) {
            match retry(|| remote.manifest(tag_or_digest)).await {
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
    async fn manifest(&self, tag_or_digest: &str) -> Result<FetchedManifest, Failure> {
        let what = format!("manifest {tag_or_digest}");
        let url = format!("{}/manifests/{tag_or_digest}", self.base);
        let response = self
            .get(&url, Some(&media::ACCEPTED_MANIFESTS.join(", ")), &what)
            .await?;
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = self.read_manifest_body(response, &what).await?;
        let digest = Digest::of_bytes(&body);
        if tag_or_digest.contains(':') && digest.as_str() != tag_or_digest {
            return Err(Failure {
                error: ImageError::Manifest {
                    image: self.image.clone(),
                    digest: tag_or_digest.to_string(),
                    reason: format!("content hashes to {digest}"),
                },
                retry: Retry::Never,
            });
        }
        Ok(FetchedManifest {
            media_type: media::declared_media_type(&body, &content_type),
            body,
            digest,
        })
    }

    async fn read_manifest_body(
        &self,
        mut response: reqwest::Response,
        what: &str,
    ) -> Result<bytes::Bytes, Failure> {
        let too_big = || Failure {
            error: ImageError::Manifest {
                image: self.image.clone(),
                digest: what.to_string(),
                reason: format!("larger than {MAX_MANIFEST_SIZE} bytes"),
            },
            retry: Retry::Never,
        };
        if response
            .content_length()
            .is_some_and(|l| l > MAX_MANIFEST_SIZE)
        {
            return Err(too_big());
        }
        let mut body = bytes::BytesMut::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.request_failure(e, what))?
        {
            if (body.len() + chunk.len()) as u64 > MAX_MANIFEST_SIZE {
                return Err(too_big());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    }

    /// Streams a blob into `dest`, hashing as it goes; fails at the first byte beyond
    /// the descriptor's size.
    async fn blob(&self, desc: &Descriptor, dest: &Path) -> Result<(), Failure> {
        let what = format!("blob {}", desc.digest);
        let url = format!("{}/blobs/{}", self.base, desc.digest);
        let mut response = self.get(&url, None, &what).await?;
        let blob_error = |reason: String| Failure {
            error: ImageError::Blob {
                image: self.image.clone(),
                digest: desc.digest.clone(),
                reason,
            },
            retry: Retry::Never,
        };
        let expected = u64::try_from(desc.size)
            .map_err(|_| blob_error(format!("descriptor has negative size {}", desc.size)))?;
        // Writing the download failing (a full disk) is ours, not the registry's, and
        // not worth retrying.
        let write_error = |e: std::io::Error| blob_error(format!("writing to the store: {e}"));
        let file = tokio::fs::File::create(dest).await.map_err(write_error)?;
        let mut out = tokio::io::BufWriter::with_capacity(1 << 20, file);
        let mut hasher = Sha256::new();
        let mut received = 0u64;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.request_failure(e, &what))?
        {
            received += chunk.len() as u64;
            if received > expected {
                return Err(blob_error(format!(
                    "size mismatch: descriptor says {expected}, registry sent more"
                )));
            }
            hasher.update(&chunk);
            out.write_all(&chunk).await.map_err(write_error)?;
        }
        if received != expected {
            return Err(blob_error(format!(
                "size mismatch: descriptor says {expected}, got {received}"
            )));
        }
        let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
        if actual != desc.digest {
            return Err(blob_error(format!(
                "content does not match its digest: it hashes to {actual}"
            )));
        }
        out.flush().await.map_err(write_error)?;
        out.into_inner().sync_all().await.map_err(write_error)
    }

    /// GETs `url`, answering one authentication challenge if the registry sends one;
    /// any status but success is a failure.
    async fn get(
        &self,
        url: &str,
        accept: Option<&str>,
        what: &str,
    ) -> Result<reqwest::Response, Failure> {
        let mut authorization = self.current_authorization();
        let mut challenged = false;
        loop {
            let mut request = self.http.get(url);
            if let Some(value) = &authorization {
                request = request.header(header::AUTHORIZATION, value.clone());
            }
            if let Some(accept) = accept {
                request = request.header(header::ACCEPT, accept);
            }
            let response = request
                .send()
                .await
                .map_err(|e| self.request_failure(e, what))?;
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED && !challenged {
                challenged = true;
                let challenges: Vec<_> = response
                    .headers()
                    .get_all(header::WWW_AUTHENTICATE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(auth::parse_challenges)
                    .collect();
                let value =
                    auth::authorize(&self.http, &self.credential, &challenges, &self.repository)
                        .await
                        .map_err(|f| self.auth_failure(f, what))?;
                self.remember_authorization(&value);
                authorization = Some(value);
                continue;
            }
            if status.is_success() {
                return Ok(response);
            }
            return Err(self.status_failure(response, what).await);
        }
    }

    fn current_authorization(&self) -> Option<HeaderValue> {
        self.authorization
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn remember_authorization(&self, value: &HeaderValue) {
        *self
            .authorization
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(value.clone());
    }

    fn registry_error(&self, reason: String, status: Option<u16>) -> ImageError {
        ImageError::Registry {
            image: self.image.clone(),
            endpoint: self.endpoint.url.clone(),
            reason,
            status,
        }
    }

    /// A request that got no (complete) answer: a TLS failure that will repeat fails at
    /// once; network trouble is retried.
    fn request_failure(&self, e: reqwest::Error, what: &str) -> Failure {
        if let Some(reason) = transport::permanent_tls_failure(&e) {
            return Failure {
                error: ImageError::Tls {
                    image: self.image.clone(),
                    endpoint: self.endpoint.url.clone(),
                    reason,
                },
                retry: Retry::Never,
            };
        }
        Failure {
            error: self.registry_error(format!("{what}: {}", error_chain(&e)), None),
            retry: Retry::Backoff,
        }
    }

    fn auth_failure(&self, f: AuthFailure, what: &str) -> Failure {
        let retry = if f.transient {
            Retry::Backoff
        } else {
            Retry::Never
        };
        let error = match f.into_error(&self.image, &self.endpoint.url) {
            ImageError::Registry {
                image,
                endpoint,
                reason,
                status,
            } => ImageError::Registry {
                image,
                endpoint,
                reason: format!("{what}: {reason}"),
                status,
            },
            other => other,
        };
        Failure { error, retry }
    }

    /// An answer with an error status: 429 and 5xx are retried (after Retry-After when
    /// given), the rest fail with the registry's own message.
    async fn status_failure(&self, response: reqwest::Response, what: &str) -> Failure {
        let status = response.status();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry_after(v, SystemTime::now()));
        let retry = match retry_after {
            _ if !(status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()) => {
                Retry::Never
            }
            Some(wait) => Retry::After(wait),
            None => Retry::Backoff,
        };
        let detail = response
            .bytes()
            .await
            .ok()
            .and_then(|body| registry_message(&body))
            .map(|m| format!(": {m}"))
            .unwrap_or_default();
        Failure {
            error: self.registry_error(format!("{what}: {status}{detail}"), Some(status.as_u16())),
            retry,
        }
    }
}

/// The `errors` of a distribution error body, as `CODE: message; ...`.
fn registry_message(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Envelope {
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        code: Option<String>,
        message: Option<String>,
    }
    let envelope: Envelope = serde_json::from_slice(body).ok()?;
    let parts: Vec<String> = envelope
        .errors
        .into_iter()
        .map(|e| {
            [e.code, e.message]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(": ")
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// `e` with its causes: reqwest's own message alone rarely says what failed.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// A Retry-After value: delay seconds or an HTTP-date (RFC 9110 section 10.2.3).
fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Runs `op` again after transient failures, at most RETRY_ATTEMPTS times: after the
/// registry's Retry-After (capped at MAX_RETRY_AFTER) when it gave one, else with
/// exponential backoff.
async fn retry<T, F, Fut>(mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Failure>>,
{
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 1;
    loop {
        let failure = match op().await {
            Ok(value) => return Ok(value),
            Err(failure) => failure,
        };
        let delay = match failure.retry {
            _ if attempt >= RETRY_ATTEMPTS => return Err(failure.error),
            Retry::Never => return Err(failure.error),
            Retry::Backoff => {
                let delay = backoff;
                backoff *= 3;
                delay
            }
            Retry::After(wait) => wait.min(MAX_RETRY_AFTER),
        };
        tracing::info!(error = %failure.error, attempt, ?delay, "transient registry error, retrying");
        tokio::time::sleep(delay).await;
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_or_an_http_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(retry_after("3", now), Some(Duration::from_secs(3)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(7));
        assert_eq!(retry_after(&later, now), Some(Duration::from_secs(7)));
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(7));
        assert_eq!(retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(retry_after("soon", now), None);
    }

    #[test]
    fn registry_error_bodies_become_messages() {
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#;
        assert_eq!(
            registry_message(body).as_deref(),
            Some("MANIFEST_UNKNOWN: manifest unknown")
        );
        assert_eq!(registry_message(b"<html>"), None);
    }
}
