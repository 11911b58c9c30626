//! The registry transport against a real registry: Retry-After, hosts.toml `header` and
//! `client` (mutual TLS), untrusted certificates, and the token credentials
//! (identity_token exchanged at the token server, registry_token sent as is).

mod image_common;

use std::path::Path;
use std::time::Duration;

use berth_cri::image::{Credentials, ImageError, ImageStore, StoreOptions};
use berth_tests::registry::{Proxy, RegistryOptions, ScriptedAnswer, SeenRequest};
use image_common::{Env, assert_registry_status, one_file_image, pull_anonymously};

fn write_hosts(dir: &Path, host: &str, text: &str) {
    std::fs::create_dir_all(dir.join(host)).unwrap();
    std::fs::write(dir.join(host).join("hosts.toml"), text).unwrap();
}

fn store_with_hosts(root: &Path, hosts: &Path) -> ImageStore {
    ImageStore::open(
        root,
        StoreOptions {
            hosts_dir: Some(hosts.to_path_buf()),
            ..Default::default()
        },
    )
    .unwrap()
}

/// The request after `first` (in arrival order) whose path is the same.
fn next_on_same_path<'a>(requests: &'a [SeenRequest], first: &SeenRequest) -> &'a SeenRequest {
    requests
        .iter()
        .find(|r| r.path == first.path && r.at > first.at)
        .unwrap_or_else(|| panic!("no retry of {} in {requests:#?}", first.path))
}

#[tokio::test]
async fn retry_after_of_429_and_503_is_waited_for() {
    let env = Env::start(RegistryOptions::default());
    let image = one_file_image("waited", "x");
    env.push("test/slow", "v1", &image).await;
    let layer = image.layers[0].digest.clone();
    let proxy = Proxy::http(
        &env.registry.host(),
        vec![
            ScriptedAnswer {
                path_contains: "/manifests/v1".into(),
                status: "429 Too Many Requests",
                headers: vec![("Retry-After".into(), "2".into())],
                times: 1,
            },
            ScriptedAnswer {
                path_contains: format!("/blobs/{layer}"),
                status: "503 Service Unavailable",
                headers: vec![("Retry-After".into(), "1".into())],
                times: 1,
            },
        ],
    )
    .unwrap();
    write_hosts(
        env.hosts.path(),
        &proxy.host(),
        &format!("server = \"http://{}\"\n", proxy.host()),
    );
    let record = pull_anonymously(&env.store(), &format!("{}/test/slow:v1", proxy.host()))
        .await
        .unwrap();
    assert_eq!(record.id.as_str(), image.config.digest);
    let requests = proxy.requests();
    for (status, wait) in [
        ("429 Too Many Requests", Duration::from_secs(2)),
        ("503 Service Unavailable", Duration::from_secs(1)),
    ] {
        let refused = requests
            .iter()
            .find(|r| r.scripted == Some(status))
            .unwrap_or_else(|| panic!("no {status} answered: {requests:#?}"));
        let retried = next_on_same_path(&requests, refused);
        assert!(
            retried.at.duration_since(refused.at) >= wait,
            "{} retried after {:?}, before Retry-After {wait:?}",
            refused.path,
            retried.at.duration_since(refused.at)
        );
    }
}

#[tokio::test]
async fn hosts_toml_headers_reach_the_registry_on_every_request() {
    let env = Env::start(RegistryOptions::default());
    let image = one_file_image("headers", "x");
    env.push("test/headers", "v1", &image).await;
    let proxy = Proxy::http(&env.registry.host(), Vec::new()).unwrap();
    write_hosts(
        env.hosts.path(),
        &proxy.host(),
        &format!(
            "server = \"http://{}\"\n[header]\n  X-Berth-Tenant = \"blue\"\n  X-Berth-Trace = [\"a\", \"b\"]\n",
            proxy.host()
        ),
    );
    pull_anonymously(&env.store(), &format!("{}/test/headers:v1", proxy.host()))
        .await
        .unwrap();
    let requests = proxy.requests();
    // The manifest, the config and the layer.
    assert!(requests.len() >= 3, "{requests:#?}");
    for request in &requests {
        assert_eq!(
            request.header("x-berth-tenant"),
            Some("blue"),
            "{request:#?}"
        );
        let traces: Vec<&str> = request
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("x-berth-trace"))
            .map(|(_, v)| v.as_str())
            .collect();
        // Either one line per value or one comma-joined line carries both.
        assert_eq!(traces.join(", "), "a, b", "{request:#?}");
    }
}

