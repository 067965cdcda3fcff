//! The config file end to end: several listeners, rinetd allow/deny, idle limits, reload, --check.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::util::*;

/// An upstream that greets with `banner`, then echoes.
fn banner_upstream(banner: &'static str) -> Upstream {
    upstream(move |mut stream| {
        stream.write_all(banner.as_bytes()).unwrap();
        let mut reader = stream.try_clone().unwrap();
        let _ = std::io::copy(&mut reader, &mut stream);
    })
}

/// True if the router served the client (the banner arrived); false if it closed it.
fn served(mut client: TcpStream) -> bool {
    let mut buf = [0u8; 1];
    match client.read(&mut buf) {
        Ok(1) => true,
        Ok(_) => false,
        Err(err) if err.kind() == ErrorKind::ConnectionReset => false,
        Err(err) => panic!("unexpected read error: {err}"),
    }
}

/// One process serves every listener of the file.
#[test]
fn two_listeners_in_one_process() {
    let a = banner_upstream("A");
    let b = banner_upstream("B");
    let dir = temp_dir("two");
    let file = dir.write(
        "two.conf",
        &format!(
            "route 127.0.0.1:0 {}\nroute 127.0.0.2:0 {}\n",
            a.addr, b.addr
        ),
    );
    let mut router = Process::start(&["-c", &file]);
    let to_a = router.listener_with(&a.addr.to_string());
    let to_b = router.listener_with(&b.addr.to_string());
    assert_eq!(read_exact(&mut connect(to_a), 1), b"A");
    assert_eq!(read_exact(&mut connect(to_b), 1), b"B");
}

