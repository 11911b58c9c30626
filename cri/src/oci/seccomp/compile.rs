//! OCI `linux.seccomp` → classic BPF, following runc's interpretation of the spec.

use std::io::{Read, Seek, SeekFrom};

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag,
    LinuxSeccompOperator,
};

use super::SeccompError;
use super::enosys::enosys_stub;

/// Syscalls take at most six arguments.
const MAX_ARGS: usize = 6;

const SECCOMP_FILTER_FLAG_TSYNC: libc::c_ulong = 1;
const SECCOMP_FILTER_FLAG_LOG: libc::c_ulong = 2;
const SECCOMP_FILTER_FLAG_SPEC_ALLOW: libc::c_ulong = 4;
pub(super) const SECCOMP_FILTER_FLAG_NEW_LISTENER: libc::c_ulong = 8;
const SECCOMP_FILTER_FLAG_TSYNC_ESRCH: libc::c_ulong = 16;

/// A ready-to-load BPF program with the seccomp() flags that go with it.
#[derive(Debug, Clone)]
pub struct CompiledFilter {
    pub(super) program: Vec<libc::sock_filter>,
    pub(super) flags: libc::c_ulong,
}

impl CompiledFilter {
    /// Number of BPF instructions.
    pub fn len(&self) -> usize {
        self.program.len()
    }

    pub fn is_empty(&self) -> bool {
        self.program.is_empty()
    }

    /// True when a rule uses SCMP_ACT_NOTIFY: install with
    /// [`install_with_listener`](Self::install_with_listener) and hand the fd to the
    /// agent at `linux.seccomp.listenerPath`.
    pub fn needs_listener(&self) -> bool {
        self.flags & SECCOMP_FILTER_FLAG_NEW_LISTENER != 0
    }
}

/// Validates and compiles an OCI seccomp section to a BPF program. Runs in the parent
/// (may allocate). Errors name the field, e.g. `linux.seccomp.syscalls[3].names[0]`.
pub fn compile(spec: &LinuxSeccomp) -> Result<CompiledFilter, SeccompError> {
    let default_errno = spec.default_errno_ret();
    if spec.default_action() == LinuxSeccompAction::ScmpActNotify {
        return Err(SeccompError::invalid(
            "linux.seccomp.defaultAction",
            "SCMP_ACT_NOTIFY cannot be the default action",
        ));
    }
    let default_action = action(
        spec.default_action(),
        default_errno,
        "linux.seccomp.defaultErrnoRet",
    )?;
    let lib_err = |field: &str| {
        let field = field.to_string();
        move |source| SeccompError::Libseccomp {
            field: field.clone(),
            source,
        }
    };
    let mut ctx =
        ScmpFilterContext::new(default_action).map_err(lib_err("linux.seccomp.defaultAction"))?;
    for (i, arch) in spec.architectures().iter().flatten().enumerate() {
        let field = format!("linux.seccomp.architectures[{i}]");
        let arch = scmp_arch(*arch);
        if !ctx.is_arch_present(arch).map_err(lib_err(&field))? {
            ctx.add_arch(arch).map_err(lib_err(&field))?;
        }
    }
    let mut uses_notify = false;
    for (i, rule) in spec.syscalls().iter().flatten().enumerate() {
        let field = format!("linux.seccomp.syscalls[{i}]");
        if rule.action() == LinuxSeccompAction::ScmpActNotify {
            uses_notify = true;
        }
        let rule_action = action(
            rule.action(),
            rule.errno_ret(),
            &format!("{field}.errnoRet"),
        )?;
        let conditions = conditions(&field, rule.args().as_deref().unwrap_or_default())?;
        for (j, name) in rule.names().iter().enumerate() {
            let name_field = format!("{field}.names[{j}]");
            if name.is_empty() {
                return Err(SeccompError::invalid(name_field, "empty syscall name"));
            }
            // A profile written for newer kernels names syscalls this libseccomp or
            // architecture does not know: they cannot be called here, so skip them.
            let Ok(syscall) = ScmpSyscall::from_name(name) else {
                tracing::debug!(syscall = %name, "seccomp: syscall unknown for this architecture, skipped");
                continue;
            };
            // libseccomp refuses rules whose action equals the default; they change nothing.
            if rule_action == default_action {
                continue;
            }
            add_rule(&mut ctx, rule_action, syscall, &conditions).map_err(lib_err(&name_field))?;
        }
    }
    if uses_notify && spec.listener_path().is_none() {
        return Err(SeccompError::invalid(
            "linux.seccomp.listenerPath",
            "required when a rule uses SCMP_ACT_NOTIFY",
        ));
    }
    let mut program = Vec::new();
    if answers_unknown_with_enosys(spec.default_action()) {
        let mut arches = vec![ScmpArch::native()];
        for arch in spec.architectures().iter().flatten() {
            let arch = match scmp_arch(*arch) {
                ScmpArch::Native => ScmpArch::native(),
                other => other,
            };
            if !arches.contains(&arch) {
                arches.push(arch);
            }
        }
        let names: Vec<&str> = spec
            .syscalls()
            .iter()
            .flatten()
            .flat_map(|r| r.names().iter().map(String::as_str))
            .collect();
        program = enosys_stub(&arches, &names);
    }
    program.extend(export(&ctx)?);
    Ok(CompiledFilter {
        program,
        flags: flags(spec, uses_notify),
    })
}

