//! Registry authentication: answering a `WWW-Authenticate` challenge with basic
//! credentials or with a bearer token from the challenge's token server (the Docker
//! registry token protocol; an OAuth2 refresh token is exchanged there with
//! `grant_type=refresh_token`, as docker and containerd do).
//!
//! The challenge parser is written here: the few crates for it are unmaintained.

use base64::Engine as _;
use reqwest::StatusCode;
use reqwest::header::HeaderValue;
use serde::Deserialize;

use super::error::ImageError;
use super::registry::Credentials;
use super::transport::EndpointClient;

/// What the pull may present, decided once from the CRI AuthConfig fields.
#[derive(Clone)]
pub(crate) enum Credential {
    Anonymous,
    Basic {
        username: String,
        password: String,
    },
    /// An OAuth2 refresh token (CRI `identity_token`, docker's `identitytoken`).
    RefreshToken(String),
    /// A bearer token sent as is (CRI `registry_token`).
    Bearer(String),
}

/// The OAuth client id sent with token requests.
const CLIENT_ID: &str = "berth-cri";

impl Credential {
    /// Picks the credential the way docker does: a registry token wins, then an identity
    /// token (a docker config stores `<token>` as its user name beside it), then
    /// `auth`, then username/password. Errors are the reason a field is unusable.
    pub fn from_credentials(c: &Credentials) -> Result<Credential, String> {
        if !c.registry_token.is_empty() {
            return Ok(Credential::Bearer(c.registry_token.clone()));
        }
        if !c.identity_token.is_empty() {
            return Ok(Credential::RefreshToken(c.identity_token.clone()));
        }
        if !c.auth.is_empty() {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(c.auth.trim())
                .map_err(|_| "auth is not base64")?;
            let decoded = String::from_utf8(decoded).map_err(|_| "auth is not UTF-8")?;
            let (username, password) = decoded
                .split_once(':')
                .ok_or("auth is not base64 of username:password")?;
            return Ok(Credential::Basic {
                username: username.into(),
                password: password.into(),
            });
        }
        if !c.username.is_empty() {
            return Ok(Credential::Basic {
                username: c.username.clone(),
                password: c.password.clone(),
            });
        }
        Ok(Credential::Anonymous)
    }

    /// The Authorization header to send before any challenge: only a given bearer token
    /// (basic credentials go out only when the registry asks for them).
    pub fn preemptive(&self) -> Option<HeaderValue> {
        match self {
            Credential::Bearer(token) => bearer(token).ok(),
            _ => None,
        }
    }
}

/// One authentication challenge from a 401 response.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Challenge {
    pub scheme: String,
    pub params: Vec<(String, String)>,
}

impl Challenge {
    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Parses `Bearer realm="...",service="...",scope="..."` (one challenge; a header with
/// several is split at the scheme names).
pub(crate) fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut challenges: Vec<Challenge> = Vec::new();
    let mut rest = header.trim();
    while !rest.is_empty() {
        rest = rest.trim_start_matches([',', ' ', '\t']);
        let name_end = rest
            .find(|c: char| c == '=' || c == ',' || c.is_whitespace())
            .unwrap_or(rest.len());
        let name = &rest[..name_end];
        let after = rest[name_end..].trim_start();
        if name.is_empty() {
            break;
        }
        if let Some(value_part) = after.strip_prefix('=') {
            let value_part = value_part.trim_start();
            let (value, remaining) = if let Some(quoted) = value_part.strip_prefix('"') {
                let mut value = String::new();
                let mut chars = quoted.char_indices();
                let mut end = quoted.len();
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some((_, escaped)) = chars.next() {
                                value.push(escaped);
                            }
                        }
                        '"' => {
                            end = i + 1;
                            break;
                        }
                        c => value.push(c),
                    }
                }
                (value, &quoted[end..])
            } else {
                let end = value_part.find(',').unwrap_or(value_part.len());
                (value_part[..end].trim().to_string(), &value_part[end..])
            };
            if let Some(current) = challenges.last_mut() {
                current.params.push((name.to_ascii_lowercase(), value));
            }
            rest = remaining;
        } else {
            challenges.push(Challenge {
                scheme: name.to_ascii_lowercase(),
                params: Vec::new(),
            });
            rest = after;
        }
    }
    challenges
}

/// The token endpoint's answer; registries use either field name.
#[derive(Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
}

/// A failed authorization: the reason and, when the token server answered, its status.
pub(crate) struct AuthFailure {
    pub reason: String,
    pub status: Option<u16>,
    /// The token request failed in a way a retry may fix (network, 429, 5xx).
    pub transient: bool,
    /// Set when the token server's certificate could not be trusted.
    pub tls: bool,
}

impl AuthFailure {
    fn denied(reason: String) -> AuthFailure {
        AuthFailure {
            reason,
            status: Some(401),
            transient: false,
            tls: false,
        }
    }
}

