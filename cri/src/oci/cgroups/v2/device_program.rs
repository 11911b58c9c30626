//! The eBPF program that enforces device rules on cgroup v2 (which has no devices.allow
//! file). Assembled by hand: the program is a short straight-line list of compares,
//! and no crate builds BPF_PROG_TYPE_CGROUP_DEVICE programs without an LLVM toolchain.
//!
//! The kernel calls it with `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major;
//! u32 minor; }` (access_type = access << 16 | device type) and lets the access through
//! when it returns 1. Rules are checked from the last to the first and the first match
//! decides, so later rules override earlier ones as with v1's devices.allow/deny.

use crate::oci::cgroups::devices::{ACCESS_ALL, DeviceKind, DeviceRule};

/// One `struct bpf_insn`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    /// dst register in the low nibble, src in the high one.
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

// Opcodes used (class | op | source).
pub const LDX_MEM_W: u8 = 0x61;
pub const ALU32_AND_K: u8 = 0x54;
pub const ALU32_RSH_K: u8 = 0x74;
pub const ALU32_MOV_X: u8 = 0xbc;
pub const ALU64_MOV_K: u8 = 0xb7;
pub const JMP_JNE_K: u8 = 0x55;
pub const JMP_JNE_X: u8 = 0x5d;
pub const JMP_EXIT: u8 = 0x95;

/// Device type codes of the BPF context.
pub const DEV_BLOCK: i32 = 1;
pub const DEV_CHAR: i32 = 2;

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

// Registers: r1 context on entry, r2 type, r3 access, r4 major, r5 minor, r0 verdict.
const PROLOGUE: [Insn; 6] = [
    insn(LDX_MEM_W, 2, 1, 0, 0),
    insn(ALU32_AND_K, 2, 0, 0, 0xffff),
    insn(LDX_MEM_W, 3, 1, 0, 0),
    insn(ALU32_RSH_K, 3, 0, 0, 16),
    insn(LDX_MEM_W, 4, 1, 4, 0),
    insn(LDX_MEM_W, 5, 1, 8, 0),
];

/// Builds the program for a rule list as made by `devices::effective_rules`.
pub fn device_program(rules: &[DeviceRule]) -> Vec<Insn> {
    // Everything before the last wildcard rule is overridden by it.
    let (default_allow, live) = match rules.iter().rposition(DeviceRule::is_wildcard) {
        Some(i) => (rules[i].allow, &rules[i + 1..]),
        None => (false, rules),
    };
    let mut program = PROLOGUE.to_vec();
    for rule in live.iter().rev() {
        program.extend(rule_block(rule));
    }
    program.push(insn(ALU64_MOV_K, 0, 0, 0, default_allow as i32));
    program.push(insn(JMP_EXIT, 0, 0, 0, 0));
    program
}

