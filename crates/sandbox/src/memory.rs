//! The host process's own memory (here because this crate holds the project's calls into the
//! operating system): what the allocator keeps after a burst, given back.

/// Gives the memory glibc's allocator keeps free back to the system (`malloc_trim(0)`: every
/// arena, not only the top of the main heap); whether any was. A long-lived service calls it
/// after bursts: glibc keeps what its per-thread arenas freed for reuse, for ever. Takes each
/// arena's lock in turn (milliseconds for a hundred megabytes): call it off the executor.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn release_free_memory() -> bool {
    // SAFETY: malloc_trim takes no pointers and is thread-safe (it locks each arena in turn);
    // it changes nothing a Rust value can see, only which free pages stay mapped.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Other allocators give memory back by themselves (or not at all): nothing to do.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_memory() -> bool {
    false
}