/// The Authorization header answering `challenges` (from a 401 for `repository`), or
/// why none can be had.
pub(crate) async fn authorize(
    http: &EndpointClient,
    credential: &Credential,
    challenges: &[Challenge],
    repository: &str,
) -> Result<HeaderValue, AuthFailure> {
    if let Some(challenge) = challenges.iter().find(|c| c.scheme == "bearer") {
        if let Credential::Bearer(_) = credential {
            return Err(AuthFailure::denied(
                "the registry refused the registry_token".into(),
            ));
        }
        let token = fetch_token(http, credential, challenge, repository).await?;
        return bearer(&token)
            .map_err(|_| AuthFailure::denied("the token server sent an unusable token".into()));
    }
    if challenges.iter().any(|c| c.scheme == "basic") {
        return match credential {
            Credential::Basic { username, password } => Ok(basic(username, password)),
            Credential::Anonymous => Err(AuthFailure::denied(
                "the registry requires credentials (basic auth) and none were given".into(),
            )),
            _ => Err(AuthFailure::denied(
                "the registry asks for basic auth, which a token credential cannot answer".into(),
            )),
        };
    }
    Err(AuthFailure::denied(format!(
        "unauthorized, and no supported authentication challenge offered ({:?})",
        challenges.iter().map(|c| &c.scheme).collect::<Vec<_>>()
    )))
}

async fn fetch_token(
    http: &EndpointClient,
    credential: &Credential,
    challenge: &Challenge,
    repository: &str,
) -> Result<String, AuthFailure> {
    let realm = challenge
        .param("realm")
        .ok_or_else(|| AuthFailure::denied("bearer challenge without a realm".into()))?;
    let mut url = url::Url::parse(realm)
        .map_err(|e| AuthFailure::denied(format!("bearer realm {realm:?}: {e}")))?;
    let default_scope = format!("repository:{repository}:pull");
    let scope = challenge.param("scope").unwrap_or(&default_scope);
    let service = challenge.param("service");
    let request = match credential {
        Credential::RefreshToken(refresh_token) => {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "refresh_token")
                .append_pair("refresh_token", refresh_token)
                .append_pair("client_id", CLIENT_ID)
                .append_pair("scope", scope);
            if let Some(service) = service {
                form.append_pair("service", service);
            }
            http.post(url)
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(form.finish())
        }
        Credential::Basic { username, password } => {
            query(&mut url, service, scope, Some(username));
            http.get(url)
                .header(reqwest::header::AUTHORIZATION, basic(username, password))
        }
        Credential::Anonymous | Credential::Bearer(_) => {
            query(&mut url, service, scope, None);
            http.get(url)
        }
    };
    let failed = |reason: String, transient: bool, status: Option<u16>, tls: bool| AuthFailure {
        reason: format!("token server {realm}: {reason}"),
        status,
        transient,
        tls,
    };
    let response =
        request
            .send()
            .await
            .map_err(|e| match super::transport::permanent_tls_failure(&e) {
                Some(reason) => failed(reason, false, None, true),
                None => failed(e.to_string(), true, None, false),
            })?;
    let status = response.status();
    if !status.is_success() {
        let transient = status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
        // A refused exchange is an authorization failure of the pull.
        let reported = if status == StatusCode::BAD_REQUEST || status == StatusCode::FORBIDDEN {
            401
        } else {
            status.as_u16()
        };
        return Err(failed(
            format!("answered {status}"),
            transient,
            Some(reported),
            false,
        ));
    }
    let body = response
        .bytes()
        .await
        .map_err(|e| failed(format!("reading the answer: {e}"), true, None, false))?;
    let answer: TokenResponse = serde_json::from_slice(&body)
        .map_err(|e| failed(format!("answer is not a token: {e}"), false, None, false))?;
    answer
        .access_token
        .or(answer.token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| failed("answer holds no token".into(), false, None, false))
}

fn query(url: &mut url::Url, service: Option<&str>, scope: &str, account: Option<&str>) {
    let mut pairs = url.query_pairs_mut();
    if let Some(service) = service {
        pairs.append_pair("service", service);
    }
    pairs.append_pair("scope", scope);
    if let Some(account) = account {
        pairs.append_pair("account", account);
    }
}

fn basic(username: &str, password: &str) -> HeaderValue {
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    let mut value = HeaderValue::from_str(&format!("Basic {encoded}"))
        .unwrap_or_else(|_| HeaderValue::from_static("Basic"));
    value.set_sensitive(true);
    value
}

fn bearer(token: &str) -> Result<HeaderValue, reqwest::header::InvalidHeaderValue> {
    let mut value = HeaderValue::from_str(&format!("Bearer {token}"))?;
    value.set_sensitive(true);
    Ok(value)
}

/// Keeps ImageError out of this module's signatures while letting callers convert.
impl AuthFailure {
    pub fn into_error(self, image: &str, endpoint: &str) -> ImageError {
        if self.tls {
            return ImageError::Tls {
                image: image.to_string(),
                endpoint: endpoint.to_string(),
                reason: self.reason,
            };
        }
        ImageError::Registry {
            image: image.to_string(),
            endpoint: endpoint.to_string(),
            reason: self.reason,
            status: self.status,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_and_basic_challenges() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].param("realm"), Some("https://auth.example/token"));
        assert_eq!(c[0].param("scope"), Some("repository:a/b:pull,push"));
        let c = parse_challenges(r#"Basic realm="berth-test""#);
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[0].param("realm"), Some("berth-test"));
    }

    #[test]
    fn identity_token_wins_over_the_placeholder_user_name() {
        let c = Credentials {
            username: "<token>".into(),
            identity_token: "refresh".into(),
            ..Default::default()
        };
        assert!(matches!(
            Credential::from_credentials(&c),
            Ok(Credential::RefreshToken(t)) if t == "refresh"
        ));
    }
}
