//! The systemd driver end to end against a stand-in for systemd's Manager API on a
//! private dbus-daemon (this host has no systemd): the wire format of every call, the
//! unit properties systemd receives, the PID handed over, and that the container ends up
//! in its cgroups with its limits and is removed again. The stand-in does what systemd
//! does for a scope on cgroup v1: make the unit's cgroup in the name=systemd hierarchy
//! and move the PIDs there; everything else is the driver's own doing.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use berth_cri::oci::cgroups::{CgroupDriver, new_manager};
use oci_spec::runtime::{
    LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder,
};
use zbus::zvariant::{OwnedObjectPath, OwnedValue};

const UNIT_PATH: &str = "/org/freedesktop/systemd1/unit/container";

#[derive(Default)]
struct FakeState {
    /// unit name → (properties, ActiveState)
    units: HashMap<String, (HashMap<String, OwnedValue>, String)>,
    last: Option<String>,
    /// cgroup dir → made by the stand-in
    made: Vec<PathBuf>,
    scope_path: String,
}

#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.freedesktop.systemd1")]
enum SystemdError {
    #[zbus(error)]
    ZBus(zbus::Error),
    NoSuchUnit(String),
}

struct Manager(Arc<Mutex<FakeState>>);

#[zbus::interface(name = "org.freedesktop.systemd1.Manager")]
impl Manager {
    fn start_transient_unit(
        &self,
        name: String,
        _mode: String,
        properties: Vec<(String, OwnedValue)>,
        _aux: Vec<(String, Vec<(String, OwnedValue)>)>,
    ) -> Result<OwnedObjectPath, SystemdError> {
        let mut state = self.0.lock().unwrap();
        let props: HashMap<String, OwnedValue> = properties.into_iter().collect();
        let dir = Path::new("/sys/fs/cgroup/systemd").join(&state.scope_path);
        std::fs::create_dir_all(&dir).unwrap();
        state.made.push(dir.clone());
        if let Some(pids) = props.get("PIDs") {
            let pids: Vec<u32> = pids.try_clone().unwrap().try_into().unwrap();
            for pid in pids {
                std::fs::write(dir.join("cgroup.procs"), pid.to_string()).unwrap();
            }
        }
        state.units.insert(name.clone(), (props, "active".into()));
        state.last = Some(name);
        Ok(OwnedObjectPath::try_from("/org/freedesktop/systemd1/job/1").unwrap())
    }

    fn get_unit(&self, name: String) -> Result<OwnedObjectPath, SystemdError> {
        let state = self.0.lock().unwrap();
        match state.units.get(&name) {
            Some(_) => Ok(OwnedObjectPath::try_from(UNIT_PATH).unwrap()),
            None => Err(SystemdError::NoSuchUnit(format!("Unit {name} not loaded."))),
        }
    }

    fn stop_unit(&self, name: String, _mode: String) -> Result<OwnedObjectPath, SystemdError> {
        let mut state = self.0.lock().unwrap();
        let Some(unit) = state.units.get_mut(&name) else {
            return Err(SystemdError::NoSuchUnit(format!("Unit {name} not loaded.")));
        };
        unit.1 = "inactive".into();
        // systemd removes the cgroups it made once the unit's processes are gone.
        for dir in state.made.drain(..) {
            let _ = std::fs::remove_dir(dir);
        }
        Ok(OwnedObjectPath::try_from("/org/freedesktop/systemd1/job/2").unwrap())
    }

    fn reset_failed_unit(&self, _name: String) {}

    fn set_unit_properties(
        &self,
        name: String,
        _runtime: bool,
        properties: Vec<(String, OwnedValue)>,
    ) {
        let mut state = self.0.lock().unwrap();
        if let Some(unit) = state.units.get_mut(&name) {
            unit.0.extend(properties);
        }
    }
}

struct Unit(Arc<Mutex<FakeState>>);

#[zbus::interface(name = "org.freedesktop.systemd1.Unit")]
impl Unit {
    #[zbus(property)]
    fn active_state(&self) -> String {
        let state = self.0.lock().unwrap();
        let last = state.last.clone().unwrap_or_default();
        state
            .units
            .get(&last)
            .map(|u| u.1.clone())
            .unwrap_or_default()
    }
}

/// A private bus daemon, killed on drop.
struct Bus {
    daemon: Child,
    dir: PathBuf,
}

