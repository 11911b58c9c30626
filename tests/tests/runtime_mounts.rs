//! Mounts, masked and read-only paths, the read-only rootfs and /dev as seen
//! from inside a busybox container. Root.

use berth_tests::bundle::{Bundle, Spec};
use berth_tests::image::{Layer, busybox_layer};
use berth_tests::runtime::Runtime;
use berth_tests::tempdir::TempDir;
use serde_json::json;

fn run(spec: Spec) -> (String, String, i32) {
    let runtime = Runtime::from_env().unwrap();
    let bundle = Bundle::busybox(spec).unwrap();
    let out = runtime.run(&bundle).unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}

fn run_ok(spec: Spec) -> String {
    let (stdout, stderr, code) = run(spec);
    assert_eq!(code, 0, "stdout {stdout:?} stderr {stderr:?}");
    stdout
}

#[test]
fn tmpfs_mount_gets_its_options_and_size() {
    let spec = Spec::new()
        .tmpfs("/scratch", &["nosuid", "noexec", "size=1m", "mode=1730"])
        .shell(
            "grep ' /scratch ' /proc/mounts; stat -c %a /scratch; \
         dd if=/dev/zero of=/scratch/big bs=1k count=2048 2>&1 || echo full",
        );
    let out = run_ok(spec);
    let mount = out.lines().next().unwrap();
    let fields: Vec<&str> = mount.split_whitespace().collect();
    assert_eq!(fields[2], "tmpfs", "{out}");
    for option in ["nosuid", "noexec", "size=1024k", "mode=1730"] {
        assert!(
            fields[3].split(',').any(|o| o == option),
            "{option} missing in {mount}"
        );
    }
    assert_eq!(out.lines().nth(1), Some("1730"));
    assert!(
        out.contains("No space left on device") && out.ends_with("full\n"),
        "{out}"
    );
}

#[test]
fn read_only_bind_mount_is_readable_but_not_writable() {
    let host = TempDir::new("berth-bind").unwrap();
    std::fs::write(host.join("hello"), "from host").unwrap();
    let spec = Spec::new()
        .bind(host.path(), "/data", &["ro"])
        .shell("cat /data/hello; echo; touch /data/new 2>&1; echo rc=$?");
    let out = run_ok(spec);
    assert!(out.starts_with("from host\n"), "{out}");
    assert!(
        out.contains("Read-only file system") && out.contains("rc=1"),
        "{out}"
    );
    assert!(!host.join("new").exists());
}

#[test]
fn read_write_bind_mount_shares_writes_with_the_host() {
    let host = TempDir::new("berth-bind").unwrap();
    run_ok(
        Spec::new()
            .bind(host.path(), "/data", &[])
            .shell("echo written > /data/out"),
    );
    assert_eq!(
        std::fs::read_to_string(host.join("out")).unwrap(),
        "written\n"
    );
}

#[test]
fn container_mounts_stay_out_of_the_host_mount_namespace() {
    let runtime = Runtime::from_env().unwrap();
    let bundle = Bundle::busybox(Spec::sleeper()).unwrap();
    let container = runtime.start(&bundle).unwrap();
    container.wait_stdout("up").unwrap();
    let host_mounts = berth_tests::tempdir::mounts_under(bundle.path());
    assert!(
        host_mounts.is_empty(),
        "container mounts visible on the host: {host_mounts:?}"
    );
}

#[test]
fn masked_paths_are_empty_and_unreadable() {
    // /proc/timer_list has content on the host; masked, it reads as empty.
    assert!(!std::fs::read("/proc/timer_list").unwrap().is_empty());
    let secrets = Layer::new()
        .file("/etc/secret", "s3cret", 0o644)
        .file("/vault/key", "k", 0o644);
    let spec = Spec::new()
        .masked_paths(&["/proc/timer_list", "/etc/secret", "/vault"])
        .shell(
            "wc -c < /proc/timer_list; wc -c < /etc/secret; ls -A /vault | wc -l; \
         (echo x > /etc/secret) 2>/dev/null; wc -c < /etc/secret",
        );
    let bundle = Bundle::from_layers(&[busybox_layer().unwrap(), secrets], spec).unwrap();
    let out = Runtime::from_env().unwrap().run_ok(&bundle).unwrap();
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    // Writes to a masked file go nowhere.
    assert_eq!(lines, ["0", "0", "0", "0"], "{out}");
    assert_eq!(
        std::fs::read(bundle.rootfs().join("etc/secret")).unwrap(),
        b"s3cret"
    );
}

