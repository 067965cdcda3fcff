//! UDP forwarding through the binary: DNS queries to a real dnsmasq (and dig where installed),
//! through a live upgrade too; iperf3's UDP test beside a direct run; a flow ended by its idle
//! timeout, the flow cap's eviction, a reload that keeps flows, the flows in `/connections` and
//! rinetd's log file, and rinetd's UDP rules in Debian's example file.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use serde_json::Value;

use crate::upgrade::Upgradable;
use crate::util::*;

/// A UDP peer of the tests: answers each datagram with what `answer` makes of it and its sender.
fn udp_upstream(answer: fn(&[u8], SocketAddr) -> Vec<u8>) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    thread::spawn(move || {
        let mut buf = [0u8; 65_536];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(&answer(&buf[..n], from), from);
        }
    });
    addr
}

fn echo(datagram: &[u8], _from: SocketAddr) -> Vec<u8> {
    datagram.to_vec()
}

/// The sender's address, as text: what the upstream saw.
fn sender(_datagram: &[u8], from: SocketAddr) -> Vec<u8> {
    from.to_string().into_bytes()
}

/// A client socket on loopback that gives up a receive after [`PATIENCE`].
fn client() -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(PATIENCE)).unwrap();
    socket
}

/// Sends `text` to `to` and returns the answer, which must come from `to`.
fn ask(socket: &UdpSocket, to: SocketAddr, text: &[u8]) -> Vec<u8> {
    socket.send_to(text, to).unwrap();
    let mut buf = [0u8; 65_536];
    let (n, from) = socket.recv_from(&mut buf).expect("an answer");
    assert_eq!(from, to, "the answer comes from the listen address");
    buf[..n].to_vec()
}

/// The binary serving the config file `text`, written to a scratch directory.
fn serve(dir: &TempDir, text: &str) -> (Process, String) {
    let file = dir.write("udp.conf", text);
    let mut command = Command::new(bin());
    command.args(["-c", &file]);
    (Process::spawn_command(command), file)
}

/// A flow that moves nothing for its idle timeout ends, with its one line: datagrams and bytes
/// each way, and `result=idle`; and its line in rinetd's log file, with rinetd's word for a
/// flow its timeout ended.
#[test]
fn a_flow_ends_after_its_idle_timeout_with_one_line() {
    let upstream = udp_upstream(echo);
    let dir = temp_dir("udp-idle");
    let rinetd_log = dir.join("rinetd.log");
    let (mut router, _) = serve(
        &dir,
        &format!(
            "route 127.0.0.1:0/udp {upstream}/udp idle_timeout=1s\nlogfile {}\n",
            rinetd_log.display()
        ),
    );
    let listen = router.udp_listener_with(&upstream.to_string());
    let c = client();
    assert_eq!(ask(&c, listen, b"hello"), b"hello");
    assert_eq!(ask(&c, listen, b"again!"), b"again!");
    let line = router.wait_for_line("closed udp flow #1 ");
    let me = c.local_addr().unwrap();
    for part in [
        format!("client={me}"),
        format!("listener={listen}/udp"),
        format!("upstream={upstream}"),
        "sent=11 received=11".to_string(),
        "datagrams_sent=2 datagrams_received=2".to_string(),
        "result=idle".to_string(),
    ] {
        assert!(line.contains(&part), "{part} in {line}");
    }
    let rinetd = std::fs::read_to_string(&rinetd_log).unwrap();
    let expected = format!(
        "\t127.0.0.1\t127.0.0.1\t0\t127.0.0.1\t{}\t11\t11\tdone-remote-closed\n",
        upstream.port()
    );
    assert!(rinetd.ends_with(&expected), "{rinetd:?}");
    assert_eq!(rinetd.lines().count(), 1, "{rinetd:?}");
    // The client's next datagram sets up a new flow.
    assert_eq!(ask(&c, listen, b"new"), b"new");
    router.wait_for_line("closed udp flow #2 ");
}

