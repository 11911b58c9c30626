//! Applying the three patch types the apiserver accepts on PATCH.
//!
//! JSON patch and JSON merge patch come from the `json-patch` crate. Strategic merge
//! patch needs the Go struct tags of the Kubernetes types, which no crate offers, so the
//! list merge keys of the core types are tabled here by field name.

use super::status::ApiError;
use serde_json::{Map, Value};

pub enum PatchType {
    Json,
    Merge,
    StrategicMerge,
}

impl PatchType {
    pub fn from_content_type(content_type: &str) -> Result<Self, ApiError> {
        match content_type.split(';').next().unwrap_or("").trim() {
            "application/json-patch+json" => Ok(PatchType::Json),
            "application/merge-patch+json" => Ok(PatchType::Merge),
            "application/strategic-merge-patch+json" => Ok(PatchType::StrategicMerge),
            other => Err(ApiError::unsupported_media_type(other)),
        }
    }
}

pub fn apply(doc: &Value, patch_type: PatchType, body: &[u8]) -> Result<Value, ApiError> {
    let mut out = doc.clone();
    match patch_type {
        PatchType::Json => {
            let ops: json_patch::Patch = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            json_patch::patch(&mut out, &ops).map_err(|e| {
                ApiError::new(
                    422,
                    "Invalid",
                    format!("the server rejected our request due to an error in our request: {e}"),
                )
            })?;
        }
        PatchType::Merge => {
            let p: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            json_patch::merge(&mut out, &p);
        }
        PatchType::StrategicMerge => {
            let p: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            let Value::Object(p) = p else {
                return Err(ApiError::bad_request(
                    "strategic merge patch must be a JSON object",
                ));
            };
            out = strategic_merge_value(out, Value::Object(p), "");
        }
    }
    Ok(out)
}

/// The merge key of a list field, or None for lists that are replaced whole.
fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    let first_has = |k: &str| items.iter().any(|i| i.get(k).is_some());
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims" => "name",
        "ports" if first_has("containerPort") => "containerPort",
        "ports" => "port",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "conditions" => "type",
        "addresses" if items.iter().all(Value::is_object) => "type",
        "ownerReferences" => "uid",
        "hostAliases" => "ip",
        "topologySpreadConstraints" => "topologyKey",
        _ => return None,
    })
}

/// Lists of scalars that merge as sets rather than being replaced.
fn merges_as_set(field: &str) -> bool {
    field == "finalizers"
}

fn strategic_merge_value(original: Value, patch: Value, field: &str) -> Value {
    match (original, patch) {
        (Value::Object(o), Value::Object(p)) => strategic_merge_map(o, p),
        (Value::Array(o), Value::Array(p)) => strategic_merge_list(o, p, field),
        (_, p) => strip_directives(p),
    }
}

fn strategic_merge_map(mut original: Map<String, Value>, mut patch: Map<String, Value>) -> Value {
    match patch.remove("$patch").as_ref().and_then(Value::as_str) {
        Some("replace") => return strip_directives(Value::Object(patch)),
        Some("delete") => return Value::Null,
        _ => {}
    }
    patch.remove("$retainKeys");
    for (key, value) in patch {
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Value::Array(remove)) =
                (original.get_mut(field), value)
            {
                list.retain(|v| !remove.contains(v));
            }
            continue;
        }
        if key.starts_with("$setElementOrder/") {
            continue;
        }
        if value.is_null() {
            original.remove(&key);
            continue;
        }
        let merged = match original.remove(&key) {
            Some(existing) => strategic_merge_value(existing, value, &key),
            None => strip_directives(value),
        };
        if !merged.is_null() {
            original.insert(key, merged);
        }
    }
    Value::Object(original)
}

fn strategic_merge_list(mut original: Vec<Value>, patch: Vec<Value>, field: &str) -> Value {
    if merges_as_set(field) {
        for v in patch {
            if !original.contains(&v) {
                original.push(v);
            }
        }
        return Value::Array(original);
    }
    let Some(key) = merge_key(field, &patch) else {
        return strip_directives(Value::Array(patch));
    };
    if patch
        .iter()
        .any(|p| p.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        let rest = patch
            .into_iter()
            .filter(|p| p.get("$patch").is_none())
            .collect();
        return strip_directives(Value::Array(rest));
    }
    for item in patch {
        let id = item.get(key).cloned();
        let pos = id
            .as_ref()
            .and_then(|id| original.iter().position(|o| o.get(key) == Some(id)));
        let deleting = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, deleting) {
            (Some(i), true) => {
                original.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => {
                let existing = std::mem::take(&mut original[i]);
                original[i] = strategic_merge_value(existing, item, "");
            }
            (None, false) => original.push(strip_directives(item)),
        }
    }
    Value::Array(original)
}

/// Removes `$`-directives and nulls from a value inserted as new.
fn strip_directives(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(k, v)| !k.starts_with('$') && !v.is_null())
                .map(|(k, v)| (k, strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(strip_directives).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn smp(doc: Value, patch: Value) -> Value {
        apply(
            &doc,
            PatchType::StrategicMerge,
            patch.to_string().as_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn strategic_merge_merges_lists_by_key() {
        let doc = json!({"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "https"}]},
                         "status": {"conditions": [{"type": "Ready", "status": "False"}]}});
        let out = smp(
            doc,
            json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443, "$patch": "delete"}]},
                                  "status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
        );
        assert_eq!(
            out["spec"]["ports"],
            json!([{"port": 80, "name": "http", "targetPort": 8080}])
        );
        assert_eq!(
            out["status"]["conditions"],
            json!([{"type": "Ready", "status": "True"}])
        );
    }

    #[test]
    fn strategic_merge_replaces_unkeyed_lists_and_deletes_nulls() {
        let doc = json!({"spec": {"externalIPs": ["1.1.1.1"], "a": 1}, "metadata": {"finalizers": ["x"]}});
        let out = smp(
            doc,
            json!({"spec": {"externalIPs": ["2.2.2.2"], "a": null}, "metadata": {"finalizers": ["y"]}}),
        );
        assert_eq!(
            out,
            json!({"spec": {"externalIPs": ["2.2.2.2"]}, "metadata": {"finalizers": ["x", "y"]}})
        );
    }

    #[test]
    fn json_patch_and_merge_patch() {
        let doc = json!({"metadata": {"labels": {"a": "1"}}});
        let out = apply(
            &doc,
            PatchType::Json,
            br#"[{"op":"add","path":"/metadata/labels/b","value":"2"}]"#,
        )
        .unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"a": "1", "b": "2"}));
        let out = apply(
            &doc,
            PatchType::Merge,
            br#"{"metadata":{"labels":{"a":null}}}"#,
        )
        .unwrap();
        assert_eq!(out["metadata"]["labels"], json!({}));
        let err = apply(
            &doc,
            PatchType::Json,
            br#"[{"op":"test","path":"/metadata/labels/a","value":"9"}]"#,
        )
        .unwrap_err();
        assert_eq!(err.code, 422);
    }
}
