//! Passive health, backups and the `first` policy over real loopback sockets: which upstream each
//! client reaches while upstreams refuse and listen again, what `/routes` and the log say. The
//! active checks, the other policies, names as pools and health across reloads and upgrades are
//! in the modules below, each against real peers (redis-server, haproxy, HTTP endpoints, names in
//! /etc/hosts) where the recipe has one.

/// Connect checks: backups, `first`, the probe and a reload that keeps what checks found.
mod active;
/// Weighted round-robin, least connections and client affinity, measured.
mod balance;
/// The PostgreSQL-primary recipe: an HTTP endpoint on a separate port, as Patroni's API.
mod http_primary;
/// A name's every address a member, and its last answer kept when resolution fails.
mod pool;
/// Checks that send a PROXY header, accepted by haproxy with `accept-proxy`.
mod proxy_checks;
/// The Redis-primary recipe with two real redis-servers and a promotion.
mod redis_primary;
/// A live upgrade hands over what the checks found.
mod upgrade;

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use serde_json::Value;
use tcp_router::config::Balance;
use tcp_router::HostPort;

use crate::util::*;

/// An upstream on a held port that can listen and stop again: while stopped, connects to it are
/// refused (the port stays held, so nothing else takes it). Each client gets the upstream's name,
/// then the end of the stream.
struct Named {
    name: &'static str,
    addr: SocketAddr,
    /// Holds a 127.0.0.1 port while the upstream does not listen; an upstream on another address
    /// ([`Named::listening_on`]) holds none.
    _port: Option<ReservedPort>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Named {
    /// An upstream called `name` that refuses connects until [`Named::listen`].
    fn refusing(name: &'static str) -> Named {
        let port = reserve_port();
        Named {
            name,
            addr: port.addr(),
            _port: Some(port),
            stop: Arc::new(AtomicBool::new(false)),
            thread: None,
        }
    }

    /// An upstream called `name` serving on `listener` (any address), bound already.
    fn listening_on(name: &'static str, listener: TcpListener) -> Named {
        let mut named = Named {
            name,
            addr: listener.local_addr().unwrap(),
            _port: None,
            stop: Arc::new(AtomicBool::new(false)),
            thread: None,
        };
        named.serve(listener);
        named
    }

    /// An upstream called `name`, listening.
    fn listening(name: &'static str) -> Named {
        let mut named = Named::refusing(name);
        named.listen();
        named
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts listening: from when this returns, connects are accepted.
    fn listen(&mut self) {
        self.serve(TcpListener::bind(self.addr()).expect("listen on the upstream's address"));
    }

    /// Serves `listener` until [`Named::stop`].
    fn serve(&mut self, listener: TcpListener) {
        let stop = Arc::clone(&self.stop);
        let name = self.name;
        stop.store(false, Ordering::SeqCst);
        self.thread = Some(thread::spawn(move || {
            for stream in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(mut stream) = stream {
                    let _ = std::io::Write::write_all(&mut stream, name.as_bytes());
                }
            }
        }));
    }

    /// Stops listening: from when this returns, connects are refused.
    fn stop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.stop.store(true, Ordering::SeqCst);
            let _ = TcpStream::connect(self.addr());
            thread.join().unwrap();
        }
    }
}

