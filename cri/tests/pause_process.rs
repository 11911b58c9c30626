//! The pause process: init of the pod's PID namespace, reaper of orphans,
//! exit 0 on SIGTERM/SIGINT, holder of joinable namespaces.

mod network_support;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use berth_cri::sandbox::netns::{self, NetnsDir};
use berth_cri::sandbox::pause::{PauseError, PauseProcess, SandboxNamespaces, spawn_pause};
use network_support::{isolated, run, wait_for};
use nix::sys::wait::WaitStatus;

const PAUSE: &str = env!("CARGO_BIN_EXE_berth-pause");

/// Kills and reaps the pause process if the test ends early.
struct Running(Option<PauseProcess>);

impl Running {
    fn start(ns: &SandboxNamespaces) -> Self {
        let pause = spawn_pause(Path::new(PAUSE), ns).unwrap();
        wait_for(
            "pause to block its signals",
            Duration::from_secs(10),
            || pause.is_ready(),
        );
        Running(Some(pause))
    }

    fn get(&self) -> &PauseProcess {
        self.0.as_ref().unwrap()
    }

    fn stop_with(mut self, signal: nix::sys::signal::Signal) -> WaitStatus {
        let pause = self.0.take().unwrap();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pause.pid()), signal).unwrap();
        pause.wait().unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}

fn status_field(pid: i32, field: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{field}:"))
                .map(|v| v.trim().to_string())
        })
}

fn ino(path: impl AsRef<Path>) -> u64 {
    std::fs::metadata(path).unwrap().ino()
}

fn host_namespaces_but_pid_and_ipc() -> SandboxNamespaces {
    SandboxNamespaces {
        host_network: true,
        ..SandboxNamespaces::default()
    }
}

#[test]
fn pid_1_of_a_new_pid_namespace_reaps_orphans() {
    let pause = Running::start(&host_namespaces_but_pid_and_ipc());
    let pid = pause.get().pid();
    let nspid = status_field(pid, "NSpid").unwrap();
    assert!(
        nspid.ends_with("\t1"),
        "NSpid {nspid:?}: pause is PID 1 in its namespace"
    );
    println!(
        "berth-pause VmRSS: {} (RssAnon {}, RssFile {})",
        status_field(pid, "VmRSS").unwrap(),
        status_field(pid, "RssAnon").unwrap(),
        status_field(pid, "RssFile").unwrap()
    );

    // A process joined to the pod's PID namespace leaves an orphan behind:
    // the shell exits, its background sleep is re-parented to pause.
    run(Command::new("nsenter")
        .arg(format!("--target={pid}"))
        .args([
            "--pid",
            "--",
            "sh",
            "-c",
            "sleep 300 </dev/null >/dev/null 2>&1 &",
        ]))
    .unwrap();
    let orphan = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .find(|&p| status_field(p, "PPid").as_deref() == Some(&pid.to_string()))
        .expect("the orphan is a child of pause");
    assert_eq!(status_field(orphan, "Name").as_deref(), Some("sleep"));
    // Killed, it becomes a zombie until pause reaps it.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(orphan),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_for("pause to reap the orphan", Duration::from_secs(10), || {
        !Path::new(&format!("/proc/{orphan}")).exists()
    });

    assert_eq!(
        pause.stop_with(nix::sys::signal::Signal::SIGTERM),
        WaitStatus::Exited(nix::unistd::Pid::from_raw(pid), 0)
    );
}

#[test]
fn exits_0_on_sigint_also_in_the_host_pid_namespace() {
    let ns = SandboxNamespaces {
        host_pid: true,
        ..host_namespaces_but_pid_and_ipc()
    };
    let pause = Running::start(&ns);
    let pid = pause.get().pid();
    assert!(
        !status_field(pid, "NSpid").unwrap().contains('\t'),
        "host PID namespace"
    );
    assert!(pause.get().namespaces().pid.is_none());
    assert_eq!(
        pause.stop_with(nix::sys::signal::Signal::SIGINT),
        WaitStatus::Exited(nix::unistd::Pid::from_raw(pid), 0)
    );
}

