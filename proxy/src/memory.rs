//! glibc malloc settings for a daemon whose memory use is one big model built in
//! bursts (the initial lists, a full sync) and then held for a long time.

/// One malloc arena for all threads. The proxy does its work on one thread at a time
/// (the event loop, or a sync on a blocking thread), so extra arenas buy nothing but
/// hold freed memory of their own: at 10k Services they cost tens of MiB.
/// An operator's `MALLOC_ARENA_MAX` still wins.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only changes allocator tuning; called before other threads start.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

/// Gives memory freed after a burst (e.g. a full sync's netlink batch or rule text)
/// back to the kernel; otherwise the heap keeps it as free space for good.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}