/// rinetd's allow/deny: global rules, then each rule's own, checked against the client's source
/// address (127.0.0.1-3 on loopback); refused clients never reach the upstream, and the logfile
/// records each outcome with rinetd's result words.
#[test]
fn rinetd_allow_and_deny_by_source_address() {
    let one = banner_upstream("1");
    let two = banner_upstream("2");
    let dir = temp_dir("rinetd");
    let log = dir.join("rinetd.log");
    // Port 0: any free port, logged at start (a fixed port could be taken by a parallel test).
    let file = dir.write(
        "rinetd.conf",
        &format!(
            "# global rules\nallow 127.0.0.*\ndeny 127.0.0.3\nlogfile {}\n\
             127.0.0.4 0 127.0.0.1 {}\ndeny 127.0.0.2\n\
             127.0.0.5 0 127.0.0.1 {}\nallow 127.0.0.2\n",
            log.display(),
            one.addr.port(),
            two.addr.port()
        ),
    );
    let mut router = Process::start(&["-c", &file]);
    let rule1 = router.listener_with(&format!(":{}", one.addr.port()));
    let rule2 = router.listener_with(&format!(":{}", two.addr.port()));

    assert!(served(connect_from(1, rule1)), "127.0.0.1 on rule 1");
    assert!(
        !served(connect_from(2, rule1)),
        "127.0.0.2 is denied by rule 1"
    );
    assert!(
        !served(connect_from(3, rule1)),
        "127.0.0.3 is denied globally"
    );
    assert!(
        !served(connect_from(1, rule2)),
        "rule 2 allows only 127.0.0.2"
    );
    assert!(served(connect_from(2, rule2)), "127.0.0.2 on rule 2");
    assert!(
        !served(connect_from(3, rule2)),
        "global deny beats rule 2's allow"
    );
    assert_eq!(one.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(two.accepted.load(Ordering::SeqCst), 1);

    router.wait_for_lines("closed #", 6);
    let refusal = router
        .seen
        .iter()
        .find(|l| l.contains("client=127.0.0.2") && l.contains("refused"))
        .expect("a refusal of 127.0.0.2 is logged");
    assert!(refusal.contains("deny 127.0.0.2"), "{refusal}");
    // The logfile line of a connection is written just after its stderr line.
    let log_lines = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_until("six lines in the rinetd logfile", || {
        log_lines().lines().count() >= 6
    });
    let lines = log_lines();
    assert_eq!(lines.lines().count(), 6, "{lines}");
    assert_eq!(lines.matches("\tdenied").count(), 3, "{lines}");
    assert_eq!(lines.matches("\tnot-allowed").count(), 1, "{lines}");
    assert_eq!(lines.matches("\tdone-").count(), 2, "{lines}");
}

/// `--deny` on the command line is a global rule; the refusal is logged with the rule.
#[test]
fn command_line_deny_refuses_without_contacting_the_upstream() {
    let up = banner_upstream("x");
    let mut router = Process::start(&[
        "--deny",
        "127.0.0.2/32",
        "127.0.0.1:0",
        &up.addr.to_string(),
    ]);
    assert!(!served(connect_from(2, router.addr)));
    let line = router.wait_for_line("closed #");
    assert!(
        line.contains("refused") && line.contains("deny 127.0.0.2/32"),
        "{line}"
    );
    assert!(served(connect_from(1, router.addr)));
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
}

/// `idle_timeout=1s`: a connection with no bytes moving is closed once the timeout has passed
/// (not sooner, and within three timeouts), logged as a timeout; a connection whose client
/// uploads every 100 ms (bytes in one direction only; nothing ever comes back) is still served
/// after three timeouts, and ends only when its client ends it, logged as end of stream.
#[test]
fn idle_timeout_closes_idle_but_not_busy_connections() {
    const IDLE: Duration = Duration::from_secs(1);
    // A tenth of the timeout: the test itself would have to stall for 0.9 s to look idle.
    const KEEP_ALIVE: Duration = Duration::from_millis(100);
    // The upstream reports every byte count it reads, so each keep-alive is known to have
    // passed through the router.
    let (got_tx, got_rx) = mpsc::channel::<usize>();
    let got_tx = Mutex::new(got_tx);
    let sink = upstream(move |mut stream| {
        let got = got_tx.lock().unwrap().clone();
        let mut buf = [0u8; 64];
        while let Ok(n @ 1..) = stream.read(&mut buf) {
            let _ = got.send(n);
        }
    });
    let dir = temp_dir("idle");
    let file = dir.write(
        "idle.conf",
        &format!("route 127.0.0.1:0 {} idle_timeout=1s\n", sink.addr),
    );
    let mut router = Process::start(&["-c", &file]);

    // Timed from before the connect: the router's idle clock cannot start earlier.
    let idle_since = Instant::now();
    let mut idle = connect(router.addr);
    let idle_client = idle.local_addr().unwrap();
    let idle_closed = thread::spawn(move || {
        let mut buf = [0u8; 1];
        let read = idle.read(&mut buf);
        (read.map_err(|e| e.kind()), idle_since.elapsed())
    });

    let busy_since = Instant::now();
    let mut busy = connect(router.addr);
    let busy_client = busy.local_addr().unwrap();
    // Longest time from writing one keep-alive to the upstream confirming the next: at least as
    // long as the router ever saw the connection quiet.
    let mut longest_quiet = Duration::ZERO;
    let mut last_write = Instant::now();
    let closed_early = |longest_quiet: Duration, router: &mut Process| -> ! {
        let open_for = busy_since.elapsed();
        let line = router.wait_for_line(&format!("client={busy_client} "));
        panic!(
            "the busy connection was closed within {open_for:?}, its longest quiet time at most \
             {longest_quiet:?}:\n{line}"
        )
    };
    while busy_since.elapsed() < 3 * IDLE {
        thread::sleep(KEEP_ALIVE);
        let write = Instant::now();
        busy.write_all(b"tick").unwrap();
        let mut got = 0;
        while got < 4 {
            match got_rx.recv_timeout(PATIENCE) {
                Ok(n) => got += n,
                Err(_) => closed_early(longest_quiet, &mut router),
            }
        }
        longest_quiet = longest_quiet.max(last_write.elapsed());
        last_write = write;
    }
    // Three timeouts on, the last keep-alive just went through. Straight away (no quiet time of
    // the test's own making): nothing to read, no end of stream, no reset; then the client ends.
    busy.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 1];
    if !matches!(busy.read(&mut buf), Err(err) if err.kind() == ErrorKind::WouldBlock) {
        closed_early(longest_quiet, &mut router);
    }
    busy.set_nonblocking(false).unwrap();
    send_and_close(&mut busy, b"bye!");
    assert_eq!(read_to_end(&mut busy), b"");

    let (read, closed_after) = idle_closed.join().unwrap();
    assert_eq!(
        read,
        Ok(0),
        "the idle connection ends with an end of stream"
    );
    assert!(
        closed_after >= IDLE,
        "idle connection closed after {closed_after:?}"
    );
    assert!(
        closed_after < 3 * IDLE,
        "idle connection closed after {closed_after:?}"
    );
    let line = router.wait_for_line(&format!("client={idle_client} "));
    assert!(line.contains("=timeout"), "{line}");
    let line = router.wait_for_line(&format!("client={busy_client} "));
    assert!(!line.contains("timeout"), "{line}");
    assert!(line.contains("client_to_upstream=eof"), "{line}");
}

