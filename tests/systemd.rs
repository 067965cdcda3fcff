//! The service manager's side: sockets passed by socket activation (with systemd's own
//! `systemd-socket-activate`), readiness and state notifications through `NOTIFY_SOCKET`, the
//! watchdog, and several processes on one port with SO_REUSEPORT.

use std::net::{SocketAddr, TcpStream};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::{self, echo_upstream, Process, PATIENCE};

/// `systemd-socket-activate` binding `addrs` and running the binary with `args`.
fn socket_activated(addrs: &[SocketAddr], names: &str, args: &[&str]) -> Command {
    let mut command = Command::new("systemd-socket-activate");
    for addr in addrs {
        command.arg("-l").arg(addr.to_string());
    }
    command.arg(format!("--fdname={names}"));
    command.arg(util::bin()).args(args);
    command
}

/// A connection that makes `systemd-socket-activate` start the program (it waits for one),
/// made as soon as it listens; the kernel queues it until the program accepts.
fn knock(addr: SocketAddr) -> TcpStream {
    let mut knocked = None;
    util::wait_until("systemd-socket-activate to listen", || {
        knocked = TcpStream::connect(addr).ok();
        knocked.is_some()
    });
    knocked.expect("connected")
}

/// Two loopback addresses nothing else will take while the ports are held.
fn two_free_addresses() -> ([util::ReservedPort; 2], SocketAddr, SocketAddr) {
    let held = [util::reserve_port(), util::reserve_port()];
    let (a, b) = (held[0].addr(), held[1].addr());
    (held, a, b)
}

/// Two addresses passed by systemd-socket-activate are used, not bound, and both forward.
#[test]
fn socket_activation_serves_the_passed_sockets() {
    if util::skip_without(
        "systemd::socket_activation_serves_the_passed_sockets",
        &["systemd-socket-activate"],
    ) {
        return;
    }
    let up = echo_upstream();
    let (_held, addr_a, addr_b) = two_free_addresses();
    let dir = util::temp_dir("activation");
    let config = dir.write(
        "tcp-router.conf",
        &format!("route {addr_a} {}\nroute {addr_b} {}\n", up.addr, up.addr),
    );
    let mut process = Process::spawn_command(socket_activated(
        &[addr_a, addr_b],
        "web:other",
        &["-c", &config],
    ));
    let mut first = knock(addr_a);
    process.wait_for_line(&format!(
        "listener {addr_a}: using fd 3 (web) from the service manager"
    ));
    process.wait_for_line(&format!(
        "listener {addr_b}: using fd 4 (other) from the service manager"
    ));
    util::send_and_close(&mut first, b"queued before the start");
    assert_eq!(util::read_to_end(&mut first), b"queued before the start");
    util::echo_through(addr_a, b"through the first socket");
    util::echo_through(addr_b, b"through the second socket");
    process.signal("TERM");
    assert!(process.wait_exit().success());
}

/// A passed socket that matches no listener is a start-up error naming the fd and its address;
/// a passed socket that is not a listening TCP socket is one too.
#[test]
fn socket_activation_refuses_what_it_cannot_use() {
    if util::skip_without(
        "systemd::socket_activation_refuses_what_it_cannot_use",
        &["systemd-socket-activate"],
    ) {
        return;
    }
    let up = echo_upstream();
    let (_held, addr_a, addr_b) = two_free_addresses();
    let dir = util::temp_dir("activation-errors");
    let config = dir.write("one.conf", &format!("route {addr_a} {}\n", up.addr));
    let mut process = Process::spawn_command(socket_activated(
        &[addr_a, addr_b],
        "web:stray",
        &["-c", &config],
    ));
    let _knock = knock(addr_a);
    let status = process.wait_exit();
    let stderr = process.rest_of_stderr().join("\n");
    let out_code = status.code();
    assert_eq!(out_code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "tcp-router: fd 4 (stray) from the service manager is bound to {addr_b}, which is no listener's address in the configuration"
        )),
        "{stderr}"
    );
    // A datagram socket where a listening TCP socket belongs.
    let mut command = Command::new("systemd-socket-activate");
    command.args(["--datagram", "-l"]).arg(addr_a.to_string());
    command.arg(util::bin()).args(["-c", &config]);
    let mut process = Process::spawn_command(command);
    process.wait_for_line("Listening on");
    // systemd-socket-activate starts the program at the first datagram.
    let prod = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    prod.send_to(b"x", addr_a).unwrap();
    let status = process.wait_exit();
    let stderr = process.rest_of_stderr().join("\n");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("fd 3 from the service manager is not a TCP or Unix stream socket"),
        "{stderr}"
    );
}

/// The notification socket the test listens on: a path, or an abstract name.
struct Notifications {
    socket: UnixDatagram,
    name: String,
    _dir: util::TempDir,
}

