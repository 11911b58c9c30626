//! HTTP routing: discovery, and the REST verbs on resource paths.

use super::discovery;
use super::patch::PatchType;
use super::resources::{self, ResourceType};
use super::selectors::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::store::{Event, EventType, ListOptions, Store};
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

pub type Body = BoxBody<Bytes, Infallible>;

pub struct Shared {
    pub store: Mutex<Store>,
    pub token: String,
    pub address: String,
    pub bookmark_interval: Duration,
}

impl Shared {
    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        // A panic while holding the lock only happens in a failing test; keep serving.
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn json_response(code: u16, body: &Value) -> Response<Body> {
    let mut resp = Response::new(http_body_util::Full::new(Bytes::from(body.to_string())).boxed());
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn error_response(e: &ApiError) -> Response<Body> {
    json_response(e.code, &e.to_status())
}

/// Where a resource request points.
struct Target {
    rt: &'static ResourceType,
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
}

fn parse_target(segments: &[&str], group: &str, version: &str) -> Option<Target> {
    let (namespace, rest) = match segments {
        ["namespaces", ns, resource, rest @ ..]
            if resources::find(group, version, resource).is_some_and(|r| r.namespaced) =>
        {
            (
                Some(ns.to_string()),
                std::iter::once(*resource)
                    .chain(rest.iter().copied())
                    .collect::<Vec<_>>(),
            )
        }
        _ => (None, segments.to_vec()),
    };
    let rt = resources::find(group, version, rest.first()?)?;
    if rt.namespaced && namespace.is_none() && rest.len() > 1 {
        return None;
    }
    let name = rest.get(1).map(|s| s.to_string());
    let status = match rest.get(2) {
        None => false,
        Some(&"status") if rt.status_subresource && rest.len() == 3 => true,
        Some(_) => return None,
    };
    Some(Target {
        rt,
        namespace,
        name,
        status,
    })
}

pub async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let authorized = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {}", shared.token));
    if !authorized {
        return Ok(error_response(&ApiError::unauthorized()));
    }
    let path = req.uri().path().trim_end_matches('/').to_string();
    let query: HashMap<String, String> = req
        .uri()
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let get = req.method() == Method::GET;
    let doc = match segments.as_slice() {
        ["version"] if get => Some(discovery::version()),
        ["api"] if get => Some(discovery::core_versions(&shared.address)),
        ["apis"] if get => Some(discovery::group_list()),
        ["api", v] if get => discovery::resource_list("", v),
        ["apis", g] if get => discovery::group(g),
        ["apis", g, v] if get => discovery::resource_list(g, v),
        ["healthz"] | ["readyz"] | ["livez"] if get => {
            return Ok(Response::new(
                http_body_util::Full::new(Bytes::from_static(b"ok")).boxed(),
            ));
        }
        _ => None,
    };
    if let Some(doc) = doc {
        return Ok(json_response(200, &doc));
    }
    let target = match segments.as_slice() {
        ["api", v, rest @ ..] => parse_target(rest, "", v),
        ["apis", g, v, rest @ ..] => parse_target(rest, g, v),
        _ => None,
    };
    let Some(target) = target else {
        return Ok(error_response(&ApiError::path_not_found()));
    };
    Ok(match serve(&shared, req, target, &query).await {
        Ok(resp) => resp,
        Err(e) => error_response(&e),
    })
}

fn list_options(
    rt: &'static ResourceType,
    namespace: Option<String>,
    query: &HashMap<String, String>,
) -> Result<ListOptions, ApiError> {
    Ok(ListOptions {
        namespace,
        labels: LabelSelector::parse(query.get("labelSelector").map(String::as_str).unwrap_or(""))?,
        fields: FieldSelector::parse(
            query.get("fieldSelector").map(String::as_str).unwrap_or(""),
            |f| rt.supports_field(f),
        )?,
        limit: query
            .get("limit")
            .map(|l| {
                l.parse()
                    .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))
            })
            .transpose()?,
        continue_token: query.get("continue").filter(|c| !c.is_empty()).cloned(),
        resource_version: query.get("resourceVersion").cloned(),
        resource_version_match: query.get("resourceVersionMatch").cloned(),
    })
}

async fn read_body(req: Request<Incoming>) -> Result<(String, Bytes), ApiError> {
    let content_type = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map_err(|e| ApiError::bad_request(format!("reading request body: {e}")))?
        .to_bytes();
    Ok((content_type, body))
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding request body: {e}")))
}