/// A half-closed connection whose other side stays silent is closed after fin_timeout.
#[test]
fn fin_timeout_reaps_half_closed_connections() {
    let silent = upstream(|stream| {
        let mut buf = [0u8; 64];
        while matches!((&stream).read(&mut buf), Ok(n) if n > 0) {}
        // Saw the FIN; never answers and keeps the connection open (past the test's end).
        thread::sleep(PATIENCE);
        drop(stream);
    });
    let mut router = Process::start(&[
        "--fin-timeout",
        "300ms",
        "127.0.0.1:0",
        &silent.addr.to_string(),
    ]);
    let mut client = connect(router.addr);
    send_and_close(&mut client, b"request");
    assert_eq!(read_to_end(&mut client), b"");
    let line = router.wait_for_line("closed #");
    assert!(line.contains("upstream_to_client=timeout"), "{line}");
}

/// A listener's `max_connections=1` holds its second client in that listener's backlog while the
/// first is open (the router does not accept it and its upstream is not contacted), even as the
/// same process goes on serving another listener; when the first ends, the second is served.
#[test]
fn per_listener_max_connections() {
    let capped = banner_upstream("!");
    let other = banner_upstream("B");
    let dir = temp_dir("max");
    let file = dir.write(
        "max.conf",
        &format!(
            "route 127.0.0.1:0 {} max_connections=1\nroute 127.0.0.2:0 {}\n",
            capped.addr, other.addr
        ),
    );
    let mut router = Process::start(&["-c", &file]);
    let to_capped = router.listener_with(&capped.addr.to_string());
    let to_other = router.listener_with(&other.addr.to_string());

    let mut first = connect(to_capped);
    assert_eq!(read_exact(&mut first, 1), b"!");
    let mut second = connect(to_capped);
    second.write_all(b"waiting").unwrap();
    // Until the second client is either queued (as it must be) or taken (which fails below).
    wait_until("the second client in the backlog or accepted", || {
        accept_queue(to_capped) == 1 || capped.accepted.load(Ordering::SeqCst) > 1
    });
    // The synchronisation point: the accept loop that would take the second client serves a
    // client of the other listener, which connected after the second was queued.
    assert_eq!(read_exact(&mut connect(to_other), 1), b"B");
    assert_eq!(accept_queue(to_capped), 1, "the second client was accepted");
    assert_eq!(capped.accepted.load(Ordering::SeqCst), 1);

    drop(first);
    assert_eq!(read_exact(&mut second, 1), b"!");
    assert_eq!(capped.accepted.load(Ordering::SeqCst), 2);
    assert_eq!(accept_queue(to_capped), 0);
}