#[test]
fn pod_namespaces_are_joinable() {
    isolated("pod_namespaces_are_joinable", || {
        let base = tempfile::tempdir()?;
        let pod_netns = NetnsDir::new(base.path()).create()?;
        let ns = SandboxNamespaces {
            netns: Some(pod_netns.clone()),
            hostname: Some("pod-host".into()),
            ..SandboxNamespaces::default()
        };
        let pause = Running::start(&ns);
        let paths = pause.get().namespaces().clone();
        let net = paths.network.clone().unwrap();
        assert_eq!(
            net,
            Path::new(&format!("/proc/{}/ns/net", pause.get().pid()))
        );
        assert_eq!(ino(&net), ino(&pod_netns), "pause joined the pod netns");
        for own in [
            paths.ipc.clone().unwrap(),
            paths.uts.clone().unwrap(),
            paths.pid.clone().unwrap(),
        ] {
            let name = own.file_name().unwrap().to_owned();
            assert_ne!(
                ino(&own),
                ino(Path::new("/proc/self/ns").join(name)),
                "{own:?} is new"
            );
        }
        let uts = paths.uts.unwrap();
        let hostname = run(Command::new("nsenter")
            .arg(format!("--uts={}", uts.display()))
            .arg("hostname"))?;
        assert_eq!(hostname.trim(), "pod-host");
        let ipc = paths.ipc.unwrap();
        run(Command::new("nsenter")
            .arg(format!("--ipc={}", ipc.display()))
            .arg("true"))?;
        let links = run(Command::new("nsenter")
            .arg(format!("--net={}", net.display()))
            .args(["ip", "-o", "link"]))?;
        assert_eq!(
            links.lines().count(),
            1,
            "only lo in the pod netns: {links}"
        );
        // A process joining the PID namespace is not PID 1 there.
        let pid_ns = paths.pid.unwrap();
        let inner = run(Command::new("nsenter")
            .arg(format!("--pid={}", pid_ns.display()))
            .args(["--", "sh", "-c", "echo $$"]))?;
        assert_ne!(inner.trim(), "1");
        drop(pause);
        netns::remove(&pod_netns)?;
        Ok(())
    });
}

#[test]
fn host_ipc_is_not_replaced() {
    let ns = SandboxNamespaces {
        host_ipc: true,
        ..host_namespaces_but_pid_and_ipc()
    };
    let pause = Running::start(&ns);
    let pid = pause.get().pid();
    assert!(pause.get().namespaces().ipc.is_none());
    assert!(pause.get().namespaces().network.is_none());
    assert_eq!(ino(format!("/proc/{pid}/ns/ipc")), ino("/proc/self/ns/ipc"));
    assert_eq!(ino(format!("/proc/{pid}/ns/net")), ino("/proc/self/ns/net"));
    assert_eq!(ino(format!("/proc/{pid}/ns/uts")), ino("/proc/self/ns/uts"));
}

#[test]
fn bad_input_is_refused_and_leaves_no_process() {
    let err = spawn_pause(Path::new(PAUSE), &SandboxNamespaces::default()).unwrap_err();
    assert!(
        matches!(err, PauseError::Invalid { field: "netns", .. }),
        "{err}"
    );
    let err = spawn_pause(
        Path::new(PAUSE),
        &SandboxNamespaces {
            netns: Some("/proc/self/ns/net".into()),
            hostname: Some("x".repeat(65)),
            ..SandboxNamespaces::default()
        },
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            PauseError::Invalid {
                field: "hostname",
                ..
            }
        ),
        "{err}"
    );
    let err = spawn_pause(
        Path::new("/nonexistent/berth-pause"),
        &host_namespaces_but_pid_and_ipc(),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("executing berth-pause failed"),
        "{err}"
    );
    // The failed child was reaped: we have no children left.
    assert_eq!(
        nix::sys::wait::waitpid(None, Some(nix::sys::wait::WaitPidFlag::WNOHANG)),
        Err(nix::errno::Errno::ECHILD)
    );
}
