//! A prefix for the filter that answers ENOSYS to syscalls newer than any the profile
//! names. Without it a deny-by-default profile answers EPERM to a syscall the profile's
//! author never knew about, and libcs only fall back to older syscalls on ENOSYS
//! (runc adds the same kind of stub).
//!
//! For each architecture: load seccomp_data.arch, and if it matches, load the syscall
//! number and return ENOSYS when it is above the largest number the profile names for
//! that architecture; everything else continues into libseccomp's program unchanged.

use libseccomp::{ScmpArch, ScmpSyscall};

const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JGT_K: u16 = (libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K) as u16;
const JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

/// Offsets in `struct seccomp_data`.
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// AUDIT_ARCH_* value of an architecture (the value seccomp_data.arch holds).
fn audit_arch(arch: ScmpArch) -> Option<u32> {
    Some(match arch {
        ScmpArch::X8664 | ScmpArch::X32 => 0xc000_003e,
        ScmpArch::X86 => 0x4000_0003,
        ScmpArch::Aarch64 => 0xc000_00b7,
        ScmpArch::Arm => 0x4000_0028,
        ScmpArch::S390X => 0x8000_0016,
        ScmpArch::S390 => 0x0000_0016,
        ScmpArch::Ppc64Le => 0xc000_0015,
        ScmpArch::Ppc64 => 0x8000_0015,
        ScmpArch::Riscv64 => 0xc000_00f3,
        _ => return None,
    })
}

/// The largest real syscall number among `names` on `arch` (pseudo numbers of
/// multiplexed calls are negative and ignored).
fn max_syscall<'a>(names: impl Iterator<Item = &'a str>, arch: ScmpArch) -> Option<u32> {
    names
        .filter_map(|n| ScmpSyscall::from_name_by_arch(n, arch).ok())
        .filter_map(|s| u32::try_from(s.as_raw_syscall()).ok())
        .max()
}

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The stub for `arches` (the filter's architectures) given the syscall names the
/// profile uses. Empty when no architecture has a known maximum.
pub fn enosys_stub(arches: &[ScmpArch], names: &[&str]) -> Vec<libc::sock_filter> {
    // (audit arch, max native nr, max x32 nr if the filter covers x32)
    let mut checks: Vec<(u32, u32, Option<u32>)> = Vec::new();
    let x32 = arches
        .contains(&ScmpArch::X32)
        .then(|| max_syscall(names.iter().copied(), ScmpArch::X32))
        .flatten();
    for &arch in arches {
        if arch == ScmpArch::X32 {
            continue; // checked inside the x86_64 block: same audit arch
        }
        let (Some(audit), Some(max)) = (audit_arch(arch), max_syscall(names.iter().copied(), arch))
        else {
            continue;
        };
        let x32_max = if arch == ScmpArch::X8664 { x32 } else { None };
        checks.push((audit, max, x32_max));
    }
    if checks.is_empty() {
        return Vec::new();
    }
    // Layout: [ld arch] then per arch a block, then [ja continue], [ret ENOSYS], continue:
    // Blocks are built back to front so each knows the distance to the shared tail.
    let mut blocks: Vec<Vec<libc::sock_filter>> = Vec::new();
    for (audit, max, x32_max) in checks {
        let mut block = vec![jump(JEQ_K, audit, 0, 0), stmt(LD_W_ABS, OFFSET_NR)];
        match x32_max {
            Some(x32_max) => {
                block.push(jump(JSET_K, X32_SYSCALL_BIT, 0, 1));
                block.push(jump(JGT_K, x32_max, 0, 0)); // jt → ENOSYS, jf → continue
                block.push(jump(JGT_K, max, 0, 0));
            }
            None => block.push(jump(JGT_K, max, 0, 0)),
        }
        blocks.push(block);
    }
    // Fix up jumps: mismatching arch goes to the next block's first instruction (after
    // reloading the arch, which the nr load clobbered — so each block starts with the
    // arch load).
    let mut program = Vec::new();
    let total_blocks: usize = blocks.iter().map(|b| b.len() + 1).sum();
    let mut position = 0usize;
    for block in &blocks {
        let start = position;
        program.push(stmt(LD_W_ABS, OFFSET_ARCH));
        position += 1;
        let len = block.len();
        for (i, ins) in block.iter().enumerate() {
            let mut ins = *ins;
            let here = position + i;
            let next_block = start + len + 1;
            // Tail: [ja continue] at total_blocks, [ret ENOSYS] at total_blocks + 1.
            let to_ja = total_blocks - here - 1;
            let to_enosys = total_blocks + 1 - here - 1;
            if ins.code == JEQ_K {
                ins.jf = (next_block - here - 1) as u8;
            } else if ins.code == JGT_K {
                ins.jt = to_enosys as u8;
                ins.jf = to_ja as u8;
            }
            program.push(ins);
        }
        position += len;
    }
    program.push(stmt(JA, 1));
    program.push(stmt(RET_K, SECCOMP_RET_ERRNO | libc::ENOSYS as u32));
    program
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Interprets the stub: Some(ret) when it returns, None when it falls through.
    fn run(stub: &[libc::sock_filter], arch: u32, nr: u32) -> Option<u32> {
        let mut acc = 0u32;
        let mut pc = 0usize;
        while pc < stub.len() {
            let ins = stub[pc];
            pc += 1;
            match ins.code {
                LD_W_ABS => acc = if ins.k == OFFSET_ARCH { arch } else { nr },
                JEQ_K => pc += if acc == ins.k { ins.jt } else { ins.jf } as usize,
                JGT_K => pc += if acc > ins.k { ins.jt } else { ins.jf } as usize,
                JSET_K => pc += if acc & ins.k != 0 { ins.jt } else { ins.jf } as usize,
                JA => pc += ins.k as usize,
                RET_K => return Some(ins.k),
                other => panic!("unexpected {other:#x}"),
            }
        }
        assert_eq!(pc, stub.len(), "fell through exactly at the end");
        None
    }

    const ENOSYS: Option<u32> = Some(SECCOMP_RET_ERRNO | libc::ENOSYS as u32);

    #[test]
    fn syscalls_beyond_the_profile_get_enosys_per_arch() {
        let stub = enosys_stub(
            &[ScmpArch::X8664, ScmpArch::X86, ScmpArch::X32],
            &["read", "clone3", "openat"],
        );
        let x86_64 = 0xc000_003e;
        let i386 = 0x4000_0003;
        assert_eq!(run(&stub, x86_64, 0), None);
        assert_eq!(
            run(&stub, x86_64, 435),
            None,
            "clone3 itself goes to the filter"
        );
        assert_eq!(run(&stub, x86_64, 436), ENOSYS);
        assert_eq!(run(&stub, x86_64, 1000), ENOSYS);
        assert_eq!(run(&stub, i386, 435), None);
        assert_eq!(run(&stub, i386, 500), ENOSYS);
        assert_eq!(run(&stub, x86_64, X32_SYSCALL_BIT), None, "x32 read");
        assert_eq!(run(&stub, x86_64, X32_SYSCALL_BIT + 600), ENOSYS);
        assert_eq!(
            run(&stub, 0xdead, 5000),
            None,
            "other arches go to the filter"
        );
    }

    #[test]
    fn no_known_names_means_no_stub() {
        assert!(enosys_stub(&[ScmpArch::X8664], &["not_a_syscall"]).is_empty());
    }
}
