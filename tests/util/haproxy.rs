//! haproxy in TCP mode with `accept-proxy`, in front of one backend: the PROXY protocol's
//! reference peer. It serves a socket the test already listens on, handed over as its stdin
//! (`fd@0`): no port to pick and release, and clients may connect before haproxy has started
//! (the kernel queues them), so there is nothing to wait for.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};

use super::{temp_dir, Kid, TempDir};

/// haproxy with `accept-proxy` in front of a backend; killed on drop.
pub struct Haproxy {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The process.
    pub kid: Kid,
    dir: TempDir,
}

impl Haproxy {
    /// haproxy in front of `backend`, logging to a file in its scratch directory.
    pub fn start(backend: SocketAddr) -> Haproxy {
        let dir = temp_dir("haproxy");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let config = dir.write(
            "haproxy.cfg",
            &format!(
                "global\n    maxconn 64\n\
                 defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 20s\n    \
                 timeout server 20s\n\
                 frontend fe\n    bind fd@0 accept-proxy\n    default_backend be\n\
                 backend be\n    server backend {backend}\n"
            ),
        );
        let log = std::fs::File::create(dir.join("haproxy.log")).unwrap();
        let kid = Kid(Command::new("haproxy")
            .args(["-db", "-f", &config])
            .stdin(Stdio::from(OwnedFd::from(listener)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn haproxy"));
        Haproxy { addr, kid, dir }
    }

    /// What it has written to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("haproxy.log")).unwrap_or_default()
    }
}
