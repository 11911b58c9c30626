//! A real registry for tests: Debian's docker-registry (the CNCF distribution server)
//! on 127.0.0.1 at a free port, storage in a temp dir, optionally behind htpasswd basic
//! auth, bearer tokens and/or TLS (optionally mutual) with a CA made for the run. Killed
//! by PID and removed on drop.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use oci_client::secrets::RegistryAuth;

use super::push::Pusher;
use super::token::{ISSUER, SERVICE, TokenServer};

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
const START_DEADLINE: Duration = Duration::from_secs(30);

#[derive(Clone, Debug, Default)]
pub struct RegistryOptions {
    /// Require basic auth with this user and password (htpasswd, bcrypt).
    pub basic_auth: Option<(String, String)>,
    /// Serve HTTPS with a certificate signed by a CA generated for this registry.
    pub tls: bool,
    /// Require bearer tokens from a token server (started alongside) that hands them
    /// out for this user and password. Exclusive with `basic_auth`.
    pub token_auth: Option<(String, String)>,
    /// With `token_auth`: an OAuth2 refresh token the token server also exchanges
    /// (`POST` with `grant_type=refresh_token`).
    pub token_refresh: Option<String>,
    /// With `tls`: require client certificates signed by the registry's CA.
    pub client_auth: bool,
}

pub struct Registry {
    child: Child,
    token_server: Option<TokenServer>,
    dir: tempfile::TempDir,
    /// Storage root (another registry's when this one is a front for it).
    data: PathBuf,
    port: u16,
    options: RegistryOptions,
}

impl Registry {
    pub fn start(options: RegistryOptions) -> anyhow::Result<Registry> {
        Self::start_on(options, None)
    }

    /// Another registry serving this one's storage with `options`: content pushed here
    /// is pulled there (for modes the pusher cannot speak, such as mutual TLS).
    pub fn start_front(&self, options: RegistryOptions) -> anyhow::Result<Registry> {
        Self::start_on(options, Some(self.data.clone()))
    }

