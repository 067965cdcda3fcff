//! Upstream failures cost one client, failover finds a live upstream, and the connection cap holds
//! clients in the backlog instead of dropping them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use crate::util::*;

/// With every upstream refusing, the client is closed promptly: within 2 s of connecting,
/// although the connect timeout is 60 s (a refusal is final; nothing waits for the timeout).
#[test]
fn refused_upstream_closes_the_client_promptly() {
    let dead = dead_addr();
    let mut config = config_to(&[dead.addr]);
    config.listeners[0].routes[0].connect_timeout = Duration::from_secs(60);
    let router = start_router(config);
    let since = Instant::now();
    let mut client = connect(router.addr);
    assert_eq!(
        read_until_closed(&mut client),
        b"",
        "expected the client to be closed"
    );
    let waited = since.elapsed();
    assert!(waited < Duration::from_secs(2), "closed after {waited:?}");
}

/// The first upstream is dead: every client is served by the second.
#[test]
fn fails_over_to_the_next_upstream() {
    let up = echo_upstream();
    let dead = dead_addr();
    let router = start_router(config_to(&[dead.addr, up.addr]));
    for i in 0..4u8 {
        let mut client = connect(router.addr);
        send_and_close(&mut client, &[i; 10]);
        assert_eq!(read_to_end(&mut client), [i; 10]);
    }
    assert_eq!(up.accepted.load(Ordering::SeqCst), 4);
}

/// Two live upstreams share clients round-robin.
#[test]
fn round_robin_spreads_clients() {
    let a = echo_upstream();
    let b = echo_upstream();
    let router = start_router(config_to(&[a.addr, b.addr]));
    for _ in 0..4 {
        let mut client = connect(router.addr);
        send_and_close(&mut client, b"x");
        assert_eq!(read_to_end(&mut client), b"x");
    }
    assert_eq!(a.accepted.load(Ordering::SeqCst), 2);
    assert_eq!(b.accepted.load(Ordering::SeqCst), 2);
}

/// With the global cap at 1 and one connection open, a second client waits in the listener's
/// backlog: the router does not accept it and its upstream is never contacted, however long it
/// waits, while the first goes on being served; when the first ends, the second is accepted and
/// served.
#[test]
fn max_connections_holds_clients_in_the_backlog() {
    // Far longer than a loopback accept and upstream connect take (well under a millisecond):
    // a router that ignored its cap would have contacted the upstream by then.
    const CHANCE: Duration = Duration::from_millis(200);
    let up = echo_upstream();
    let mut config = config_to(&[up.addr]);
    config.max_connections = Some(1);
    let router = start_router(config);

    let mut first = connect(router.addr);
    first.write_all(b"ping").unwrap();
    assert_eq!(read_exact(&mut first, 4), b"ping");
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1);

    let mut second = connect(router.addr);
    second.write_all(b"wait").unwrap();
    // Until the second client is either queued (as it must be) or taken (which fails below).
    wait_until("the second client in the backlog or accepted", || {
        accept_queue(router.addr) == 1 || up.accepted.load(Ordering::SeqCst) > 1
    });
    // No event can say "the router is not going to accept": give it every chance, then look.
    thread::sleep(CHANCE);
    assert_eq!(
        accept_queue(router.addr),
        1,
        "the second client was accepted"
    );
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1, "upstream contacted");
    first.write_all(b"pong").unwrap();
    assert_eq!(
        read_exact(&mut first, 4),
        b"pong",
        "the first is still served"
    );

    drop(first);
    assert_eq!(read_exact(&mut second, 4), b"wait");
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
    assert_eq!(accept_queue(router.addr), 0);
}