impl Bus {
    fn start() -> (Self, String) {
        let dir = std::env::temp_dir().join(format!("berth-test-bus-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut daemon = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address=1"])
            .arg(format!("--address=unix:path={}", dir.join("bus").display()))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        // The daemon prints its address once it accepts connections.
        let mut address = String::new();
        BufReader::new(daemon.stdout.take().unwrap())
            .read_line(&mut address)
            .unwrap();
        (Bus { daemon, dir }, address.trim().to_string())
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Kills the test's process and removes every cgroup dir of the test slice.
struct Cleanup {
    child: Option<Child>,
    slice_dirs: Vec<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
        for slice in &self.slice_dirs {
            if let Ok(entries) = std::fs::read_dir(slice) {
                for entry in entries.flatten() {
                    if entry.file_type().is_ok_and(|t| t.is_dir()) {
                        let _ = std::fs::remove_dir(entry.path());
                    }
                }
            }
            let _ = std::fs::remove_dir(slice);
        }
    }
}

#[test]
fn scope_is_started_with_runc_properties_and_stopped() {
    if !Path::new("/sys/fs/cgroup/systemd/cgroup.procs").exists()
        || Path::new("/run/systemd/system").exists()
        || Command::new("dbus-daemon")
            .arg("--version")
            .output()
            .is_err()
    {
        return;
    }
    let slice = format!("berthtest{}.slice", std::process::id());
    let id = "ctr1";
    let scope = format!("berth-{id}.scope");
    let mut cleanup = Cleanup {
        child: None,
        // Every hierarchy the host mounts may get a directory for the slice.
        slice_dirs: std::fs::read_dir("/sys/fs/cgroup")
            .unwrap()
            .flatten()
            .map(|e| e.path().join(&slice))
            .collect(),
    };

    let (_bus, address) = Bus::start();
    let state = Arc::new(Mutex::new(FakeState {
        scope_path: format!("{slice}/{scope}"),
        ..Default::default()
    }));
    let _systemd = zbus::blocking::connection::Builder::address(address.as_str())
        .unwrap()
        .name("org.freedesktop.systemd1")
        .unwrap()
        .serve_at("/org/freedesktop/systemd1", Manager(state.clone()))
        .unwrap()
        .serve_at(UNIT_PATH, Unit(state.clone()))
        .unwrap()
        .build()
        .unwrap();
    // SAFETY: nextest runs each test in its own process; nothing else reads the environment now.
    unsafe { std::env::set_var("DBUS_SYSTEM_BUS_ADDRESS", &address) };

    let resources = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(64i64 << 20)
                .build()
                .unwrap(),
        )
        .cpu(
            LinuxCpuBuilder::default()
                .shares(512u64)
                .quota(30_000i64)
                .period(100_000u64)
                .build()
                .unwrap(),
        )
        .pids(LinuxPidsBuilder::default().limit(50i64).build().unwrap())
        .build()
        .unwrap();
    let manager = new_manager(
        Some(&format!("{slice}:berth:{id}")),
        id,
        CgroupDriver::Systemd,
    )
    .unwrap();
    manager.create(Some(&resources)).unwrap();
    assert!(
        state.lock().unwrap().units.is_empty(),
        "a scope starts with its first process"
    );

    let child = Command::new("sleep").arg("1000").spawn().unwrap();
    let pid = child.id() as i32;
    cleanup.child = Some(child);
    manager.add_process(pid).unwrap();

    {
        let state = state.lock().unwrap();
        let (props, active) = &state.units[&scope];
        assert_eq!(active, "active");
        let get = |name: &str| {
            props
                .get(name)
                .unwrap_or_else(|| panic!("{name} missing"))
                .try_clone()
                .unwrap()
        };
        assert_eq!(Vec::<u32>::try_from(get("PIDs")).unwrap(), vec![pid as u32]);
        assert!(bool::try_from(get("Delegate")).unwrap());
        assert!(!bool::try_from(get("DefaultDependencies")).unwrap());
        assert_eq!(String::try_from(get("Slice")).unwrap(), slice);
        assert_eq!(u64::try_from(get("MemoryLimit")).unwrap(), 64 << 20);
        assert_eq!(u64::try_from(get("CPUShares")).unwrap(), 512);
        assert_eq!(u64::try_from(get("CPUQuotaPerSecUSec")).unwrap(), 300_000);
        assert_eq!(u64::try_from(get("TasksMax")).unwrap(), 50);
    }
    // The process is in the unit's cgroup in every hierarchy, with the limits applied.
    for controller in ["systemd", "memory", "pids", "freezer"] {
        let procs = Path::new("/sys/fs/cgroup")
            .join(controller)
            .join(&slice)
            .join(&scope)
            .join("cgroup.procs");
        let procs = std::fs::read_to_string(&procs).unwrap();
        assert!(
            procs.lines().any(|l| l == pid.to_string()),
            "{controller}: {procs}"
        );
    }
    let limit = Path::new("/sys/fs/cgroup/memory")
        .join(&slice)
        .join(&scope)
        .join("memory.limit_in_bytes");
    assert_eq!(
        std::fs::read_to_string(limit).unwrap().trim(),
        (64u64 << 20).to_string()
    );

    let more = LinuxResourcesBuilder::default()
        .pids(LinuxPidsBuilder::default().limit(80i64).build().unwrap())
        .build()
        .unwrap();
    manager.update(&more).unwrap();
    {
        let state = state.lock().unwrap();
        let tasks_max = state.units[&scope].0["TasksMax"].try_clone().unwrap();
        assert_eq!(u64::try_from(tasks_max).unwrap(), 80);
    }

    let mut child = cleanup.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    manager.destroy().unwrap();
    assert_eq!(state.lock().unwrap().units[&scope].1, "inactive");
    for controller in ["systemd", "memory", "pids", "freezer"] {
        assert!(
            !Path::new("/sys/fs/cgroup")
                .join(controller)
                .join(&slice)
                .join(&scope)
                .exists(),
            "{controller}"
        );
    }
    manager.destroy().unwrap();
}
