//! Real peers on one port at once: an OpenSSH client reaching a real `sshd`, `openssl s_client`
//! with two names reaching two `openssl s_server`s, curl reaching an HTTP server, and MariaDB's
//! client reaching `mariadbd` through the wait route (the server speaks first), all through one
//! tcp-router listener at the same time, each answer checked byte-exact; and `--check
//! --explain-bytes` predicting each one's route.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;

use crate::util::*;

/// Where a daemon lives: on PATH, or in an sbin directory a non-root PATH often lacks.
fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(["/usr/sbin".into(), "/usr/local/sbin".into()]);
    dirs.map(|dir| dir.join(name)).find(|p| p.is_file())
}

/// True if `test` must be skipped because one of `tools` is missing (recorded, as every skip).
fn skip_without_any(test: &str, tools: &[&str]) -> bool {
    match tools.iter().find(|tool| find_tool(tool).is_none()) {
        Some(tool) => {
            skip(test, &format!("{tool} not installed"));
            true
        }
        None => false,
    }
}

/// The user this test runs as (the one `ssh` logs in as).
fn user_name() -> String {
    let out = run_tool(Command::new("id").arg("-un"), b"");
    assert!(out.status.success(), "id -un: {}", out.both());
    out.stdout.trim().to_string()
}

/// Runs `command` to completion, failing the test with its output if it fails.
fn run_ok(command: &mut Command) -> ToolOutput {
    let out = run_tool(command, b"");
    assert!(out.status.success(), "{command:?}: {}", out.both());
    out
}

/// Waits until `addr` accepts a connection and sends `greeting` first (a daemon is ready).
fn wait_for_greeting(addr: SocketAddr, greeting: &[u8], what: &str) {
    wait_until(what, || {
        let Ok(mut stream) = TcpStream::connect(addr) else {
            return false;
        };
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut got = vec![0; greeting.len()];
        stream.read_exact(&mut got).is_ok() && got == greeting
    });
}

/// A real `sshd` on a loopback port of its own, with its own host key, accepting `user_key` for
/// the user the test runs as; killed when dropped.
struct Sshd {
    addr: SocketAddr,
    user_key: PathBuf,
    _kid: Kid,
}

