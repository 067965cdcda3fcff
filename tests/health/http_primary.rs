//! The PostgreSQL-primary recipe as Patroni serves it: each database host answers `GET /primary`
//! on a port of its own (8008 in production) with 200 on the primary and 503 elsewhere; the
//! route's HTTP check sends clients to the one answering 200. Here each "database" is a name
//! server on its own loopback address, and each health endpoint a small HTTP server in the test
//! on one port number shared by both addresses.

use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::sync::atomic::AtomicU16;
use std::sync::Mutex;

use super::*;

/// The check of the recipe, as docs/config.md writes it (its port the test's).
const PATRONI_CHECK: &str = "check=http:/primary";

/// A health endpoint answering `GET /primary` with a status the test switches, 404 elsewhere;
/// it keeps the head of every request it read.
struct HealthEndpoint {
    status: Arc<AtomicU16>,
    heads: Arc<Mutex<Vec<String>>>,
}

impl HealthEndpoint {
    fn serve(listener: TcpListener, status: u16) -> HealthEndpoint {
        let endpoint = HealthEndpoint {
            status: Arc::new(AtomicU16::new(status)),
            heads: Arc::new(Mutex::new(Vec::new())),
        };
        let (status, heads) = (Arc::clone(&endpoint.status), Arc::clone(&endpoint.heads));
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let head = read_head(&stream);
                let path = head.split(' ').nth(1).unwrap_or("").to_string();
                heads.lock().unwrap().push(head);
                let code = if path == "/primary" {
                    status.load(Ordering::SeqCst)
                } else {
                    404
                };
                let _ = (&stream).write_all(
                    format!(
                        "HTTP/1.1 {code} Status\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    )
                    .as_bytes(),
                );
            }
        });
        endpoint
    }

    fn answer(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    /// The first request head it read.
    fn first_head(&self) -> String {
        self.heads
            .lock()
            .unwrap()
            .first()
            .cloned()
            .unwrap_or_default()
    }
}

/// The request head on `stream`, up to its blank line, as text.
fn read_head(stream: &TcpStream) -> String {
    let _ = stream.set_read_timeout(Some(PATIENCE));
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return head,
            Ok(_) if line == "\r\n" => return head,
            Ok(_) => head.push_str(&line),
        }
    }
}

#[test]
fn an_http_check_on_its_own_port_sends_clients_to_the_member_answering_200() {
    let (ip2, ip3) = (Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3));
    let db2 = Named::listening_on("db2", TcpListener::bind((ip2, 0)).unwrap());
    let db3 = Named::listening_on("db3", TcpListener::bind((ip3, 0)).unwrap());
    let mut health = same_port_listeners(&[ip2, ip3]).into_iter();
    let check_port = health.as_slice()[0].local_addr().unwrap().port();
    let on2 = HealthEndpoint::serve(health.next().unwrap(), 200);
    let on3 = HealthEndpoint::serve(health.next().unwrap(), 503);
    let mut run = Running::start(&format!(
        "route 127.0.0.1:0 {},{} {PATRONI_CHECK} check_port={check_port} on_down=close \
         {FAST_CHECKS}\n",
        s(db2.addr()),
        s(db3.addr())
    ));
    wait_for_states(run.admin, &[(db2.addr(), "up"), (db3.addr(), "down")]);
    run.router.line_with(&format!(
        "upstream {} down: status 503, expected 2xx",
        s(db3.addr())
    ));
    assert_eq!(reached_by(run.router.addr, 10), vec!["db2"; 10]);

    let head = on2.first_head();
    assert!(head.starts_with("GET /primary HTTP/1.1\r\n"), "{head:?}");
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("\r\nhost: 127.0.0.2"), "{head:?}");
    assert!(lower.contains("\r\nconnection: close\r\n"), "{head:?}");

    on2.answer(503);
    on3.answer(200);
    // A client reaching db2 as its checks fail is cut (on_down=close): not yet.
    wait_until("a client reaching db3", || {
        let mut got = String::new();
        let read = connect(run.router.addr).read_to_string(&mut got);
        read.is_ok() && got == "db3"
    });
    wait_for_states(run.admin, &[(db2.addr(), "down"), (db3.addr(), "up")]);
    assert_eq!(reached_by(run.router.addr, 10), vec!["db3"; 10]);
}
