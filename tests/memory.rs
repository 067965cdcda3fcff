//! What an idle connection costs in memory, pinned by a bound on the process's RSS (a bound on
//! memory, not on time): a third stack page per copy thread, a heap buffer held while idle, or a
//! per-connection allocation grown by kilobytes would break it. The figures behind the bounds are
//! in docs/performance.md ("An idle connection, line by line").

use std::net::TcpStream;

use crate::util::{self, echo_upstream, Process};

/// Idle connections held open.
const IDLE: usize = 500;

/// The binary to measure: the release build when `make test` names it here (what users run),
/// else the test profile's.
const BINARY_ENV: &str = "TCP_ROUTER_MEMORY_BIN";

/// RSS each idle connection may add, in KiB, with glibc: two stack pages per copy thread are
/// 16 KiB (glibc's thread block and static TLS fill the top one), the rest is heap, most of it
/// glibc's per-thread malloc state. Measured 20.2 KiB here for the release and the test
/// profile's builds, so a third page on one of the threads (+4 KiB) or a buffer held while idle
/// breaks it (checked: with the set-up worker as one of the copy threads, the test profile's
/// build measured 24.7 KiB).
const MAX_KIB_GLIBC: f64 = 22.0;

/// Where `make test` names the static (musl) build, whose copy threads keep one stack page each.
const STATIC_BINARY_ENV: &str = "TCP_ROUTER_MEMORY_STATIC_BIN";

/// RSS each idle connection may add, in KiB, with the static build: one stack page per copy
/// thread is 8 KiB, the rest is heap. Measured 10.1 KiB here; a second page on either thread
/// (+4 KiB each) breaks it (checked: with the 1.5 KiB wait buffer both threads kept two pages,
/// 17.8 KiB; with the log line written on copy threads, half of them kept a second page after
/// the burst, 14.1 KiB).
const MAX_KIB_STATIC: f64 = 13.0;

/// Opens a connection through `process` and waits for one echo, so both copy threads have run.
fn idle_connection(process: &Process) -> TcpStream {
    let mut stream = util::connect(process.addr);
    util::round_trip(&mut stream, b"PING\r\n");
    stream
}

#[test]
fn an_idle_connection_costs_two_stack_pages_per_thread_and_little_heap() {
    let binary = std::env::var(BINARY_ENV).unwrap_or_else(|_| util::bin().to_string());
    assert_idle_cost(&binary, MAX_KIB_GLIBC);
}

#[test]
#[ignore = "needs the static build: `make test` runs it with TCP_ROUTER_MEMORY_STATIC_BIN set"]
fn an_idle_connection_of_the_static_build_costs_one_stack_page_per_thread() {
    let binary = std::env::var(STATIC_BINARY_ENV)
        .unwrap_or_else(|_| panic!("{STATIC_BINARY_ENV} must name the static build (make static)"));
    assert_idle_cost(&binary, MAX_KIB_STATIC);
}

/// Opens [`IDLE`] connections through `binary` and checks the RSS each adds against `max` KiB.
fn assert_idle_cost(binary: &str, max: f64) {
    let up = echo_upstream();
    let mut command = std::process::Command::new(binary);
    command.args(["127.0.0.1:0", &up.addr.to_string()]);
    let mut process = Process::start_command(command);
    let pid = process.child.id();
    // Warm up: the accept loop, the pool's spares, splice's pipes and the allocator's first
    // arenas are there before the baseline, as they are in a running service.
    const WARM: usize = 20;
    let warm: Vec<TcpStream> = (0..WARM).map(|_| idle_connection(&process)).collect();
    drop(warm);
    let base_threads = util::threads_of(pid);
    let base = util::rss_kib(pid);
    // A burst that comes and goes first, so the idle connections below run on threads that have
    // each served and ended a connection (logged it, released it), as a running service's
    // threads have: a page touched by ending a connection stays with its thread.
    let burst: Vec<TcpStream> = (0..IDLE).map(|_| idle_connection(&process)).collect();
    drop(burst);
    process.wait_for_lines("closed #", WARM + IDLE);
    let idle: Vec<TcpStream> = (0..IDLE).map(|_| idle_connection(&process)).collect();
    // Each connection's second copy thread has started and settled in its wait.
    util::wait_until(&format!("the router to run {IDLE} more threads"), || {
        util::threads_of(pid) >= base_threads + IDLE
    });
    let rss = util::rss_kib(pid);
    let per_connection = rss.saturating_sub(base) as f64 / IDLE as f64;
    assert!(
        per_connection <= max,
        "{binary}: {per_connection} KiB of RSS per idle connection ({base} KiB before {IDLE} \
         connections, {rss} KiB with them), more than {max}"
    );
    eprintln!(
        "memory: {binary}: {per_connection} KiB of RSS per idle connection ({base} -> {rss} KiB)"
    );
    drop(idle);
}
