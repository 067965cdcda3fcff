//! Port ranges with real sockets: 500 ports served by one process, each reaching its upstream
//! port; the range one line in `--check` and one label in the metrics; reloads that shrink and
//! grow a range port by port, an open connection and the unchanged ports' sockets kept; and the
//! one-line errors, alike from the command line and a file.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use crate::util::*;

/// A random number, different in each call.
fn random() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(0);
    hasher.finish()
}

/// A random loopback address in 127.64.0.0/10: its ports are free of every listener on
/// 127.0.0.1 and of other tests' blocks, bar a rare collision a retry handles.
fn random_loopback() -> Ipv4Addr {
    let n = random().to_le_bytes();
    Ipv4Addr::new(127, 64 | (n[0] & 63), n[1], n[2].max(1))
}

/// The lowest port the kernel picks for a bind to port 0 or an outgoing connection.
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

/// Listeners on `n` consecutive ports of `ip`, found by binding them all: below the kernel's
/// ephemeral range, where no port-0 bind or connection takes one meanwhile; a block with a port
/// taken is given up for another.
fn bind_block(ip: Ipv4Addr, n: u16) -> Vec<TcpListener> {
    let low = 10_000u16;
    let span = ephemeral_low().saturating_sub(low).saturating_sub(n).max(1);
    for _ in 0..100 {
        let first = low + (random() % u64::from(span)) as u16;
        let bound: Result<Vec<TcpListener>, _> = (first..first + n)
            .map(|port| TcpListener::bind(SocketAddr::from((ip, port))))
            .collect();
        if let Ok(bound) = bound {
            return bound;
        }
    }
    panic!("no block of {n} free ports on {ip}");
}

/// The first of `n` consecutive ports free on `ip` a moment ago (bound, then released): the
/// router binds them next, and [`start_on_block`] tries another block if one was taken since.
fn free_block(ip: Ipv4Addr, n: u16) -> u16 {
    bind_block(ip, n)[0].local_addr().unwrap().port()
}

/// The binary serving the config file `config(ip, first)` makes for a block of `n` free ports
/// on a random loopback address, with the admin endpoint on; another block when one of the
/// ports was taken between the search and the bind. Returns the router, the address and the
/// block's first port.
fn start_on_block(
    dir: &TempDir,
    n: u16,
    config: impl Fn(Ipv4Addr, u16) -> String,
) -> (Process, String, Ipv4Addr, u16) {
    for _ in 0..10 {
        let ip = random_loopback();
        let first = free_block(ip, n);
        let file = dir.write("ranges.conf", &config(ip, first));
        let mut command = std::process::Command::new(bin());
        command.args(["--admin", "127.0.0.1:0", "-c", &file]);
        let mut router = Process::spawn_command(command);
        let (_, line) = router
            .line_where(0, PATIENCE, |l| {
                l.contains("listening on ") || l.contains("cannot listen on")
            })
            .unwrap_or_else(|_| panic!("the router did not start:\n{}", router.seen.join("\n")));
        if line.contains("listening on ") {
            return (router, file, ip, first);
        }
    }
    panic!("no block of {n} ports could be bound");
}

/// Upstreams on a block of ports, each answering its own port number, then closing.
struct PortBanners {
    ip: Ipv4Addr,
    first: u16,
    n: u16,
    stop: Arc<AtomicBool>,
}

impl PortBanners {
    /// `n` of them on consecutive ports of a random loopback address.
    fn start(n: u16) -> PortBanners {
        let ip = random_loopback();
        let listeners = bind_block(ip, n);
        let first = listeners[0].local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        for listener in listeners {
            let stop = Arc::clone(&stop);
            thread::Builder::new()
                .stack_size(64 << 10)
                .spawn(move || {
                    let port = listener.local_addr().unwrap().port();
                    for stream in listener.incoming() {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        if let Ok(mut stream) = stream {
                            let _ = stream.write_all(port.to_string().as_bytes());
                        }
                    }
                })
                .unwrap();
        }
        PortBanners { ip, first, n, stop }
    }

    /// The block as a range: `IP:FIRST-LAST`.
    fn range(&self) -> String {
        format!("{}:{}-{}", self.ip, self.first, self.first + self.n - 1)
    }
}

impl Drop for PortBanners {
    /// Stops every upstream thread: each wakes to one last connection and sees the flag.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for port in self.first..self.first + self.n {
            let _ = TcpStream::connect((self.ip, port));
        }
    }
}

/// What port `(ip, port)` of the router answers: the upstream's port number.
fn answer(ip: Ipv4Addr, port: u16) -> String {
    let mut client = connect(SocketAddr::from((ip, port)));
    String::from_utf8(read_to_end(&mut client)).unwrap()
}

/// The number of samples of metric `name`.
fn samples(metrics: &Metrics, name: &str) -> usize {
    let prefix = format!("{name}{{");
    metrics
        .series()
        .iter()
        .filter(|s| s.starts_with(&prefix))
        .count()
}