/// SIGHUP adds and removes listeners; a listener whose address did not change keeps its socket;
/// a transfer through a removed listener completes intact; an invalid file is refused and the
/// running configuration keeps serving.
#[test]
fn sighup_reload_adds_removes_and_keeps_live_transfers() {
    let a = banner_upstream("A");
    let b = echo_upstream();
    let c = banner_upstream("C");
    let dir = temp_dir("reload");
    let pid_file = dir.join("router.pid");
    let v1 = format!(
        "pidlogfile {}\nroute 127.0.0.1:0 {}\nroute 127.0.0.2:0 {}\n",
        pid_file.display(),
        a.addr,
        b.addr
    );
    let file = dir.write("reload.conf", &v1);
    let mut router = Process::start(&["-c", &file]);
    let to_a = router.listener_with(&a.addr.to_string());
    let to_b = router.listener_with(&b.addr.to_string());
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(pid, router.child.id());

    // A transfer through B, which the reload removes.
    let mut live = connect(to_b);
    let first = random_bytes(1, 1 << 20);
    live.write_all(&first).unwrap();
    assert_eq!(
        checksum(&read_exact(&mut live, first.len())),
        checksum(&first)
    );

    let v2 = format!(
        "pidlogfile {}\nroute 127.0.0.1:0 {}\nroute 127.0.0.3:0 {}\n",
        pid_file.display(),
        a.addr,
        c.addr
    );
    dir.write("reload.conf", &v2);
    router.signal("HUP");
    router.wait_for_line("reloaded");
    let to_c = router.listener_with(&c.addr.to_string());
    assert_eq!(read_exact(&mut connect(to_c), 1), b"C");
    assert_eq!(read_exact(&mut connect(to_a), 1), b"A", "A kept its socket");
    assert!(TcpStream::connect(to_b).is_err(), "B is closed");

    let second = random_bytes(2, 1 << 20);
    send_and_close(&mut live, &second);
    assert_eq!(checksum(&read_to_end(&mut live)), checksum(&second));

    dir.write("reload.conf", "route 127.0.0.1:0\nbogus line here\n");
    router.signal("HUP");
    let refused = router.wait_for_line("reload refused");
    assert!(refused.contains("reload.conf:1:"), "{refused}");
    assert_eq!(
        read_exact(&mut connect(to_a), 1),
        b"A",
        "old config still serves"
    );
    assert_eq!(read_exact(&mut connect(to_c), 1), b"C");
}

/// --check prints a summary and exits 0, or prints every error as FILE:LINE: message and exits 2.
#[test]
fn check_reports_every_error_with_its_line() {
    let dir = temp_dir("check");
    let good = dir.write(
        "good.conf",
        "allow 127.0.0.*\n127.0.0.1 8080 localhost 80\nroute 127.0.0.1:8443 127.0.0.1:1 sni=a.example.com\n",
    );
    let (code, stdout, stderr) = run_bin(&["--check", "-c", &good]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("configuration OK: 2 listener(s), 2 route(s)"),
        "{stdout}"
    );
    assert!(stdout.contains("good.conf:2"), "{stdout}");

    let bad = dir.write(
        "bad.conf",
        "127.0.0.1 8080 127.0.0.1 http\n127.0.0.1 8081/udp 127.0.0.1 53\nallow 300.*.x\n\
         route 127.0.0.1:9000 127.0.0.1:1 nosuchkey=1\nfrobnicate\n127.0.0.1 8080 127.0.0.1 81\n",
    );
    let (code, stdout, stderr) = run_bin(&["--check", "-c", &bad]);
    assert_eq!(code, 2, "{stdout}");
    let lines: Vec<&str> = stderr.lines().collect();
    for line_no in [2, 3, 4, 5, 6] {
        let prefix = format!("{bad}:{line_no}: ");
        assert!(
            lines.iter().any(|l| l.starts_with(&prefix)),
            "no error for line {line_no}:\n{stderr}"
        );
    }
    assert!(!stderr.contains(&format!("{bad}:1:")), "{stderr}");

    let unresolvable = dir.write("dns.conf", "route 127.0.0.1:9000 no-such-host.invalid:80\n");
    let (code, _, stderr) = run_bin(&["--check", "-c", &unresolvable]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("dns.conf:1: cannot resolve 'no-such-host.invalid:80'"),
        "{stderr}"
    );

    // The same validation runs at a normal start, before any listener opens.
    let (code, _, stderr) = run_bin(&["-c", &bad]);
    assert_eq!(code, 2);
    assert!(stderr.contains(&format!("{bad}:2:")), "{stderr}");
}