/// During a burst the pools grow to what the concurrency needs (two copy threads a connection,
/// and a set-up worker for each connection being set up at once), not more; the set-up workers
/// leave once the burst's connections are relaying, and a few seconds after the burst the
/// surplus copy threads are gone too.
#[test]
fn threads_follow_the_load() {
    const CONNECTIONS: usize = 100;
    let up = echo_upstream();
    let mut process = Process::start(&["127.0.0.1:0", &up.addr.to_string()]);
    let pid = process.child.id();
    let idle = threads_of(pid);
    // Three waves of connections, each ended before the next opens: the second and third reuse
    // the first one's threads.
    let mut most = 0;
    for wave in 0..3 {
        let mut streams: Vec<_> = (0..CONNECTIONS).map(|_| connect(process.addr)).collect();
        for (i, stream) in streams.iter_mut().enumerate() {
            stream.write_all(&[wave, i as u8]).unwrap();
        }
        for (i, stream) in streams.iter_mut().enumerate() {
            assert_eq!(read_exact(stream, 2), [wave, i as u8]);
        }
        most = most.max(threads_of(pid));
        if wave == 0 {
            // Relaying, with no connection being set up: two copy threads each, and spares.
            wait_until("the set-up workers to leave", || {
                threads_of(pid) <= idle + 2 * CONNECTIONS + 2 * 8
            });
        }
        drop(streams);
        // The next wave starts once this one has ended (its threads are back in the pool).
        process.wait_for_lines("closed #", (usize::from(wave) + 1) * CONNECTIONS);
    }
    // Two copy threads a connection and at most one set-up worker each; spares and threads on
    // their way back allow a few more.
    assert!(
        most <= idle + 3 * CONNECTIONS + 16,
        "{most} threads for {CONNECTIONS} connections (idle: {idle})"
    );
    // After the burst the surplus leaves within a few seconds; spares stay (eight a pool: set-up
    // workers and copy threads).
    let burst_over = std::time::Instant::now();
    wait_until("the surplus threads to exit", || {
        threads_of(pid) <= idle + 2 * 8
    });
    eprintln!(
        "threads: {idle} idle, {most} at most for {CONNECTIONS} connections, back to {} after {:?}",
        threads_of(pid),
        burst_over.elapsed()
    );
    process.signal("TERM");
    assert!(process.wait_exit().success());
}

/// Starts tcp-router with `limits`, a listener that routes by name (20 s peek deadline), a plain
/// one on 127.0.0.1 and another on 127.0.0.2, all to `up`, and its admin endpoint. Returns the
/// process, the name-routing and plain 127.0.0.1 listeners, and the admin address.
fn start_name_and_plain_listeners(
    dir: &TempDir,
    up: &Upstream,
    limits: &[&str],
) -> (Process, SocketAddr, SocketAddr, SocketAddr) {
    let config = dir.write(
        "t.conf",
        &format!(
            "route 127.0.0.1:0 {u} sni=a.example peek_timeout=20s\nroute 127.0.0.1:0 {u} peek_timeout=20s\nroute 127.0.0.2:0 {u}\n",
            u = up.addr
        ),
    );
    let mut args = vec!["-c", config.as_str()];
    args.extend_from_slice(limits);
    let (mut router, admin) = start_with_admin(&args);
    let named = router.addr;
    let line = router.wait_for_line("listening on ");
    let plain: SocketAddr = listening_addr(&line);
    (router, named, plain, admin)
}

/// One client holding its limit of silent connections (on a listener that routes by name, so
/// they sit in the peek phase) is refused its next one, on that listener and on another, while
/// a second client is served at once on both.
#[test]
fn one_client_cannot_take_every_slot() {
    let up = echo_upstream();
    let dir = temp_dir("per-client");
    let (mut router, named, plain, admin) =
        start_name_and_plain_listeners(&dir, &up, &["--max-connections-per-client", "3"]);
    assert_ne!(named, plain);
    let silent: Vec<TcpStream> = (0..3).map(|_| connect_from(1, named)).collect();
    // Each counts once its worker has read who the client is; then it waits in the peek phase.
    wait_until("the three silent connections to be counted", || {
        get_json(admin, "/connections")["total"] == 3
    });
    // The fourth, on either listener, is refused at once.
    let mut fourth = connect_from(1, named);
    assert!(!echoes(&mut fourth, b"x"), "a fourth connection was served");
    let mut elsewhere = connect_from(1, plain);
    assert!(
        !echoes(&mut elsewhere, b"x"),
        "the client's limit is process-wide"
    );
    router.wait_for_lines(
        "result=refused-client-limit (the client has 3 connections)",
        2,
    );
    // Another client is served on both listeners, without waiting for the silent ones.
    let started = std::time::Instant::now();
    assert!(echoes(&mut connect_from(2, plain), b"other client, plain"));
    assert!(echoes(
        &mut connect_from(2, named),
        b"GET / HTTP/1.0\r\n\r\n"
    ));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // The silent ones end: the client may connect again.
    drop(silent);
    wait_until("the silent connections to end", || {
        echoes(&mut connect_from(1, plain), b"back")
    });
}

