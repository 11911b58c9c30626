//! Per-container state persisted under the runtime's root dir
//! (`<root>/<id>/state.json`, written atomically), and the status derived from it.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Hooks;
use serde::{Deserialize, Serialize};

use super::cgroups::{self, CgroupDriver, CgroupManager};
use super::error::{Context, OciError, Result};

pub const OCI_VERSION: &str = "1.2.0";
const STATE_FILE: &str = "state.json";
/// The init blocks opening this fifo for writing until `start` opens it for reading.
pub const EXEC_FIFO: &str = "exec.fifo";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        };
        f.write_str(s)
    }
}

/// What the runtime remembers about a container between invocations.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerState {
    pub id: String,
    /// Pid of the init in the runtime's pid namespace.
    pub pid: i32,
    /// The init's start time (clock ticks after boot) to tell it from a reused pid.
    pub pid_start_time: u64,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    /// RFC 3339 with nanoseconds, UTC.
    pub created: String,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    pub cgroups_path: Option<String>,
    #[serde(default)]
    pub systemd_cgroup: bool,
    #[serde(default)]
    pub hooks: Option<Hooks>,
    #[serde(default)]
    pub owner: String,
    /// The container's process: the defaults for exec'd processes.
    #[serde(default)]
    pub process: Option<oci_spec::runtime::Process>,
    /// Exec'd processes get the container's seccomp filter too.
    #[serde(default)]
    pub seccomp: Option<oci_spec::runtime::LinuxSeccomp>,
    /// linux.resources in force: the spec's, as changed by `update` since.
    #[serde(default)]
    pub resources: Option<oci_spec::runtime::LinuxResources>,
}

/// The OCI state document (hook stdin, `state` output), in runc's field order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OciState {
    pub oci_version: String,
    pub id: String,
    pub pid: i32,
    pub status: Status,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    pub owner: String,
    #[serde(skip_serializing_if = "HashMap::is_empty", default)]
    pub annotations: HashMap<String, String>,
}

impl ContainerState {
    pub fn cgroup_manager(&self) -> Result<Box<dyn CgroupManager>> {
        let driver = if self.systemd_cgroup {
            CgroupDriver::Systemd
        } else {
            CgroupDriver::Cgroupfs
        };
        Ok(cgroups::new_manager(
            self.cgroups_path.as_deref(),
            &self.id,
            driver,
        )?)
    }

    /// Whether the recorded init still exists (and is not a zombie).
    pub fn init_alive(&self) -> bool {
        self.pid > 0 && process_start_time(self.pid).is_some_and(|t| t == self.pid_start_time)
    }

    pub fn status(&self, dir: &Path) -> Status {
        if !self.init_alive() {
            return Status::Stopped;
        }
        if dir.join(EXEC_FIFO).exists() {
            return Status::Created;
        }
        match self.cgroup_manager().and_then(|m| Ok(m.is_frozen()?)) {
            Ok(true) => Status::Paused,
            _ => Status::Running,
        }
    }

    pub fn oci_state(&self, status: Status) -> OciState {
        OciState {
            oci_version: OCI_VERSION.to_string(),
            id: self.id.clone(),
            pid: if status == Status::Stopped {
                0
            } else {
                self.pid
            },
            status,
            bundle: self.bundle.clone(),
            rootfs: self.rootfs.clone(),
            created: self.created.clone(),
            owner: self.owner.clone(),
            annotations: self.annotations.clone(),
        }
    }
}

/// Field 22 of /proc/<pid>/stat, or None if the process is gone or a zombie.
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

fn parse_start_time(stat: &str) -> Option<u64> {
    // The command name (field 2) may hold spaces and parentheses: parse after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // `rest` starts at field 3; start time is field 22.
    fields.nth(18)?.parse().ok()
}

pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// The runtime's root dir: one directory per container.
#[derive(Debug, Clone)]
pub struct StateStore {
    root: PathBuf,
}

