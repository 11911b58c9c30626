//! `Debug` for [`AuthConfig`] that never prints registry secrets.
//!
//! Pull requests get logged at debug level by clients and servers alike; the
//! fields upstream marks `debug_redact` must not end up in those logs.

use std::fmt;

use crate::runtime::v1::AuthConfig;

/// Shown instead of a secret that is set; an unset secret stays empty so
/// that logs still tell which kind of credential was sent.
const REDACTED: &str = "<redacted>";

fn redacted(secret: &str) -> &'static str {
    if secret.is_empty() { "" } else { REDACTED }
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("username", &self.username)
            .field("password", &redacted(&self.password))
            .field("auth", &redacted(&self.auth))
            .field("server_address", &self.server_address)
            .field("identity_token", &redacted(&self.identity_token))
            .field("registry_token", &redacted(&self.registry_token))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::v1::PullImageRequest;

    #[test]
    fn debug_output_hides_every_secret_but_keeps_user_and_server() {
        let auth = AuthConfig {
            username: "alice".into(),
            password: "hunter2".into(),
            auth: "YWxpY2U6aHVudGVyMg==".into(),
            server_address: "registry.example".into(),
            identity_token: "id-token-value".into(),
            registry_token: "bearer-value".into(),
        };
        let request = PullImageRequest {
            auth: Some(auth),
            ..Default::default()
        };
        let shown = format!("{request:?}");
        for secret in [
            "hunter2",
            "YWxpY2U6aHVudGVyMg==",
            "id-token-value",
            "bearer-value",
        ] {
            assert!(!shown.contains(secret), "{secret} leaked in {shown}");
        }
        assert!(shown.contains("alice"), "{shown}");
        assert!(shown.contains("registry.example"), "{shown}");
        assert!(shown.contains(REDACTED), "{shown}");
    }

    #[test]
    fn unset_secrets_show_as_empty() {
        let shown = format!("{:?}", AuthConfig::default());
        assert!(!shown.contains(REDACTED), "{shown}");
    }
}