/// At most --max-peeking connections of one listener may be choosing a route at once, so slow
/// or silent clients of one listener leave the other listeners' slots alone; when they are all
/// taken, a newcomer takes the place of the longest-waiting one, which is closed and logged.
#[test]
fn silent_clients_of_one_listener_leave_room_for_the_others() {
    let up = echo_upstream();
    let dir = temp_dir("peek-cap");
    let (mut router, named, plain, admin) =
        start_name_and_plain_listeners(&dir, &up, &["--max-peeking", "2"]);
    let mut oldest = connect_from(3, named);
    wait_until("the first silent client to be in the peek phase", || {
        get_json(admin, "/connections")["total"] == 1
    });
    let _younger = connect_from(4, named);
    wait_until("both silent clients to be in the peek phase", || {
        get_json(admin, "/connections")["total"] == 2
    });
    // A third client choosing a route on that listener takes the longest-waiting one's place.
    assert!(echoes(&mut connect_from(5, named), b"x"));
    let line = router.wait_for_line("result=evicted-peek-full");
    assert!(line.contains("127.0.0.3"), "{line}");
    assert_eq!(oldest.read(&mut [0u8; 1]).unwrap_or(0), 0, "evicted");
    assert!(echoes(&mut connect_from(5, plain), b"served elsewhere"));
}

/// Echoes `data` within 3 s: false for a client refused, closed, or left waiting.
fn echoes_promptly(stream: &mut TcpStream, data: &[u8]) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    echoes(stream, data)
}

/// With --max-connections 100 a listener's peek budget is 25: one address's 25 silent sockets
/// hold only its share of it (12), the rest are refused, and a prompt client of another address
/// is served at once.
#[test]
fn one_address_holds_only_its_share_of_the_peek_phase() {
    let up = echo_upstream();
    let dir = temp_dir("peek-share");
    let (mut router, named, _plain, admin) =
        start_name_and_plain_listeners(&dir, &up, &["--max-connections", "100"]);
    let _silent: Vec<TcpStream> = (0..25).map(|_| connect_from(5, named)).collect();
    // Settled: 12 held and 13 refused (or, were there no share, all 25 held).
    wait_until("the silent connections to be counted", || {
        let total = &get_json(admin, "/connections")["total"];
        total == 12 || total == 25
    });
    assert!(echoes_promptly(
        &mut connect_from(6, named),
        b"GET / HTTP/1.0\r\n\r\n"
    ));
    router.wait_for_lines(
        "result=refused-peek-limit (the client has 12 connections choosing a route)",
        13,
    );
}

/// A route's `max_connections=10` is shared: one address's 10 silent sockets on a listener that
/// routes by name, or 10 idle connections on a plain one, leave room for another address, which
/// is served at once.
#[test]
fn one_address_cannot_take_a_routes_cap() {
    let up = echo_upstream();
    let dir = temp_dir("route-cap");
    let config = dir.write(
        "t.conf",
        &format!(
            "route 127.0.0.1:0 {u} sni=a.example max_connections=10 peek_timeout=20s\n\
             route 127.0.0.1:0 {u} max_connections=10 peek_timeout=20s\n\
             route 127.0.0.2:0 {u} max_connections=10\n",
            u = up.addr
        ),
    );
    let mut router = Process::start(&["-c", config.as_str()]);
    let named = router.addr;
    let line = router.wait_for_line("listening on 127.0.0.2:");
    let plain: SocketAddr = listening_addr(&line);
    let _silent: Vec<TcpStream> = (0..10).map(|_| connect_from(7, named)).collect();
    let mut idle: Vec<TcpStream> = (0..10).map(|_| connect_from(7, plain)).collect();
    let served = idle
        .iter_mut()
        .map(|stream| echoes_promptly(stream, b"idle"))
        .filter(|&served| served)
        .count();
    assert_eq!(served, 8, "one address's share of 10");
    assert!(
        echoes_promptly(&mut connect_from(8, named), b"GET / HTTP/1.0\r\n\r\n"),
        "a prompt client of the name-routing listener waited or was refused"
    );
    assert!(
        echoes_promptly(&mut connect_from(8, plain), b"other"),
        "a client of the plain listener waited or was refused"
    );
    assert!(
        line.contains("(max 10 connections; 8 per client)"),
        "{line}"
    );
}

