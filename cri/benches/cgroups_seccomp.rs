//! Per-container costs of the cgroup and seccomp modules on the container start path:
//! compiling the RuntimeDefault seccomp profile (done in the parent for every container)
//! and a full cgroup lifecycle (create with limits, add a process, stats, destroy).
//! Run as root: `cargo bench -p berth-cri --bench cgroups_seccomp`.

use std::process::Command;
use std::time::{Duration, Instant};

use berth_cri::oci::cgroups::{CgroupDriver, new_manager};
use berth_cri::oci::seccomp::{compile, runtime_default_profile};
use oci_spec::runtime::{
    LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder,
};

fn report(name: &str, samples: &mut [Duration]) {
    samples.sort();
    let median = samples[samples.len() / 2];
    let p90 = samples[samples.len() * 9 / 10];
    println!(
        "{name}: median {median:?}, p90 {p90:?} over {} runs",
        samples.len()
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let profile = runtime_default_profile();
    let mut first = Vec::new();
    for i in 0..100 {
        // A rule naming a syscall nobody has changes the cache key but not the filter.
        let mut variant = profile.clone();
        let mut rules = variant.syscalls().clone().unwrap_or_default();
        let mut extra = rules[0].clone();
        extra.set_names(vec![format!("berth_bench_unknown_{i}")]);
        rules.push(extra);
        variant.set_syscalls(Some(rules));
        let start = Instant::now();
        let filter = compile(&variant)?;
        first.push(start.elapsed());
        assert!(!filter.is_empty());
    }
    report("seccomp compile RuntimeDefault (first time)", &mut first);
    let mut cached = Vec::new();
    for _ in 0..1000 {
        let start = Instant::now();
        compile(&profile)?;
        cached.push(start.elapsed());
    }
    report("seccomp compile RuntimeDefault (seen before)", &mut cached);

    let resources = LinuxResourcesBuilder::default()
        .memory(LinuxMemoryBuilder::default().limit(64i64 << 20).build()?)
        .cpu(
            LinuxCpuBuilder::default()
                .shares(512u64)
                .quota(50_000i64)
                .period(100_000u64)
                .build()?,
        )
        .pids(LinuxPidsBuilder::default().limit(64i64).build()?)
        .build()?;
    let mut child = Command::new("sleep").arg("1000").spawn()?;
    let pid = child.id() as i32;
    let mut samples = Vec::new();
    for i in 0..100 {
        let path = format!("/berth-bench-{}-{i}", std::process::id());
        let start = Instant::now();
        let manager = new_manager(Some(&path), "bench", CgroupDriver::Cgroupfs)?;
        manager.create(Some(&resources))?;
        manager.add_process(pid)?;
        manager.stats()?;
        // Move the process out again so the cgroup can be removed.
        for dir in manager.paths().values() {
            let root = dir.parent().ok_or("cgroup dir has a parent")?;
            std::fs::write(root.join("cgroup.procs"), pid.to_string())?;
        }
        manager.destroy()?;
        samples.push(start.elapsed());
    }
    child.kill()?;
    child.wait()?;
    report("cgroup v1 create+add_process+stats+destroy", &mut samples);
    Ok(())
}
