//! The fixture driven by real clients: kube-rs and kubectl.

use super::*;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::watcher;
use serde_json::json;
use std::process::Command;

async fn client(server: &ApiServer) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(server.kubeconfig_path()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

fn service(name: &str, labels: serde_json::Value) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"ports": [{"name": "http", "port": 80}], "selector": {"app": name}}
    }))
    .unwrap()
}

fn api_error(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn create_defaults_and_allocates_services() {
    let server = ApiServer::start().unwrap();
    let api: Api<Service> = Api::namespaced(client(&server).await, "default");
    let mut np = service("web", json!({}));
    np.spec.as_mut().unwrap().type_ = Some("NodePort".into());
    let created = api.create(&PostParams::default(), &np).await.unwrap();
    let spec = created.spec.unwrap();
    let ip: std::net::Ipv4Addr = spec.cluster_ip.unwrap().parse().unwrap();
    assert!(ip.octets()[0] == 10 && ip.octets()[1] == 96, "{ip}");
    let port = &spec.ports.unwrap()[0];
    assert_eq!(port.protocol.as_deref(), Some("TCP"));
    assert!((30000..=32767).contains(&port.node_port.unwrap()));
    assert_eq!(spec.external_traffic_policy.as_deref(), Some("Cluster"));
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());

    let err = api_error(api.create(&PostParams::default(), &np).await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(err.message, "services \"web\" already exists");

    let mut clash = service("clash", json!({}));
    clash.spec.as_mut().unwrap().cluster_ip = Some(ip.to_string());
    let err = api_error(
        api.create(&PostParams::default(), &clash)
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    assert!(
        err.message.contains("provided IP is already allocated"),
        "{}",
        err.message
    );

    let missing = api_error(api.get("nope").await.unwrap_err());
    assert_eq!(
        (
            missing.code,
            missing.reason.as_str(),
            missing.message.as_str()
        ),
        (404, "NotFound", "services \"nope\" not found")
    );
    let other_ns: Api<Service> = Api::namespaced(client(&server).await, "absent");
    let err = api_error(
        other_ns
            .create(&PostParams::default(), &np)
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (err.code, err.message.as_str()),
        (404, "namespaces \"absent\" not found")
    );
}

#[tokio::test]
async fn stale_resource_version_conflicts() {
    let server = ApiServer::start().unwrap();
    let api: Api<Service> = Api::namespaced(client(&server).await, "default");
    let first = api
        .create(&PostParams::default(), &service("web", json!({})))
        .await
        .unwrap();
    let mut a = first.clone();
    a.metadata.labels = Some([("x".to_string(), "1".to_string())].into());
    let updated = api
        .replace("web", &PostParams::default(), &a)
        .await
        .unwrap();
    assert_ne!(
        updated.metadata.resource_version,
        first.metadata.resource_version
    );

    let mut stale = first.clone();
    stale.metadata.labels = Some([("x".to_string(), "2".to_string())].into());
    let err = api_error(
        api.replace("web", &PostParams::default(), &stale)
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        err.message,
        "Operation cannot be fulfilled on services \"web\": the object has been modified; please apply your changes to the latest version and try again"
    );
    let precondition = json!({"metadata": {"resourceVersion": first.metadata.resource_version, "labels": {"y": "1"}}});
    let err = api_error(
        api.patch("web", &PatchParams::default(), &Patch::Merge(&precondition))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 409);

    let dp = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            resource_version: first.metadata.resource_version.clone(),
            uid: None,
        }),
        ..Default::default()
    };
    assert_eq!(
        api_error(api.delete("web", &dp).await.unwrap_err()).code,
        409
    );
    api.delete("web", &DeleteParams::default()).await.unwrap();
    assert_eq!(api_error(api.get("web").await.unwrap_err()).code, 404);
}

#[tokio::test]
async fn patch_types_and_status_subresource() {
    let server = ApiServer::start().unwrap();
    let api: Api<Node> = Api::all(client(&server).await);
    let node: Node = serde_json::from_value(json!({"metadata": {"name": "n1"}, "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.1"}]}})).unwrap();
    api.create(&PostParams::default(), &node).await.unwrap();

    let pp = PatchParams::default();
    let smp = json!({"status": {"addresses": [{"type": "Hostname", "address": "n1"}]}});
    let patched = api
        .patch_status("n1", &pp, &Patch::Strategic(&smp))
        .await
        .unwrap();
    let addresses = patched.status.unwrap().addresses.unwrap();
    assert_eq!(
        addresses.len(),
        2,
        "strategic merge keeps InternalIP and adds Hostname"
    );

    // Status changes through the main resource are ignored.
    let main = api
        .patch(
            "n1",
            &pp,
            &Patch::Merge(json!({"status": {"addresses": []}, "spec": {"unschedulable": true}})),
        )
        .await
        .unwrap();
    assert_eq!(main.status.unwrap().addresses.unwrap().len(), 2);
    assert_eq!(main.spec.unwrap().unschedulable, Some(true));

    let ops: json_patch::Patch = serde_json::from_value(
        json!([{"op": "add", "path": "/metadata/labels", "value": {"zone": "a"}}]),
    )
    .unwrap();
    let jp = api.patch("n1", &pp, &Patch::Json::<()>(ops)).await.unwrap();
    assert_eq!(jp.metadata.labels.unwrap()["zone"], "a");

    let selected = api
        .list(
            &ListParams::default()
                .fields("spec.unschedulable=true")
                .labels("zone in (a,b)"),
        )
        .await
        .unwrap();
    assert_eq!(selected.items.len(), 1);
    let err = api_error(
        api.list(&ListParams::default().fields("spec.bogus=1"))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (err.code, err.message.as_str()),
        (400, "field label not supported: spec.bogus")
    );
}