/// 300 silent clients from 300 addresses fill a listener's peek budget (100 under
/// --max-connections 400) over and over, but each prompt client takes the place of the
/// longest-waiting silent one: all 10 are served.
#[test]
fn a_flood_of_silent_addresses_does_not_starve_prompt_clients() {
    let up = echo_upstream();
    let dir = temp_dir("peek-flood");
    let (mut router, named, _plain, _admin) =
        start_name_and_plain_listeners(&dir, &up, &["--max-connections", "400"]);
    let address =
        |n: u16| std::net::Ipv4Addr::new(127, 0, 1 + (n / 250) as u8, 1 + (n % 250) as u8);
    let _silent: Vec<TcpStream> = (0..300)
        .map(|n| connect_from_ip(address(n), named))
        .collect();
    // Each one past the budget evicts the longest-waiting one (or, were it refused, says so).
    router.wait_for_lines("-peek-", 200);
    let served = (0..10)
        .filter(|n| {
            let mut prompt = connect_from_ip(std::net::Ipv4Addr::new(127, 0, 9, 1 + n), named);
            echoes_promptly(&mut prompt, b"GET / HTTP/1.0\r\n\r\n")
        })
        .count();
    assert_eq!(served, 10, "prompt clients served");
}

/// Sets the soft limit of one resource of a running process with util-linux's prlimit (the
/// hard limit stays, so the soft one can be raised again).
fn set_limit(pid: u32, resource: &str, value: usize) {
    set_limit_as(&[], pid, resource, value);
}

/// [`set_limit`], run through `setpriv` with `as_user` (changing another user's process's limits
/// needs CAP_SYS_RESOURCE, which a test machine may not give even to root).
fn set_limit_as(as_user: &[&str], pid: u32, resource: &str, value: usize) {
    let mut command = if as_user.is_empty() {
        std::process::Command::new("prlimit")
    } else {
        let mut command = std::process::Command::new("setpriv");
        command.args(as_user).arg("--").arg("prlimit");
        command
    };
    let status = command
        .arg(format!("--pid={pid}"))
        .arg(format!("--{resource}={value}:"))
        .status()
        .expect("run prlimit");
    assert!(status.success(), "prlimit --{resource}={value}:");
}

/// With the open-files limit lowered to leave room for three connections, a fourth is refused
/// or waits (logged), the three go on echoing, and once the limit is lifted new clients are
/// served again.
#[test]
fn running_out_of_descriptors_costs_only_what_is_over_the_limit() {
    if skip_without(
        "limits::running_out_of_descriptors_costs_only_what_is_over_the_limit",
        &["prlimit"],
    ) {
        return;
    }
    let up = echo_upstream();
    let mut router = Process::start(&["127.0.0.1:0", &up.addr.to_string()]);
    let pid = router.child.id();
    // Splice pipes come and go with bulk chunks; these small echoes never take one.
    set_limit(pid, "nofile", fds_of(pid) + 6);
    let mut held: Vec<TcpStream> = (0..3).map(|_| connect(router.addr)).collect();
    for (i, stream) in held.iter_mut().enumerate() {
        assert!(
            echoes(stream, format!("held {i}").as_bytes()),
            "connection {i}"
        );
    }
    // Over the limit: the client waits in the backlog while accept fails, or is closed when the
    // upstream connect cannot get a descriptor; either way it is logged.
    let mut over = connect(router.addr);
    let _ = over.set_read_timeout(Some(Duration::from_millis(300)));
    assert!(
        !echoes(&mut over, b"over"),
        "a connection beyond the limit was served"
    );
    let logged = router.wait_for_line("Too many open files");
    assert!(logged.contains("[WARN]"), "{logged}");
    for (i, stream) in held.iter_mut().enumerate() {
        assert!(
            echoes(stream, format!("still {i}").as_bytes()),
            "held {i} after the limit"
        );
    }
    let hard = hard_limit(pid, "Max open files").unwrap_or(4096);
    set_limit(pid, "nofile", hard);
    drop(over);
    wait_until("a new client to be served once the limit is lifted", || {
        let mut stream = connect(router.addr);
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        echoes(&mut stream, b"recovered")
    });
}

