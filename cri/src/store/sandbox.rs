//! The sandbox store: every pod sandbox's record, persisted as
//! `<dir>/<id>.json` and reloaded on start.

use std::path::PathBuf;

use berth_proto::runtime::v1 as cri;
use serde::{Deserialize, Serialize};

use super::records::{Record, Store};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SandboxState {
    Ready,
    NotReady,
}

/// What the daemon knows about one sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub id: String,
    /// `<name>_<namespace>_<uid>_<attempt>`, unique among sandboxes.
    pub name: String,
    /// The RunPodSandbox config, protobuf-encoded (base64 in the file).
    #[serde(with = "super::proto_bytes")]
    pub config: cri::PodSandboxConfig,
    pub runtime_handler: String,
    pub created_at: i64,
    pub state: SandboxState,
    /// The pinned pod netns; None with host networking or once removed.
    pub netns: Option<PathBuf>,
    pub pause_pid: Option<i32>,
    /// The pause process's start time (clock ticks), to tell it from a
    /// later process that reuses its pid.
    pub pause_start_time: Option<u64>,
    /// Pod IPs, the primary first.
    pub ips: Vec<String>,
    /// Whether CNI ADD succeeded and DEL has not yet.
    pub network_attached: bool,
    /// Files made for the pod (hostname, hosts, resolv.conf).
    pub dir: PathBuf,
}

impl SandboxRecord {
    pub fn metadata(&self) -> cri::PodSandboxMetadata {
        self.config.metadata.clone().unwrap_or_default()
    }

    pub fn namespace_options(&self) -> cri::NamespaceOption {
        self.config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.clone())
            .unwrap_or_default()
    }

    pub fn host_network(&self) -> bool {
        self.namespace_options().network == cri::NamespaceMode::Node as i32
    }
}

impl Record for SandboxRecord {
    const KIND: &'static str = "sandbox";

    fn id(&self) -> &str {
        &self.id
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// Owner of all sandbox records.
pub type SandboxStore = Store<SandboxRecord>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;

    fn record(id: &str, name: &str) -> SandboxRecord {
        SandboxRecord {
            id: id.into(),
            name: name.into(),
            config: cri::PodSandboxConfig {
                hostname: "web".into(),
                ..Default::default()
            },
            runtime_handler: String::new(),
            created_at: 1,
            state: SandboxState::Ready,
            netns: Some("/var/run/netns/cni-x".into()),
            pause_pid: Some(42),
            pause_start_time: Some(7),
            ips: vec!["10.1.0.2".into()],
            network_attached: true,
            dir: "/tmp/x".into(),
        }
    }

    #[test]
    fn records_survive_reopening_and_keep_their_names() {
        let dir = tempfile::tempdir().unwrap();
        let store = SandboxStore::open(dir.path()).unwrap();
        store.reserve_name("web_default_u_0", "abc1").unwrap();
        store.put(record("abc1", "web_default_u_0")).unwrap();
        store
            .update("abc1", |r| r.state = SandboxState::NotReady)
            .unwrap();
        drop(store);

        let store = SandboxStore::open(dir.path()).unwrap();
        let loaded = store.get("abc").unwrap();
        assert_eq!(loaded.state, SandboxState::NotReady);
        assert_eq!(loaded.config.hostname, "web");
        let err = store.reserve_name("web_default_u_0", "other").unwrap_err();
        assert!(
            err.to_string().contains("is reserved for \"abc1\""),
            "{err}"
        );
        store.delete("abc1").unwrap();
        assert!(matches!(
            store.get("abc1"),
            Err(StoreError::NotFound { .. })
        ));
        store.reserve_name("web_default_u_0", "other").unwrap();
    }

    #[test]
    fn unsynced_updates_survive_reopening_and_leave_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = SandboxStore::open(dir.path()).unwrap();
        store.put(record("abc1", "web_default_u_0")).unwrap();
        store
            .update_running("abc1", |r| r.pause_pid = Some(4321))
            .unwrap();
        drop(store);

        let store = SandboxStore::open(dir.path()).unwrap();
        assert_eq!(store.get("abc1").unwrap().pause_pid, Some(4321));
        let files: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(files, ["abc1.json"]);
    }

    #[test]
    fn ambiguous_prefixes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = SandboxStore::open(dir.path()).unwrap();
        store.put(record("ab1", "a")).unwrap();
        store.put(record("ab2", "b")).unwrap();
        assert!(matches!(store.get("ab"), Err(StoreError::Ambiguous { .. })));
        assert_eq!(store.get("ab2").unwrap().name, "b");
    }
}