impl Drop for Named {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The name of the upstream one client reaches through `router`.
fn reached(router: SocketAddr) -> String {
    let mut client = connect(router);
    let mut got = String::new();
    client
        .read_to_string(&mut got)
        .expect("read the upstream's name");
    got
}

/// The names `clients` clients in a row reach.
fn reached_by(router: SocketAddr, clients: usize) -> Vec<String> {
    (0..clients).map(|_| reached(router)).collect()
}

/// A router in this process with one route to `primaries` and `backups`, as `tune` sets it up.
fn router_to(
    primaries: &[&Named],
    backups: &[&Named],
    tune: impl FnOnce(&mut tcp_router::Route),
) -> Router {
    let addrs: Vec<SocketAddr> = primaries.iter().map(|u| u.addr()).collect();
    let mut config = config_to(&addrs);
    let route = &mut config.listeners[0].routes[0];
    route.backups = backups.iter().map(|u| HostPort::from(u.addr())).collect();
    tune(route);
    start_router(config)
}

/// Waits until a client reaches `name`, then checks that `clients` more all reach it.
fn settles_on(router: SocketAddr, name: &str, clients: usize) {
    wait_until(&format!("a client reaching {name}"), || {
        reached(router) == name
    });
    assert_eq!(reached_by(router, clients), vec![name; clients]);
}

#[test]
fn a_backup_gets_clients_only_while_every_primary_is_down_and_is_left_when_one_listens() {
    let one = Named::refusing("one");
    let mut two = Named::refusing("two");
    let backup = Named::listening("backup");
    let router = router_to(&[&one, &two], &[&backup], |route| {
        route.fail_timeout = Duration::from_millis(300);
    });
    assert_eq!(reached_by(router.addr, 6), vec!["backup"; 6]);
    two.listen();
    settles_on(router.addr, "two", 6);
    two.stop();
    settles_on(router.addr, "backup", 4);
    two.listen();
    settles_on(router.addr, "two", 4);
}

#[test]
fn balance_first_sends_every_client_to_the_first_up_upstream_in_written_order() {
    let mut one = Named::listening("one");
    let two = Named::listening("two");
    let three = Named::listening("three");
    let router = router_to(&[&one, &two, &three], &[], |route| {
        route.balance = Balance::First;
        route.fail_timeout = Duration::from_millis(300);
    });
    assert_eq!(reached_by(router.addr, 6), vec!["one"; 6]);
    one.stop();
    assert_eq!(reached_by(router.addr, 6), vec!["two"; 6]);
    one.listen();
    settles_on(router.addr, "one", 6);
}

#[test]
fn round_robin_spreads_clients_over_the_primaries_and_never_the_backup() {
    let one = Named::listening("one");
    let two = Named::listening("two");
    let backup = Named::listening("backup");
    let router = router_to(&[&one, &two], &[&backup], |_| {});
    let mut names = reached_by(router.addr, 6);
    names.sort();
    assert_eq!(names, ["one", "one", "one", "two", "two", "two"]);
}

/// The upstreams of the first route in `/routes`.
fn upstreams(admin: SocketAddr) -> Vec<Value> {
    let routes = get_json(admin, "/routes");
    routes["listeners"][0]["routes"][0]["upstreams"]
        .as_array()
        .unwrap_or_else(|| panic!("no upstreams in {routes:#}"))
        .clone()
}

#[test]
fn max_fails_keeps_an_upstream_up_after_two_failures_and_marks_it_down_at_the_third() {
    let dead = dead_addr();
    let alive = Named::listening("alive");
    let backup = Named::listening("backup");
    let dir = temp_dir("health");
    let file = dir.write(
        "health.conf",
        &format!(
            "route 127.0.0.1:0 {},{} balance=first max_fails=3 fail_timeout=30s backup={}\n",
            s(dead.addr),
            s(alive.addr()),
            s(backup.addr())
        ),
    );
    let (mut router, admin) = start_with_admin(&["-c", &file]);
    let listed = upstreams(admin);
    let roles: Vec<&Value> = listed.iter().map(|u| &u["role"]).collect();
    assert_eq!(roles, ["primary", "primary", "backup"]);
    assert!(listed.iter().all(|u| u["health"] == "up"), "{listed:#?}");

    assert_eq!(reached_by(router.addr, 2), ["alive", "alive"]);
    let dead_one = &upstreams(admin)[0];
    assert_eq!(dead_one["attempts"], 2, "{dead_one:#}");
    assert_eq!(dead_one["health"], "up", "{dead_one:#}");
    assert_eq!(dead_one["down_for_seconds"], Value::Null, "{dead_one:#}");

    assert_eq!(reached(router.addr), "alive");
    let line = router.wait_for_line(&format!("upstream {} down:", s(dead.addr)));
    assert!(
        line.ends_with(&format!(
            "upstream {} down: 3 failed connects in a row (connection refused); skipped for 30s",
            s(dead.addr)
        )),
        "{line}"
    );
    let dead_one = &upstreams(admin)[0];
    assert_eq!(dead_one["health"], "down", "{dead_one:#}");
    let left = dead_one["down_for_seconds"].as_f64().expect("down for");
    assert!(left > 0.0 && left <= 30.0, "{left}");
    assert_eq!(dead_one["state"], "cooling", "{dead_one:#}");

    // Skipped while down: the next client goes straight to the live one.
    assert_eq!(reached(router.addr), "alive");
    assert_eq!(upstreams(admin)[0]["attempts"], 3);
    let (code, out, _) = run_bin(&["--check", "-c", &file]);
    assert_eq!(code, 0);
    assert!(
        out.contains(&format!(
            "balance=first max_fails=3 fail_timeout=30s backup={}",
            s(backup.addr())
        )),
        "{out}"
    );
}

#[test]
fn an_upstream_marked_down_is_logged_down_then_up_when_it_accepts_again() {
    let mut flaky = Named::refusing("flaky");
    let other = Named::listening("other");
    let dir = temp_dir("health");
    let file = dir.write(
        "health.conf",
        &format!(
            "route 127.0.0.1:0 {},{} balance=first fail_timeout=200ms\n",
            s(flaky.addr()),
            s(other.addr())
        ),
    );
    let mut router = Process::start(&["-c", &file]);
    assert_eq!(reached(router.addr), "other");
    router.wait_for_line(&format!(
        "upstream {} down: 1 failed connect (connection refused); skipped for 200ms",
        s(flaky.addr())
    ));
    flaky.listen();
    settles_on(router.addr, "flaky", 3);
    router.wait_for_line(&format!("upstream {} up: connected", s(flaky.addr())));
}

#[test]
fn a_backup_repeating_an_upstream_or_malformed_is_one_line_naming_it() {
    let dir = temp_dir("health");
    for (keys, error) in [
        (
            "backup=127.0.0.1:1",
            "backup '127.0.0.1:1' is also a primary upstream",
        ),
        (
            "backup=127.0.0.1:2,127.0.0.1:2",
            "backup '127.0.0.1:2' is listed twice",
        ),
        ("backup=127.0.0.1:0", "invalid backup '127.0.0.1:0': port 0"),
        (
            "backup=127.0.0.1:2,",
            "invalid backup list '127.0.0.1:2,': empty entry",
        ),
        ("backup=nowhere", "backup: "),
    ] {
        let file = dir.write(
            "backup.conf",
            &format!("route 127.0.0.1:0 127.0.0.1:1 {keys}\n"),
        );
        let (code, _, stderr) = run_bin(&["--check", "-c", &file]);
        assert_eq!(code, 2, "{keys}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{keys}: {stderr}");
        assert!(
            stderr.contains(error),
            "{keys}: wanted {error:?} in {stderr}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Active checks: a router from a config file, members as /routes shows them
// ---------------------------------------------------------------------------------------------

/// The keys that make checks fast enough for a test: every 200 ms, one result decides.
const FAST_CHECKS: &str = "check_interval=200ms check_timeout=1s rise=1 fall=1";

/// The binary serving `config` (written to a scratch file) with an admin endpoint.
struct Running {
    router: Process,
    admin: SocketAddr,
    dir: TempDir,
}

impl Running {
    fn start(config: &str) -> Running {
        let dir = temp_dir("health");
        let file = dir.write("health.conf", config);
        let (router, admin) = start_with_admin(&["-c", &file]);
        Running { router, admin, dir }
    }

    /// Writes `config` over the file and reloads it (SIGHUP), returning once it is reloaded.
    fn reload(&mut self, config: &str) {
        self.dir.write("health.conf", config);
        let from = self.router.drain();
        self.router.signal("HUP");
        self.router
            .line_where(from, PATIENCE, |line| line.contains("reloaded"))
            .unwrap_or_else(|_| panic!("no reload; saw:\n{}", self.router.seen.join("\n")));
    }
}

/// Every member `/routes` lists, of every route.
fn members(routes: &Value) -> Vec<Value> {
    let mut all = Vec::new();
    for listener in routes["listeners"].as_array().into_iter().flatten() {
        for route in listener["routes"].as_array().into_iter().flatten() {
            all.extend(route["upstreams"].as_array().into_iter().flatten().cloned());
        }
    }
    all
}

/// The member of `routes` at `addr`, if listed.
fn member_at(routes: &Value, addr: SocketAddr) -> Option<Value> {
    members(routes)
        .into_iter()
        .find(|m| m["address"] == addr.to_string().as_str())
}

/// The state `routes` gives the member at `addr` (`absent` if it lists none).
fn state_at(routes: &Value, addr: SocketAddr) -> String {
    member_at(routes, addr).map_or("absent".to_string(), |m| {
        m["state"].as_str().unwrap_or("no state").to_string()
    })
}

/// Waits until `/routes` shows each member of `want` in its state; returns what it showed.
fn wait_for_states(admin: SocketAddr, want: &[(SocketAddr, &str)]) -> Value {
    json_until(
        admin,
        "/routes",
        &format!("member states {want:?}"),
        |routes| {
            want.iter()
                .all(|(addr, state)| state_at(routes, *addr) == *state)
        },
    )
}
