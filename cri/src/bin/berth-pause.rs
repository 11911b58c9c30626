//! berth-pause: the process that holds a pod's namespaces. As PID 1 of the
//! pod's PID namespace it reaps every orphan; SIGINT or SIGTERM make it exit
//! 0; nothing else does. Deliberately tiny: libc calls only, no allocation
//! on its paths, so it stays resident in a few pages.

use std::ptr;

fn main() {
    if std::env::args_os().nth(1).is_some_and(|a| a == "-v") {
        println!("berth-pause {}", env!("CARGO_PKG_VERSION"));
        return;
    }
    // SAFETY: plain libc calls on a stack-allocated, initialised sigset.
    unsafe {
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
        action.sa_sigaction = ignore as libc::sighandler_t;
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGCHLD] {
            libc::sigaction(sig, &action, ptr::null_mut());
        }
        if libc::getpid() != 1 {
            eprintln!("berth-pause: warning: not PID 1, orphans are not reaped here");
        }
        // Children may have exited before the mask was in place.
        reap_all();
        loop {
            match libc::sigwaitinfo(&set, ptr::null_mut()) {
                libc::SIGINT | libc::SIGTERM => std::process::exit(0),
                libc::SIGCHLD => reap_all(),
                _ => {}
            }
        }
    }
}

extern "C" fn ignore(_: libc::c_int) {}

/// Collects every exited child; one SIGCHLD may stand for many.
fn reap_all() {
    // SAFETY: waitpid with a null status pointer is always sound.
    while unsafe { libc::waitpid(-1, ptr::null_mut(), libc::WNOHANG) } > 0 {}
}
