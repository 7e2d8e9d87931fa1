//! Process-wide memory-allocator settings for large-tensor work on the CPU.
//!
//! A SAM forward at 1024 allocates and frees tens of 12–48 MB buffers per block. glibc's malloc
//! serves every request above its mmap threshold (at most 32 MB) with a fresh `mmap` and gives it
//! back with `munmap` on free, and trims the top of its heap whenever more than twice that is
//! free there: each such buffer is page-faulted in and zeroed by the kernel again, op after op.
//! In this project's VMs that cost a third of the encoder forward at 1024 (docs/benchmarks.md).
//! [`keep_freed_memory`] makes malloc keep freed memory for the next request instead. The
//! process's peak memory stays what its largest working set needs; it is just not returned to
//! the system until the process ends.

/// The environment variable that turns [`keep_freed_memory`] off (`SALT_KEEP_FREED_MEMORY=0`).
pub const KEEP_FREED_MEMORY_ENV: &str = "SALT_KEEP_FREED_MEMORY";

/// Makes the C allocator keep freed memory for reuse: no `mmap` per large buffer and no heap
/// trimming. For programs, called once at start (salt's `eval` and `predict`, the encoder
/// benchmark; training measured slower with it); a library should leave this choice to its
/// program. Returns whether the setting took effect: `false`
/// off Linux/glibc (nothing to do there), or when [`KEEP_FREED_MEMORY_ENV`] is `0`.
pub fn keep_freed_memory() -> bool {
    if std::env::var(KEEP_FREED_MEMORY_ENV).is_ok_and(|v| v.trim() == "0") {
        return false;
    }
    set_malloc_options()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn set_malloc_options() -> bool {
    // SAFETY: `mallopt` only sets malloc's tuning parameters from two integers; glibc takes its
    // arena locks while doing so, so it is sound at any time and from any thread.
    unsafe {
        // Every request from the heap (`M_MMAP_MAX = 0`: no allocation gets its own mapping;
        // threads' arenas fall back to the main heap for what does not fit theirs), and the
        // heap's top is trimmed only past 2 GiB free.
        libc::mallopt(libc::M_MMAP_MAX, 0) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) == 1
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_malloc_options() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeping_freed_memory_takes_effect_on_glibc_and_allocations_still_work() {
        // This changes the test process's malloc; everything after it must work the same.
        let kept = keep_freed_memory();
        assert_eq!(kept, cfg!(all(target_os = "linux", target_env = "gnu")));
        let big = vec![1.0f32; 16 << 20]; // 64 MiB: a mapping of its own under glibc's default
        assert_eq!(big.iter().sum::<f32>(), (16 << 20) as f32);
        drop(big);
        let again = vec![2.0f32; 16 << 20];
        assert_eq!(again[(16 << 20) - 1], 2.0);
    }
}