#[tokio::test]
async fn endpoint_slices_track_generation() {
    let server = ApiServer::start().unwrap();
    let api: Api<EndpointSlice> = Api::namespaced(client(&server).await, "default");
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "web-abc", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": true}}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
    }))
    .unwrap();
    let created = api.create(&PostParams::default(), &slice).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    let patched = api
        .patch(
            "web-abc",
            &PatchParams::default(),
            &Patch::Merge(json!({"endpoints": []})),
        )
        .await
        .unwrap();
    assert_eq!(patched.metadata.generation, Some(2));
    let labelled = api
        .patch(
            "web-abc",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        labelled.metadata.generation,
        Some(2),
        "metadata changes do not bump generation"
    );
}

#[tokio::test]
async fn paged_list_is_a_consistent_snapshot() {
    let server = ApiServer::start().unwrap();
    let api: Api<Service> = Api::namespaced(client(&server).await, "default");
    for i in 0..5 {
        api.create(
            &PostParams::default(),
            &service(&format!("s{i}"), json!({})),
        )
        .await
        .unwrap();
    }
    let page = api.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(page.items.len(), 2);
    assert_eq!(page.metadata.remaining_item_count, Some(3));
    api.delete("s4", &DeleteParams::default()).await.unwrap();
    api.create(&PostParams::default(), &service("s5", json!({})))
        .await
        .unwrap();
    let token = page.metadata.continue_.clone().unwrap();
    let rest = api
        .list(&ListParams::default().continue_token(&token))
        .await
        .unwrap();
    let names: Vec<String> = rest
        .items
        .iter()
        .map(|s| s.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(
        names,
        ["s2", "s3", "s4"],
        "pages come from the list's resourceVersion"
    );
    assert_eq!(
        rest.metadata.resource_version,
        page.metadata.resource_version
    );

    server.compact();
    let err = api_error(
        api.list(&ListParams::default().continue_token(&token))
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (410, "Expired"));
}

#[tokio::test]
async fn watch_resumes_filters_bookmarks_and_expires() {
    let server = ApiServer::start().unwrap();
    let api: Api<Service> = Api::namespaced(client(&server).await, "default");
    let listed = api.list(&ListParams::default()).await.unwrap();
    let rv = listed.metadata.resource_version.unwrap();
    api.create(&PostParams::default(), &service("a", json!({"team": "x"})))
        .await
        .unwrap();
    api.create(&PostParams::default(), &service("b", json!({"team": "y"})))
        .await
        .unwrap();
    api.patch(
        "b",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"team": "x"}}})),
    )
    .await
    .unwrap();
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"team": "z"}}})),
    )
    .await
    .unwrap();

    let wp = WatchParams::default().labels("team=x").timeout(5);
    let mut stream = api.watch(&wp, &rv).await.unwrap().boxed();
    let mut seen = Vec::new();
    while seen.len() < 4 {
        match stream.try_next().await.unwrap().unwrap() {
            WatchEvent::Added(s) => seen.push(format!("ADDED {}", s.metadata.name.unwrap())),
            WatchEvent::Modified(s) => seen.push(format!("MODIFIED {}", s.metadata.name.unwrap())),
            WatchEvent::Deleted(s) => seen.push(format!("DELETED {}", s.metadata.name.unwrap())),
            WatchEvent::Bookmark(b) => {
                seen.push("BOOKMARK".into());
                assert_eq!(
                    b.metadata.resource_version,
                    server.resource_version().to_string()
                );
            }
            WatchEvent::Error(e) => panic!("{e:?}"),
        }
    }
    // b moved into the selection, a moved out of it.
    assert_eq!(seen, ["ADDED a", "ADDED b", "DELETED a", "BOOKMARK"]);

    server.compact();
    let mut stream = api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    match stream.try_next().await.unwrap().unwrap() {
        WatchEvent::Error(e) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected 410, got {other:?}"),
    }
}