    fn start_on(options: RegistryOptions, data: Option<PathBuf>) -> anyhow::Result<Registry> {
        let dir = tempfile::Builder::new()
            .prefix("berth-registry-")
            .tempdir()?;
        let data = data.unwrap_or_else(|| dir.path().join("data"));
        let port = free_port()?;
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            data.display()
        );
        if options.client_auth && !options.tls {
            bail!("client_auth needs tls");
        }
        if options.tls {
            make_tls(dir.path(), options.client_auth)?;
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                dir.path().join("server.crt").display(),
                dir.path().join("server.key").display()
            ));
            if options.client_auth {
                config.push_str(&format!(
                    "    clientcas:\n      - {}\n",
                    dir.path().join("ca.crt").display()
                ));
            }
        }
        if let Some((user, password)) = &options.basic_auth {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .context("run htpasswd (apache2-utils)")?;
            if !out.status.success() {
                bail!("htpasswd failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            std::fs::write(dir.path().join("htpasswd"), &out.stdout)?;
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                dir.path().join("htpasswd").display()
            ));
        }
        let token_server = match &options.token_auth {
            Some(_) if options.basic_auth.is_some() => {
                bail!("basic_auth and token_auth are exclusive")
            }
            Some((user, password)) => {
                let server = TokenServer::start(
                    dir.path(),
                    user,
                    password,
                    options.token_refresh.as_deref(),
                )?;
                config.push_str(&format!(
                    "auth:\n  token:\n    realm: {}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
                    server.realm(),
                    server.cert.display()
                ));
                Some(server)
            }
            None => None,
        };
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config)?;
        let log = std::fs::File::create(dir.path().join("registry.log"))?;
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {REGISTRY_BIN}"))?;
        let mut registry = Registry {
            child,
            token_server,
            dir,
            data,
            port,
            options,
        };
        registry.wait_ready()?;
        Ok(registry)
    }

    /// `127.0.0.1:<port>`, as image references name it.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        let scheme = if self.options.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.host())
    }

    pub fn ca_cert(&self) -> Option<PathBuf> {
        self.options.tls.then(|| self.dir.path().join("ca.crt"))
    }

    /// With `client_auth`: a client certificate and its key (PEM files) the registry
    /// accepts, and one file holding both.
    pub fn client_identity(&self) -> Option<(PathBuf, PathBuf, PathBuf)> {
        self.options.client_auth.then(|| {
            let d = self.dir.path();
            (
                d.join("client.crt"),
                d.join("client.key"),
                d.join("client.pem"),
            )
        })
    }

    /// What the token server was asked for so far, one entry per request:
    /// `"<METHOD> <grant>"` with grant `basic`, `anonymous` or `refresh_token`, and
    /// ` denied` appended when it refused.
    pub fn token_requests(&self) -> Vec<String> {
        self.token_server
            .as_ref()
            .map(TokenServer::requests)
            .unwrap_or_default()
    }

    /// A pull token for `repository` from the token server (with `token_auth`).
    pub fn fetch_pull_token(&self, repository: &str) -> anyhow::Result<String> {
        let (Some(server), Some((user, password))) = (&self.token_server, &self.options.token_auth)
        else {
            bail!("registry runs without token_auth");
        };
        server.fetch_token(user, password, &format!("repository:{repository}:pull"))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A pusher with this registry's credentials and CA.
    pub fn pusher(&self) -> anyhow::Result<Pusher> {
        let auth = match self
            .options
            .basic_auth
            .as_ref()
            .or(self.options.token_auth.as_ref())
        {
            Some((u, p)) => RegistryAuth::Basic(u.clone(), p.clone()),
            None => RegistryAuth::Anonymous,
        };
        let ca = match self.ca_cert() {
            Some(path) => Some(std::fs::read(path)?),
            None => None,
        };
        Ok(Pusher::new(&self.host(), !self.options.tls, ca, auth))
    }

    /// Writes `<dir>/<host>/hosts.toml` so berth pulls from this registry over its
    /// scheme (and trusts its CA).
    pub fn write_hosts_toml(&self, dir: &Path) -> anyhow::Result<()> {
        let host_dir = dir.join(self.host());
        std::fs::create_dir_all(&host_dir)?;
        let mut text = format!("server = \"{}\"\n", self.url());
        if let Some(ca) = self.ca_cert() {
            text.push_str(&format!("ca = \"{}\"\n", ca.display()));
        }
        std::fs::write(host_dir.join("hosts.toml"), text)?;
        Ok(())
    }

    /// Where the registry keeps a blob's bytes: tests corrupt or truncate it to make the
    /// registry serve bad content.
    pub fn blob_data_path(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// How many requests whose access-log line contains `needle` (e.g. `GET /v2/a/blobs/sha256:..`)
    /// the registry has served so far.
    pub fn count_requests(&self, needle: &str) -> usize {
        std::fs::read_to_string(self.dir.path().join("registry.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait()? {
                let log = std::fs::read_to_string(self.dir.path().join("registry.log"))
                    .unwrap_or_default();
                bail!("docker-registry exited with {status}: {log}");
            }
            if self.answers_v2() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "docker-registry did not answer /v2/ on {} within {START_DEADLINE:?}",
                    self.host()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// True once the API answers (200, or 401 behind auth). With TLS a completed TCP
    /// accept is the signal: the listener opens only after the certificates loaded.
    fn answers_v2(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        if self.options.tls {
            return true;
        }
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let request = format!("GET /v2/ HTTP/1.0\r\nHost: {}\r\n\r\n", self.host());
        if stream.write_all(request.as_bytes()).is_err() {
            return false;
        }
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).is_ok() && (head.ends_with(b"200") || head.ends_with(b"401"))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A CA and a server certificate for 127.0.0.1 signed by it, made with openssl; with
/// `client`, also a client certificate (`client.crt`, `client.key`, both in `client.pem`).
fn make_tls(dir: &Path, client: bool) -> anyhow::Result<()> {
    let run = |args: &[&str]| -> anyhow::Result<()> {
        let out = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .context("run openssl")?;
        if !out.status.success() {
            bail!("openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=berth test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ])?;
    // `<name>.crt` and `<name>.key`, signed by the CA, with the given extensions.
    let issue = |name: &str, subject: &str, extensions: &str| -> anyhow::Result<()> {
        let (key, csr, ext, crt) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.ext"),
            format!("{name}.crt"),
        );
        run(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            subject,
            "-keyout",
            &key,
            "-out",
            &csr,
        ])?;
        std::fs::write(dir.join(&ext), extensions)?;
        run(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &crt,
        ])
    };
    issue(
        "server",
        "/CN=127.0.0.1",
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )?;
    if !client {
        return Ok(());
    }
    issue(
        "client",
        "/CN=berth test client",
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n",
    )?;
    let mut pem = std::fs::read(dir.join("client.crt"))?;
    pem.extend(std::fs::read(dir.join("client.key"))?);
    std::fs::write(dir.join("client.pem"), pem)?;
    Ok(())
}