async fn serve(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    t: Target,
    query: &HashMap<String, String>,
) -> Result<Response<Body>, ApiError> {
    let ns = t.namespace.clone().unwrap_or_default();
    let watching = query.get("watch").is_some_and(|w| w == "true" || w == "1");
    match (req.method().clone(), &t.name) {
        (Method::GET, None) if watching => {
            watch(shared, t.rt, list_options(t.rt, t.namespace, query)?, query)
        }
        (Method::GET, None) => {
            let opts = list_options(t.rt, t.namespace, query)?;
            let listed = shared.store().list(t.rt, &opts)?;
            let mut metadata = json!({"resourceVersion": listed.resource_version.to_string()});
            if let Some(c) = listed.continue_token {
                metadata["continue"] = json!(c);
                metadata["remainingItemCount"] = json!(listed.remaining);
            }
            Ok(json_response(
                200,
                &json!({"kind": t.rt.list_kind, "apiVersion": t.rt.api_version(), "metadata": metadata, "items": listed.items}),
            ))
        }
        (Method::GET, Some(name)) => Ok(json_response(200, &shared.store().get(t.rt, &ns, name)?)),
        (Method::POST, None) if !t.status => {
            if t.rt.namespaced && t.namespace.is_none() {
                return Err(ApiError::method_not_allowed());
            }
            let (_, body) = read_body(req).await?;
            let obj = parse_json(&body)?;
            Ok(json_response(201, &shared.store().create(t.rt, &ns, obj)?))
        }
        (Method::PUT, Some(name)) => {
            let (_, body) = read_body(req).await?;
            let obj = parse_json(&body)?;
            Ok(json_response(
                200,
                &shared.store().update(t.rt, &ns, name, obj, t.status)?,
            ))
        }
        (Method::PATCH, Some(name)) => {
            let (content_type, body) = read_body(req).await?;
            let patch_type = PatchType::from_content_type(&content_type)?;
            Ok(json_response(
                200,
                &shared
                    .store()
                    .patch(t.rt, &ns, name, patch_type, &body, t.status)?,
            ))
        }
        (Method::DELETE, Some(name)) if !t.status => {
            let (_, body) = read_body(req).await?;
            let options = if body.is_empty() {
                None
            } else {
                Some(parse_json(&body)?)
            };
            let preconditions = options.as_ref().and_then(|o| o.get("preconditions"));
            Ok(json_response(
                200,
                &shared.store().delete(t.rt, &ns, name, preconditions)?,
            ))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

fn watch_line(kind: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

fn bookmark(rt: &ResourceType, rv: u64, initial_events_end: bool) -> Bytes {
    let mut metadata = json!({"resourceVersion": rv.to_string(), "creationTimestamp": null});
    if initial_events_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    watch_line(
        "BOOKMARK",
        &json!({"kind": rt.kind, "apiVersion": rt.api_version(), "metadata": metadata}),
    )
}

/// What a client with these selectors sees of one event: a change that moves an object
/// into or out of the selection is an ADDED or DELETED for it.
fn visible(ev: &Event, opts: &ListOptions) -> Option<&'static str> {
    let now = opts.matches(&ev.object);
    let before = ev.previous.as_ref().is_some_and(|p| opts.matches(p));
    match (ev.kind, before, now) {
        (EventType::Added, _, true) => Some("ADDED"),
        (EventType::Modified, true, true) => Some("MODIFIED"),
        (EventType::Modified, false, true) => Some("ADDED"),
        (EventType::Modified, true, false) => Some("DELETED"),
        (EventType::Deleted, _, true) => Some("DELETED"),
        _ => None,
    }
}

fn watch(
    shared: &Arc<Shared>,
    rt: &'static ResourceType,
    opts: ListOptions,
    query: &HashMap<String, String>,
) -> Result<Response<Body>, ApiError> {
    let bookmarks = query
        .get("allowWatchBookmarks")
        .is_some_and(|v| v == "true");
    let initial_events = query.get("sendInitialEvents").is_some_and(|v| v == "true");
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let from = if initial_events {
        None
    } else {
        opts.resource_version.clone()
    };
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let setup = {
        let store = shared.store();
        store
            .watch_from(rt, from.as_deref(), &opts)
            .map(|(replay, events)| (replay, events, store.current_rv()))
    };
    let frames = tokio_stream::wrappers::ReceiverStream::new(rx)
        .map(|b| Ok::<_, Infallible>(Frame::data(b)));
    let body = BodyExt::boxed(StreamBody::new(frames));
    let mut resp = Response::new(body);
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    match setup {
        // A watch from a compacted version is accepted, then ends with a 410 ERROR event.
        Err(e) if e.code == 410 => {
            tokio::spawn(async move {
                let _ = tx.send(watch_line("ERROR", &e.to_status())).await;
            });
            Ok(resp)
        }
        Err(e) => Err(e),
        Ok((replay, events, rv_at_start)) => {
            let interval = shared.bookmark_interval;
            tokio::spawn(stream_events(
                tx,
                rt,
                opts,
                replay,
                events,
                rv_at_start,
                bookmarks,
                initial_events,
                interval,
                timeout,
            ));
            Ok(resp)
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn stream_events(
    tx: mpsc::Sender<Bytes>,
    rt: &'static ResourceType,
    opts: ListOptions,
    replay: Vec<Arc<Event>>,
    mut events: broadcast::Receiver<Arc<Event>>,
    rv_at_start: u64,
    bookmarks: bool,
    initial_events: bool,
    interval: Duration,
    timeout: Duration,
) {
    for ev in &replay {
        if let Some(kind) = visible(ev, &opts) {
            if tx.send(watch_line(kind, &ev.object)).await.is_err() {
                return;
            }
        }
    }
    let mut seen = rv_at_start;
    if initial_events && tx.send(bookmark(rt, seen, true)).await.is_err() {
        return;
    }
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Ok(ev) => {
                    if ev.rv <= rv_at_start {
                        continue;
                    }
                    seen = ev.rv;
                    if !ev.resource.same(rt) {
                        continue;
                    }
                    if let Some(kind) = visible(&ev, &opts) {
                        if tx.send(watch_line(kind, &ev.object)).await.is_err() {
                            return;
                        }
                    }
                }
                // A watcher that cannot keep up is closed, as the apiserver does; it re-lists.
                Err(_) => return,
            },
            _ = ticker.tick(), if bookmarks => {
                if tx.send(bookmark(rt, seen, false)).await.is_err() {
                    return;
                }
            }
            _ = &mut deadline => return,
            _ = tx.closed() => return,
        }
    }
}
