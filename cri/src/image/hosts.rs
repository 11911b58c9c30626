//! Registry host configuration in containerd's `hosts.toml` layout, so operators reuse
//! their existing config dirs: `<dir>/<host[:port]>/hosts.toml` (or `<dir>/_default/`)
//! with `server` and `[host."<url>"]` tables (`capabilities`, `override_path`,
//! `skip_verify`, `ca`, `client` certificates for mutual TLS, extra request `header`s).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::error::{ImageError, Result};

/// One place a repository's content can be fetched from, in the order to try.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The URL as configured, for messages.
    pub url: String,
    pub plain_http: bool,
    /// `host[:port][/prefix]`: what comes before `/v2/` in request URLs.
    pub registry: String,
    /// Path put in front of the repository name (from an `override_path` URL such as
    /// `http://mirror/v2/registry.k8s.io`).
    pub repository_prefix: Option<String>,
    pub can_resolve: bool,
    pub skip_verify: bool,
    pub ca_files: Vec<PathBuf>,
    /// TLS client identities to offer (mutual TLS), in configured order.
    pub client_certs: Vec<ClientCertificate>,
    /// Extra headers sent with every request to this endpoint (name, value).
    pub headers: Vec<(String, String)>,
}

/// A client certificate (chain) and its private key, both PEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCertificate {
    pub cert: PathBuf,
    /// None: the key is in the certificate file.
    pub key: Option<PathBuf>,
}