#[test]
fn a_range_of_500_ports_reaches_each_mapped_upstream_port_under_one_label() {
    const PORTS: u16 = 500;
    let upstreams = PortBanners::start(PORTS);
    let dir = temp_dir("range-500");
    let (mut router, file, ip, first) = start_on_block(&dir, PORTS, |ip, first| {
        format!(
            "route {ip}:{first}-{} {} connect_timeout=5s\n",
            first + PORTS - 1,
            upstreams.range()
        )
    });
    let label = format!("{ip}:{first}-{}", first + PORTS - 1);
    let listening = router.line_with("listening on ");
    assert!(
        listening.contains(&format!(
            "listening on {label} (500 ports) -> {}",
            upstreams.range()
        )),
        "{listening}"
    );
    router.drain();
    assert_eq!(
        router
            .seen
            .iter()
            .filter(|l| l.contains("listening on "))
            .count(),
        1,
        "one line for the range:\n{}",
        router.seen.join("\n")
    );

    for i in 0..PORTS {
        assert_eq!(
            answer(ip, first + i),
            (upstreams.first + i).to_string(),
            "port {}",
            first + i
        );
    }

    let admin = router.admin_addr();
    let accepted = "tcp_router_connections_accepted_total";
    let m = metrics_until(admin, "every connection ended", |m| {
        m.sum(
            "tcp_router_connections_ended_total",
            &[("result", "forwarded")],
        ) == 500
    });
    assert_eq!(samples(&m, accepted), 1, "{}", m.text);
    assert_eq!(m.count(accepted, &[("listener", &label)]), 500);
    let upstream = upstreams.range();
    let attempts = [
        ("listener", label.as_str()),
        ("upstream", upstream.as_str()),
    ];
    assert_eq!(
        m.count("tcp_router_upstream_connect_attempts_total", &attempts),
        500
    );
    assert_eq!(samples(&m, "tcp_router_upstream_up"), 1, "{}", m.text);
    assert_eq!(
        m.count("tcp_router_upstream_up", &[("address", upstream.as_str())]),
        1
    );
    let one_port = format!("{ip}:{}\"", first + 1);
    assert!(
        !m.text.contains(&one_port),
        "a port of the range has its own series"
    );

    let (code, stdout, stderr) = run_bin(&["--check", "-c", &file]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.starts_with(
            "configuration OK: 500 listener(s) (500 in 1 port range(s)), 500 route(s)"
        ),
        "{stdout}"
    );
    let listens: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("listen "))
        .collect();
    assert_eq!(
        listens,
        [format!("listen {label} ({file}:1) [500 ports]")],
        "{stdout}"
    );
    let routes: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("  route "))
        .collect();
    assert_eq!(routes.len(), 1, "{stdout}");
    assert!(
        routes[0].starts_with(&format!("  route default -> {upstream} (")),
        "{stdout}"
    );
}

#[test]
fn a_reload_shrinks_and_grows_a_range_keeping_an_open_connection_and_the_unchanged_sockets() {
    let echo = echo_upstream();
    let dir = temp_dir("range-reload");
    let range = |ip: Ipv4Addr, first: u16, n: u16| {
        format!("route {ip}:{first}-{} {}\n", first + n - 1, echo.addr)
    };
    // The block has room for the growth: 30 ports, 20 served at first.
    let (mut router, file, ip, first) = start_on_block(&dir, 30, |ip, first| range(ip, first, 20));
    let at = |offset: u16| SocketAddr::from((ip, first + offset));
    let mut live = connect(at(5));
    live.write_all(b"before").unwrap();
    assert_eq!(read_exact(&mut live, 6), b"before");
    let kept = listener_inode(at(5)).expect("port 5 listens");
    assert!(listener_inode(at(15)).is_some());

    std::fs::write(&file, range(ip, first, 10)).unwrap();
    let from = router.drain();
    router.signal("HUP");
    router.wait_for_line("reloaded");
    let closing = format!(
        "reload: closing 10 port(s) of range {ip}:{first}-{}",
        first + 19
    );
    assert!(
        router.seen[from..].iter().any(|l| l.contains(&closing)),
        "{}",
        router.seen[from..].join("\n")
    );
    assert_eq!(listener_inode(at(5)), Some(kept), "port 5 kept its socket");
    assert_eq!(listener_inode(at(15)), None, "port 15 is closed");
    assert!(TcpStream::connect(at(15)).is_err());
    live.write_all(b"shrunk").unwrap();
    assert_eq!(read_exact(&mut live, 6), b"shrunk");

    std::fs::write(&file, range(ip, first, 30)).unwrap();
    router.signal("HUP");
    router.wait_for_line("reloaded");
    assert_eq!(listener_inode(at(5)), Some(kept), "port 5 kept its socket");
    let mut grown = connect(at(25));
    grown.write_all(b"new").unwrap();
    assert_eq!(read_exact(&mut grown, 3), b"new");
    live.write_all(b"grown").unwrap();
    live.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mut live), b"grown");
}

