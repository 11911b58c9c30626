//! Program start and end without a C runtime: the kernel's initial stack to
//! `server::main`, the panic handler, and the memory functions the compiler
//! calls (which the C library would otherwise provide).

use alloc::vec::Vec;
use core::arch::naked_asm;

use crate::{server, sys};

/// The entry point: the stack pointer is at `argc`, 16-byte aligned.
#[unsafe(naked)]
#[unsafe(no_mangle)]
unsafe extern "C" fn _start() -> ! {
    naked_asm!(
        "xor ebp, ebp",
        "mov rdi, rsp",
        "and rsp, -16",
        "call {entry}",
        "ud2",
        entry = sym entry,
    )
}

/// `stack`: argc, argv[0..argc], NULL, envp..., NULL.
unsafe extern "C" fn entry(stack: *const usize) -> ! {
    // SAFETY: the kernel lays out the initial stack as documented above.
    let (args, envp) = unsafe {
        let argc = *stack;
        let argv = stack.add(1).cast::<*const u8>();
        let args: Vec<&[u8]> = (1..argc).map(|i| c_bytes(*argv.add(i))).collect();
        (args, argv.add(argc + 1))
    };
    sys::exit(server::main(&args, envp))
}

/// The bytes of a C string (not `CStr::from_ptr`, which calls the C library's strlen).
///
/// # Safety
/// `text` must point at a NUL-terminated string that outlives the process.
unsafe fn c_bytes(text: *const u8) -> &'static [u8] {
    let mut len = 0;
    // SAFETY: the string is NUL-terminated. (Volatile: a plain loop is compiled
    // into a call to strlen.)
    while unsafe { core::ptr::read_volatile(text.add(len)) } != 0 {
        len += 1;
    }
    // SAFETY: the len bytes before the NUL are the string.
    unsafe { core::slice::from_raw_parts(text, len) }
}

#[cfg(panic = "abort")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    crate::report(&alloc::format!("berth-supervisor: {info}"));
    sys::abort()
}

// The precompiled `alloc` library has unwinding paths (it is built for
// panic=unwind); with panic=abort they are never taken, but the linker wants the
// symbols they name.

#[cfg(panic = "abort")]
#[unsafe(no_mangle)]
extern "C" fn rust_eh_personality() {}

#[cfg(panic = "abort")]
#[unsafe(no_mangle)]
extern "C" fn _Unwind_Resume() -> ! {
    sys::abort()
}

// The memory functions, as `rep movsb`/`rep stosb` (fast on current x86_64) and a
// plain loop: written so that the compiler cannot turn them back into calls to
// themselves. Ours to provide in both builds: where the standard library links
// the C library, its versions need the C runtime's start-up, which never runs.

#[unsafe(no_mangle)]
unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller passes valid, non-overlapping ranges of n bytes.
    unsafe {
        core::arch::asm!(
            "rep movsb",
            inout("rcx") n => _,
            inout("rdi") dest => _,
            inout("rsi") src => _,
            options(nostack, preserves_flags),
        );
    }
    dest
}

#[unsafe(no_mangle)]
unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dest as usize).wrapping_sub(src as usize) >= n {
        // SAFETY: copying forwards never overwrites bytes still to be read.
        return unsafe { memcpy(dest, src, n) };
    }
    // SAFETY: the caller passes valid ranges; copying backwards (direction flag
    // set, and cleared again as the ABI requires) handles the overlap.
    unsafe {
        core::arch::asm!(
            "std",
            "rep movsb",
            "cld",
            inout("rcx") n => _,
            inout("rdi") dest.add(n).wrapping_sub(1) => _,
            inout("rsi") src.add(n).wrapping_sub(1) => _,
            options(nostack),
        );
    }
    dest
}

#[unsafe(no_mangle)]
unsafe extern "C" fn memset(dest: *mut u8, byte: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller passes a valid range of n bytes.
    unsafe {
        core::arch::asm!(
            "rep stosb",
            inout("rcx") n => _,
            inout("rdi") dest => _,
            in("al") byte as u8,
            options(nostack, preserves_flags),
        );
    }
    dest
}

#[unsafe(no_mangle)]
unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        // SAFETY: the caller passes valid ranges of n bytes.
        let (x, y) = unsafe {
            (
                core::ptr::read_volatile(a.add(i)),
                core::ptr::read_volatile(b.add(i)),
            )
        };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
        i += 1;
    }
    0
}

#[unsafe(no_mangle)]
unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: as memcmp.
    unsafe { memcmp(a, b, n) }
}