impl StateStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// Makes the container's directory; fails if the id is taken.
    pub fn create_dir(&self, id: &str) -> Result<PathBuf> {
        validate_id(id)?;
        std::fs::create_dir_all(&self.root)
            .context(|| format!("creating root dir {}", self.root.display()))?;
        let dir = self.dir(id);
        match std::fs::create_dir(&dir) {
            Ok(()) => Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(OciError::AlreadyExists(id.to_string()))
            }
            Err(e) => Err(e).context(|| format!("creating {}", dir.display())),
        }
    }

    pub fn load(&self, id: &str) -> Result<ContainerState> {
        validate_id(id)?;
        let path = self.dir(id).join(STATE_FILE);
        let json = match std::fs::read(&path) {
            Ok(json) => json,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(OciError::NotFound(id.to_string()));
            }
            Err(e) => return Err(e).context(|| format!("reading {}", path.display())),
        };
        serde_json::from_slice(&json).map_err(|e| OciError::Io {
            context: format!("parsing {}", path.display()),
            source: e.into(),
        })
    }

    /// Writes state.json via a temporary file and rename, so readers never see a
    /// partial document.
    pub fn save(&self, state: &ContainerState) -> Result<()> {
        let dir = self.dir(&state.id);
        let tmp = dir.join(".state.json.tmp");
        let json = serde_json::to_vec(state).map_err(|e| OciError::Io {
            context: "encoding state".into(),
            source: e.into(),
        })?;
        let mut file =
            std::fs::File::create(&tmp).context(|| format!("creating {}", tmp.display()))?;
        file.write_all(&json)
            .context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, dir.join(STATE_FILE))
            .context(|| format!("renaming {}", tmp.display()))
    }

    pub fn remove(&self, id: &str) -> Result<()> {
        let dir = self.dir(id);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).context(|| format!("removing {}", dir.display()))
            }
            _ => Ok(()),
        }
    }

    /// Ids of every container directory holding a state file.
    pub fn list(&self) -> Result<Vec<String>> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).context(|| format!("reading {}", self.root.display())),
        };
        let mut ids: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join(STATE_FILE).exists())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        ids.sort();
        Ok(ids)
    }
}

/// runc's rule: letters, digits, `_ + - .`, and not `.` or `..`.
pub fn validate_id(id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(OciError::InvalidId(id.into(), "must not be empty"));
    }
    if id == "." || id == ".." {
        return Err(OciError::InvalidId(id.into(), "must not be . or .."));
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_+-.".contains(c))
    {
        return Err(OciError::InvalidId(
            id.into(),
            "only [A-Za-z0-9_+.-] are allowed",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_is_field_22_even_with_odd_command_names() {
        let stat = "42 (a) b (c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_start_time(stat), Some(987654));
        let zombie = stat.replace(") S ", ") Z ");
        assert_eq!(parse_start_time(&zombie), None);
    }

    #[test]
    fn own_start_time_is_readable() {
        assert!(process_start_time(std::process::id() as i32).is_some());
    }

    #[test]
    fn ids_follow_runc_rules() {
        validate_id("abc-1.2_x+y").unwrap();
        for bad in ["", ".", "..", "a/b", "a b"] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn store_roundtrip_and_duplicate_id() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        store.create_dir("c1").unwrap();
        assert!(matches!(
            store.create_dir("c1"),
            Err(OciError::AlreadyExists(_))
        ));
        let state = ContainerState {
            id: "c1".into(),
            pid: 0,
            pid_start_time: 0,
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            created: now_rfc3339(),
            annotations: HashMap::new(),
            cgroups_path: None,
            systemd_cgroup: false,
            hooks: None,
            owner: String::new(),
            process: None,
            seccomp: None,
            resources: None,
        };
        store.save(&state).unwrap();
        assert_eq!(store.load("c1").unwrap().bundle, PathBuf::from("/b"));
        assert_eq!(store.list().unwrap(), vec!["c1".to_string()]);
        assert_eq!(state.status(&store.dir("c1")), Status::Stopped);
        store.remove("c1").unwrap();
        assert!(matches!(store.load("c1"), Err(OciError::NotFound(_))));
    }
}