impl Sshd {
    fn start(dir: &TempDir) -> Sshd {
        let keygen = |name: &str| {
            let key = dir.join(name);
            run_ok(
                Command::new("ssh-keygen")
                    .args(["-q", "-t", "ed25519", "-N", ""])
                    .arg("-f")
                    .arg(&key),
            );
            key
        };
        let host_key = keygen("host_key");
        let user_key = keygen("user_key");
        std::fs::copy(user_key.with_extension("pub"), dir.join("authorized_keys")).unwrap();
        // As root, sshd wants its privilege separation directory, which the package's service
        // creates at start; unprivileged, it needs none.
        if user_name() == "root" {
            let _ = std::fs::create_dir_all("/run/sshd");
        }
        let port = reserve_port();
        let config = dir.write(
            "sshd_config",
            &format!(
                "ListenAddress {}\nHostKey {}\nPidFile {}\nAuthorizedKeysFile {}\n\
                 UsePAM no\nStrictModes no\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
                 PermitRootLogin prohibit-password\n",
                port.addr(),
                host_key.display(),
                dir.join("sshd.pid").display(),
                dir.join("authorized_keys").display(),
            ),
        );
        // sshd re-executes itself, so it must be started by its absolute path.
        let kid = Kid(Command::new(find_tool("sshd").unwrap())
            .args(["-D", "-e", "-f", &config])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sshd"));
        let addr = port.addr();
        drop(port);
        wait_for_greeting(addr, b"SSH-2.0-", "sshd listens");
        Sshd {
            addr,
            user_key,
            _kid: kid,
        }
    }

    /// `ssh` through `router` running `command`: its standard output.
    fn run(&self, router: SocketAddr, command: &str) -> String {
        let out = run_ok(
            Command::new("ssh")
                .args(["-F", "/dev/null", "-p", &router.port().to_string(), "-i"])
                .arg(&self.user_key)
                .args([
                    "-o",
                    "StrictHostKeyChecking=no",
                    "-o",
                    "UserKnownHostsFile=/dev/null",
                    "-o",
                    "BatchMode=yes",
                    "-o",
                    "IdentitiesOnly=yes",
                    "-o",
                    "LogLevel=ERROR",
                ])
                .arg(format!("{}@127.0.0.1", user_name()))
                .arg(command),
        );
        out.stdout
    }
}

/// A real `mariadbd` on a loopback port of its own, with a fresh data directory and no grant
/// tables (any user may connect); killed when dropped.
struct Mariadb {
    addr: SocketAddr,
    _kid: Kid,
}

impl Mariadb {
    fn start(dir: &TempDir) -> Mariadb {
        let data = dir.join("data");
        let as_user = format!("--user={}", user_name());
        run_ok(
            Command::new(find_tool("mariadb-install-db").unwrap())
                .arg("--no-defaults")
                .arg(format!("--datadir={}", data.display()))
                .args([
                    &as_user,
                    "--skip-test-db",
                    "--auth-root-authentication-method=normal",
                ]),
        );
        let port = reserve_port();
        let socket = dir.join("mariadb.sock");
        let kid = Kid(Command::new(find_tool("mariadbd").unwrap())
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--port={}", port.port))
            .arg(format!("--pid-file={}", dir.join("mariadb.pid").display()))
            .arg(format!("--log-error={}", dir.join("mariadb.err").display()))
            .args([
                "--bind-address=127.0.0.1",
                "--skip-grant-tables",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=16M",
                &as_user,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mariadbd"));
        let addr = port.addr();
        drop(port);
        // The server's handshake packet: a 3-byte length, sequence 0, protocol version 10.
        wait_until("mariadbd listens", || {
            let Ok(mut stream) = TcpStream::connect(addr) else {
                return false;
            };
            stream.set_read_timeout(Some(PATIENCE)).unwrap();
            let mut head = [0; 5];
            stream.read_exact(&mut head).is_ok() && head[3..] == [0, 10]
        });
        Mariadb { addr, _kid: kid }
    }
}

/// `mariadb` (the client, which waits for the server's greeting) through `router` running
/// `query`: its standard output.
fn mariadb_query(router: SocketAddr, query: &str) -> String {
    run_ok(
        Command::new("mariadb")
            .args([
                "--no-defaults",
                "--protocol=tcp",
                "-h",
                "127.0.0.1",
                "-u",
                "root",
            ])
            .args(["-P", &router.port().to_string(), "-N", "-B", "-e", query]),
    )
    .stdout
}

/// `openssl s_client -servername NAME -quiet` through `router`, sending `text` then `CLOSE` to an
/// `s_server -rev` (which answers each line reversed and closes at `CLOSE`): what came back.
fn reversed_over_tls(router: SocketAddr, name: &str, text: &str) -> String {
    let input = format!("{text}\nCLOSE\n");
    let out = run_tool(
        Command::new("openssl")
            .args(["s_client", "-connect", &router.to_string()])
            .args(["-servername", name, "-quiet"]),
        input.as_bytes(),
    );
    assert!(out.status.success(), "s_client {name}: {}", out.both());
    out.stdout
}

/// An HTTP/1.1 server answering every request with `body`.
fn http_server(body: &'static str) -> Upstream {
    upstream(move |mut stream| {
        let mut head = Vec::new();
        let mut byte = [0; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => return,
            }
        }
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    })
}

/// curl through `router` for `path`: the body.
fn curl_body(router: SocketAddr, path: &str) -> String {
    run_ok(
        Command::new("curl")
            .args(["-sS", "--max-time", "20"])
            .arg(format!("http://{router}{path}")),
    )
    .stdout
}

/// One listener, sslh's use: SSH to sshd, two TLS names to two s_servers, plain HTTP to a web
/// server and a server-first MariaDB through `proto=silent`; every client runs at once, twice
/// over, each answer byte-exact; `--check --explain-bytes` and `--explain` predict each route.
#[test]
fn real_ssh_tls_http_and_mariadb_clients_share_one_port_at_once() {
    let test =
        "protocols::real_peers::real_ssh_tls_http_and_mariadb_clients_share_one_port_at_once";
    let tools = [
        "sshd",
        "ssh",
        "ssh-keygen",
        "openssl",
        "curl",
        "mariadbd",
        "mariadb",
        "mariadb-install-db",
    ];
    if skip_without_any(test, &tools) {
        return;
    }
    let dir = temp_dir("real-peers");
    let sshd = Sshd::start(&dir);
    let db = Mariadb::start(&dir);
    let (key_one, cert_one) = self_signed(&dir, "one", "one.example");
    let (key_two, cert_two) = self_signed(&dir, "two", "two.example");
    let tls_one = TlsServer::start(&key_one, &cert_one, &["-rev"]);
    let tls_two = TlsServer::start(&key_two, &cert_two, &["-rev"]);
    let web = http_server("plain http, byte for byte\n");
    let config = dir.write(
        "router.conf",
        &format!(
            "route 127.0.0.1:0 {} proto=ssh\n\
             route 127.0.0.1:0 {} sni=one.example\n\
             route 127.0.0.1:0 {} sni=two.example\n\
             route 127.0.0.1:0 {} proto=http\n\
             route 127.0.0.1:0 {} proto=silent wait=300ms\n",
            sshd.addr, tls_one.addr, tls_two.addr, web.addr, db.addr
        ),
    );
    let mut router = Process::start(&["-c", &config]);
    let addr = router.addr;

    thread::scope(|scope| {
        let mut clients = Vec::new();
        for round in 0..2 {
            let sshd = &sshd;
            clients.push(scope.spawn(move || {
                let got = sshd.run(
                    addr,
                    &format!("printf 'hello from sshd %s\\n' {round}; echo $((6*7))"),
                );
                assert_eq!(got, format!("hello from sshd {round}\n42\n"));
            }));
            for (name, text) in [
                ("one.example", "first name"),
                ("two.example", "second name"),
            ] {
                clients.push(scope.spawn(move || {
                    let want: String = format!("{text} {round}").chars().rev().collect();
                    assert_eq!(
                        reversed_over_tls(addr, name, &format!("{text} {round}")),
                        want + "\n"
                    );
                }));
            }
            clients.push(scope.spawn(move || {
                assert_eq!(
                    curl_body(addr, &format!("/{round}")),
                    "plain http, byte for byte\n"
                );
            }));
            clients.push(scope.spawn(move || {
                let got = mariadb_query(
                    addr,
                    &format!("select 6*7, 'through the wait route {round}'"),
                );
                assert_eq!(got, format!("42\tthrough the wait route {round}\n"));
            }));
        }
        for client in clients {
            client.join().unwrap();
        }
    });
    for said in [
        "proto=ssh route=proto=ssh ",
        "proto=tls sni=one.example match=exact name",
        "proto=tls sni=two.example match=exact name",
        "proto=http host=",
        "proto=silent route=proto=silent ",
    ] {
        router.wait_for_lines(said, 2);
    }

    let explain = |args: &[&str]| {
        let mut all = vec!["--check", "-c", &config];
        all.extend_from_slice(args);
        let (code, stdout, stderr) = run_bin(&all);
        assert_eq!(code, 0, "{stdout}{stderr}");
        stdout
    };
    let said = explain(&["--explain-bytes", r"SSH-2.0-OpenSSH_9.2p1\r\n"]);
    assert!(said.contains("route proto=ssh (protocol route)"), "{said}");
    let said = explain(&["--explain-bytes", ""]);
    assert!(said.contains("after 300ms, route proto=silent"), "{said}");
    let said = explain(&["--explain-bytes", r"GET / HTTP/1.1\r\nHost: x\r\n\r\n"]);
    assert!(said.contains("route proto=http (protocol route)"), "{said}");
    let said = explain(&["--explain", "two.example"]);
    assert!(
        said.contains("route sni=two.example (exact name)"),
        "{said}"
    );
}
