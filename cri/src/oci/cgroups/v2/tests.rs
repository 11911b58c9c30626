//! The v2 file logic against a directory of plain files standing in for a cgroup (the
//! kernel side is covered by the root tests in cri/tests/cgroups_v2.rs).

use super::*;
use oci_spec::runtime::{
    LinuxBlockIoBuilder, LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder,
    LinuxResourcesBuilder,
};

struct FakeCgroup(PathBuf);

impl FakeCgroup {
    fn new(name: &str, files: &[(&str, &str)]) -> Self {
        let root =
            std::env::temp_dir().join(format!("berth-fake-v2-{name}-{}", std::process::id()));
        let dir = root.join("ctr");
        std::fs::create_dir_all(&dir).unwrap();
        for (file, content) in files {
            std::fs::write(dir.join(file), content).unwrap();
        }
        FakeCgroup(root)
    }

    fn manager(&self) -> V2Manager {
        V2Manager::new(&self.0, "ctr")
    }

    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.0.join("ctr").join(file)).unwrap()
    }
}

impl Drop for FakeCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const CONTROL_FILES: &[(&str, &str)] = &[
    ("cpu.weight", "100"),
    ("cpu.max", "max 100000"),
    ("memory.current", "1048576"),
    ("memory.max", "max"),
    ("memory.swap.max", "max"),
    ("memory.low", "0"),
    ("pids.max", "max"),
    ("io.weight", "default 100"),
];

#[test]
fn resources_are_converted_to_v2_files() {
    let cg = FakeCgroup::new("apply", CONTROL_FILES);
    let r = LinuxResourcesBuilder::default()
        .cpu(
            LinuxCpuBuilder::default()
                .shares(1024u64)
                .quota(25_000i64)
                .period(50_000u64)
                .build()
                .unwrap(),
        )
        .memory(
            LinuxMemoryBuilder::default()
                .limit(64i64 << 20)
                .swap(96i64 << 20)
                .reservation(1i64 << 20)
                .build()
                .unwrap(),
        )
        .pids(LinuxPidsBuilder::default().limit(-1i64).build().unwrap())
        .block_io(
            LinuxBlockIoBuilder::default()
                .weight(1000u16)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    cg.manager().update(&r).unwrap();
    assert_eq!(cg.read("cpu.weight"), "100");
    assert_eq!(cg.read("cpu.max"), "25000 50000");
    assert_eq!(cg.read("memory.max"), (64u64 << 20).to_string());
    assert_eq!(cg.read("memory.swap.max"), (32u64 << 20).to_string());
    assert_eq!(cg.read("memory.low"), (1u64 << 20).to_string());
    assert_eq!(cg.read("pids.max"), "max");
    assert_eq!(cg.read("io.weight"), "10000");
}

#[test]
fn limit_below_current_usage_is_refused() {
    let cg = FakeCgroup::new("usage", CONTROL_FILES);
    let r = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(4096i64)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let err = cg.manager().update(&r).unwrap_err().to_string();
    assert!(err.starts_with("linux.resources.memory.limit"), "{err}");
    assert_eq!(cg.read("memory.max"), "max", "nothing written");
}

#[test]
fn unified_keys_are_written_last_and_checked() {
    let cg = FakeCgroup::new("unified", CONTROL_FILES);
    let r = LinuxResourcesBuilder::default()
        .cpu(LinuxCpuBuilder::default().shares(2048u64).build().unwrap())
        .unified(
            [("cpu.weight".to_string(), "77".to_string())]
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>(),
        )
        .build()
        .unwrap();
    cg.manager().update(&r).unwrap();
    assert_eq!(cg.read("cpu.weight"), "77");
    let bad = LinuxResourcesBuilder::default()
        .unified(
            [("../escape".to_string(), "1".to_string())]
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>(),
        )
        .build()
        .unwrap();
    let err = cg.manager().update(&bad).unwrap_err().to_string();
    assert!(
        err.starts_with("linux.resources.unified.../escape"),
        "{err}"
    );
    let missing = LinuxResourcesBuilder::default()
        .unified(
            [("rdma.max".to_string(), "x".to_string())]
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>(),
        )
        .build()
        .unwrap();
    let err = cg.manager().update(&missing).unwrap_err().to_string();
    assert!(err.contains("rdma controller"), "{err}");
}

#[test]
fn stats_are_read_from_v2_files() {
    let cg = FakeCgroup::new(
        "stats",
        &[
            (
                "cpu.stat",
                "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 10\nnr_throttled 2\nthrottled_usec 300\n",
            ),
            ("memory.current", "8192"),
            ("memory.max", "16384"),
            ("memory.peak", "12288"),
            ("memory.stat", "anon 4096\nfile 2048\n"),
            ("memory.events", "low 0\nhigh 0\nmax 5\noom 2\noom_kill 1\n"),
            ("memory.swap.current", "0"),
            ("memory.swap.max", "max"),
            ("pids.current", "3"),
            ("pids.max", "max"),
            ("hugetlb.2MB.current", "2097152"),
            ("hugetlb.2MB.events", "max 1\n"),
            (
                "io.stat",
                "8:0 rbytes=4096 wbytes=512 rios=2 wios=1 dbytes=0 dios=0\n",
            ),
        ],
    );
    let s = cg.manager().stats().unwrap();
    assert_eq!(s.cpu.usage.total, 1_500_000);
    assert_eq!(s.cpu.usage.kernel, 500_000);
    assert_eq!(s.cpu.throttling.throttled_time, 300_000);
    assert_eq!(s.memory.usage.usage, 8192);
    assert_eq!(s.memory.usage.limit, 16384);
    assert_eq!(s.memory.usage.max, 12288);
    assert_eq!(s.memory.usage.failcnt, 5);
    assert_eq!((s.memory.oom, s.memory.oom_kill), (2, 1));
    assert_eq!((s.memory.rss, s.memory.cache), (4096, 2048));
    assert_eq!(s.memory.swap.limit, u64::MAX);
    assert_eq!((s.pids.current, s.pids.limit), (3, 0));
    assert_eq!(s.hugetlb["2MB"].usage, 2 << 20);
    assert_eq!(s.hugetlb["2MB"].failcnt, 1);
    assert_eq!(s.blkio.io_service_bytes_recursive.len(), 2);
}