#[tokio::test]
async fn invalid_header_in_hosts_toml_is_refused_naming_it() {
    let env = Env::start(RegistryOptions::default());
    write_hosts(
        env.hosts.path(),
        &env.registry.host(),
        &format!(
            "server = \"{}\"\n[header]\n  \"Bad Name\" = \"x\"\n",
            env.registry.url()
        ),
    );
    let err = pull_anonymously(&env.store(), &env.reference("test/any:v1"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("header") && err.contains("Bad Name"), "{err}");
}

#[tokio::test]
async fn mutual_tls_registry_pulls_with_the_client_certificate_only() {
    let env = Env::start(RegistryOptions::default());
    let image = one_file_image("mtls", "x");
    env.push("test/mtls", "v1", &image).await;
    let front = env
        .registry
        .start_front(RegistryOptions {
            tls: true,
            client_auth: true,
            ..Default::default()
        })
        .unwrap();
    let ca = front.ca_cert().unwrap();
    let (cert, key, combined) = front.client_identity().unwrap();
    let reference = format!("{}/test/mtls:v1", front.host());
    let forms = [
        format!("[[\"{}\", \"{}\"]]", cert.display(), key.display()),
        format!("\"{}\"", combined.display()),
        format!("[\"{}\"]", combined.display()),
    ];
    for client in forms {
        let hosts = tempfile::tempdir().unwrap();
        write_hosts(
            hosts.path(),
            &front.host(),
            &format!(
                "server = \"{}\"\nca = \"{}\"\nclient = {client}\n",
                front.url(),
                ca.display()
            ),
        );
        let root = tempfile::tempdir().unwrap();
        let record = pull_anonymously(&store_with_hosts(root.path(), hosts.path()), &reference)
            .await
            .unwrap_or_else(|e| panic!("client = {client}: {e}"));
        assert_eq!(record.id.as_str(), image.config.digest);
    }
    // Without a client certificate the handshake is refused, and the error says why.
    let hosts = tempfile::tempdir().unwrap();
    write_hosts(
        hosts.path(),
        &front.host(),
        &format!("server = \"{}\"\nca = \"{}\"\n", front.url(), ca.display()),
    );
    let root = tempfile::tempdir().unwrap();
    let err = pull_anonymously(&store_with_hosts(root.path(), hosts.path()), &reference)
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::Tls { .. }), "{err}");
    assert!(err.to_string().contains("client certificate"), "{err}");
}

#[tokio::test]
async fn missing_client_certificate_file_is_refused_naming_it() {
    let env = Env::start(RegistryOptions::default());
    write_hosts(
        env.hosts.path(),
        &env.registry.host(),
        "server = \"https://127.0.0.1:1\"\nclient = [[\"nope.crt\", \"nope.key\"]]\n",
    );
    let err = pull_anonymously(&env.store(), &env.reference("test/any:v1"))
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::HostsConfig { .. }), "{err}");
    assert!(err.to_string().contains("nope.crt"), "{err}");
}

#[tokio::test]
async fn untrusted_certificate_fails_at_once_naming_the_host() {
    let env = Env::start(RegistryOptions {
        tls: true,
        ..Default::default()
    });
    env.push("test/untrusted", "v1", &one_file_image("u", "x"))
        .await;
    let proxy = Proxy::tcp(&env.registry.host()).unwrap();
    // No `ca`: the registry's certificate chains to a CA nobody trusts.
    write_hosts(
        env.hosts.path(),
        &proxy.host(),
        &format!("server = \"https://{}\"\n", proxy.host()),
    );
    let err = pull_anonymously(&env.store(), &format!("{}/test/untrusted:v1", proxy.host()))
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::Tls { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains(&proxy.host()) && message.contains("not trusted"),
        "{message}"
    );
    assert_eq!(proxy.connections(), 1, "retried: {message}");
}

#[tokio::test]
async fn identity_token_is_exchanged_for_a_bearer_token() {
    let env = Env::start(RegistryOptions {
        token_auth: Some(("tokenuser".into(), "t0ken".into())),
        token_refresh: Some("refresh-7f3a".into()),
        ..Default::default()
    });
    let image = one_file_image("oauth", "x");
    let reference = env.push("test/oauth", "v1", &image).await;
    let pushed = env.registry.token_requests().len();
    let wrong = Credentials {
        identity_token: "stale".into(),
        ..Default::default()
    };
    let err = env
        .store()
        .pull(&reference, &wrong, None)
        .await
        .unwrap_err();
    assert_registry_status(&err, 401);
    let right = Credentials {
        // What a docker config.json with an identity token carries as user name.
        username: "<token>".into(),
        identity_token: "refresh-7f3a".into(),
        ..Default::default()
    };
    let root = tempfile::tempdir().unwrap();
    let record = env
        .store_at(root.path())
        .pull(&reference, &right, None)
        .await
        .unwrap();
    assert_eq!(record.id.as_str(), image.config.digest);
    assert_eq!(
        env.registry.token_requests()[pushed..],
        ["POST refresh_token denied", "POST refresh_token"],
        "one exchange per pull, the stale token refused"
    );
}

#[tokio::test]
async fn registry_token_is_sent_as_the_bearer_token() {
    let env = Env::start(RegistryOptions {
        token_auth: Some(("tokenuser".into(), "t0ken".into())),
        ..Default::default()
    });
    let image = one_file_image("bearer", "x");
    let reference = env.push("test/given", "v1", &image).await;
    let token = env.registry.fetch_pull_token("test/given").unwrap();
    let before = env.registry.token_requests().len();
    let credentials = Credentials {
        registry_token: token,
        ..Default::default()
    };
    let record = env
        .store()
        .pull(&reference, &credentials, None)
        .await
        .unwrap();
    assert_eq!(record.id.as_str(), image.config.digest);
    assert_eq!(
        env.registry.token_requests().len(),
        before,
        "token server was asked"
    );
    let bad = Credentials {
        registry_token: "not-a-token".into(),
        ..Default::default()
    };
    let root = tempfile::tempdir().unwrap();
    let err = env
        .store_at(root.path())
        .pull(&reference, &bad, None)
        .await
        .unwrap_err();
    assert_registry_status(&err, 401);
}