#[tokio::test]
async fn kube_runtime_watcher_lists_pages_then_streams() {
    let server = ApiServer::start_with(Options {
        event_window: 2,
        ..Default::default()
    })
    .unwrap();
    let api: Api<Service> = Api::namespaced(client(&server).await, "default");
    api.create(&PostParams::default(), &service("a", json!({})))
        .await
        .unwrap();
    let mut events = watcher(api.clone(), watcher::Config::default().page_size(1)).boxed();
    let mut init_names = Vec::new();
    loop {
        match events.try_next().await.unwrap().unwrap() {
            watcher::Event::InitApply(s) => init_names.push(s.metadata.name.unwrap()),
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    assert_eq!(init_names, ["a"]);
    api.create(&PostParams::default(), &service("b", json!({})))
        .await
        .unwrap();
    loop {
        if let watcher::Event::Apply(s) = events.try_next().await.unwrap().unwrap() {
            assert_eq!(s.metadata.name.as_deref(), Some("b"));
            break;
        }
    }
}

#[test]
fn kubectl_get_and_apply() {
    let server = ApiServer::start().unwrap();
    let kubectl = |args: &[&str], stdin: Option<&str>| {
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(server.kubeconfig_path())
            .args(args);
        cmd.env("HOME", server.dir.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd
            .spawn()
            .expect("kubectl must be installed (scripts/install-deps)");
        if let Some(input) = stdin {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let manifest = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  labels: {app: web}\nspec:\n  selector: {app: web}\n  ports:\n  - {name: http, port: 80, targetPort: 8080}\n";
    let (ok, out, err) = kubectl(&["apply", "--validate=false", "-f", "-"], Some(manifest));
    assert!(ok, "apply: {out} {err}");
    assert!(out.contains("service/web created"), "{out}");
    let changed = manifest.replace("targetPort: 8080", "targetPort: 9090");
    let (ok, out, err) = kubectl(&["apply", "--validate=false", "-f", "-"], Some(&changed));
    assert!(ok, "re-apply: {out} {err}");
    assert!(out.contains("service/web configured"), "{out}");
    let stored = server.get(&SERVICES, "default", "web").unwrap();
    assert_eq!(stored["spec"]["ports"][0]["targetPort"], 9090);
    assert!(
        stored["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .is_string()
    );

    let (ok, out, err) = kubectl(&["get", "services", "-o", "name"], None);
    assert!(ok, "get: {err}");
    assert_eq!(out.trim(), "service/web");
    let (ok, out, _) = kubectl(
        &["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"],
        None,
    );
    assert!(ok);
    assert_eq!(out, stored["spec"]["clusterIP"].as_str().unwrap());
    let (ok, _, err) = kubectl(&["get", "svc", "missing"], None);
    assert!(!ok);
    assert!(err.contains("services \"missing\" not found"), "{err}");
}

#[tokio::test]
async fn direct_store_writes_reach_watchers() {
    let server = ApiServer::start().unwrap();
    let api: Api<EndpointSlice> = Api::all(client(&server).await);
    let slice = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "s", "labels": {"kubernetes.io/service-name": "web"}}, "addressType": "IPv4", "endpoints": []});
    server
        .create(&ENDPOINT_SLICES, "default", slice.clone())
        .unwrap();
    let cfg = watcher::Config::default()
        .labels("!service.kubernetes.io/headless,!service.kubernetes.io/service-proxy-name");
    let mut events = watcher(api, cfg).boxed();
    while !matches!(
        events.try_next().await.unwrap().unwrap(),
        watcher::Event::InitDone
    ) {}
    let mut updated = slice.clone();
    updated["endpoints"] = json!([{"addresses": ["10.0.0.1"]}]);
    server.update(&ENDPOINT_SLICES, "default", updated).unwrap();
    loop {
        if let watcher::Event::Apply(s) = events.try_next().await.unwrap().unwrap() {
            assert_eq!(s.endpoints.unwrap().len(), 1);
            break;
        }
    }
}

#[tokio::test]
async fn live_changes_reach_an_open_watch_without_waiting_for_a_bookmark() {
    // No bookmark (or other write) will come along to push a held-back event out.
    let server = ApiServer::start_with(Options {
        bookmark_interval: std::time::Duration::from_secs(3600),
        ..Default::default()
    })
    .unwrap();
    let api: Api<Service> = Api::namespaced(client(&server).await, "default");
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    server
        .create(
            &SERVICES,
            "default",
            serde_json::to_value(service("live", json!({}))).unwrap(),
        )
        .unwrap();
    match stream.try_next().await.unwrap().unwrap() {
        WatchEvent::Added(s) => assert_eq!(s.metadata.name.as_deref(), Some("live")),
        other => panic!("expected ADDED, got {other:?}"),
    }
}
