//! What the cgroup driver tests share: a cgroup that holds only processes the test
//! started. On drop they are killed and the cgroup (and any directory the test made
//! around it) is removed, also when the test fails.

use std::path::PathBuf;
use std::process::{Child, Command};

use berth_cri::oci::cgroups::{CgroupManager, V2Manager};
use oci_spec::runtime::{
    LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxResources, LinuxResourcesBuilder,
};

/// Lets one guard hold either a boxed manager (from `new_manager`) or a concrete one.
pub trait AsManager {
    fn as_manager(&self) -> &dyn CgroupManager;
}

impl AsManager for Box<dyn CgroupManager> {
    fn as_manager(&self) -> &dyn CgroupManager {
        self.as_ref()
    }
}

impl AsManager for V2Manager {
    fn as_manager(&self) -> &dyn CgroupManager {
        self
    }
}

pub struct TestCgroup<M: AsManager> {
    pub manager: M,
    pub children: Vec<Child>,
    /// Directories made for the test around the cgroup, removed after it, innermost first.
    pub scaffolding: Vec<PathBuf>,
}

impl<M: AsManager> TestCgroup<M> {
    pub fn new(manager: M, scaffolding: Vec<PathBuf>) -> Self {
        TestCgroup {
            manager,
            children: Vec::new(),
            scaffolding,
        }
    }

    /// Starts `command` and moves it into the cgroup; returns its pid.
    pub fn spawn(&mut self, command: &mut Command) -> i32 {
        let child = command.spawn().unwrap();
        let pid = child.id() as i32;
        self.children.push(child);
        self.manager.as_manager().add_process(pid).unwrap();
        pid
    }

    /// Kills and reaps every process the test started, so the cgroup can be removed.
    pub fn kill_children(&mut self) {
        for child in &mut self.children {
            child.kill().unwrap();
            child.wait().unwrap();
        }
        self.children.clear();
    }
}

impl<M: AsManager> Drop for TestCgroup<M> {
    fn drop(&mut self) {
        let manager = self.manager.as_manager();
        let _ = manager.thaw();
        // Everything in the cgroup descends from processes this test started.
        for pid in manager.pids().unwrap_or_default() {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = manager.destroy();
        for dir in &self.scaffolding {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Resources whose only device rule allows reading loop block devices (major 7):
/// what the device tests grant after checking that /dev/loop0 is denied.
pub fn allow_reading_loop_devices() -> LinuxResources {
    LinuxResourcesBuilder::default()
        .devices(vec![
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(LinuxDeviceType::B)
                .major(7i64)
                .access("r")
                .build()
                .unwrap(),
        ])
        .build()
        .unwrap()
}
