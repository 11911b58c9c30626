//! The spec's `process` (args, env, cwd, user, umask, rlimits, capabilities,
//! no_new_privileges, oom_score_adj), seccomp and sysctls, as seen from
//! inside a busybox container. Root.

use berth_tests::bundle::{Bundle, DEFAULT_CAPABILITIES, Spec};
use berth_tests::runtime::Runtime;
use serde_json::json;

fn run(spec: Spec) -> String {
    let runtime = Runtime::from_env().unwrap();
    runtime.run_ok(&Bundle::busybox(spec).unwrap()).unwrap()
}

/// The value of `field` in /proc/self/status as printed by the container.
fn status_field<'a>(status: &'a str, field: &str) -> &'a str {
    let prefix = format!("{field}:");
    let line = status.lines().find(|l| l.starts_with(&prefix));
    line.unwrap_or_else(|| panic!("{field} missing in {status}"))[prefix.len()..].trim()
}

fn cap_mask(caps: &[&str]) -> u64 {
    const NUMBERS: &[(&str, u32)] = &[
        ("CAP_CHOWN", 0),
        ("CAP_DAC_OVERRIDE", 1),
        ("CAP_FOWNER", 3),
        ("CAP_FSETID", 4),
        ("CAP_KILL", 5),
        ("CAP_SETGID", 6),
        ("CAP_SETUID", 7),
        ("CAP_SETPCAP", 8),
        ("CAP_NET_BIND_SERVICE", 10),
        ("CAP_NET_RAW", 13),
        ("CAP_SYS_CHROOT", 18),
        ("CAP_SYS_ADMIN", 21),
        ("CAP_MKNOD", 27),
        ("CAP_AUDIT_WRITE", 29),
        ("CAP_SETFCAP", 31),
    ];
    caps.iter()
        .map(|cap| {
            NUMBERS
                .iter()
                .find(|(name, _)| name == cap)
                .expect("known capability")
                .1
        })
        .fold(0, |mask, bit| mask | 1 << bit)
}

#[test]
fn args_env_and_cwd_are_applied() {
    let spec = Spec::new()
        .args(&[
            "sh",
            "-c",
            "echo \"$0|$1|$FOO|$(pwd)|$HOME\"",
            "zero",
            "one",
        ])
        .env("FOO", "bar baz")
        .cwd("/tmp");
    // HOME comes from /etc/passwd when the spec does not set it.
    assert_eq!(run(spec), "zero|one|bar baz|/tmp|/root\n");
}

#[test]
fn missing_cwd_is_created() {
    assert_eq!(
        run(Spec::new().cwd("/does/not/exist").shell("pwd")),
        "/does/not/exist\n"
    );
}

#[test]
fn user_and_additional_gids_are_applied() {
    let spec = Spec::new()
        .user(1234, 1235)
        .additional_gids(&[3000, 3001])
        .shell("id -u; id -g; grep -E '^(Uid|Gid|Groups):' /proc/self/status");
    let out = run(spec);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("1234"));
    assert_eq!(lines.next(), Some("1235"));
    let status: String = lines.collect::<Vec<_>>().join("\n");
    assert_eq!(
        status_field(&status, "Uid")
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["1234"; 4]
    );
    assert_eq!(
        status_field(&status, "Gid")
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["1235"; 4]
    );
    assert_eq!(status_field(&status, "Groups"), "3000 3001");
}

#[test]
fn supplementary_groups_are_only_those_of_the_spec() {
    // User 1000 is a member of group 2000 in the image's /etc/group; like
    // runc and crun, a numeric user gets only the spec's additionalGids.
    let out = run(Spec::new()
        .user(1000, 1000)
        .shell("grep Groups: /proc/self/status"));
    assert_eq!(status_field(&out, "Groups"), "");
}

#[test]
fn umask_applies_to_created_files() {
    let out = run(Spec::new()
        .umask(0o027)
        .shell("umask; touch /tmp/f; stat -c %a /tmp/f"));
    assert_eq!(out, "0027\n640\n");
}

#[test]
fn rlimits_are_set() {
    let spec = Spec::new()
        .rlimit("RLIMIT_NOFILE", 123, 456)
        .rlimit("RLIMIT_NPROC", 77, 88)
        .shell("ulimit -n; ulimit -Hn; ulimit -u");
    assert_eq!(run(spec), "123\n456\n77\n");
}

#[test]
fn no_new_privileges_follows_the_spec() {
    let status = "grep NoNewPrivs /proc/self/status";
    assert_eq!(
        status_field(&run(Spec::new().shell(status)), "NoNewPrivs"),
        "1"
    );
    let out = run(Spec::new().no_new_privileges(false).shell(status));
    assert_eq!(status_field(&out, "NoNewPrivs"), "0");
}

#[test]
fn capability_sets_match_the_spec() {
    let read = "grep Cap /proc/self/status";
    let out = run(Spec::new().shell(read));
    let default_mask = format!("{:016x}", cap_mask(DEFAULT_CAPABILITIES));
    for field in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(status_field(&out, field), default_mask, "{field}: {out}");
    }
    assert_eq!(status_field(&out, "CapAmb"), "0000000000000000");

    let out = run(Spec::new().capabilities(&["CAP_KILL"]).shell(read));
    assert_eq!(status_field(&out, "CapEff"), "0000000000000020");
    assert_eq!(status_field(&out, "CapBnd"), "0000000000000020");
}

#[test]
fn unknown_capabilities_are_ignored() {
    // runc and crun skip capabilities they do not know (a spec written for a
    // newer kernel still runs); the known ones apply.
    let spec = Spec::new()
        .capabilities(&["CAP_KILL", "CAP_BOGUS"])
        .shell("grep CapEff /proc/self/status");
    assert_eq!(status_field(&run(spec), "CapEff"), "0000000000000020");
}

