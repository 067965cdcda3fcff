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
        assert_one_line_error(args, needle);
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
    let up = holding_upstream();
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
    let up = holding_upstream();
    let mut router =
        Process::start(&["--drain-timeout", "1h", "127.0.0.1:0", &up.addr.to_string()]);
    let mut client = connect(router.addr);
    client.write_all(b"x").unwrap();
    router.signal("TERM");
    router.wait_for_line("accepting no more clients");
    router.signal("TERM");
    assert_eq!(router.wait_exit().code(), Some(143));
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
        let started = router.line_with("scheduler: ");
        // A connection, so that a worker and a second copy thread exist.
        let mut client = connect(router.addr);
        round_trip(&mut client, b"ping");
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

// ---------------------------------------------------------------------------------------------
// Files the process writes
// ---------------------------------------------------------------------------------------------

/// The router started through `sh` with `umask 000` (exec keeps the process id).
fn start_with_umask_000(args: &[&str]) -> Process {
    let mut command = std::process::Command::new("sh");
    command
        .args(["-c", "umask 000; exec \"$0\" \"$@\"", bin()])
        .args(args);
    Process::start_command(command)
}

/// A symlink planted at the pid file's path is replaced, not written through (its target keeps
/// its bytes), and the file is mode 0644 even under `umask 000`.
#[test]
fn the_pid_file_replaces_a_planted_symlink_and_is_0644_under_umask_000() {
    use std::os::unix::fs::PermissionsExt;
    let up = echo_upstream();
    let dir = temp_dir("pid-file-link");
    let victim = dir.write("victim", "precious\n");
    let pid_file = dir.join("router.pid");
    std::os::unix::fs::symlink(&victim, &pid_file).unwrap();
    let pid_arg = pid_file.display().to_string();
    let upstream = up.addr.to_string();
    let router = start_with_umask_000(&["--pid-file", &pid_arg, "127.0.0.1:0", &upstream]);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    let meta = std::fs::symlink_metadata(&pid_file).unwrap();
    assert!(meta.file_type().is_file(), "{:?}", meta.file_type());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o644);
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap(),
        format!("{}\n", router.child.id())
    );
}

/// A second instance started with the same pid file takes it over; when the first exits it
/// leaves the file (it names the second), and the second removes it at its own exit.
#[test]
fn a_first_instance_leaves_a_pid_file_that_names_another_process() {
    let up = echo_upstream();
    let dir = temp_dir("pid-file-two");
    let pid_file = dir.join("router.pid");
    let pid_arg = pid_file.display().to_string();
    let upstream = up.addr.to_string();
    let args = ["--pid-file", &pid_arg, "127.0.0.1:0", &upstream];
    let mut first = Process::start(&args);
    let mut second = Process::start(&args);
    let names_second = format!("{}\n", second.child.id());
    assert_eq!(std::fs::read_to_string(&pid_file).unwrap(), names_second);
    first.signal("TERM");
    assert!(first.wait_exit().success());
    assert_eq!(
        std::fs::read_to_string(&pid_file).ok(),
        Some(names_second),
        "the first instance removed the second's pid file"
    );
    second.signal("TERM");
    assert!(second.wait_exit().success());
    assert!(!pid_file.exists(), "the second left its own pid file");
}

/// An upstream that holds each connection open until the client closes it.
fn holding_upstream() -> Upstream {
    upstream(|stream| {
        let mut buf = [0u8; 1];
        let _ = (&stream).read(&mut buf);
    })
}

/// A SIGHUP during a drain is refused at once (it would wait for the drain), and the second
/// SIGTERM after it still exits at once with 128 + 15.
#[test]
fn sighup_during_a_drain_then_sigterm_exits_at_once() {
    let up = holding_upstream();
    let dir = temp_dir("hup-in-drain");
    let config = dir.write("t.conf", &format!("route 127.0.0.1:0 {}\n", up.addr));
    let mut router = Process::start(&["-c", &config, "--drain-timeout", "1h"]);
    let mut client = connect(router.addr);
    client.write_all(b"x").unwrap();
    router.signal("TERM");
    router.wait_for_line("accepting no more clients");
    router.signal("HUP");
    let hup = router.wait_for_line("SIGHUP: ");
    let since = std::time::Instant::now();
    router.signal("TERM");
    assert_eq!(router.wait_exit().code(), Some(143));
    assert!(
        since.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        since.elapsed()
    );
    assert!(hup.contains("stopping already; not reloading"), "{hup}");
}

