//! Loopback addresses beyond 127.0.0.1 and names for them: listeners on one port number across
//! several addresses, and lines of /etc/hosts that live as long as a guard, so a test can give a
//! name several addresses and take them away again (glibc answers every address /etc/hosts has
//! for a name).

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::skip;

/// The hosts file the system's resolver reads.
const HOSTS: &str = "/etc/hosts";

/// Held while a test changes [`HOSTS`]: a removal rewrites the file, which must not lose the
/// lines another test appends meanwhile.
static EDITING: Mutex<()> = Mutex::new(());

/// The loopback address 127.0.0.`last`.
pub fn loopback(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

/// Listeners on the same port number on each of `ips`: the kernel picks a port on the first
/// address, and the others bind it too; a port taken on one of them is given up for another.
pub fn same_port_listeners(ips: &[Ipv4Addr]) -> Vec<TcpListener> {
    for _ in 0..100 {
        let first = TcpListener::bind(SocketAddr::from((ips[0], 0))).unwrap();
        let port = first.local_addr().unwrap().port();
        let rest: Result<Vec<TcpListener>, _> = ips[1..]
            .iter()
            .map(|ip| TcpListener::bind(SocketAddr::from((*ip, port))))
            .collect();
        if let Ok(rest) = rest {
            return std::iter::once(first).chain(rest).collect();
        }
    }
    panic!("no port free on every one of {ips:?}");
}

/// A name unique to this test run (process and call), under `tcp-router.test`, which no
/// resolver answers but /etc/hosts.
pub fn test_name(tag: &str) -> String {
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{tag}-{}-{}.tcp-router.test",
        std::process::id(),
        COUNT.fetch_add(1, Ordering::SeqCst)
    )
}

/// Lines `ADDRESS NAME` appended to /etc/hosts, removed (exactly those lines) on drop or by
/// [`HostsEntries::remove`].
pub struct HostsEntries {
    lines: Vec<String>,
}

impl HostsEntries {
    /// Appends one line per address of `ips` for `name`; `None` (after recording the skip of
    /// `test` with [`skip`]) when /etc/hosts cannot be written.
    pub fn add(test: &str, name: &str, ips: &[Ipv4Addr]) -> Option<HostsEntries> {
        let lines: Vec<String> = ips.iter().map(|ip| format!("{ip} {name}")).collect();
        let text: String = lines.iter().map(|line| format!("{line}\n")).collect();
        let _editing = EDITING.lock().unwrap_or_else(|e| e.into_inner());
        let written = std::fs::OpenOptions::new()
            .append(true)
            .open(HOSTS)
            .and_then(|mut file| {
                // A file not ending in a line end would join our first line to its last.
                let ends_open = std::fs::read(HOSTS)?.last().is_some_and(|b| *b != b'\n');
                let prefix = if ends_open { "\n" } else { "" };
                file.write_all(format!("{prefix}{text}").as_bytes())
            });
        match written {
            Ok(()) => Some(HostsEntries { lines }),
            Err(err) => {
                skip(test, &format!("cannot write {HOSTS}: {err}"));
                None
            }
        }
    }

    /// Removes the lines now: the name no longer resolves.
    pub fn remove(&mut self) {
        if self.lines.is_empty() {
            return;
        }
        let _editing = EDITING.lock().unwrap_or_else(|e| e.into_inner());
        let text = std::fs::read_to_string(HOSTS).expect("read /etc/hosts");
        let kept: String = text
            .lines()
            .filter(|line| !self.lines.iter().any(|ours| ours == line))
            .map(|line| format!("{line}\n"))
            .collect();
        // Written in place (not renamed over): /etc/hosts may be a bind mount.
        std::fs::write(HOSTS, kept).expect("write /etc/hosts");
        self.lines.clear();
    }
}

impl Drop for HostsEntries {
    fn drop(&mut self) {
        self.remove();
    }
}
