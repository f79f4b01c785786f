//! Process settings the server adjusts for itself at start: the open-files limit and the
//! allocator's treatment of large blocks. Both are measured, logged, and harmless to skip.

/// Raises the open-files soft limit to the hard limit (a default soft limit of 1,024 lets a few
/// hundred idle sockets lock everyone out) and returns the limit now in force.
#[cfg(unix)]
pub(crate) fn raise_open_files_limit() -> Option<u64> {
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass; no Rust invariants.
    unsafe {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), "could not read the open-files limit");
            return None;
        }
        let before = limit.rlim_cur;
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            } else {
                tracing::warn!(error = %std::io::Error::last_os_error(), "could not raise the open-files limit");
            }
        }
        tracing::info!(before, now = limit.rlim_cur, hard = limit.rlim_max, "open-files limit");
        Some(limit.rlim_cur)
    }
}

#[cfg(not(unix))]
pub(crate) fn raise_open_files_limit() -> Option<u64> {
    None
}

/// Makes glibc return large blocks to the system when they are freed.
///
/// Each password hash allocates one ~19 MiB block. glibc serves blocks above its mmap threshold
/// with mmap (returned on free), but raises that threshold to the size of any such block freed,
/// after which the next 19 MiB blocks come from the heap arenas and stay in RSS: 30 parallel
/// logins left ~570 MB resident. A fixed threshold disables that adjustment (BENCHMARKS.md has
/// the measurement).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(crate) fn tune_allocator() {
    /// Blocks at least this large are mmapped, and unmapped when freed.
    const MMAP_THRESHOLD_BYTES: libc::c_int = 1024 * 1024;
    // SAFETY: mallopt only changes allocator parameters; called before the server allocates much.
    let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) } == 1;
    if !ok {
        tracing::warn!("could not set the allocator's mmap threshold");
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn tune_allocator() {}