#[test]
fn readonly_paths_reject_writes() {
    let spec = Spec::new().readonly_paths(&["/proc/sys", "/etc"]).shell(
        "cat /etc/hostname; touch /etc/new 2>&1; (echo 1 > /proc/sys/kernel/domainname) 2>&1; \
         touch /tmp/fine && echo tmp-ok",
    );
    let out = run_ok(spec);
    assert!(out.starts_with("berth-test\n"), "{out}");
    assert_eq!(out.matches("Read-only file system").count(), 2, "{out}");
    assert!(out.ends_with("tmp-ok\n"), "{out}");
}

#[test]
fn readonly_rootfs_fails_writes_with_erofs() {
    let spec = Spec::new()
        .readonly(true)
        .shell("touch /new 2>&1; mkdir /tmp/d 2>&1; echo ok > /dev/shm/f && cat /dev/shm/f");
    let out = run_ok(spec);
    assert_eq!(out.matches("Read-only file system").count(), 2, "{out}");
    assert!(out.ends_with("ok\n"), "/dev/shm stays writable: {out}");
}

#[test]
fn default_devices_are_present_and_others_are_denied() {
    let out = run_ok(Spec::new().shell(
        "for d in null zero full random urandom tty; do stat -c '%n %F %t:%T' /dev/$d; done; \
         for l in fd stdin stdout stderr ptmx; do readlink /dev/$l; done; \
         (echo x > /dev/full) 2>&1; \
         (mknod /dev/sda b 8 0 && head -c1 /dev/sda) 2>&1; true",
    ));
    for device in [
        "/dev/null character special file 1:3",
        "/dev/zero character special file 1:5",
        "/dev/full character special file 1:7",
        "/dev/random character special file 1:8",
        "/dev/urandom character special file 1:9",
        "/dev/tty character special file 5:0",
    ] {
        assert!(out.contains(device), "{device} missing:\n{out}");
    }
    for link in [
        "/proc/self/fd",
        "/proc/self/fd/0",
        "/proc/self/fd/1",
        "/proc/self/fd/2",
        "pts/ptmx",
    ] {
        assert!(out.lines().any(|l| l == link), "{link} missing:\n{out}");
    }
    assert!(out.contains("No space left on device"), "{out}");
    // mknod is allowed (CAP_MKNOD) but the device cgroup denies opening it.
    assert!(
        out.contains("head: /dev/sda: Operation not permitted"),
        "{out}"
    );
}

#[test]
fn dev_shm_is_a_world_writable_tmpfs() {
    let out = run_ok(Spec::new().shell("grep ' /dev/shm ' /proc/mounts; stat -c %a /dev/shm"));
    assert!(out.starts_with("shm /dev/shm tmpfs "), "{out}");
    assert_eq!(out.lines().nth(1), Some("1777"));
}