/// Compares that skip to the next block on mismatch, then the verdict.
fn rule_block(rule: &DeviceRule) -> Vec<Insn> {
    // Jump offsets are patched once the block length is known.
    let mut block = Vec::new();
    match rule.kind {
        DeviceKind::All => {}
        DeviceKind::Char => block.push(insn(JMP_JNE_K, 2, 0, 0, DEV_CHAR)),
        DeviceKind::Block => block.push(insn(JMP_JNE_K, 2, 0, 0, DEV_BLOCK)),
    }
    if rule.access != ACCESS_ALL {
        // Matches only when every requested access bit is covered by the rule.
        block.push(insn(ALU32_MOV_X, 1, 3, 0, 0));
        block.push(insn(ALU32_AND_K, 1, 0, 0, rule.access as i32));
        block.push(insn(JMP_JNE_X, 1, 3, 0, 0));
    }
    if let Some(major) = rule.major {
        block.push(insn(JMP_JNE_K, 4, 0, 0, major as i32));
    }
    if let Some(minor) = rule.minor {
        block.push(insn(JMP_JNE_K, 5, 0, 0, minor as i32));
    }
    block.push(insn(ALU64_MOV_K, 0, 0, 0, rule.allow as i32));
    block.push(insn(JMP_EXIT, 0, 0, 0, 0));
    let len = block.len();
    for (i, ins) in block.iter_mut().enumerate() {
        if ins.code == JMP_JNE_K || ins.code == JMP_JNE_X {
            ins.off = (len - i - 1) as i16;
        }
    }
    block
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::cgroups::devices::{ACCESS_MKNOD, ACCESS_READ, ACCESS_WRITE, effective_rules};
    use oci_spec::runtime::{LinuxDeviceCgroupBuilder, LinuxDeviceType};

    /// Runs `program` the way the kernel would, for the opcodes we emit.
    fn run(program: &[Insn], kind: i32, access: u8, major: u32, minor: u32) -> u64 {
        let ctx = [((access as u32) << 16) | kind as u32, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let ins = program[pc];
            let (dst, src) = ((ins.regs & 0xf) as usize, (ins.regs >> 4) as usize);
            pc += 1;
            match ins.code {
                LDX_MEM_W => {
                    assert_eq!(src, 1, "loads only from the context");
                    r[dst] = ctx[ins.off as usize / 4] as u64;
                }
                ALU32_AND_K => r[dst] = (r[dst] as u32 & ins.imm as u32) as u64,
                ALU32_RSH_K => r[dst] = ((r[dst] as u32) >> ins.imm) as u64,
                ALU32_MOV_X => r[dst] = r[src] as u32 as u64,
                ALU64_MOV_K => r[dst] = ins.imm as i64 as u64,
                JMP_JNE_K => {
                    if r[dst] != ins.imm as i64 as u64 {
                        pc += ins.off as usize;
                    }
                }
                JMP_JNE_X => {
                    if r[dst] != r[src] {
                        pc += ins.off as usize;
                    }
                }
                JMP_EXIT => return r[0],
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    }

    fn rule(
        allow: bool,
        typ: LinuxDeviceType,
        major: i64,
        minor: Option<i64>,
        access: &str,
    ) -> oci_spec::runtime::LinuxDeviceCgroup {
        let mut b = LinuxDeviceCgroupBuilder::default()
            .allow(allow)
            .typ(typ)
            .major(major)
            .access(access);
        if let Some(minor) = minor {
            b = b.minor(minor);
        }
        b.build().unwrap()
    }

    const RW: u8 = ACCESS_READ | ACCESS_WRITE;

    #[test]
    fn default_rules_allow_standard_devices_only() {
        let program = device_program(&effective_rules(None).unwrap());
        assert_eq!(run(&program, DEV_CHAR, RW, 1, 3), 1, "/dev/null");
        assert_eq!(
            run(&program, DEV_CHAR, ACCESS_READ, 1, 9),
            1,
            "/dev/urandom"
        );
        assert_eq!(run(&program, DEV_CHAR, RW, 136, 7), 1, "a pty");
        assert_eq!(run(&program, DEV_BLOCK, ACCESS_READ, 8, 0), 0, "a disk");
        assert_eq!(
            run(&program, DEV_BLOCK, ACCESS_MKNOD, 8, 0),
            1,
            "mknod is always allowed"
        );
        assert_eq!(run(&program, DEV_CHAR, ACCESS_READ, 1, 1), 0, "/dev/mem");
    }

    #[test]
    fn spec_rules_allow_and_later_rules_override() {
        let spec = vec![
            rule(true, LinuxDeviceType::B, 8, None, "rw"),
            rule(false, LinuxDeviceType::B, 8, Some(1), "rwm"),
            rule(true, LinuxDeviceType::C, 10, Some(229), "r"),
        ];
        let program = device_program(&effective_rules(Some(&spec)).unwrap());
        assert_eq!(run(&program, DEV_BLOCK, RW, 8, 0), 1);
        assert_eq!(
            run(&program, DEV_BLOCK, ACCESS_READ, 8, 1),
            0,
            "later deny wins"
        );
        assert_eq!(run(&program, DEV_CHAR, ACCESS_READ, 10, 229), 1);
        assert_eq!(run(&program, DEV_CHAR, RW, 10, 229), 0, "write not granted");
        assert_eq!(
            run(&program, DEV_CHAR, ACCESS_READ, 8, 0),
            0,
            "type must match"
        );
    }

    #[test]
    fn allow_all_wildcard_makes_everything_pass() {
        let all = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .access("rwm")
            .build()
            .unwrap();
        let program = device_program(&effective_rules(Some(&[all])).unwrap());
        assert_eq!(run(&program, DEV_BLOCK, RW, 8, 0), 1);
        assert_eq!(run(&program, DEV_CHAR, RW, 1, 1), 1);
    }
}