/// Deny-by-default profiles should look like an older kernel to programs using newer
/// syscalls; allow/log/trace-by-default ones must let such syscalls through.
fn answers_unknown_with_enosys(default: LinuxSeccompAction) -> bool {
    !matches!(
        default,
        LinuxSeccompAction::ScmpActAllow
            | LinuxSeccompAction::ScmpActLog
            | LinuxSeccompAction::ScmpActTrace
    )
}

/// Conditions on distinct arguments must all hold (one rule); several conditions on the
/// same argument are alternatives (one rule each), as runc does.
fn add_rule(
    ctx: &mut ScmpFilterContext,
    action: ScmpAction,
    syscall: ScmpSyscall,
    conditions: &[(usize, ScmpArgCompare)],
) -> Result<(), libseccomp::error::SeccompError> {
    if conditions.is_empty() {
        ctx.add_rule(action, syscall)?;
        return Ok(());
    }
    let mut per_arg = [0usize; MAX_ARGS];
    for (index, _) in conditions {
        per_arg[*index] += 1;
    }
    if per_arg.iter().any(|n| *n > 1) {
        for (_, cmp) in conditions {
            ctx.add_rule_conditional(action, syscall, std::slice::from_ref(cmp))?;
        }
    } else {
        let all: Vec<ScmpArgCompare> = conditions.iter().map(|(_, c)| *c).collect();
        ctx.add_rule_conditional(action, syscall, &all)?;
    }
    Ok(())
}

fn conditions(
    field: &str,
    args: &[LinuxSeccompArg],
) -> Result<Vec<(usize, ScmpArgCompare)>, SeccompError> {
    args.iter()
        .enumerate()
        .map(|(k, arg)| {
            let index = arg.index();
            if index >= MAX_ARGS {
                return Err(SeccompError::invalid(
                    format!("{field}.args[{k}].index"),
                    format!("{index} is beyond the last syscall argument (5)"),
                ));
            }
            let (op, datum) = match arg.op() {
                LinuxSeccompOperator::ScmpCmpNe => (ScmpCompareOp::NotEqual, arg.value()),
                LinuxSeccompOperator::ScmpCmpLt => (ScmpCompareOp::Less, arg.value()),
                LinuxSeccompOperator::ScmpCmpLe => (ScmpCompareOp::LessOrEqual, arg.value()),
                LinuxSeccompOperator::ScmpCmpEq => (ScmpCompareOp::Equal, arg.value()),
                LinuxSeccompOperator::ScmpCmpGe => (ScmpCompareOp::GreaterEqual, arg.value()),
                LinuxSeccompOperator::ScmpCmpGt => (ScmpCompareOp::Greater, arg.value()),
                // `value` is the mask, `valueTwo` what the masked argument must equal.
                LinuxSeccompOperator::ScmpCmpMaskedEq => (
                    ScmpCompareOp::MaskedEqual(arg.value()),
                    arg.value_two().unwrap_or(0),
                ),
            };
            Ok((index, ScmpArgCompare::new(index as u32, op, datum)))
        })
        .collect()
}