impl Notifications {
    fn at_path() -> Notifications {
        let dir = util::temp_dir("notify");
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        Notifications {
            socket,
            name: path.display().to_string(),
            _dir: dir,
        }
    }

    fn abstract_name() -> Notifications {
        let name = format!("tcp-router-test-{}-{}", std::process::id(), line!());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let socket = UnixDatagram::bind_addr(&addr).unwrap();
        Notifications {
            socket,
            name: format!("@{name}"),
            _dir: util::temp_dir("notify-abstract"),
        }
    }

    /// The next datagram, within [`PATIENCE`].
    fn next(&self) -> String {
        self.socket.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut buf = [0u8; 4096];
        let n = self.socket.recv(&mut buf).expect("a notification in time");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// The next datagram that is not only a watchdog ping or a status refresh.
    fn next_event(&self) -> String {
        loop {
            let message = self.next();
            let only_routine = message.lines().all(|l| {
                l == "WATCHDOG=1" || (l.starts_with("STATUS=serving") && !message.contains("READY"))
            });
            if !only_routine {
                return message;
            }
        }
    }
}

fn notified_binary(notify: &Notifications, args: &[&str]) -> Command {
    let mut command = Command::new(util::bin());
    command.args(args).env("NOTIFY_SOCKET", &notify.name);
    command
}

/// READY=1 at start, RELOADING=1 with MONOTONIC_USEC and then READY=1 on a good reload, the
/// refusal's reason on a bad one, STOPPING=1 at a graceful stop.
#[test]
fn the_service_manager_hears_start_reload_and_stop() {
    let up = echo_upstream();
    let notify = Notifications::at_path();
    let dir = util::temp_dir("notify-sequence");
    let config = dir.write("t.conf", &format!("route 127.0.0.1:0 {}\n", up.addr));
    let mut process = Process::start_command(notified_binary(&notify, &["-c", &config]));
    let ready = notify.next_event();
    assert!(ready.contains("READY=1\n"), "{ready:?}");
    assert!(
        ready.contains("STATUS=serving 1 listener(s), 0 active connection(s)"),
        "{ready:?}"
    );

    process.signal("HUP");
    let reloading = notify.next_event();
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading:?}"
    );
    let usec: u64 = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .and_then(|v| v.parse().ok())
        .expect("a number of microseconds");
    // CLOCK_BOOTTIME (/proc/uptime) never runs behind CLOCK_MONOTONIC.
    let uptime_usec = boottime_usec();
    assert!(
        usec > 0 && usec <= uptime_usec,
        "{usec} against {uptime_usec}"
    );
    let done = notify.next_event();
    assert!(
        done.contains("READY=1\n") && done.contains("STATUS=serving"),
        "{done:?}"
    );

    std::fs::write(&config, "route 127.0.0.1:0 nonsense\n").unwrap();
    process.signal("HUP");
    assert!(notify.next_event().starts_with("RELOADING=1\n"));
    let refused = notify.next_event();
    assert!(refused.contains("READY=1\n"), "{refused:?}");
    assert!(
        refused.contains("STATUS=reload refused, the running configuration stays: ")
            && refused.contains("nonsense"),
        "{refused:?}"
    );
    util::echo_through(process.addr, b"still serving the old configuration");

    process.signal("TERM");
    let stopping = notify.next_event();
    assert!(stopping.starts_with("STOPPING=1\n"), "{stopping:?}");
    assert!(process.wait_exit().success());
}

/// An abstract `@name` works as NOTIFY_SOCKET.
#[test]
fn an_abstract_notify_socket_is_reached() {
    let up = echo_upstream();
    let notify = Notifications::abstract_name();
    let mut process = Process::start_command(notified_binary(
        &notify,
        &["127.0.0.1:0", &up.addr.to_string()],
    ));
    assert!(notify.next_event().contains("READY=1"));
    process.signal("TERM");
    assert!(notify.next_event().starts_with("STOPPING=1"));
    assert!(process.wait_exit().success());
}

/// With WATCHDOG_USEC set, WATCHDOG=1 arrives at about half the interval, again and again.
#[test]
fn the_watchdog_is_pinged_while_the_accept_loop_runs() {
    let up = echo_upstream();
    let notify = Notifications::at_path();
    let mut command = notified_binary(&notify, &["127.0.0.1:0", &up.addr.to_string()]);
    command.env("WATCHDOG_USEC", "600000");
    let mut process = Process::start_command(command);
    assert!(notify.next_event().contains("READY=1"));
    let started = Instant::now();
    let mut pings = 0;
    while pings < 3 {
        if notify.next().lines().any(|l| l == "WATCHDOG=1") {
            pings += 1;
        }
    }
    // Three pings at 300 ms each take at least 600 ms (from the first, which may come at once).
    assert!(
        started.elapsed() >= Duration::from_millis(550),
        "{:?}",
        started.elapsed()
    );
    process.signal("TERM");
    assert!(process.wait_exit().success());
}

