//! The object store: every object of every served type, one global resourceVersion
//! counter, and a bounded log of change events that watches resume from.

use super::patch::{self, PatchType};
use super::resources::{self, ResourceType};
use super::selectors::{FieldSelector, LabelSelector};
use super::services::ServiceAllocator;
use super::status::ApiError;
use base64::Engine;
use serde_json::{Value, json};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use tokio::sync::broadcast;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

/// One change. `previous` lets history be rewound for consistent paged lists and lets
/// selector-filtered watches turn a change into ADDED/DELETED when it crosses the selector.
#[derive(Debug)]
pub struct Event {
    pub rv: u64,
    pub resource: &'static ResourceType,
    pub kind: EventType,
    pub object: Value,
    pub previous: Option<Value>,
}

type Key = (&'static str, &'static str, &'static str, String, String);

fn key(rt: &'static ResourceType, ns: &str, name: &str) -> Key {
    (
        rt.group,
        rt.version,
        rt.resource,
        ns.to_string(),
        name.to_string(),
    )
}

/// Events to replay for a new watch, and the receiver for the changes after them.
pub type WatchStart = (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>);

/// What a list returns.
pub struct ListResult {
    pub items: Vec<Value>,
    pub resource_version: u64,
    pub continue_token: Option<String>,
    pub remaining: Option<usize>,
}

/// Query parameters shared by list and watch.
#[derive(Default)]
pub struct ListOptions {
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
}

impl ListOptions {
    pub fn matches(&self, obj: &Value) -> bool {
        let ns_ok = self.namespace.as_deref().is_none_or(|ns| {
            obj.pointer("/metadata/namespace").and_then(Value::as_str) == Some(ns)
        });
        ns_ok && self.labels.matches(obj) && self.fields.matches(obj)
    }
}

pub struct Store {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    events: VecDeque<Arc<Event>>,
    window: usize,
    /// Watches can resume from any resourceVersion >= floor: all events after it are retained.
    floor: u64,
    tx: broadcast::Sender<Arc<Event>>,
    services: ServiceAllocator,
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn now_rfc3339() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn parse_rv(s: &str) -> Result<u64, ApiError> {
    s.parse()
        .map_err(|_| ApiError::bad_request(format!("invalid resource version \"{s}\"")))
}

/// DNS-1123 subdomain, the rule for most object names.
fn valid_name(name: &str, label_only: bool) -> bool {
    let max = if label_only { 63 } else { 253 };
    let ok_part = |p: &str| {
        !p.is_empty()
            && p.len() <= 63
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !p.starts_with('-')
            && !p.ends_with('-')
    };
    name.len() <= max
        && if label_only {
            ok_part(name)
        } else {
            name.split('.').all(ok_part)
        }
}

impl Store {
    pub fn new(window: usize, services: ServiceAllocator) -> Self {
        let (tx, _) = broadcast::channel(4096);
        let mut store = Store {
            rv: 1,
            objects: BTreeMap::new(),
            events: VecDeque::new(),
            window,
            floor: 1,
            tx,
            services,
        };
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}, "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}});
            // Seeding the well-known namespaces cannot fail: names are valid and unique.
            let _ = store.create(&resources::NAMESPACES, "", obj);
        }
        store
    }

    pub fn current_rv(&self) -> u64 {
        self.rv
    }

    /// Forgets all retained history, as etcd compaction does: older versions now get 410.
    pub fn compact(&mut self) {
        self.events.clear();
        self.floor = self.rv;
    }

    fn record(
        &mut self,
        resource: &'static ResourceType,
        kind: EventType,
        object: Value,
        previous: Option<Value>,
    ) {
        let ev = Arc::new(Event {
            rv: self.rv,
            resource,
            kind,
            object,
            previous,
        });
        self.events.push_back(ev.clone());
        while self.events.len() > self.window {
            if let Some(old) = self.events.pop_front() {
                self.floor = old.rv;
            }
        }
        // No receivers is fine: nobody watches.
        let _ = self.tx.send(ev);
    }

    pub fn get(&self, rt: &'static ResourceType, ns: &str, name: &str) -> Result<Value, ApiError> {
        self.objects
            .get(&key(rt, ns, name))
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt.group, rt.resource, name))
    }

    /// The objects of one type as they were at `at` (rewinding retained events).
    fn snapshot(
        &self,
        rt: &'static ResourceType,
        at: u64,
    ) -> Result<BTreeMap<Key, Value>, ApiError> {
        if at < self.floor {
            return Err(ApiError::expired(format!(
                "too old resource version: {at} ({})",
                self.floor + 1
            )));
        }
        let mut objs: BTreeMap<Key, Value> = self
            .objects
            .range(key(rt, "", "")..)
            .take_while(|(k, _)| k.0 == rt.group && k.1 == rt.version && k.2 == rt.resource)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for ev in self.events.iter().rev().take_while(|e| e.rv > at) {
            if !ev.resource.same(rt) {
                continue;
            }
            let k = key(
                rt,
                meta_str(&ev.object, "namespace"),
                meta_str(&ev.object, "name"),
            );
            match &ev.previous {
                Some(prev) => objs.insert(k, prev.clone()),
                None => objs.remove(&k),
            };
        }
        Ok(objs)
    }

    pub fn list(
        &self,
        rt: &'static ResourceType,
        opts: &ListOptions,
    ) -> Result<ListResult, ApiError> {
        let (at, start) = match &opts.continue_token {
            Some(token) => decode_continue(token)?,
            None => {
                let at = match (
                    opts.resource_version.as_deref(),
                    opts.resource_version_match.as_deref(),
                ) {
                    (Some(rv), Some("Exact")) => parse_rv(rv)?,
                    (Some(rv), _) if rv != "0" && !rv.is_empty() => {
                        let rv = parse_rv(rv)?;
                        if rv > self.rv {
                            return Err(ApiError::new(
                                504,
                                "Timeout",
                                format!("Too large resource version: {rv}, current: {}", self.rv),
                            ));
                        }
                        self.rv
                    }
                    _ => self.rv,
                };
                (at, String::new())
            }
        };
        if opts.continue_token.is_some() && at < self.floor {
            return Err(ApiError::expired(
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue value from the response to this list.",
            ));
        }
        let snapshot = if at == self.rv {
            None
        } else {
            Some(self.snapshot(rt, at)?)
        };
        let source: Box<dyn Iterator<Item = (&Key, &Value)>> =
            match &snapshot {
                Some(s) => Box::new(s.iter()),
                None => Box::new(self.objects.range(key(rt, "", "")..).take_while(|(k, _)| {
                    k.0 == rt.group && k.1 == rt.version && k.2 == rt.resource
                })),
            };
        let mut matching = source
            .filter(|(k, v)| format!("{}/{}", k.3, k.4) >= start && opts.matches(v))
            .map(|(k, v)| (format!("{}/{}", k.3, k.4), v));
        let mut items = Vec::new();
        let limit = opts.limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
        for (_, v) in matching.by_ref().take(limit) {
            items.push(v.clone());
        }
        let rest: Vec<String> = matching.map(|(k, _)| k).collect();
        let (continue_token, remaining) = match rest.first() {
            Some(next) => (Some(encode_continue(at, next)), Some(rest.len())),
            None => (None, None),
        };
        Ok(ListResult {
            items,
            resource_version: at,
            continue_token,
            remaining,
        })
    }

    /// Events to replay for a watch from `rv`, and the receiver for what follows, taken
    /// together under the store lock so that nothing falls between them.
    pub fn watch_from(
        &self,
        rt: &'static ResourceType,
        rv: Option<&str>,
        opts: &ListOptions,
    ) -> Result<WatchStart, ApiError> {
        let rx = self.tx.subscribe();
        let replay = match rv.filter(|r| !r.is_empty() && *r != "0") {
            None => {
                // "Any" version: the current state as synthetic ADDED events first.
                let listed = self.list(
                    rt,
                    &ListOptions {
                        namespace: opts.namespace.clone(),
                        labels: opts.labels.clone(),
                        fields: opts.fields.clone(),
                        ..Default::default()
                    },
                )?;
                listed
                    .items
                    .into_iter()
                    .map(|o| {
                        let rv = meta_str(&o, "resourceVersion").parse().unwrap_or(0);
                        Arc::new(Event {
                            rv,
                            resource: rt,
                            kind: EventType::Added,
                            object: o,
                            previous: None,
                        })
                    })
                    .collect()
            }
            Some(rv) => {
                let rv = parse_rv(rv)?;
                if rv < self.floor {
                    return Err(ApiError::expired(format!(
                        "too old resource version: {rv} ({})",
                        self.floor + 1
                    )));
                }
                self.events
                    .iter()
                    .filter(|e| e.rv > rv && e.resource.same(rt))
                    .cloned()
                    .collect()
            }
        };
        Ok((replay, rx))
    }

    fn check_body_identity(rt: &'static ResourceType, obj: &mut Value) -> Result<(), ApiError> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request must be a JSON object",
            ));
        }
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or(rt.kind);
        let api_version = obj
            .get("apiVersion")
            .and_then(Value::as_str)
            .map(String::from)
            .unwrap_or_else(|| rt.api_version());
        if kind != rt.kind || api_version != rt.api_version() {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({api_version}) does not match the expected API version ({})",
                rt.api_version()
            )));
        }
        obj["kind"] = json!(rt.kind);
        obj["apiVersion"] = json!(rt.api_version());
        if !obj.get("metadata").is_some_and(Value::is_object) {
            obj["metadata"] = json!({});
        }
        Ok(())
    }

    pub fn create(
        &mut self,
        rt: &'static ResourceType,
        ns: &str,
        mut obj: Value,
    ) -> Result<Value, ApiError> {
        Self::check_body_identity(rt, &mut obj)?;
        let mut name = meta_str(&obj, "name").to_string();
        if name.is_empty() {
            let prefix = meta_str(&obj, "generateName");
            if prefix.is_empty() {
                return Err(ApiError::invalid(
                    rt.group,
                    rt.kind,
                    "",
                    vec![(
                        "metadata.name".into(),
                        "Required value: name or generateName is required".into(),
                    )],
                ));
            }
            let suffix: String = uuid::Uuid::new_v4()
                .simple()
                .to_string()
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .take(5)
                .collect();
            name = format!("{prefix}{suffix}");
        }
        let label_only = rt.kind == "Service" || rt.kind == "Namespace";
        if !valid_name(&name, label_only) {
            return Err(ApiError::invalid(
                rt.group,
                rt.kind,
                &name,
                vec![(
                    "metadata.name".into(),
                    format!(
                        "Invalid value: \"{name}\": a lowercase RFC 1123 {} must consist of lower case alphanumeric characters, '-' or '.'",
                        if label_only { "label" } else { "subdomain" }
                    ),
                )],
            ));
        }
        let body_ns = meta_str(&obj, "namespace").to_string();
        let ns = if rt.namespaced {
            if !body_ns.is_empty() && body_ns != ns {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            if !self
                .objects
                .contains_key(&key(&resources::NAMESPACES, "", ns))
            {
                return Err(ApiError::not_found("", "namespaces", ns));
            }
            ns.to_string()
        } else {
            String::new()
        };
        if self.objects.contains_key(&key(rt, &ns, &name)) {
            return Err(ApiError::already_exists(rt.group, rt.resource, &name));
        }
        {
            let meta = &mut obj["metadata"];
            meta["name"] = json!(name);
            if rt.namespaced {
                meta["namespace"] = json!(ns);
            } else if let Some(m) = meta.as_object_mut() {
                m.remove("namespace");
            }
            meta["uid"] = json!(uuid::Uuid::new_v4().to_string());
            meta["creationTimestamp"] = json!(now_rfc3339());
            if let Some(m) = meta.as_object_mut() {
                m.remove("deletionTimestamp");
                m.remove("deletionGracePeriodSeconds");
                m.remove("generation");
            }
            if rt.tracks_generation {
                meta["generation"] = json!(1);
            }
        }
        if rt.kind == "Service" {
            // A Service's status is not settable on create.
            obj["status"] = json!({"loadBalancer": {}});
            self.services.prepare_create(&mut obj)?;
        }
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.objects.insert(key(rt, &ns, &name), obj.clone());
        self.record(rt, EventType::Added, obj.clone(), None);
        Ok(obj)
    }

    /// PUT of the object or of its status subresource.
    pub fn update(
        &mut self,
        rt: &'static ResourceType,
        ns: &str,
        name: &str,
        mut obj: Value,
        status: bool,
    ) -> Result<Value, ApiError> {
        Self::check_body_identity(rt, &mut obj)?;
        let body_name = meta_str(&obj, "name");
        if body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        if rt.namespaced
            && !meta_str(&obj, "namespace").is_empty()
            && meta_str(&obj, "namespace") != ns
        {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let old = self.get(rt, ns, name)?;
        let rv = meta_str(&obj, "resourceVersion");
        if !rv.is_empty() && rv != meta_str(&old, "resourceVersion") {
            return Err(ApiError::stale_resource_version(
                rt.group,
                rt.resource,
                name,
            ));
        }
        self.write_update(rt, ns, name, old, obj, status)
    }

    pub fn patch(
        &mut self,
        rt: &'static ResourceType,
        ns: &str,
        name: &str,
        patch_type: PatchType,
        body: &[u8],
        status: bool,
    ) -> Result<Value, ApiError> {
        let old = self.get(rt, ns, name)?;
        let patched = patch::apply(&old, patch_type, body)?;
        // A resourceVersion inside the patch is a precondition.
        if meta_str(&patched, "resourceVersion") != meta_str(&old, "resourceVersion") {
            return Err(ApiError::stale_resource_version(
                rt.group,
                rt.resource,
                name,
            ));
        }
        if meta_str(&patched, "name") != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                meta_str(&patched, "name")
            )));
        }
        self.write_update(rt, ns, name, old, patched, status)
    }

    fn write_update(
        &mut self,
        rt: &'static ResourceType,
        ns: &str,
        name: &str,
        old: Value,
        mut new: Value,
        status: bool,
    ) -> Result<Value, ApiError> {
        Self::check_body_identity(rt, &mut new)?;
        if rt.status_subresource {
            if status {
                // Only status changes through /status.
                let st = new.get("status").cloned();
                new = old.clone();
                match st {
                    Some(s) => new["status"] = s,
                    None => {
                        if let Some(m) = new.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            } else {
                match old.get("status") {
                    Some(s) => new["status"] = s.clone(),
                    None => {
                        if let Some(m) = new.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
        }
        for immutable in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "namespace",
            "resourceVersion",
        ] {
            match old["metadata"].get(immutable) {
                Some(v) => new["metadata"][immutable] = v.clone(),
                None => {
                    if let Some(m) = new["metadata"].as_object_mut() {
                        m.remove(immutable);
                    }
                }
            }
        }
        if rt.kind == "Service" && !status {
            self.services.prepare_update(&old, &mut new)?;
        }
        if new == old {
            // A write that changes nothing is not persisted and bumps nothing.
            return Ok(old);
        }
        if rt.tracks_generation {
            let strip = |v: &Value| {
                let mut v = v.clone();
                if let Some(m) = v.as_object_mut() {
                    m.remove("metadata");
                    m.remove("status");
                }
                v
            };
            if strip(&new) != strip(&old) {
                let g = old["metadata"]["generation"].as_u64().unwrap_or(0) + 1;
                new["metadata"]["generation"] = json!(g);
            }
        }
        let finalizers_gone = new["metadata"]
            .get("finalizers")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty);
        if old["metadata"].get("deletionTimestamp").is_some() && finalizers_gone {
            return self.remove(rt, ns, name, new);
        }
        self.rv += 1;
        new["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.objects.insert(key(rt, ns, name), new.clone());
        self.record(rt, EventType::Modified, new.clone(), Some(old));
        Ok(new)
    }

    fn remove(
        &mut self,
        rt: &'static ResourceType,
        ns: &str,
        name: &str,
        mut last: Value,
    ) -> Result<Value, ApiError> {
        let old = self.objects.remove(&key(rt, ns, name));
        if rt.kind == "Service" {
            self.services.release(&last);
        }
        self.rv += 1;
        last["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.record(rt, EventType::Deleted, last.clone(), old);
        Ok(last)
    }

    /// DELETE with optional preconditions (uid, resourceVersion). Objects with finalizers
    /// only get a deletionTimestamp and go once the finalizers are removed.
    pub fn delete(
        &mut self,
        rt: &'static ResourceType,
        ns: &str,
        name: &str,
        preconditions: Option<&Value>,
    ) -> Result<Value, ApiError> {
        let old = self.get(rt, ns, name)?;
        if let Some(pre) = preconditions {
            if let Some(uid) = pre.get("uid").and_then(Value::as_str) {
                if uid != meta_str(&old, "uid") {
                    return Err(ApiError::conflict(
                        rt.group,
                        rt.resource,
                        name,
                        &format!(
                            "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                            meta_str(&old, "uid")
                        ),
                    ));
                }
            }
            if let Some(rv) = pre.get("resourceVersion").and_then(Value::as_str) {
                if rv != meta_str(&old, "resourceVersion") {
                    return Err(ApiError::conflict(
                        rt.group,
                        rt.resource,
                        name,
                        &format!(
                            "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                            meta_str(&old, "resourceVersion")
                        ),
                    ));
                }
            }
        }
        let has_finalizers = old["metadata"]
            .get("finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        if has_finalizers {
            if old["metadata"].get("deletionTimestamp").is_some() {
                return Ok(old);
            }
            let mut marked = old.clone();
            marked["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
            marked["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            self.rv += 1;
            marked["metadata"]["resourceVersion"] = json!(self.rv.to_string());
            self.objects.insert(key(rt, ns, name), marked.clone());
            self.record(rt, EventType::Modified, marked.clone(), Some(old));
            return Ok(marked);
        }
        self.remove(rt, ns, name, old)
    }
}

fn encode_continue(rv: u64, start: &str) -> String {
    let token = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": start});
    base64::engine::general_purpose::URL_SAFE.encode(token.to_string())
}

fn decode_continue(token: &str) -> Result<(u64, String), ApiError> {
    let bad = || {
        ApiError::bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        )
    };
    let raw = base64::engine::general_purpose::URL_SAFE
        .decode(token)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let rv = v.get("rv").and_then(Value::as_u64).ok_or_else(bad)?;
    let start = v.get("start").and_then(Value::as_str).ok_or_else(bad)?;
    Ok((rv, start.to_string()))
}