/// `/connections` lists each flow beside the TCP connections, saying it is UDP, with its
/// listener, client, upstream, datagrams and bytes each way, age and idle time.
#[test]
fn connections_lists_each_udp_flow_with_its_datagrams_and_bytes() {
    let upstream = udp_upstream(echo);
    let dir = temp_dir("udp-connections");
    let file = dir.write(
        "udp.conf",
        &format!("route 127.0.0.1:0/udp {upstream}/udp idle_timeout=1h\n"),
    );
    let mut command = Command::new(bin());
    command.args(["--admin", "127.0.0.1:0", "-c", &file]);
    let mut router = Process::spawn_command(command);
    let admin = router.admin_addr();
    let listen = router.udp_listener_with(&upstream.to_string());
    let c = client();
    assert_eq!(ask(&c, listen, b"one"), b"one");
    assert_eq!(ask(&c, listen, b"three"), b"three");
    let answered = |flow: &Value| flow["upstream_to_client"]["datagrams"] == 2;
    let listed = json_until(
        admin,
        "/connections",
        "the flow's two answers counted",
        |json| {
            json["connections"]
                .as_array()
                .is_some_and(|all| all.iter().any(answered))
        },
    );
    assert_eq!(listed["total"], 1, "{listed:#}");
    let flow = &listed["connections"][0];
    assert_eq!(flow["transport"], "udp", "{flow:#}");
    assert_eq!(flow["listener"], "127.0.0.1:0");
    assert_eq!(flow["listener_address"], listen.to_string());
    assert_eq!(flow["client"], c.local_addr().unwrap().to_string());
    assert_eq!(flow["upstream"]["name"], upstream.to_string());
    assert_eq!(flow["upstream"]["address"], upstream.to_string());
    for direction in ["client_to_upstream", "upstream_to_client"] {
        assert_eq!(flow[direction]["datagrams"], 2, "{flow:#}");
        assert_eq!(flow[direction]["bytes"], 8, "{flow:#}");
    }
    let (age, idle) = (flow["age_seconds"].as_f64(), flow["idle_seconds"].as_f64());
    assert!(
        age.zip(idle).is_some_and(|(a, i)| a >= i && i >= 0.0),
        "{flow:#}"
    );
}

/// The inode of the UDP socket bound to `addr` (an IPv4 loopback address), from
/// /proc/net/udp: the same number before and after an upgrade is the same socket.
fn udp_socket_inode(addr: SocketAddr) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/udp").ok()?;
    let local = format!("0100007F:{:04X}", addr.port());
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) != Some(&local.as_str()) {
            return None;
        }
        fields.get(9)?.parse().ok()
    })
}

/// Asks `to` DNS queries from `socket`, ids from `first` on, one at a time, until `stop` is set;
/// returns how many were asked and the ids that got no answer (or a wrong one).
fn ask_until(
    socket: &UdpSocket,
    to: SocketAddr,
    first: u16,
    stop: &AtomicBool,
) -> (usize, Vec<u16>) {
    let (mut asked, mut unanswered) = (0, Vec::new());
    let mut id = first;
    while !stop.load(Ordering::SeqCst) {
        socket.send_to(&dns_query(id, "example.test"), to).unwrap();
        let mut buf = [0u8; 512];
        match socket.recv_from(&mut buf) {
            Ok((n, from)) if from == to && answers(&buf[..n], id) => {}
            _ => unanswered.push(id),
        }
        asked += 1;
        id = id.wrapping_add(1);
    }
    (asked, unanswered)
}

