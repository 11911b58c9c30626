//! berth-pause: the process that holds a pod's namespaces. As PID 1 of the
//! pod's PID namespace it reaps every orphan; SIGINT or SIGTERM make it exit
//! 0; nothing else does. Deliberately tiny: no Rust runtime start-up
//! (`no_main`), no formatting, no allocation, only libc calls, so little
//! more than a few pages of it are ever resident.
//!
//! A plain build links glibc dynamically, which is fine for exec from the
//! host. To bind-mount it into a rootfs without glibc, build it static:
//! `cargo rustc --release -p berth-cri --bin berth-pause -- -C target-feature=+crt-static`
#![no_main]

use std::ptr;

const VERSION: &str = concat!("berth-pause ", env!("CARGO_PKG_VERSION"), "\n");
const NOT_PID_1: &str = "berth-pause: warning: not PID 1, orphans are not reaped here\n";

#[unsafe(no_mangle)]
extern "C" fn main(argc: libc::c_int, argv: *const *const libc::c_char) -> libc::c_int {
    // SAFETY: argv holds argc valid C strings (the C runtime's contract);
    // the rest are plain libc calls on stack-allocated, initialised values.
    unsafe {
        if argc > 1 && libc::strcmp(*argv.add(1), c"-v".as_ptr()) == 0 {
            write_all(1, VERSION);
            return 0;
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGCHLD] {
            libc::sigaddset(&mut set, sig);
        }
        // Blocked, the signals queue up and are taken synchronously below.
        libc::sigprocmask(libc::SIG_BLOCK, &set, ptr::null_mut());
        // The kernel drops signals a namespace's init has no handler for;
        // a handler (never run: the signals stay blocked outside
        // sigwaitinfo) makes them count. It also shows in SigCgt, which is
        // how the spawner sees that pause is ready.
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction =
            ignore as extern "C" fn(libc::c_int) as *const () as libc::sighandler_t;
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGCHLD] {
            libc::sigaction(sig, &action, ptr::null_mut());
        }
        if libc::getpid() != 1 {
            write_all(2, NOT_PID_1);
        }
        // Children may have exited before the mask was in place.
        reap_all();
        loop {
            match libc::sigwaitinfo(&set, ptr::null_mut()) {
                libc::SIGINT | libc::SIGTERM => return 0,
                libc::SIGCHLD => reap_all(),
                _ => {}
            }
        }
    }
}

extern "C" fn ignore(_: libc::c_int) {}

fn write_all(fd: libc::c_int, text: &str) {
    // SAFETY: writing from a valid buffer; a short or failed write of a
    // diagnostic is not worth more than dropping it.
    unsafe {
        libc::write(fd, text.as_ptr().cast(), text.len());
    }
}

/// Collects every exited child; one SIGCHLD may stand for many.
fn reap_all() {
    // SAFETY: waitpid with a null status pointer is always sound.
    while unsafe { libc::waitpid(-1, ptr::null_mut(), libc::WNOHANG) } > 0 {}
}