/// With thread creation failing (RLIMIT_NPROC, for a process not run as root: root is exempt),
/// a connection beyond the limit is closed and logged, the others go on echoing, and once the
/// limit is lifted new clients are served again.
#[test]
fn running_out_of_threads_costs_only_what_is_over_the_limit() {
    if skip_without(
        "limits::running_out_of_threads_costs_only_what_is_over_the_limit",
        &["prlimit", "setpriv"],
    ) {
        return;
    }
    let up = echo_upstream();
    // As nobody, so that RLIMIT_NPROC applies (it counts every thread of that user).
    let nobody = ["--reuid=65534", "--regid=65534", "--clear-groups"];
    let mut command = std::process::Command::new("setpriv");
    command
        .args(nobody)
        .arg("--")
        .arg(bin())
        .args(["127.0.0.1:0", &up.addr.to_string()]);
    let mut router = Process::start_command(command);
    let pid = router.child.id();
    let threads = threads_of(pid);
    // Room for two connections: two copy threads each, and a set-up worker each (the second
    // may find the first one's back in its pool, or not yet).
    set_limit_as(&nobody, pid, "nproc", threads + 6);
    let mut held: Vec<TcpStream> = (0..2).map(|_| connect(router.addr)).collect();
    for (i, stream) in held.iter_mut().enumerate() {
        assert!(
            echoes(stream, format!("held {i}").as_bytes()),
            "connection {i}"
        );
    }
    let mut over = connect(router.addr);
    let _ = over.set_read_timeout(Some(Duration::from_secs(2)));
    assert!(
        !echoes(&mut over, b"over"),
        "a connection beyond the limit was served"
    );
    let logged = router.wait_for_line("cannot start a");
    assert!(logged.contains("[WARN]"), "{logged}");
    for (i, stream) in held.iter_mut().enumerate() {
        assert!(
            echoes(stream, format!("still {i}").as_bytes()),
            "held {i} after the limit"
        );
    }
    let hard = hard_limit(pid, "Max processes").unwrap_or(threads + 64);
    set_limit_as(&nobody, pid, "nproc", hard);
    drop(over);
    wait_until("a new client to be served once the limit is lifted", || {
        let mut stream = connect(router.addr);
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        echoes(&mut stream, b"recovered")
    });
}

/// Run as nobody with `nproc 400`, the derived cap (three threads a connection: 112) is one the
/// process can keep: that many clients, all held in the peek phase at once and then all sending
/// their request heads together, are all served; none whose bytes were read is dropped for lack
/// of a thread.
#[test]
fn the_derived_cap_keeps_every_client_whose_bytes_were_read() {
    const TEST: &str = "limits::the_derived_cap_keeps_every_client_whose_bytes_were_read";
    if skip_without(TEST, &["prlimit", "setpriv"]) {
        return;
    }
    if !is_root() {
        skip(TEST, "needs root to run the router as nobody");
        return;
    }
    let dir = temp_dir("nproc-cap");
    // The config file must be readable by nobody.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut command = std::process::Command::new("prlimit");
    command
        .args(["--nproc=400:400", "setpriv"])
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(bin());
    serve_the_derived_cap(command, &dir);
}

/// In a cgroup whose `pids.max` is 400 (as Docker's `--pids-limit 400` makes one), the derived
/// cap is the same 112 and the process keeps it, though its own RLIMIT_NPROC is far higher.
#[test]
fn the_derived_cap_follows_the_cgroups_pids_max() {
    const TEST: &str = "limits::the_derived_cap_follows_the_cgroups_pids_max";
    let Some(group) = PidsGroup::new("tcp-router-test", 400) else {
        skip(TEST, "no pids cgroup this process may create (needs root)");
        return;
    };
    let dir = temp_dir("pids-max-cap");
    let mut command = std::process::Command::new("sh");
    command
        .arg("-c")
        .arg(format!(
            "echo $$ > {}/cgroup.procs && exec \"$0\" \"$@\"",
            group.path.display()
        ))
        .arg(bin());
    serve_the_derived_cap(command, &dir);
}

/// A cgroup of the `pids` controller (v1, or v2 where it is enabled) made for one test, with a
/// `pids.max`; removed on drop, once the processes in it are gone.
struct PidsGroup {
    path: std::path::PathBuf,
}

