//! UDP forwarding through the binary: DNS queries to a real dnsmasq (and dig where installed),
//! a flow ended by its idle timeout, the flow cap's eviction, a reload that keeps flows, and
//! rinetd's UDP rules in Debian's example file.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

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
/// each way, and `result=idle`.
#[test]
fn a_flow_ends_after_its_idle_timeout_with_one_line() {
    let upstream = udp_upstream(echo);
    let dir = temp_dir("udp-idle");
    let (mut router, _) = serve(
        &dir,
        &format!("route 127.0.0.1:0/udp {upstream}/udp idle_timeout=1s\n"),
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
    // The client's next datagram sets up a new flow.
    assert_eq!(ask(&c, listen, b"new"), b"new");
    router.wait_for_line("closed udp flow #2 ");
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
