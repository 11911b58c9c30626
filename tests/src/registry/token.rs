//! A bearer-token server for the registry's `auth: token` mode (the Docker registry
//! token protocol): it checks basic credentials on `GET /token?service=..&scope=..`, or
//! an OAuth2 refresh token on `POST /token` (form `grant_type=refresh_token`), and
//! answers with an RS256 JWT granting the requested scopes, signed with a key whose
//! certificate the registry trusts. Signing goes through the openssl CLI, so the test
//! support needs no crypto crate.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

pub const SERVICE: &str = "berth-registry";
pub const ISSUER: &str = "berth-token-issuer";

pub struct TokenServer {
    port: u16,
    stop: Arc<AtomicBool>,
    requests: Arc<Mutex<Vec<String>>>,
    /// The certificate the registry verifies tokens with.
    pub cert: PathBuf,
}

impl TokenServer {
    pub fn start(
        dir: &Path,
        user: &str,
        password: &str,
        refresh_token: Option<&str>,
    ) -> anyhow::Result<TokenServer> {
        let key = dir.join("token.key");
        let cert = dir.join("token.crt");
        let out = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=berth token issuer", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .context("run openssl")?;
        if !out.status.success() {
            bail!("openssl: {}", String::from_utf8_lossy(&out.stderr));
        }
        let der = Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&cert)
            .output()?;
        let signer = Signer {
            key,
            x5c: STANDARD.encode(der.stdout),
            basic: format!("Basic {}", STANDARD.encode(format!("{user}:{password}"))),
            refresh_token: refresh_token.map(str::to_string),
            requests: Arc::new(Mutex::new(Vec::new())),
        };
        let requests = signer.requests.clone();
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(conn) = conn {
                    let _ = signer.serve(conn);
                }
            }
        });
        Ok(TokenServer {
            port,
            stop,
            requests,
            cert,
        })
    }

    /// A token for `scope` fetched with basic credentials, as a client would (for tests
    /// that hand a ready token to the puller).
    pub fn fetch_token(&self, user: &str, password: &str, scope: &str) -> anyhow::Result<String> {
        let mut conn = TcpStream::connect(("127.0.0.1", self.port))?;
        write!(
            conn,
            "GET /token?service={SERVICE}&scope={scope} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {}\r\nConnection: close\r\n\r\n",
            STANDARD.encode(format!("{user}:{password}"))
        )?;
        let mut response = String::new();
        conn.read_to_string(&mut response)?;
        let (_, body) = response
            .split_once("\r\n\r\n")
            .context("token server answer has no body")?;
        let answer: serde_json::Value = serde_json::from_str(body)?;
        answer["token"]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("no token in {body}"))
    }

    /// One `"<METHOD> <grant>[ denied]"` entry per request so far.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }

    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

struct Signer {
    key: PathBuf,
    x5c: String,
    basic: String,
    refresh_token: Option<String>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Signer {
    fn serve(&self, mut conn: TcpStream) -> anyhow::Result<()> {
        let mut reader = BufReader::new(conn.try_clone()?);
        let mut request_line = String::new();
        reader.read_line(&mut request_line)?;
        let mut authorization = None;
        let mut content_length = 0;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("authorization") {
                    authorization = Some(value.trim().to_string());
                }
                if name.eq_ignore_ascii_case("content-length") {
                    content_length = value.trim().parse()?;
                }
            }
        }
        let mut body = vec![0; content_length];
        reader.read_exact(&mut body)?;
        let method = request_line.split_whitespace().next().unwrap_or_default();
        let target = request_line.split_whitespace().nth(1).unwrap_or_default();
        // GET carries its parameters in the query, the OAuth POST in a form body.
        let params = if method == "POST" {
            String::from_utf8_lossy(&body).into_owned()
        } else {
            target
                .split_once('?')
                .map(|(_, q)| q.to_string())
                .unwrap_or_default()
        };
        let param = |name: &str| {
            params
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == name)
                .map(|(_, v)| percent_decode(v))
        };
        let (grant, authorized) = match (method, param("grant_type").as_deref()) {
            ("POST", Some("refresh_token")) => (
                "refresh_token",
                self.refresh_token.is_some() && param("refresh_token") == self.refresh_token,
            ),
            ("POST", _) => ("unsupported", false),
            _ => match &authorization {
                Some(a) => ("basic", *a == self.basic),
                None => ("anonymous", false),
            },
        };
        if let Ok(mut requests) = self.requests.lock() {
            let denied = if authorized { "" } else { " denied" };
            requests.push(format!("{method} {grant}{denied}"));
        }
        if !authorized {
            conn.write_all(
                b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )?;
            return Ok(());
        }
        let access: Vec<serde_json::Value> = params
            .split('&')
            .filter_map(|kv| kv.strip_prefix("scope="))
            .map(percent_decode)
            .filter_map(|scope| {
                // repository:<name>:<actions>; the name itself may hold ':' (host:port).
                let (kind, rest) = scope.split_once(':')?;
                let (name, actions) = rest.rsplit_once(':')?;
                Some(serde_json::json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
            })
            .collect();
        let token = self.sign(access)?;
        let body = serde_json::json!({"token": token, "access_token": token, "expires_in": 300})
            .to_string();
        write!(
            conn,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        Ok(())
    }

    fn sign(&self, access: Vec<serde_json::Value>) -> anyhow::Result<String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "x5c": [self.x5c]});
        let claims = serde_json::json!({
            "iss": ISSUER, "sub": "berth-test", "aud": SERVICE,
            "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("{now}-{}", access.len()),
            "access": access,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut child = Command::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(&self.key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .context("openssl stdin")?
            .write_all(signing_input.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("openssl dgst -sign failed");
        }
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(out.stdout)
        ))
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match decoded {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