/// Two processes with --reuse-port serve one address, the kernel spreading connections.
#[test]
fn two_processes_share_a_port_with_reuse_port() {
    let up = echo_upstream();
    let first = Process::start(&["--reuse-port", "127.0.0.1:0", &up.addr.to_string()]);
    let shared = first.addr;
    let second = Process::start(&["--reuse-port", &shared.to_string(), &up.addr.to_string()]);
    assert_eq!(second.addr, shared);
    let deadline = Instant::now() + PATIENCE;
    let (mut by_first, mut by_second) = (0, 0);
    let mut n = 0;
    while (by_first == 0 || by_second == 0) && Instant::now() < deadline && n < 400 {
        n += 1;
        util::echo_through(shared, b"ping");
        // Each process logs its own connections as `closed #N`; count them as they come.
        while let Ok(line) = first.lines.try_recv() {
            by_first += usize::from(line.contains("closed #"));
        }
        while let Ok(line) = second.lines.try_recv() {
            by_second += usize::from(line.contains("closed #"));
        }
    }
    assert!(
        by_first > 0 && by_second > 0,
        "{n} connections: {by_first} and {by_second}"
    );
    // Without SO_REUSEPORT the second bind is refused.
    let (code, _, stderr) = util::run_bin(&[&shared.to_string(), &up.addr.to_string()]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("Address already in use"), "{stderr}");
}

/// CLOCK_BOOTTIME in microseconds, from /proc/uptime (rounded up to its 10 ms resolution).
fn boottime_usec() -> u64 {
    let text = std::fs::read_to_string("/proc/uptime").unwrap();
    let secs: f64 = text.split_whitespace().next().unwrap().parse().unwrap();
    (secs * 1e6) as u64 + 10_000
}

/// A reload cannot remove a listener that was handed in already bound (its owner, the service
/// manager or the embedding program, keeps it); it may give it new routes.
#[test]
fn a_reload_keeps_a_handed_in_listener() {
    let up = echo_upstream();
    let other = echo_upstream();
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let forwarder = tcp_router::Forwarder::from_listener(socket)
        .upstream(up.addr)
        .bind()
        .unwrap();
    let handle = forwarder.handle();
    let running = forwarder.spawn().unwrap();
    util::echo_through(addr, b"before");
    let err = handle
        .reconfigure(tcp_router::Config::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("listener {addr} was handed in already bound")),
        "{err}"
    );
    let mut moved = tcp_router::Listener::new(addr.into());
    moved
        .routes
        .push(tcp_router::Route::new(vec![other.addr.into()]));
    let mut config = tcp_router::Config::default();
    config.listeners.push(moved);
    handle.reconfigure(config).unwrap();
    util::echo_through(addr, b"after");
    util::wait_until("the new upstream to serve", || {
        other.accepted.load(std::sync::atomic::Ordering::SeqCst) == 1
    });
    running.stop_within(Duration::from_secs(1)).unwrap();
}

/// A live upgrade under Type=notify: the old process names the new one as the main process
/// (`MAINPID=`), the new one says so too and `READY=1` once the old one has let go, and a
/// connection open across it keeps working.
#[test]
fn an_upgrade_tells_the_service_manager_the_new_main_pid() {
    let up = echo_upstream();
    let notify = Notifications::at_path();
    let dir = util::temp_dir("notify-upgrade");
    let config = dir.write("t.conf", &format!("route 127.0.0.1:0 {}\n", up.addr));
    let mut process = Process::start_command(notified_binary(&notify, &["-c", &config]));
    assert!(notify.next_event().contains("READY=1\n"));
    let mut open = util::connect(process.addr);
    util::round_trip(&mut open, b"before");

    process.signal("USR2");
    let named = notify.next_event();
    let new_pid: u32 = named
        .lines()
        .find_map(|l| l.strip_prefix("MAINPID="))
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("MAINPID= from the old process: {named:?}"));
    assert_ne!(new_pid, process.child.id());
    let ready = notify.next_event();
    assert!(
        ready.contains(&format!("MAINPID={new_pid}\n")) && ready.contains("READY=1\n"),
        "{ready:?}"
    );
    assert!(process.wait_exit().success(), "the old process exits 0");
    util::round_trip(&mut open, b"after");
    util::echo_through(process.addr, b"a new client");
    drop(open);

    util::send_signal(new_pid, "TERM");
    assert!(notify.next_event().starts_with("STOPPING=1\n"));
    // Gone, or a zombie: its parent exited, and it may have been re-parented to this test.
    util::wait_until("the new process to exit", || !util::alive(new_pid));
}