/// A live upgrade hands the UDP listen socket over: DNS queries through tcp-router to dnsmasq
/// are answered before, all through the upgrade (a client asking one after another meanwhile)
/// and after, on the same socket; the old process's flow ends as `upgraded`.
#[test]
fn dns_queries_are_answered_before_during_and_after_a_live_upgrade_on_the_same_socket() {
    let test = "udp::dns_queries_are_answered_before_during_and_after_a_live_upgrade";
    if skip_without(test, &["dnsmasq"]) {
        return;
    }
    let scratch = temp_dir("udp-upgrade-dns");
    let dnsmasq = Dnsmasq::start(&scratch);
    let config = format!("route 127.0.0.1:0/udp {}/udp\n", dnsmasq.addr);
    let mut router = Upgradable::start("udp-upgrade", &config, 1);
    let listen = router.first.udp_listener_with(&dnsmasq.addr.to_string());
    let socket = udp_socket_inode(listen).expect("the listen socket in /proc/net/udp");
    let before = client();
    for id in 1..=20 {
        assert!(answers(
            &ask(&before, listen, &dns_query(id, "example.test")),
            id
        ));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let asking = Arc::clone(&stop);
    let during = thread::spawn(move || ask_until(&client(), listen, 1000, &asking));
    let upgrade = router.upgrade();
    stop.store(true, Ordering::SeqCst);
    let (asked, unanswered) = during.join().unwrap();
    assert!(
        unanswered.is_empty(),
        "unanswered during the upgrade: {unanswered:?}"
    );
    assert!(asked > 0);
    assert_eq!(
        udp_socket_inode(listen),
        Some(socket),
        "the same listen socket"
    );
    let after = client();
    for id in 1..=20 {
        assert!(answers(
            &ask(&after, listen, &dns_query(id, "example.test")),
            id
        ));
    }
    assert!(answers(
        &ask(&before, listen, &dns_query(21, "example.test")),
        21
    ));
    // The old process's two flows (one client before, one during) end after the hand-over.
    router.first.wait_for_lines("result=upgraded", 2);
    assert_ne!(upgrade.old, upgrade.new);
    router.stop();
}

/// iperf3 on loopback: a running `iperf3 -s`, killed when dropped, and where it listens (TCP for
/// its control connection, UDP for the test's datagrams, one port number).
struct Iperf3Server {
    child: Child,
    port: u16,
}

impl Iperf3Server {
    fn start() -> Iperf3Server {
        let port = port_free_for_both();
        let mut child = Command::new("iperf3")
            .args([
                "-s",
                "-B",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "--forceflush",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start iperf3 -s");
        let lines = lines_of(child.stdout.take().unwrap());
        first_line(&lines, "iperf3 -s listening", |line| {
            line.contains("Server listening").then_some(())
        });
        Iperf3Server { child, port }
    }
}

impl Drop for Iperf3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One `iperf3 -u` run's figures, from its JSON (the receiver's, as the client reports them).
#[derive(Debug)]
struct UdpRun {
    packets: u64,
    lost: u64,
    out_of_order: u64,
}

impl UdpRun {
    fn lost_percent(&self) -> f64 {
        100.0 * self.lost as f64 / self.packets.max(1) as f64
    }
    fn out_of_order_percent(&self) -> f64 {
        100.0 * self.out_of_order as f64 / self.packets.max(1) as f64
    }
}

/// `iperf3 -u` to 127.0.0.1:`port` at 50 Mbit/s for 3 s, 1,400-byte datagrams.
fn iperf3_udp(port: u16) -> UdpRun {
    let out = run_tool(
        Command::new("iperf3").args([
            "-u",
            "-c",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-b",
            "50M",
            "-t",
            "3",
            "-l",
            "1400",
            "--json",
        ]),
        b"",
    );
    let json: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|err| panic!("iperf3's JSON: {err}\n{}", out.both()));
    let udp = &json["end"]["streams"][0]["udp"];
    let field = |name: &str| {
        udp[name]
            .as_u64()
            .unwrap_or_else(|| panic!("no {name} in iperf3's JSON:\n{}", out.both()))
    };
    UdpRun {
        packets: field("packets"),
        lost: field("lost_packets"),
        out_of_order: field("out_of_order"),
    }
}

/// iperf3's UDP test at a fixed rate through tcp-router (a TCP route for its control connection
/// beside the UDP one, on the same port number: independent listeners) loses and reorders
/// about as much as the same test run directly, and delivers nearly every datagram.
#[test]
fn iperf3_udp_through_tcp_router_loses_and_reorders_about_as_much_as_direct() {
    let test = "udp::iperf3_udp_through_tcp_router_loses_and_reorders_about_as_much_as_direct";
    if skip_without(test, &["iperf3"]) {
        return;
    }
    let server = Iperf3Server::start();
    let dir = temp_dir("udp-iperf3");
    let port = port_free_for_both();
    let upstream = format!("127.0.0.1:{}", server.port);
    let (mut router, _) = serve(
        &dir,
        &format!("route 127.0.0.1:{port} {upstream}\nroute 127.0.0.1:{port}/udp {upstream}/udp\n"),
    );
    router.udp_listener_with(&format!(":{port}/udp"));
    router.listener_with(&format!("127.0.0.1:{port}"));
    let direct = iperf3_udp(server.port);
    let through = iperf3_udp(port);
    let figures = format!("direct {direct:?}, through tcp-router {through:?}");
    assert!(direct.packets > 10_000, "{figures}");
    assert!(
        through.lost_percent() <= direct.lost_percent() + 3.0,
        "{figures}"
    );
    assert!(
        through.out_of_order_percent() <= direct.out_of_order_percent() + 3.0,
        "{figures}"
    );
    let received = through.packets - through.lost;
    assert!(received * 10 > through.packets * 9, "{figures}");
    assert!(through.packets * 10 > direct.packets * 9, "{figures}");
}

/// With `max_flows=2`, a third client evicts the flow idle longest (the first client's), which
/// is logged as evicted; the other two keep theirs.
#[test]
fn a_full_listener_evicts_the_flow_idle_longest() {
    let upstream = udp_upstream(sender);
    let dir = temp_dir("udp-cap");
    let (mut router, _) = serve(
        &dir,
        &format!("route 127.0.0.1:0/udp {upstream} max_flows=2 idle_timeout=1h\n"),
    );
    let listen = router.udp_listener_with(&upstream.to_string());
    let clients = [client(), client(), client()];
    let mut seen_as = Vec::new();
    for c in &clients {
        seen_as.push(ask(c, listen, b"?"));
    }
    let evicted = router.wait_for_line("result=evicted");
    let first = clients[0].local_addr().unwrap();
    assert!(evicted.contains(&format!("client={first} ")), "{evicted}");
    router.line_with("its max_flows");
    // The second client still has its flow: the upstream sees the same source port.
    assert_eq!(ask(&clients[1], listen, b"?"), seen_as[1]);
}

/// allow/deny decide when a flow would start: a refused client gets no flow, its datagrams are
/// dropped and its refusal is logged once however many it sends; an allowed client is served.
#[test]
fn a_refused_client_gets_no_flow_and_one_line() {
    let upstream = udp_upstream(echo);
    let dir = temp_dir("udp-deny");
    let (mut router, _) = serve(
        &dir,
        &format!("route 127.0.0.1:0/udp {upstream}\ndeny 127.0.0.2\n"),
    );
    let listen = router.udp_listener_with(&upstream.to_string());
    let refused = UdpSocket::bind("127.0.0.2:0").unwrap();
    for _ in 0..5 {
        refused.send_to(b"let me in", listen).unwrap();
    }
    // One thread receives them all, in order: once this is answered, those were dropped.
    assert_eq!(ask(&client(), listen, b"allowed"), b"allowed");
    let line = router.line_with("refused by");
    assert!(line.contains("client 127.0.0.2:"), "{line}");
    assert!(line.contains("deny 127.0.0.2"), "{line}");
    router.signal("TERM");
    assert!(router.wait_exit().success());
    let log = router.rest_of_stderr();
    assert_eq!(log.iter().filter(|l| l.contains("refused by")).count(), 1);
    assert_eq!(
        log.iter().filter(|l| l.contains("closed udp flow")).count(),
        1
    );
}

/// A reload that keeps a UDP listener keeps its socket and its flows: the upstream sees the same
/// source port before and after, and the listen address answers as before.
#[test]
fn a_reload_keeps_udp_flows_and_their_upstream_port() {
    let upstream = udp_upstream(sender);
    let dir = temp_dir("udp-reload");
    let v1 = format!("route 127.0.0.1:0/udp {upstream}/udp idle_timeout=1h\n");
    let (mut router, _) = serve(&dir, &v1);
    let listen = router.udp_listener_with(&upstream.to_string());
    let c = client();
    let before = ask(&c, listen, b"who am i");
    let other = udp_upstream(echo);
    dir.write(
        "udp.conf",
        &format!("{v1}route 127.0.0.2:0/udp {other}/udp max_flows=10\n"),
    );
    let from = router.drain();
    router.signal("HUP");
    router
        .line_where(from, PATIENCE, |line| line.contains("reloaded"))
        .unwrap_or_else(|_| panic!("no reload; saw:\n{}", router.seen.join("\n")));
    assert_eq!(
        ask(&c, listen, b"who am i"),
        before,
        "the same upstream socket"
    );
    let added = router.udp_listener_with(&other.to_string());
    assert_eq!(ask(&client(), added, b"x"), b"x");
    dir.write("udp.conf", &v1);
    router.signal("HUP");
    router.wait_for_line("closing udp listener 127.0.0.2:0/udp");
    assert_eq!(
        ask(&c, listen, b"who am i"),
        before,
        "kept through a second reload"
    );
    router.signal("TERM");
    router.wait_for_line("result=stopped");
    assert!(router.wait_exit().success());
}

/// A port free for both TCP and UDP on 127.0.0.1 when asked (released: the caller binds it).
fn port_free_for_both() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Debian's /etc/rinetd.conf example (its TCP lines) with UDP rules added as rinetd reads them
/// (`/udp` on both ports, `[timeout=N]`, `[src=]`): `--check` passes and says so, and the
/// binary serves both kinds, a TCP and a UDP listener on the same port independent.
#[test]
fn debians_rinetd_conf_with_udp_rules_checks_and_runs() {
    let tcp = echo_upstream();
    let udp = udp_upstream(echo);
    let dir = temp_dir("udp-debian");
    let port = port_free_for_both();
    let file = dir.write(
        "rinetd.conf",
        &format!(
            "#\n# this is the configuration file for rinetd, the internet redirection server\n\
             allow 127.0.0.*\ndeny 192.168.2.1?\n\
             # bindadress    bindport  connectaddress  connectport  options...\n\
             127.0.0.1       {port}      127.0.0.1       {tcp_port}\n\
             127.0.0.1       {port}/udp  127.0.0.1       {udp_port}/udp     [timeout=1200]\n\
             127.0.0.2       0/udp     127.0.0.1       {udp_port}/udp     [src=127.0.0.1,timeout=5]\n\
             logfile {log}\nlogcommon\n",
            tcp_port = tcp.addr.port(),
            udp_port = udp.port(),
            log = dir.join("rinetd.log").display()
        ),
    );
    let (code, out, err) = run_bin(&["--check", "-c", &file]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("127.0.0.1:{port}/udp")), "{out}");
    assert!(out.contains("idle_timeout=20m"), "{out}");
    let mut router = Process::start(&["-c", &file]);
    assert_eq!(router.addr.port(), port);
    echo_through(router.addr, b"tcp through rinetd's rule");
    let same_port = router.udp_listener_with(&format!(":{port}/udp"));
    assert_eq!(same_port.port(), port);
    assert_eq!(ask(&client(), same_port, b"udp"), b"udp");
    let from_src = router.udp_listener_with("127.0.0.2:");
    assert_eq!(ask(&client(), from_src, b"src"), b"src");
}

