//! The tutorial's scenario, end to end: redis-cli talks to redis-server through tcp-router.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use crate::util::*;

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

struct RedisServer(Child);

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// PING -> PONG, SET then GET, through the binary exactly as `make run` starts it.
#[test]
fn redis_cli_through_tcp_router() {
    if !have("redis-server") || !have("redis-cli") {
        eprintln!("SKIPPED redis_cli_through_tcp_router: redis-server or redis-cli not installed");
        return;
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _redis = RedisServer(
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server"),
    );
    let deadline = Instant::now() + PATIENCE;
    while redis_cli(port, &["PING"]) != "PONG" {
        assert!(Instant::now() < deadline, "redis-server did not come up");
        std::thread::yield_now();
    }

    let upstream = format!("127.0.0.1:{port}");
    let router = Process::start(&["127.0.0.1:0", &upstream]);
    let via = router.addr.port();
    assert_eq!(redis_cli(via, &["PING"]), "PONG");
    assert_eq!(redis_cli(via, &["SET", "tutorial", "day 15"]), "OK");
    assert_eq!(redis_cli(via, &["GET", "tutorial"]), "day 15");
}