impl Endpoint {
    /// The repository name as this endpoint knows it.
    pub fn repository(&self, repository: &str) -> String {
        match &self.repository_prefix {
            Some(prefix) => format!("{prefix}/{repository}"),
            None => repository.to_string(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostsFile {
    server: Option<String>,
    #[serde(default)]
    host: BTreeMap<String, HostTable>,
    #[serde(flatten)]
    server_options: HostTable,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostTable {
    capabilities: Option<Vec<String>>,
    #[serde(default)]
    override_path: bool,
    #[serde(default)]
    skip_verify: bool,
    ca: Option<OneOrMany<String>>,
    client: Option<toml::Value>,
    header: Option<BTreeMap<String, OneOrMany<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

/// The hosts config directory (containerd's `config_path`); None means defaults only.
#[derive(Clone, Debug, Default)]
pub struct HostsConfig {
    dir: Option<PathBuf>,
}

impl HostsConfig {
    pub fn new(dir: Option<PathBuf>) -> Self {
        HostsConfig { dir }
    }

    /// The endpoints for a registry host (as written in image references, e.g.
    /// `registry.k8s.io` or `127.0.0.1:5000`): configured mirrors first, then the server.
    pub fn endpoints(&self, registry_host: &str) -> Result<Vec<Endpoint>> {
        let default_server = default_server(registry_host);
        let Some(dir) = &self.dir else {
            return Ok(vec![endpoint_from_url(
                &default_server,
                &HostTable::default(),
                None,
            )?]);
        };
        let candidates = [
            dir.join(registry_host).join("hosts.toml"),
            dir.join("_default").join("hosts.toml"),
        ];
        let Some(path) = candidates.iter().find(|p| p.exists()) else {
            return Ok(vec![endpoint_from_url(
                &default_server,
                &HostTable::default(),
                None,
            )?]);
        };
        parse_hosts_file(path, &default_server)
    }
}

/// docker.io's API lives on registry-1.docker.io; every other host serves its own.
fn default_server(registry_host: &str) -> String {
    match registry_host {
        "docker.io" | "index.docker.io" => "https://registry-1.docker.io".to_string(),
        host => format!("https://{host}"),
    }
}

fn parse_hosts_file(path: &Path, default_server: &str) -> Result<Vec<Endpoint>> {
    let bad = |reason: String| ImageError::HostsConfig {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(ImageError::io(path))?;
    let file: HostsFile = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let base = path.parent().unwrap_or(Path::new("/"));
    let mut endpoints = Vec::new();
    for (url, table) in &file.host {
        endpoints.push(
            endpoint_from_url(url, table, Some(base)).map_err(|e| match e {
                ImageError::HostsConfig { reason, .. } => bad(format!("host {url:?}: {reason}")),
                other => other,
            })?,
        );
    }
    let server = file.server.as_deref().unwrap_or(default_server);
    endpoints.push(
        endpoint_from_url(server, &file.server_options, Some(base)).map_err(|e| match e {
            ImageError::HostsConfig { reason, .. } => bad(format!("server {server:?}: {reason}")),
            other => other,
        })?,
    );
    Ok(endpoints)
}

fn endpoint_from_url(url: &str, table: &HostTable, base: Option<&Path>) -> Result<Endpoint> {
    let bad = |reason: String| ImageError::HostsConfig {
        path: base.map(Path::to_path_buf).unwrap_or_default(),
        reason,
    };
    let (plain_http, rest) = if let Some(rest) = url.strip_prefix("http://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("https://") {
        (false, rest)
    } else {
        return Err(bad("URL must start with http:// or https://".into()));
    };
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if host.is_empty() {
        return Err(bad("URL has no host".into()));
    }
    // Requests are built as `<registry>/v2/<repo>/...`, so an overridden path is split at
    // its `/v2` segment: what precedes it joins the registry, what follows prefixes the repo.
    let (registry_path, repository_prefix) = if table.override_path {
        let Some(v2) = path.find("/v2").filter(|&i| {
            let after = &path[i + 3..];
            after.is_empty() || after.starts_with('/')
        }) else {
            return Err(bad(
                "override_path needs a path containing the /v2 API root (e.g. /v2/registry.k8s.io)"
                    .into(),
            ));
        };
        let after = path[v2 + 3..].trim_matches('/');
        (&path[..v2], (!after.is_empty()).then(|| after.to_string()))
    } else {
        (path, None)
    };
    let capabilities = table
        .capabilities
        .clone()
        .unwrap_or_else(|| vec!["pull".into(), "resolve".into()]);
    for cap in &capabilities {
        if !matches!(cap.as_str(), "pull" | "resolve" | "push") {
            return Err(bad(format!("capabilities: unknown capability {cap:?}")));
        }
    }
    let resolve = |p: &str| match base {
        Some(base) if Path::new(p).is_relative() => base.join(p),
        _ => PathBuf::from(p),
    };
    let client_certs = match &table.client {
        Some(value) => {
            client_certificates(value, &resolve).map_err(|r| bad(format!("client: {r}")))?
        }
        None => Vec::new(),
    };
    let headers =
        request_headers(table.header.as_ref()).map_err(|r| bad(format!("header: {r}")))?;
    let ca_files = table
        .ca
        .as_ref()
        .map(|ca| match ca {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        })
        .unwrap_or_default()
        .iter()
        .map(|p| resolve(p))
        .collect();
    Ok(Endpoint {
        url: url.to_string(),
        plain_http,
        registry: format!("{host}{registry_path}"),
        repository_prefix,
        can_resolve: capabilities.iter().any(|c| c == "resolve"),
        skip_verify: table.skip_verify,
        ca_files,
        client_certs,
        headers,
    })
}

/// `client` as containerd reads it: a path, or a list whose entries are a path or a
/// `[certificate, key]` pair. A lone path (or an empty key) holds certificate and key.
fn client_certificates(
    value: &toml::Value,
    resolve: &dyn Fn(&str) -> PathBuf,
) -> std::result::Result<Vec<ClientCertificate>, String> {
    let from_path = |cert: &str| ClientCertificate {
        cert: resolve(cert),
        key: None,
    };
    let entries = match value {
        toml::Value::String(path) => return Ok(vec![from_path(path)]),
        toml::Value::Array(entries) => entries,
        other => {
            return Err(format!(
                "must be a path or a list, not a {}",
                other.type_str()
            ));
        }
    };
    entries
        .iter()
        .map(|entry| match entry {
            toml::Value::String(path) => Ok(from_path(path)),
            toml::Value::Array(pair) => {
                let paths = pair
                    .iter()
                    .map(|p| p.as_str().ok_or("pair entries must be strings"))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                match paths.as_slice() {
                    [cert] | [cert, ""] => Ok(from_path(cert)),
                    [cert, key] => Ok(ClientCertificate {
                        cert: resolve(cert),
                        key: Some(resolve(key)),
                    }),
                    _ => Err(format!("{entry} is not a [certificate, key] pair")),
                }
            }
            other => Err(format!(
                "entry {other} is neither a path nor a [certificate, key] pair"
            )),
        })
        .collect()
}

/// `header` entries, each value (or each of a list of values) sent as its own line;
/// names and values are checked here so a typo fails at config time, naming it.
fn request_headers(
    table: Option<&BTreeMap<String, OneOrMany<String>>>,
) -> std::result::Result<Vec<(String, String)>, String> {
    let mut headers = Vec::new();
    for (name, values) in table.into_iter().flatten() {
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(format!("{name:?} is not a valid header name"));
        }
        let values = match values {
            OneOrMany::One(v) => std::slice::from_ref(v),
            OneOrMany::Many(v) => v.as_slice(),
        };
        for value in values {
            if reqwest::header::HeaderValue::from_str(value).is_err() {
                return Err(format!("{name}: {value:?} is not a valid header value"));
            }
            headers.push((name.clone(), value.clone()));
        }
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_hosts(dir: &Path, host: &str, text: &str) {
        std::fs::create_dir_all(dir.join(host)).unwrap();
        std::fs::write(dir.join(host).join("hosts.toml"), text).unwrap();
    }

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("berth-hosts-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn override_path_mirror_prefixes_the_repository() {
        let dir = temp_dir("mirror");
        write_hosts(
            &dir,
            "registry.k8s.io",
            r#"
server = "https://registry.k8s.io"
[host."http://127.0.0.1:5000/v2/registry.k8s.io"]
  capabilities = ["pull", "resolve"]
  override_path = true
"#,
        );
        let eps = HostsConfig::new(Some(dir.clone()))
            .endpoints("registry.k8s.io")
            .unwrap();
        assert_eq!(eps.len(), 2);
        assert!(eps[0].plain_http);
        assert_eq!(eps[0].registry, "127.0.0.1:5000");
        assert_eq!(eps[0].repository("pause"), "registry.k8s.io/pause");
        assert_eq!(eps[1].registry, "registry.k8s.io");
        assert!(!eps[1].plain_http);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn defaults_without_config_and_errors_name_the_field() {
        let eps = HostsConfig::default().endpoints("docker.io").unwrap();
        assert_eq!(eps[0].registry, "registry-1.docker.io");
        let dir = temp_dir("bad");
        write_hosts(&dir, "example.com", "[host.\"ftp://x\"]\n");
        let err = HostsConfig::new(Some(dir.clone()))
            .endpoints("example.com")
            .unwrap_err()
            .to_string();
        assert!(err.contains("ftp://x") && err.contains("http"), "{err}");
        write_hosts(
            &dir,
            "example.com",
            "[host.\"https://m\"]\nskip_verify = true\nca = [\"ca.pem\"]\n",
        );
        let eps = HostsConfig::new(Some(dir.clone()))
            .endpoints("example.com")
            .unwrap();
        assert!(eps[0].skip_verify);
        assert_eq!(eps[0].ca_files, vec![dir.join("example.com/ca.pem")]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn client_takes_containerd_forms_and_header_keeps_every_value() {
        let dir = temp_dir("client");
        write_hosts(
            &dir,
            "example.com",
            r#"
[host."https://a"]
  client = "both.pem"
[host."https://b"]
  client = [["/etc/c.crt", "/etc/c.key"], "d.pem", ["e.pem", ""]]
[host."https://b".header]
  x-one = "1"
  x-many = ["a", "b"]
"#,
        );
        let eps = HostsConfig::new(Some(dir.clone()))
            .endpoints("example.com")
            .unwrap();
        let base = dir.join("example.com");
        let pem = |name: &str| ClientCertificate {
            cert: base.join(name),
            key: None,
        };
        assert_eq!(eps[0].client_certs, vec![pem("both.pem")]);
        assert_eq!(
            eps[1].client_certs,
            vec![
                ClientCertificate {
                    cert: "/etc/c.crt".into(),
                    key: Some("/etc/c.key".into()),
                },
                pem("d.pem"),
                pem("e.pem"),
            ]
        );
        assert_eq!(
            eps[1].headers,
            [("x-many", "a"), ("x-many", "b"), ("x-one", "1")]
                .map(|(n, v)| (n.to_string(), v.to_string()))
        );
        write_hosts(&dir, "example.com", "[host.\"https://a\"]\nclient = 3\n");
        let err = HostsConfig::new(Some(dir.clone()))
            .endpoints("example.com")
            .unwrap_err()
            .to_string();
        assert!(err.contains("client") && err.contains("https://a"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