/// The spec's action with its errno (ERRNO, default EPERM) or tracer message (TRACE).
fn action(
    action: LinuxSeccompAction,
    errno: Option<u32>,
    errno_field: &str,
) -> Result<ScmpAction, SeccompError> {
    let ret = |errno: Option<u32>| -> Result<i32, SeccompError> {
        let value = errno.unwrap_or(libc::EPERM as u32);
        i32::try_from(value)
            .ok()
            .filter(|v| *v <= u16::MAX as i32)
            .ok_or_else(|| {
                SeccompError::invalid(errno_field, format!("{value} does not fit a 16-bit errno"))
            })
    };
    Ok(match action {
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(ret(errno)?),
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(ret(errno)? as u16),
        other => {
            if errno.is_some() {
                return Err(SeccompError::invalid(
                    errno_field,
                    "only SCMP_ACT_ERRNO and SCMP_ACT_TRACE take an errno return value",
                ));
            }
            match other {
                LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
                    ScmpAction::KillThread
                }
                LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
                LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
                LinuxSeccompAction::ScmpActNotify => ScmpAction::Notify,
                LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
                _ => ScmpAction::Allow,
            }
        }
    })
}

fn scmp_arch(arch: Arch) -> ScmpArch {
    match arch {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchMips => ScmpArch::Mips,
        Arch::ScmpArchMips64 => ScmpArch::Mips64,
        Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
        Arch::ScmpArchMipsel => ScmpArch::Mipsel,
        Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
        Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
        Arch::ScmpArchParisc => ScmpArch::Parisc,
        Arch::ScmpArchParisc64 => ScmpArch::Parisc64,
        Arch::ScmpArchLoongarch64 => ScmpArch::Loongarch64,
        Arch::ScmpArchM68k => ScmpArch::M68k,
        Arch::ScmpArchSh => ScmpArch::Sh,
        Arch::ScmpArchSheb => ScmpArch::Sheb,
    }
}

fn flags(spec: &LinuxSeccomp, uses_notify: bool) -> libc::c_ulong {
    let mut flags = 0;
    for flag in spec.flags().iter().flatten() {
        flags |= match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => SECCOMP_FILTER_FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => SECCOMP_FILTER_FLAG_TSYNC,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => SECCOMP_FILTER_FLAG_SPEC_ALLOW,
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => {
                libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
            }
        };
    }
    if uses_notify {
        flags |= SECCOMP_FILTER_FLAG_NEW_LISTENER;
        // TSYNC may only be combined with a listener when failures report ESRCH.
        if flags & SECCOMP_FILTER_FLAG_TSYNC != 0 {
            flags |= SECCOMP_FILTER_FLAG_TSYNC_ESRCH;
        }
    }
    flags
}