/// A DNS query for `name` (type A, class IN) with `id`.
fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// True if `answer` answers query `id` with no error and the address 192.0.2.1 in it.
fn answers(answer: &[u8], id: u16) -> bool {
    answer.len() > 12
        && answer[..2] == id.to_be_bytes()
        && answer[2] & 0x80 != 0
        && answer[3] & 0x0f == 0
        && answer[6..8] != [0, 0]
        && answer.windows(4).any(|w| w == [192, 0, 2, 1])
}

/// dnsmasq on 127.0.0.1 answering `example.test` with 192.0.2.1 and nothing else; killed when
/// dropped.
struct Dnsmasq {
    child: Child,
    addr: SocketAddr,
}

impl Dnsmasq {
    fn start(dir: &TempDir) -> Dnsmasq {
        // A free port, for UDP and TCP (dnsmasq binds both): dnsmasq binds it at once.
        let port = port_free_for_both();
        let log = std::fs::File::create(dir.join("dnsmasq.log")).unwrap();
        let child = Command::new("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--conf-file=/dev/null",
                "--pid-file=",
                "--address=/example.test/192.0.2.1",
                &format!("--port={port}"),
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start dnsmasq");
        let mut dnsmasq = Dnsmasq {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        probe
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        wait_until("dnsmasq answers", || {
            if let Ok(Some(status)) = dnsmasq.child.try_wait() {
                let log = std::fs::read_to_string(dir.join("dnsmasq.log")).unwrap_or_default();
                panic!("dnsmasq exited ({status}): {log}");
            }
            let _ = probe.send_to(&dns_query(1, "example.test"), dnsmasq.addr);
            let mut buf = [0u8; 512];
            probe
                .recv_from(&mut buf)
                .is_ok_and(|(n, _)| answers(&buf[..n], 1))
        });
        dnsmasq
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// 1,000 DNS queries from 50 source ports through tcp-router to a real dnsmasq: every one
/// answered, each answer matched to its query by id; then `dig` (where installed) through it.
#[test]
fn dns_queries_from_fifty_ports_are_all_answered_through_tcp_router() {
    if skip_without(
        "udp::dns_queries_from_fifty_ports_are_all_answered_through_tcp_router",
        &["dnsmasq"],
    ) {
        return;
    }
    let dir = temp_dir("udp-dns");
    let dnsmasq = Dnsmasq::start(&dir);
    let (mut router, _) = serve(
        &dir,
        &format!("route 127.0.0.1:0/udp {}/udp\n", dnsmasq.addr),
    );
    let listen = router.udp_listener_with(&dnsmasq.addr.to_string());
    let ports: Vec<_> = (0..50u16)
        .map(|port| {
            thread::spawn(move || {
                let c = client();
                let mut unanswered = Vec::new();
                for n in 0..20u16 {
                    let id = port * 20 + n + 1;
                    let answer = ask(&c, listen, &dns_query(id, "example.test"));
                    if !answers(&answer, id) {
                        unanswered.push(id);
                    }
                }
                unanswered
            })
        })
        .collect();
    let unanswered: Vec<u16> = ports.into_iter().flat_map(|t| t.join().unwrap()).collect();
    assert!(unanswered.is_empty(), "unanswered ids: {unanswered:?}");
    if skip_without(
        "udp::dns_queries_from_fifty_ports_are_all_answered_through_tcp_router (dig)",
        &["dig"],
    ) {
        return;
    }
    let out = run_tool(
        Command::new("dig").args([
            "+short",
            "+tries=1",
            "+time=5",
            "-p",
            &listen.port().to_string(),
            "@127.0.0.1",
            "example.test",
            "A",
        ]),
        b"",
    );
    assert_eq!(out.stdout.trim(), "192.0.2.1", "{}", out.both());
}