#[test]
fn rslave_bind_mounts_receive_later_host_mounts_and_rprivate_ones_do_not() {
    let host = TempDir::new("berth-propagation").unwrap();
    std::fs::create_dir(host.join("sub")).unwrap();
    let dir = host.path().to_path_buf();
    // The host side lives in a private mount namespace of this test, so the
    // mounts below never reach the real host; the runtime is started from
    // it, so the container's namespace is a copy of it.
    let out = berth_tests::mountns::in_private_mount_ns(move || {
        use nix::mount::{MsFlags, mount};
        mount(
            Some(&dir),
            &dir,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .unwrap();
        mount(
            None::<&str>,
            &dir,
            None::<&str>,
            MsFlags::MS_SHARED,
            None::<&str>,
        )
        .unwrap();

        let runtime = Runtime::from_env().unwrap();
        let spec =
            Spec::sleeper()
                .bind(&dir, "/slave", &["rslave"])
                .bind(&dir, "/private", &["rprivate"]);
        let bundle = Bundle::busybox(spec).unwrap();
        let container = runtime.start(&bundle).unwrap();
        container.wait_stdout("up").unwrap();

        let sub = dir.join("sub");
        mount(
            Some("tmpfs"),
            &sub,
            Some("tmpfs"),
            MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        std::fs::write(sub.join("marker"), "x").unwrap();
        let out = container
            .exec(&["sh", "-c", "ls /slave/sub; echo --; ls /private/sub"])
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
    .unwrap();
    assert_eq!(out, "marker\n--\n");
}

#[test]
fn spec_devices_are_created_and_allowed_by_the_device_cgroup() {
    let device = json!({
        "path": "/dev/berth-null", "type": "c", "major": 1, "minor": 3,
        "fileMode": 0o620, "uid": 1000, "gid": 1000
    });
    // Created but not allowed (unlike null, zero & co. runtimes always allow).
    let denied = json!({"path": "/dev/berth-sda", "type": "b", "major": 8, "minor": 0});
    let allow = json!({"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"});
    let spec = Spec::new()
        .set("/linux/devices", json!([device, denied]))
        .set(
            "/linux/resources/devices",
            json!([{"allow": false, "access": "rwm"}, allow]),
        )
        .shell(
            "stat -c '%t:%T %a %u:%g' /dev/berth-null; echo x > /dev/berth-null && echo wrote; \
             (head -c1 /dev/berth-sda) 2>&1; true",
        );
    let out = run_ok(spec);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1:3 620 1000:1000", "{out}");
    assert_eq!(lines[1], "wrote", "{out}");
    assert!(lines[2].contains("Operation not permitted"), "{out}");
}

/// Ids as `stat -c %u:%g` prints them for every path in `paths`.
fn owners(spec: Spec, paths: &[&str]) -> Vec<String> {
    let out = run_ok(spec.shell(&format!("stat -c %u:%g {}", paths.join(" "))));
    out.lines().map(str::to_string).collect()
}

#[test]
fn idmapped_bind_mount_shows_files_under_the_mapped_ids() {
    let data = TempDir::new("berth-idmap").unwrap();
    std::fs::set_permissions(
        data.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    std::fs::write(data.join("by-root"), "r").unwrap();
    std::fs::write(data.join("by-7"), "7").unwrap();
    std::os::unix::fs::chown(data.join("by-7"), Some(7), Some(8)).unwrap();
    let map = |host: u32| json!([{"containerID": 0, "hostID": host, "size": 100}]);
    let idmapped = Spec::new().mount(json!({
        "destination": "/data", "type": "bind", "source": data.path(),
        "options": ["rbind"], "uidMappings": map(1000), "gidMappings": map(2000)
    }));
    assert_eq!(
        owners(idmapped.clone(), &["/data/by-root", "/data/by-7"]),
        ["1000:2000", "1007:2008"]
    );
    // Files made through the mount by a mapped id land on disk unmapped.
    let writer = idmapped
        .user(1005, 2005)
        .shell("echo w > /data/made-inside");
    run_ok(writer);
    let made = std::fs::metadata(data.join("made-inside")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((made.uid(), made.gid()), (5, 5));
    // The host's view of the source is unchanged.
    let host = std::fs::metadata(data.join("by-7")).unwrap();
    assert_eq!((host.uid(), host.gid()), (7, 8));
}

#[test]
fn idmap_option_maps_a_mount_with_the_containers_user_namespace() {
    let data = TempDir::new("berth-idmap-userns").unwrap();
    std::fs::write(data.join("by-root"), "r").unwrap();
    // Mounted on a directory the image has: the container's root may not
    // create one in a rootfs owned by the host's root.
    let in_userns = Spec::new().namespace("user").id_mapping(100_000, 65_536);
    let plain = in_userns.clone().mount(json!({
        "destination": "/tmp", "type": "bind", "source": data.path(), "options": ["rbind"]
    }));
    let idmapped = in_userns.mount(json!({
        "destination": "/tmp", "type": "bind", "source": data.path(),
        "options": ["rbind", "idmap"]
    }));
    // Host root is unmapped in the container's user namespace...
    assert_eq!(owners(plain, &["/tmp/by-root"]), ["65534:65534"]);
    // ...but through the idmapped mount the file belongs to the container's root.
    assert_eq!(owners(idmapped, &["/tmp/by-root"]), ["0:0"]);
}
