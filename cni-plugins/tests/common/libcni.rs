//! A conflist driver following libcni's rules: plugins run in order on ADD
//! with each result as the next prevResult; the final result is cached per
//! (network, container, ifname); CHECK and DEL hand the cached result to
//! every plugin, DEL in reverse order; GC and STATUS go to every plugin.

use std::collections::BTreeMap;
use std::path::PathBuf;

use berth_cni::types::NetConfList;
use serde_json::Value;

use super::{Invocation, Outcome};

pub struct Driver {
    pub list: NetConfList,
    pub cache_dir: PathBuf,
    pub capability_args: BTreeMap<String, Value>,
}

impl Driver {
    pub fn new(conflist: &Value, cache_dir: PathBuf) -> Self {
        Driver {
            list: NetConfList::parse(conflist.to_string().as_bytes()).expect("valid conflist"),
            cache_dir,
            capability_args: BTreeMap::new(),
        }
    }

    fn cache_path(&self, inv: &Invocation) -> PathBuf {
        self.cache_dir.join(format!(
            "{}-{}-{}",
            self.list.name, inv.container_id, inv.ifname
        ))
    }

    fn plugin_type(conf: &Value) -> String {
        conf["type"].as_str().expect("plugin type").to_string()
    }

    /// ADD through the chain; returns the last plugin's outcome (or the first failure).
    pub fn add(&self, inv: &Invocation) -> Outcome {
        let mut prev: Option<Value> = None;
        let mut last = None;
        for i in 0..self.list.plugins.len() {
            let conf = self
                .list
                .plugin_config(i, &self.capability_args, prev.as_ref())
                .unwrap();
            let out = inv
                .with_command("ADD")
                .run(&Self::plugin_type(&conf), &conf);
            if out.code != 0 {
                return out;
            }
            prev = Some(out.stdout.clone());
            last = Some(out);
        }
        let out = last.expect("non-empty list");
        std::fs::create_dir_all(&self.cache_dir).unwrap();
        let cached = serde_json::json!({"kind": "cniCacheV1", "result": out.stdout});
        std::fs::write(self.cache_path(inv), cached.to_string()).unwrap();
        out
    }

    fn cached(&self, inv: &Invocation) -> Option<Value> {
        let text = std::fs::read_to_string(self.cache_path(inv)).ok()?;
        serde_json::from_str::<Value>(&text)
            .ok()
            .map(|v| v["result"].clone())
    }

    pub fn check(&self, inv: &Invocation) -> Outcome {
        let prev = self.cached(inv).expect("CHECK needs a cached result");
        let mut last = None;
        for i in 0..self.list.plugins.len() {
            let conf = self
                .list
                .plugin_config(i, &self.capability_args, Some(&prev))
                .unwrap();
            let out = inv
                .with_command("CHECK")
                .run(&Self::plugin_type(&conf), &conf);
            if out.code != 0 {
                return out;
            }
            last = Some(out);
        }
        last.expect("non-empty list")
    }

    pub fn del(&self, inv: &Invocation) -> Outcome {
        let prev = self.cached(inv);
        let mut last = None;
        for i in (0..self.list.plugins.len()).rev() {
            let conf = self
                .list
                .plugin_config(i, &self.capability_args, prev.as_ref())
                .unwrap();
            let out = inv
                .with_command("DEL")
                .run(&Self::plugin_type(&conf), &conf);
            if out.code != 0 {
                return out;
            }
            last = Some(out);
        }
        let _ = std::fs::remove_file(self.cache_path(inv));
        last.expect("non-empty list")
    }

    /// GC with the attachments still valid, as libcni's GCNetworkList sends them.
    pub fn gc(&self, inv: &Invocation, valid: &[(&str, &str)]) -> Outcome {
        let attachments: Vec<Value> = valid
            .iter()
            .map(|(c, i)| serde_json::json!({"containerID": c, "ifname": i}))
            .collect();
        let mut last = None;
        for i in 0..self.list.plugins.len() {
            let mut conf = self.list.plugin_config(i, &BTreeMap::new(), None).unwrap();
            conf["cni.dev/valid-attachments"] = Value::Array(attachments.clone());
            let out = inv.with_command("GC").run(&Self::plugin_type(&conf), &conf);
            if out.code != 0 {
                return out;
            }
            last = Some(out);
        }
        last.expect("non-empty list")
    }
}
