//! The few bpf(2) commands needed to load a device program and attach it to a cgroup
//! in place of the one there before. Raw syscalls: the layouts are small and stable,
//! and this avoids pulling a BPF loader library in for one program type.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use super::device_program::Insn;
use crate::oci::cgroups::CgroupError;

const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_ATTACH: libc::c_int = 8;
const BPF_PROG_DETACH: libc::c_int = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_int = 13;
const BPF_PROG_QUERY: libc::c_int = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
}

#[repr(C)]
#[derive(Default)]
struct GetFdByIdAttr {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
}

fn bpf<T>(cmd: libc::c_int, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a properly initialised attribute block of the layout `cmd` expects;
    // the kernel reads at most size_of::<T>() bytes and only writes into it.
    let ret =
        unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>()) };
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Loads `program`, attaches it to the cgroup at `dir` and detaches the device programs
/// attached there before, so that exactly the new rules apply.
pub fn replace_device_program(dir: &Path, program: &[Insn]) -> Result<(), CgroupError> {
    let fail = |reason: String| CgroupError::DeviceProgram {
        path: dir.to_path_buf(),
        reason,
    };
    let cgroup = std::fs::File::open(dir).map_err(|e| CgroupError::io(dir, e))?;
    let prog = load(program).map_err(fail)?;
    let old =
        attached_programs(&cgroup).map_err(|e| fail(format!("querying attached programs: {e}")))?;
    let mut attach = AttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..Default::default()
    };
    bpf(BPF_PROG_ATTACH, &mut attach).map_err(|e| fail(format!("attaching: {e}")))?;
    for id in old {
        let mut by_id = GetFdByIdAttr {
            prog_id: id,
            ..Default::default()
        };
        let Ok(fd) = bpf(BPF_PROG_GET_FD_BY_ID, &mut by_id) else {
            continue; // detached meanwhile
        };
        // SAFETY: the kernel just returned this new descriptor to us.
        let old_prog = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let mut detach = AttachAttr {
            target_fd: cgroup.as_raw_fd() as u32,
            attach_bpf_fd: old_prog.as_raw_fd() as u32,
            attach_type: BPF_CGROUP_DEVICE,
            ..Default::default()
        };
        bpf(BPF_PROG_DETACH, &mut detach)
            .map_err(|e| fail(format!("detaching program {id}: {e}")))?;
    }
    Ok(())
}

fn load(program: &[Insn]) -> Result<OwnedFd, String> {
    let license = c"Apache-2.0";
    let mut log = vec![0u8; 64 * 1024];
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: program.len() as u32,
        insns: program.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        ..Default::default()
    };
    attr.prog_name[..11].copy_from_slice(b"berth_devcg");
    match bpf(BPF_PROG_LOAD, &mut attr) {
        // SAFETY: the kernel just returned this new descriptor to us.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        Err(e) => {
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            Err(format!(
                "loading: {e}; verifier: {}",
                String::from_utf8_lossy(&log[..end]).trim()
            ))
        }
    }
}

fn attached_programs(cgroup: &std::fs::File) -> std::io::Result<Vec<u32>> {
    let mut ids = vec![0u32; 64];
    let mut query = QueryAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: ids.len() as u32,
        ..Default::default()
    };
    bpf(BPF_PROG_QUERY, &mut query)?;
    ids.truncate(query.prog_cnt as usize);
    Ok(ids)
}
