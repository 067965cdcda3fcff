//! The config file end to end: several listeners, rinetd allow/deny, idle limits, reload, --check.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use socket2::{Domain, Socket, Type};

use crate::util::*;

/// A scratch directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tcp-router-test-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An upstream that greets with `banner`, then echoes.
fn banner_upstream(banner: &'static str) -> Upstream {
    upstream(move |mut stream| {
        stream.write_all(banner.as_bytes()).unwrap();
        let mut reader = stream.try_clone().unwrap();
        let _ = std::io::copy(&mut reader, &mut stream);
    })
}

/// Connects from the loopback address 127.0.0.`last`.
fn connect_from(last: u8, to: SocketAddr) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let from = SocketAddr::from((Ipv4Addr::new(127, 0, 0, last), 0));
    socket.bind(&from.into()).unwrap();
    socket.connect(&to.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream
}

/// The address logged for the listener whose log line contains `needle`.
fn listener_addr(router: &mut Process, needle: &str) -> SocketAddr {
    let line = match router
        .seen
        .iter()
        .find(|l| l.contains("listening on ") && l.contains(needle))
    {
        Some(line) => line.clone(),
        None => loop {
            let line = router.wait_for_line("listening on ");
            if line.contains(needle) {
                break line;
            }
        },
    };
    line.split("listening on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap()
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
    let dir = TempDir::new();
    let file = dir.write(
        "two.conf",
        &format!(
            "route 127.0.0.1:0 {}\nroute 127.0.0.2:0 {}\n",
            a.addr, b.addr
        ),
    );
    let mut router = Process::start(&["-c", &file]);
    let to_a = listener_addr(&mut router, &a.addr.to_string());
    let to_b = listener_addr(&mut router, &b.addr.to_string());
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
    let dir = TempDir::new();
    let log = dir.0.join("rinetd.log");
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
    let rule1 = listener_addr(&mut router, &format!(":{}", one.addr.port()));
    let rule2 = listener_addr(&mut router, &format!(":{}", two.addr.port()));

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

    while router
        .seen
        .iter()
        .filter(|l| l.contains("closed #"))
        .count()
        < 6
    {
        router.wait_for_line("closed #");
    }
    let refusal = router
        .seen
        .iter()
        .find(|l| l.contains("client=127.0.0.2") && l.contains("refused"))
        .expect("a refusal of 127.0.0.2 is logged");
    assert!(refusal.contains("deny 127.0.0.2"), "{refusal}");
    let lines = std::fs::read_to_string(&log).unwrap();
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

/// An idle connection is closed after idle_timeout; one with bytes moving in only one direction
/// is kept alive.
#[test]
fn idle_timeout_closes_idle_but_not_busy_connections() {
    let sink = upstream(|mut stream| {
        let mut buf = [0u8; 64];
        while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
    });
    let dir = TempDir::new();
    let file = dir.write(
        "idle.conf",
        &format!("route 127.0.0.1:0 {} idle_timeout=300ms\n", sink.addr),
    );
    let mut router = Process::start(&["-c", &file]);

    let mut busy = connect(router.addr);
    let mut idle = connect(router.addr);
    // Three idle periods of upload only: the busy connection must survive them all.
    for _ in 0..9 {
        busy.write_all(b"tick").unwrap();
        thread::sleep(Duration::from_millis(100));
    }
    let mut buf = [0u8; 1];
    assert_eq!(
        idle.read(&mut buf).unwrap(),
        0,
        "the idle connection is closed"
    );
    let line = router.wait_for_line("closed #");
    assert!(line.contains("=timeout"), "{line}");
    busy.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let err = busy
        .read(&mut buf)
        .expect_err("the busy connection is still open");
    assert!(matches!(
        err.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut
    ));
    busy.write_all(b"still here").unwrap();
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

/// A listener's max_connections holds its extra clients in its backlog until one ends.
#[test]
fn per_listener_max_connections() {
    let up = banner_upstream("!");
    let dir = TempDir::new();
    let file = dir.write(
        "max.conf",
        &format!("route 127.0.0.1:0 {} max_connections=1\n", up.addr),
    );
    let router = Process::start(&["-c", &file]);
    let mut first = connect(router.addr);
    assert_eq!(read_exact(&mut first, 1), b"!");
    let mut second = connect(router.addr);
    second
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 1];
    let err = second.read(&mut buf).expect_err("second client must wait");
    assert!(matches!(
        err.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut
    ));
    drop(first);
    second.set_read_timeout(Some(PATIENCE)).unwrap();
    assert_eq!(read_exact(&mut second, 1), b"!");
}

/// SIGHUP adds and removes listeners; a listener whose address did not change keeps its socket;
/// a transfer through a removed listener completes intact; an invalid file is refused and the
/// running configuration keeps serving.
#[test]
fn sighup_reload_adds_removes_and_keeps_live_transfers() {
    let a = banner_upstream("A");
    let b = echo_upstream();
    let c = banner_upstream("C");
    let dir = TempDir::new();
    let pid_file = dir.0.join("router.pid");
    let v1 = format!(
        "pidlogfile {}\nroute 127.0.0.1:0 {}\nroute 127.0.0.2:0 {}\n",
        pid_file.display(),
        a.addr,
        b.addr
    );
    let file = dir.write("reload.conf", &v1);
    let mut router = Process::start(&["-c", &file]);
    let to_a = listener_addr(&mut router, &a.addr.to_string());
    let to_b = listener_addr(&mut router, &b.addr.to_string());
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
    let to_c = listener_addr(&mut router, &c.addr.to_string());
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
    let dir = TempDir::new();
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