/// libseccomp (2.5 on Debian 12) exports only to a file descriptor: go through a memfd.
fn export(ctx: &ScmpFilterContext) -> Result<Vec<libc::sock_filter>, SeccompError> {
    let fd =
        nix::sys::memfd::memfd_create(c"berth-seccomp", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
            .map_err(|e| SeccompError::Export(e.into()))?;
    let mut file = std::fs::File::from(fd);
    ctx.export_bpf(&file)
        .map_err(|source| SeccompError::Libseccomp {
            field: "linux.seccomp".into(),
            source,
        })?;
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(0))
        .map_err(SeccompError::Export)?;
    file.read_to_end(&mut bytes).map_err(SeccompError::Export)?;
    const INSN: usize = std::mem::size_of::<libc::sock_filter>();
    if bytes.len() % INSN != 0 {
        return Err(SeccompError::Export(std::io::Error::other(format!(
            "{} bytes is not a whole number of BPF instructions",
            bytes.len()
        ))));
    }
    Ok(bytes
        .chunks_exact(INSN)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxSeccompArgBuilder, LinuxSeccompBuilder, LinuxSyscallBuilder};

    fn spec_with(rule: oci_spec::runtime::LinuxSyscall) -> LinuxSeccomp {
        LinuxSeccompBuilder::default()
            .default_action(LinuxSeccompAction::ScmpActAllow)
            .architectures(vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86])
            .syscalls(vec![rule])
            .build()
            .unwrap()
    }

    fn field_of(err: SeccompError) -> String {
        match err {
            SeccompError::Invalid { field, .. } | SeccompError::Libseccomp { field, .. } => field,
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn simple_deny_rule_compiles() {
        let rule = LinuxSyscallBuilder::default()
            .names(vec!["mkdir".to_string(), "mkdirat".to_string()])
            .action(LinuxSeccompAction::ScmpActErrno)
            .build()
            .unwrap();
        let filter = compile(&spec_with(rule)).unwrap();
        assert!(filter.len() > 4);
        assert!(!filter.needs_listener());
    }

    #[test]
    fn unknown_syscall_names_are_skipped() {
        let rule = LinuxSyscallBuilder::default()
            .names(vec!["no_such_syscall_at_all".to_string()])
            .action(LinuxSeccompAction::ScmpActErrno)
            .build()
            .unwrap();
        compile(&spec_with(rule)).unwrap();
    }

    #[test]
    fn argument_index_beyond_five_names_the_field() {
        let arg = LinuxSeccompArgBuilder::default()
            .index(6usize)
            .value(1u64)
            .op(LinuxSeccompOperator::ScmpCmpEq)
            .build()
            .unwrap();
        let rule = LinuxSyscallBuilder::default()
            .names(vec!["personality".to_string()])
            .action(LinuxSeccompAction::ScmpActErrno)
            .args(vec![arg])
            .build()
            .unwrap();
        assert_eq!(
            field_of(compile(&spec_with(rule)).unwrap_err()),
            "linux.seccomp.syscalls[0].args[0].index"
        );
    }

    #[test]
    fn errno_on_allow_rule_names_the_field() {
        let rule = LinuxSyscallBuilder::default()
            .names(vec!["read".to_string()])
            .action(LinuxSeccompAction::ScmpActKillProcess)
            .errno_ret(1u32)
            .build()
            .unwrap();
        assert_eq!(
            field_of(compile(&spec_with(rule)).unwrap_err()),
            "linux.seccomp.syscalls[0].errnoRet"
        );
    }

    #[test]
    fn empty_name_names_the_field() {
        let rule = LinuxSyscallBuilder::default()
            .names(vec!["read".to_string(), String::new()])
            .action(LinuxSeccompAction::ScmpActLog)
            .build()
            .unwrap();
        assert_eq!(
            field_of(compile(&spec_with(rule)).unwrap_err()),
            "linux.seccomp.syscalls[0].names[1]"
        );
    }

    #[test]
    fn notify_needs_a_listener_path() {
        let rule = LinuxSyscallBuilder::default()
            .names(vec!["mkdir".to_string()])
            .action(LinuxSeccompAction::ScmpActNotify)
            .build()
            .unwrap();
        assert_eq!(
            field_of(compile(&spec_with(rule.clone())).unwrap_err()),
            "linux.seccomp.listenerPath"
        );
        let mut spec = spec_with(rule);
        spec.set_listener_path(Some("/run/agent.sock".into()));
        assert!(compile(&spec).unwrap().needs_listener());
    }

    #[test]
    fn unknown_values_are_rejected_when_parsing_the_spec() {
        let bad_action = r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_BOGUS"}]}"#;
        assert!(serde_json::from_str::<LinuxSeccomp>(bad_action).is_err());
        let bad_op = r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":1,"op":"SCMP_CMP_BOGUS"}]}]}"#;
        assert!(serde_json::from_str::<LinuxSeccomp>(bad_op).is_err());
        let bad_arch = r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_PDP11"]}"#;
        assert!(serde_json::from_str::<LinuxSeccomp>(bad_arch).is_err());
    }

    #[test]
    fn flags_map_to_seccomp_filter_flags() {
        let mut spec = spec_with(
            LinuxSyscallBuilder::default()
                .names(vec!["read".into()])
                .build()
                .unwrap(),
        );
        spec.set_flags(Some(vec![
            LinuxSeccompFilterFlag::SeccompFilterFlagLog,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow,
        ]));
        assert_eq!(
            compile(&spec).unwrap().flags,
            SECCOMP_FILTER_FLAG_LOG | SECCOMP_FILTER_FLAG_SPEC_ALLOW
        );
    }
}
