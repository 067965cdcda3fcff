//! Process limits the standard library cannot read or change: the open-files limit and how many
//! threads the process may have. Reading them has no side effects; [`raise_open_files_limit`]
//! changes the whole process, so only the binary calls it (or an embedding program that opts in).

use rustix::process::{getrlimit, setrlimit, Resource};

/// The open-files limit in force now (`u64::MAX` if unlimited).
pub fn open_files_limit() -> u64 {
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// Raises the soft open-files limit to the hard limit and returns the limit now in force.
///
/// ```
/// let before = tcp_router::process::open_files_limit();
/// assert!(tcp_router::process::raise_open_files_limit() >= before);
/// ```
pub fn raise_open_files_limit() -> u64 {
    let limit = getrlimit(Resource::Nofile);
    let (Some(current), hard) = (limit.current, limit.maximum) else {
        // Unlimited soft limit: nothing to raise.
        return u64::MAX;
    };
    let target = hard.unwrap_or(current.max(1 << 20));
    if target > current {
        let raised = rustix::process::Rlimit {
            current: Some(target),
            maximum: hard,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return target;
        }
    }
    current
}

/// The most threads this process may have: the smallest of pid_max, threads-max, RLIMIT_NPROC
/// and the cgroup's `pids.max` (v1 or v2, this process's group or any above it).
pub fn thread_limit() -> u64 {
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|text| text.trim().parse::<u64>().ok())
    };
    let nproc = getrlimit(Resource::Nproc).current;
    [
        read("/proc/sys/kernel/pid_max"),
        read("/proc/sys/kernel/threads-max"),
        nproc,
        super::cgroup::pids_limit(),
    ]
    .into_iter()
    .flatten()
    .min()
    .unwrap_or(32_768)
}