#[test]
fn hostname_change_needs_cap_sys_admin() {
    let change = "hostname changed 2>&1; hostname";
    let out = run(Spec::new().shell(change));
    assert!(out.contains("Operation not permitted"), "{out}");
    assert!(out.ends_with("berth-test\n"), "{out}");

    let mut caps = DEFAULT_CAPABILITIES.to_vec();
    caps.push("CAP_SYS_ADMIN");
    assert_eq!(
        run(Spec::new().capabilities(&caps).shell(change)),
        "changed\n"
    );
}

#[test]
fn mknod_needs_cap_mknod() {
    let make = "mknod /tmp/null c 1 3 2>&1 && echo made; true";
    assert_eq!(run(Spec::new().shell(make)), "made\n");
    let out = run(Spec::new().drop_capabilities(&["CAP_MKNOD"]).shell(make));
    assert!(
        out.contains("Operation not permitted") && !out.contains("made"),
        "{out}"
    );
}

#[test]
fn seccomp_rules_return_their_errno() {
    let profile = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"},
            {"names": ["chmod", "fchmod", "fchmodat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 95}
        ]
    });
    let spec = Spec::new().seccomp(profile).shell(
        "grep -E '^Seccomp:' /proc/self/status; mkdir /tmp/d 2>&1; chmod 600 /etc/passwd 2>&1; \
         touch /tmp/allowed && echo touched",
    );
    let out = run(spec);
    assert_eq!(status_field(&out, "Seccomp"), "2", "filter mode: {out}");
    assert!(
        out.contains("mkdir: can't create directory '/tmp/d': Operation not permitted"),
        "{out}"
    );
    assert!(
        out.contains("chmod: /etc/passwd: Operation not supported"),
        "{out}"
    );
    assert!(out.ends_with("touched\n"), "{out}");
}

/// Every x86_64 syscall name the installed kernel headers know.
fn all_syscalls() -> Vec<String> {
    let header = std::fs::read_to_string("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")
        .expect("kernel headers (linux-libc-dev) for the syscall list");
    header
        .lines()
        .filter_map(|l| l.strip_prefix("#define __NR_"))
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect()
}

#[test]
fn seccomp_default_action_applies_to_unlisted_syscalls() {
    let allowed: Vec<String> = all_syscalls()
        .into_iter()
        .filter(|s| s != "mkdir" && s != "mkdirat")
        .collect();
    let profile = json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 13,
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{"names": allowed, "action": "SCMP_ACT_ALLOW"}]
    });
    let out = run(Spec::new()
        .seccomp(profile)
        .shell("mkdir /tmp/d 2>&1; echo done"));
    assert_eq!(
        out,
        "mkdir: can't create directory '/tmp/d': Permission denied\ndone\n"
    );
}

#[test]
fn sysctls_apply_inside_the_network_namespace_only() {
    let host_before = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start");
    let spec = Spec::new()
        .sysctl("net.ipv4.ip_unprivileged_port_start", "77")
        .sysctl("net.ipv4.ping_group_range", "0 2147483647")
        .shell(
            "cat /proc/sys/net/ipv4/ip_unprivileged_port_start /proc/sys/net/ipv4/ping_group_range",
        );
    let out = run(spec);
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines, [vec!["77"], vec!["0", "2147483647"]], "{out}");
    let host_after = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start");
    assert_eq!(host_before.unwrap(), host_after.unwrap());
}

#[test]
fn oom_score_adj_is_set() {
    let out = run(Spec::new()
        .oom_score_adj(789)
        .shell("cat /proc/self/oom_score_adj"));
    assert_eq!(out, "789\n");
}

#[test]
fn seccomp_argument_conditions_select_the_calls() {
    // personality(PER_LINUX32 = 8) is refused, personality(PER_LINUX = 0) is not.
    let profile = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{
            "names": ["personality"],
            "action": "SCMP_ACT_ERRNO",
            "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]
        }]
    });
    let spec = Spec::new()
        .seccomp(profile)
        .shell("linux64 echo linux64-ok; linux32 echo linux32-ran 2>&1; true");
    let out = run(spec);
    assert!(out.starts_with("linux64-ok\n"), "{out}");
    assert!(
        !out.contains("linux32-ran") && out.contains("Operation not permitted"),
        "{out}"
    );
}

#[test]
fn seccomp_kill_action_kills_the_caller() {
    let profile = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_KILL_PROCESS"}]
    });
    // The shell survives and sees its child die by SIGSYS (31): status 159.
    let out = run(Spec::new()
        .seccomp(profile)
        .shell("mkdir /tmp/d; echo status=$?"));
    assert_eq!(out, "status=159\n");
}

#[test]
fn non_root_users_keep_only_ambient_capabilities_across_exec() {
    let read = "grep Cap /proc/self/status";
    let out = run(Spec::new().user(1000, 1000).shell(read));
    let default_mask = format!("{:016x}", cap_mask(DEFAULT_CAPABILITIES));
    assert_eq!(status_field(&out, "CapEff"), "0000000000000000", "{out}");
    assert_eq!(status_field(&out, "CapPrm"), "0000000000000000", "{out}");
    assert_eq!(status_field(&out, "CapBnd"), default_mask, "{out}");

    let bind_service = ["CAP_NET_BIND_SERVICE"];
    let spec = Spec::new()
        .user(1000, 1000)
        .set("/process/capabilities/inheritable", bind_service.to_vec())
        .set("/process/capabilities/ambient", bind_service.to_vec())
        .shell(read);
    let out = run(spec);
    for field in ["CapAmb", "CapEff", "CapPrm", "CapInh"] {
        assert_eq!(
            status_field(&out, field),
            "0000000000000400",
            "{field}: {out}"
        );
    }
}
