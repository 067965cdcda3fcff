//! The binary as operators use it: usage errors, exit codes, logs, SIGTERM and the drain.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;

use crate::util::*;

/// `--help` prints usage with examples on stdout and exits 0.
#[test]
fn help_shows_examples() {
    let (code, stdout, _) = run_bin(&["--help"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("Examples:"), "{stdout}");
    assert!(stdout.contains("tcp-router 127.0.0.1:11000 127.0.0.1:6379"));
}

/// `--version` prints the version and exits 0.
#[test]
fn version_prints_the_version() {
    let (code, stdout, _) = run_bin(&["--version"]);
    assert_eq!(code, 0);
    assert_eq!(
        stdout.trim(),
        format!("tcp-router {}", env!("CARGO_PKG_VERSION"))
    );
}

/// Each bad input gives one line on stderr naming the value and the reason, and exit code 2.
#[test]
fn bad_input_gives_one_clear_line_and_exit_2() {
    let cases: &[(&[&str], &str)] = &[
        (&["127.0.0.1", "127.0.0.1:6379"], "'127.0.0.1'"),
        (&["127.0.0.1:70000", "127.0.0.1:6379"], "out of range"),
        (&["127.0.0.1:11000", "::1:6379"], "brackets"),
        (&["127.0.0.1:11000"], "missing an UPSTREAM"),
        (&[], "missing LISTEN"),
        (&["--connect-timeout", "5x", "a:1", "b:2"], "'5x'"),
        (&["--log-level", "loud", "a:1", "b:2"], "'loud'"),
        (&["--no-such-option", "a:1", "b:2"], "--no-such-option"),
        (
            &["--max-connections", "0", "127.0.0.1:0", "127.0.0.1:1"],
            "'0'",
        ),
    ];
    for (args, needle) in cases {
        let (code, _, stderr) = run_bin(args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

/// A listen address already in use: one line naming it, exit code 1.
#[test]
fn listen_address_in_use_exits_1() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, _, stderr) = run_bin(&["--log-level", "off", &addr, "127.0.0.1:1"]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
    assert!(stderr.contains("in use"), "{stderr}");
}

/// An upstream name that does not resolve costs that one connection, logged; the process lives on.
#[test]
fn unresolvable_upstream_costs_one_connection() {
    let mut router = Process::start(&["127.0.0.1:0", "no-such-host.invalid:80"]);
    for _ in 0..2 {
        let mut client = connect(router.addr);
        let mut buf = [0u8; 1];
        let _ = client.read(&mut buf);
        router.wait_for_line("no-upstream");
    }
    assert!(router.child.try_wait().unwrap().is_none(), "router exited");
}

/// Each closed connection is logged at info with addresses, byte counts and how each side ended.
#[test]
fn one_info_line_per_connection() {
    let up = echo_upstream();
    let mut router = Process::start(&["127.0.0.1:0", &up.addr.to_string()]);
    let mut client = connect(router.addr);
    let local = client.local_addr().unwrap();
    send_and_close(&mut client, b"12345");
    assert_eq!(read_to_end(&mut client), b"12345");
    let line = router.wait_for_line("closed #");
    for needle in [
        format!("client={local}"),
        format!("upstream={}", up.addr),
        "sent=5 received=5".to_string(),
        "first=client".to_string(),
        "client_to_upstream=eof upstream_to_client=eof".to_string(),
    ] {
        assert!(line.contains(&needle), "{needle:?} missing from {line}");
    }
}

/// SIGTERM stops accepting at once, lets an in-flight transfer finish, then exits 0.
#[test]
fn sigterm_drains_in_flight_transfers() {
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let go_rx = std::sync::Mutex::new(go_rx);
    let up = upstream(move |mut stream| {
        stream.write_all(b"first half;").unwrap();
        go_rx.lock().unwrap().recv().unwrap();
        stream.write_all(b"second half").unwrap();
    });
    let mut router = Process::start(&["127.0.0.1:0", &up.addr.to_string()]);
    let mut client = connect(router.addr);
    assert_eq!(read_exact(&mut client, 11), b"first half;");

    router.signal("TERM");
    router.wait_for_line("accepting no more clients");
    // The listener is closed: new clients are refused.
    assert!(TcpStream::connect(router.addr).is_err());

    go_tx.send(()).unwrap();
    assert_eq!(read_to_end(&mut client), b"second half");
    drop(client);
    let status = router.wait_exit();
    assert_eq!(status.code(), Some(0));
    let log = router.rest_of_stderr().join("\n");
    assert!(log.contains("1 connection(s) finished, 0 cut"), "{log}");
}

/// A connection that outlives the drain timeout is cut, and the exit is still clean.
#[test]
fn drain_timeout_cuts_what_is_left() {
    let up = upstream(|stream| {
        let mut buf = [0u8; 1];
        let _ = (&stream).read(&mut buf);
    });
    let mut router = Process::start(&[
        "--drain-timeout",
        "200ms",
        "127.0.0.1:0",
        &up.addr.to_string(),
    ]);
    let mut client = connect(router.addr);
    client.write_all(b"x").unwrap();
    router.signal("TERM");
    let mut buf = [0u8; 1];
    assert_eq!(
        client.read(&mut buf).unwrap(),
        0,
        "the cut closes the client"
    );
    assert_eq!(router.wait_exit().code(), Some(0));
    let log = router.rest_of_stderr().join("\n");
    assert!(log.contains("0 connection(s) finished, 1 cut"), "{log}");
    assert!(log.contains("client_to_upstream=shutdown"), "{log}");
}

/// A second SIGTERM during the drain exits at once with 128 + 15.
#[test]
fn second_signal_exits_at_once() {
    let up = upstream(|stream| {
        let mut buf = [0u8; 1];
        let _ = (&stream).read(&mut buf);
    });
    let mut router =
        Process::start(&["--drain-timeout", "1h", "127.0.0.1:0", &up.addr.to_string()]);
    let mut client = connect(router.addr);
    client.write_all(b"x").unwrap();
    router.signal("TERM");
    router.wait_for_line("accepting no more clients");
    router.signal("TERM");
    assert_eq!(router.wait_exit().code(), Some(143));
}

/// The scheduling policy (field 41 of /proc/PID/task/TID/stat) of every thread of `pid`.
fn thread_policies(pid: u32) -> Vec<u32> {
    let mut policies = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let stat = std::fs::read_to_string(task.unwrap().path().join("stat")).unwrap();
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        policies.push(after_name.split(' ').nth(38).unwrap().parse().unwrap());
    }
    policies
}

/// The policy this test process runs under (what a child inherits).
fn own_policy() -> u32 {
    thread_policies(std::process::id())[0]
}

const SCHED_BATCH: u32 = 3;

/// By default every thread (accept loop, workers, copy threads) runs under SCHED_BATCH, unless
/// tcp-router was started under a policy or nice value someone chose; `--scheduler inherit`
/// keeps what it was started with.
#[test]
fn threads_run_under_the_chosen_scheduler() {
    let up = echo_upstream();
    for (args, batch_expected) in [
        (vec!["127.0.0.1:0"], true),
        (vec!["--scheduler", "inherit", "127.0.0.1:0"], false),
    ] {
        let upstream = up.addr.to_string();
        let mut all_args = args.clone();
        all_args.push(&upstream);
        let mut router = Process::start(&all_args);
        let started = router
            .seen
            .iter()
            .find(|line| line.contains("scheduler: "))
            .cloned()
            .unwrap_or_else(|| router.wait_for_line("scheduler: "));
        // A connection, so that a worker and a second copy thread exist.
        let mut client = connect(router.addr);
        client.write_all(b"ping").unwrap();
        assert_eq!(read_exact(&mut client, 4), b"ping");
        let policies = thread_policies(router.child.id());
        assert!(policies.len() >= 3, "{policies:?}");
        let applied = started.contains("scheduler: SCHED_BATCH");
        let default_start = own_policy() == 0 && !started.contains("started at nice");
        assert_eq!(applied, batch_expected && default_start, "{started}");
        let expected = if applied { SCHED_BATCH } else { own_policy() };
        assert!(
            policies.iter().all(|&p| p == expected),
            "{policies:?}, {started}"
        );
    }
}

/// The stop line says how long the drain took: an instant stop no longer reads as a wait of the
/// whole drain timeout ("0 cut after the 10s drain timeout").
#[test]
fn the_stop_line_says_how_long_the_drain_took() {
    let up = echo_upstream();
    let mut router = Process::start(&["127.0.0.1:0", &up.addr.to_string()]);
    router.signal("TERM");
    let line = router.wait_for_line("stopped: ");
    assert!(
        line.contains("stopped: 0 connection(s) finished, 0 cut; drained in ")
            && line.ends_with(" (drain timeout 10s)"),
        "{line}"
    );
    let took = line
        .split("drained in ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    let took = tcp_router::config::parse_duration(took).unwrap();
    assert!(took < std::time::Duration::from_secs(5), "{line}");
}

/// The forms people type first: `--opt=value`, `-h`, `-V`; an address with a scheme or a comma
/// gets a hint that fits it; a 3-field rinetd line says what a forwarding rule needs.
#[test]
fn the_conventions_people_type_first_work_or_get_a_fitting_hint() {
    let (code, stdout, stderr) = run_bin(&[
        "--check",
        "--idle-timeout=5s",
        "--connect-timeout=250ms",
        "127.0.0.1:0",
        "127.0.0.1:1",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("connect_timeout=250ms idle_timeout=5s"),
        "{stdout}"
    );
    let (code, stdout, _) = run_bin(&["-h"]);
    assert_eq!(code, 0);
    assert!(stdout.starts_with("Usage: tcp-router"), "{stdout}");
    let (code, stdout, _) = run_bin(&["-V"]);
    assert_eq!(
        (code, stdout.trim()),
        (
            0,
            format!("tcp-router {}", env!("CARGO_PKG_VERSION")).as_str()
        )
    );

    for (address, hint) in [
        ("http://127.0.0.1:80", "as in '127.0.0.1:80'"),
        ("tcp://db:5432", "as in 'db:5432'"),
        ("127.0.0.1:1,127.0.0.1:2", "one address per argument"),
    ] {
        let (code, _, stderr) = run_bin(&["127.0.0.1:0", address]);
        assert_eq!(code, 2, "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains(hint) && !stderr.contains("brackets"),
            "{stderr}"
        );
    }

    let dir = temp_dir("cli-rinetd-3");
    let file = dir.write("r.conf", "0.0.0.0 8080 127.0.0.1\n");
    let (code, _, stderr) = run_bin(&["--check", "-c", &file]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(":1: a forwarding rule needs 4 fields, 'bindaddress bindport connectaddress connectport [src=ADDR]'; this line has 3"),
        "{stderr}"
    );
}

/// Every log line's timestamp has one width: RFC 3339 in UTC with nine fraction digits (trailing
/// zeros used to be dropped, so lines did not line up).
#[test]
fn log_timestamps_have_a_fixed_width() {
    let up = echo_upstream();
    let mut router = Process::start(&["127.0.0.1:0", &up.addr.to_string()]);
    for _ in 0..5 {
        let mut client = connect(router.addr);
        client.write_all(b"x").unwrap();
        let mut byte = [0u8; 1];
        client.read_exact(&mut byte).unwrap();
        drop(client);
        router.wait_for_line("closed #");
    }
    for line in &router.seen {
        let stamp = line.split(' ').next().unwrap();
        assert_eq!(
            stamp.len(),
            "2026-12-01T23:21:21.603755405Z".len(),
            "{line}"
        );
        assert!(
            stamp.ends_with('Z') && stamp.as_bytes()[19] == b'.',
            "{line}"
        );
    }
}