/// A reload of a large file (20,000 `sni=` routes: seconds to read and check) runs beside the
/// signals: a SIGTERM sent while it runs stops the process at once.
#[test]
fn a_slow_reload_does_not_delay_sigterm() {
    let up = holding_upstream();
    let dir = temp_dir("slow-reload");
    let config = dir.write("t.conf", &format!("route 127.0.0.1:0 {}\n", up.addr));
    let mut router = Process::start(&["-c", &config]);
    dir.write("t.conf", &sni_routes(&up, 20_000));
    router.signal("HUP");
    router.wait_for_line("SIGHUP: reloading the configuration");
    let since = std::time::Instant::now();
    router.signal("TERM");
    assert_eq!(router.wait_exit().code(), Some(0));
    let took = since.elapsed();
    // 100 ms is the promise; the bound leaves room for a loaded test machine, and stays far
    // below the reload's own seconds.
    assert!(took < std::time::Duration::from_millis(1000), "{took:?}");
}

/// `n` routes by name to `up` on one listener: a file that takes seconds to read and check.
fn sni_routes(up: &Upstream, n: usize) -> String {
    (0..n)
        .map(|i| format!("route 127.0.0.1:0 {} sni=host-{i}.example\n", up.addr))
        .collect()
}

/// During a slow reload, a stop signal starts the drain at once and a second one exits at once.
#[test]
fn a_second_sigterm_during_a_reload_exits_at_once() {
    let up = holding_upstream();
    let dir = temp_dir("stop-in-reload");
    let config = dir.write("t.conf", &format!("route 127.0.0.1:0 {}\n", up.addr));
    let mut router = Process::start(&["-c", &config, "--drain-timeout", "1h"]);
    let mut client = connect(router.addr);
    client.write_all(b"x").unwrap();
    dir.write("t.conf", &sni_routes(&up, 20_000));
    router.signal("HUP");
    router.wait_for_line("SIGHUP: reloading the configuration");
    let since = std::time::Instant::now();
    router.signal("TERM");
    router.wait_for_line("accepting no more clients");
    router.signal("TERM");
    assert_eq!(router.wait_exit().code(), Some(143));
    let took = since.elapsed();
    assert!(took < std::time::Duration::from_millis(1000), "{took:?}");
}

/// A graceful stop closes a connection still silent in the peek phase at once (logged as such):
/// with nothing established, the drain ends at once, not at the drain or peek timeout.
#[test]
fn a_drain_with_only_a_silent_peeking_client_ends_at_once() {
    let up = holding_upstream();
    let dir = temp_dir("drain-peek");
    let config = dir.write(
        "t.conf",
        &format!(
            "route 127.0.0.1:0 {u} sni=a.example peek_timeout=60s\nroute 127.0.0.1:0 {u} peek_timeout=60s\n",
            u = up.addr
        ),
    );
    let mut router = Process::start(&["-c", &config, "--drain-timeout", "60s"]);
    let mut silent = connect(router.addr);
    // Accepted (and so given its place in the peek phase) once it leaves the backlog.
    wait_until("the silent client to be accepted", || {
        accept_queue(router.addr) == 0
    });
    let since = std::time::Instant::now();
    router.signal("TERM");
    assert_eq!(read_to_end(&mut silent), b"");
    assert_eq!(router.wait_exit().code(), Some(0));
    assert!(
        since.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        since.elapsed()
    );
    let log = router.rest_of_stderr().join("\n");
    assert!(
        log.contains("result=stopped (still choosing a route when the graceful stop began)"),
        "{log}"
    );
    assert!(log.contains("1 connection(s) finished, 0 cut"), "{log}");
}

/// The stop line says how long the drain took: an instant stop does not read as a wait of the
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

/// Every log line's timestamp has one width: RFC 3339 in UTC with nine fraction digits, trailing
/// zeros kept, so lines line up.
#[test]
fn log_timestamps_have_a_fixed_width() {
    let up = echo_upstream();
    let mut router = Process::start(&["127.0.0.1:0", &up.addr.to_string()]);
    for _ in 0..5 {
        round_trip(&mut connect(router.addr), b"x");
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