/// A bad range, given as LISTEN UPSTREAM on the command line and as a route line, and the reason
/// each gives, the same in both.
const BAD_RANGES: &[(&str, &str, &str)] = &[
    (
        "127.0.0.1:9000-9099",
        "127.0.0.1:7000-7009",
        "upstream range 127.0.0.1:7000-7009 has 10 ports but the listen range 127.0.0.1:9000-9099 has 100: give a range of the same length, or one port for all",
    ),
    (
        "127.0.0.1:65500-65600",
        "127.0.0.1:1",
        "invalid address '127.0.0.1:65500-65600': the range 65500-65600 goes past port 65535",
    ),
    (
        "127.0.0.1:9100-9000",
        "127.0.0.1:1",
        "invalid address '127.0.0.1:9100-9000': the range 9100-9000 is reversed: write the lower port first",
    ),
    (
        "127.0.0.1:1-10",
        "127.0.0.1:0-9",
        "invalid address '127.0.0.1:0-9': port 0 cannot be part of a range",
    ),
    (
        "127.0.0.1:1000-9999",
        "127.0.0.1:1",
        "invalid address '127.0.0.1:1000-9999': the range 1000-9999 has 9000 ports, more than 4096: split it over several lines",
    ),
    (
        "127.0.0.1:9000",
        "127.0.0.1:7000-7009",
        "upstream range 127.0.0.1:7000-7009 needs a listen range of 10 ports (the listen address 127.0.0.1:9000 is one port)",
    ),
];

#[test]
fn a_bad_range_is_one_line_from_the_command_line_and_from_a_file() {
    let dir = temp_dir("range-errors");
    for (listen, upstream, reason) in BAD_RANGES {
        let (code, _, stderr) = run_bin(&["--check", listen, upstream]);
        assert_eq!(code, 2, "{listen} {upstream}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(reason), "wanted {reason:?} in {stderr}");

        let file = dir.write("bad.conf", &format!("route {listen} {upstream}\n"));
        let (code, _, stderr) = run_bin(&["--check", "-c", &file]);
        assert_eq!(code, 2, "{listen} {upstream}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.starts_with(&format!("{file}:1: ")), "{stderr}");
        assert!(stderr.contains(reason), "wanted {reason:?} in {stderr}");
    }
}

#[test]
fn overlapping_ranges_are_refused_once_and_name_routes_share_a_range() {
    let dir = temp_dir("range-overlap");
    let file = dir.write(
        "overlap.conf",
        "route 127.0.0.1:9000-9099 127.0.0.1:1\nroute 127.0.0.1:9050-9149 127.0.0.1:2\n\
         127.0.0.1 9120 127.0.0.1 3\n",
    );
    let (code, _, stderr) = run_bin(&["--check", "-c", &file]);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(
        stderr.lines().collect::<Vec<_>>(),
        [
            format!("{file}:2: listen 127.0.0.1:9050-9149 overlaps 127.0.0.1:9000-9099 at {file}:1 (port 9050 is in both): a port has one listener; give routes sharing ports the same range"),
            format!("{file}:3: listen 127.0.0.1:9120 overlaps 127.0.0.1:9050-9149 at {file}:2 (port 9120 is in both): a port has one listener; give routes sharing ports the same range"),
        ]
    );

    let file = dir.write(
        "names.conf",
        "route 127.0.0.1:9000-9009 127.0.0.1:1 sni=a.example\nroute 127.0.0.1:9000-9009 127.0.0.1:2\n",
    );
    let (code, stdout, stderr) = run_bin(&["--check", "-c", &file, "--explain", "a.example"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("10 listener(s) (10 in 1 port range(s)), 20 route(s)"),
        "{stdout}"
    );
    assert_eq!(
        stdout.matches("explain 'a.example' on ").count(),
        1,
        "{stdout}"
    );
    assert!(
        stdout.contains("explain 'a.example' on 127.0.0.1:9000-9009:"),
        "{stdout}"
    );

    let file = dir.write(
        "twice.conf",
        "route 127.0.0.1:9000-9009 127.0.0.1:1\nroute 127.0.0.1:9000-9009 127.0.0.1:2\n",
    );
    let (code, _, stderr) = run_bin(&["--check", "-c", &file]);
    assert_eq!(code, 2);
    assert_eq!(
        stderr.trim_end(),
        format!("{file}:2: duplicate route on 127.0.0.1:9000-9009: line 1 already has one with no sni/host/alpn")
    );
}

#[test]
fn a_range_in_a_rinetd_line_points_to_the_route_line() {
    let dir = temp_dir("range-rinetd");
    let file = dir.write("rinetd.conf", "0.0.0.0 9000-9099 10.0.0.1 9000-9099\n");
    let (code, _, stderr) = run_bin(&["--check", "-c", &file]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("bind port: invalid port '9000-9099': rinetd lines take one port; write a range on a route line"),
        "{stderr}"
    );
}