impl PidsGroup {
    fn new(name: &str, max: u32) -> Option<PidsGroup> {
        let roots = [
            "/sys/fs/cgroup/pids",
            "/sys/fs/cgroup",
            "/sys/fs/cgroup/unified",
        ];
        let root = roots.iter().map(std::path::Path::new).find(|root| {
            root.join("cgroup.procs").exists()
                && (root.ends_with("pids")
                    || std::fs::read_to_string(root.join("cgroup.subtree_control"))
                        .is_ok_and(|c| c.split_whitespace().any(|c| c == "pids")))
        })?;
        let path = root.join(format!("{name}-{}", std::process::id()));
        std::fs::create_dir(&path).ok()?;
        let group = PidsGroup { path };
        std::fs::write(group.path.join("pids.max"), max.to_string()).ok()?;
        Some(group)
    }
}

impl Drop for PidsGroup {
    fn drop(&mut self) {
        wait_until("the test cgroup to empty", || {
            std::fs::read_to_string(self.path.join("cgroup.procs")).map_or(true, |p| p.is_empty())
        });
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// Starts `command` followed by the router's arguments (two listeners reading ClientHellos or
/// HTTP heads, the admin endpoint) and checks, under a limit that makes the derived cap 112, that
/// that many clients held in the peek phase and then all sending their heads are all served.
fn serve_the_derived_cap(mut command: std::process::Command, dir: &TempDir) {
    let up = echo_upstream();
    let config = dir.write(
        "t.conf",
        &format!(
            "route 127.0.0.1:0 {u} sni=a.example peek_timeout=20s\nroute 127.0.0.1:0 {u} peek_timeout=20s\n",
            u = up.addr
        ),
    );
    command.args([
        "-c",
        &config,
        "--max-peeking",
        "1000",
        "--admin",
        "127.0.0.1:0",
    ]);
    let mut router = Process::spawn_command(command);
    let line = router.wait_for_line("max connections: ");
    assert!(line.contains("thread limit 400"), "{line}");
    let cap: usize = line
        .split("max connections: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    let named: SocketAddr = listening_addr(&router.wait_for_line("listening on "));
    let admin = router.admin_addr();
    // Four addresses, so no client's share (half of the peek budget) is the limit.
    let mut clients: Vec<TcpStream> = (0..cap)
        .map(|i| {
            let from = std::net::Ipv4Addr::new(127, 0, 4, 1 + (i % 4) as u8);
            connect_from_ip(from, named)
        })
        .collect();
    wait_until("every client to be held in the peek phase", || {
        get_json(admin, "/connections")["total"] == cap
    });
    let head = b"GET / HTTP/1.0\r\n\r\n";
    for client in &mut clients {
        client.write_all(head).unwrap();
    }
    let served = clients
        .iter_mut()
        .map(|client| {
            let mut got = vec![0u8; head.len()];
            client.read_exact(&mut got).is_ok() && got == head
        })
        .filter(|&served| served)
        .count();
    let dropped: Vec<String> = router
        .seen
        .iter()
        .chain(router.lines.try_iter().collect::<Vec<_>>().iter())
        .filter(|l| l.contains("cannot start"))
        .cloned()
        .collect();
    assert_eq!(served, cap, "dropped: {dropped:?}");
    assert_eq!(cap, 112, "(400 - 64) / 3: {line}");
}

/// The peek deadline is one per connection, from accept: a PROXY header sent late does not start
/// it again, so a client that sends nothing after its header is closed at the deadline (1 s),
/// not a deadline after the header (1.6 s).
#[test]
fn the_peek_deadline_counts_from_accept_not_from_the_proxy_header() {
    let up = echo_upstream();
    let dir = temp_dir("peek-deadline");
    let config = dir.write(
        "t.conf",
        &format!(
            "route 127.0.0.1:0 {u} sni=a.example accept_proxy=true peek_timeout=1s\n\
             route 127.0.0.1:0 {u} accept_proxy=true peek_timeout=1s\n",
            u = up.addr
        ),
    );
    let mut router = Process::start(&["-c", config.as_str()]);
    let mut client = connect(router.addr);
    let since = Instant::now();
    // The client's own delay is the case itself: its header comes 600 ms after accept.
    thread::sleep(Duration::from_millis(600));
    client
        .write_all(b"PROXY TCP4 192.0.2.1 127.0.0.1 1234 443\r\n")
        .unwrap();
    assert_eq!(read_to_end(&mut client), b"");
    let took = since.elapsed();
    let line = router.wait_for_line("result=");
    assert!(line.contains("result=peek-timeout"), "{line}");
    assert!(took < Duration::from_millis(1400), "closed after {took:?}");
}
