//! What the tests read of /proc: a process's state, threads, descriptors, limits and signal
//! handlers, and the kernel's TCP table (backlogs, send queues, half-closes).

use std::net::{IpAddr, SocketAddr, TcpStream};

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// The value of `field` (with its colon: `Threads:`, `VmRSS:`, `SigCgt:`) in /proc/PID/status,
/// as written after it; `None` once the process is gone.
pub fn status_field(pid: u32, field: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| Some(line.strip_prefix(field)?.trim().to_string()))
}

/// The first number of `field` in /proc/PID/status; fails the test if the process or the field
/// is not there.
fn status_number(pid: u32, field: &str) -> u64 {
    status_field(pid, field)
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// How many threads `pid` runs.
pub fn threads_of(pid: u32) -> usize {
    status_number(pid, "Threads:") as usize
}

/// `pid`'s resident set, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    status_number(pid, "VmRSS:")
}

/// True if `pid` has a handler for `signal` (its bit in SigCgt); false once it is gone.
pub fn catches(pid: u32, signal: u32) -> bool {
    status_field(pid, "SigCgt:")
        .and_then(|mask| u64::from_str_radix(&mask, 16).ok())
        .is_some_and(|mask| mask & (1 << (signal - 1)) != 0)
}

/// True when the tests run as root (uid 0).
pub fn is_root() -> bool {
    status_field(std::process::id(), "Uid:")
        .is_some_and(|uids| uids.split_whitespace().next() == Some("0"))
}

/// How many descriptors `pid` has open.
pub fn fds_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// The hard limit in the row of /proc/PID/limits named `resource` (`Max open files`, `Max
/// processes`); `None` if it is unlimited.
pub fn hard_limit(pid: u32, resource: &str) -> Option<usize> {
    std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .unwrap()
        .lines()
        .find_map(|row| row.strip_prefix(resource))
        .and_then(|values| values.split_whitespace().nth(1)?.parse().ok())
}

/// The scheduling policy (field 41 of /proc/PID/task/TID/stat) of every thread of `pid`.
pub fn thread_policies(pid: u32) -> Vec<u32> {
    let mut policies = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let stat = std::fs::read_to_string(task.unwrap().path().join("stat")).unwrap();
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        policies.push(after_name.split(' ').nth(38).unwrap().parse().unwrap());
    }
    policies
}

/// State and parent of `pid`, from /proc/PID/stat (after the command name, which may hold
/// spaces and parentheses).
pub fn stat_of(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let parent = fields.next()?.parse().ok()?;
    Some((state, parent))
}

/// The parent of `pid`, while it exists.
pub fn parent_of(pid: u32) -> Option<u32> {
    stat_of(pid).map(|(_, parent)| parent)
}

/// True while `pid` runs (exists and is not a zombie).
pub fn alive(pid: u32) -> bool {
    stat_of(pid).is_some_and(|(state, _)| state != 'Z')
}

// ---------------------------------------------------------------------------------------------
// The kernel's TCP table
// ---------------------------------------------------------------------------------------------

/// How many connections the kernel holds in the backlog of the listening socket bound to `addr`
/// (handshake done, not yet accepted), from `/proc/net/tcp`: a listener's `rx_queue` there is its
/// accept queue. Fails the test if no socket listens on `addr`.
pub fn accept_queue(addr: SocketAddr) -> usize {
    const LISTEN: &str = "0A";
    tcp_table_row(addr, |local, _, state| {
        state == LISTEN && local == Some(addr)
    })
    .unwrap_or_else(|| panic!("no socket listens on {addr}"))
    .rx_queue
}

/// Bytes `stream` has written that its peer has not acknowledged yet (the socket's `tx_queue` in
/// `/proc/net/tcp`); 0 once the socket is closed.
pub fn send_queue(stream: &TcpStream) -> usize {
    tcp_row(stream).map_or(0, |row| row.tx_queue)
}

/// Bytes that `stream`'s peer socket (its other end, in this network namespace) has received and
/// its program has not read yet (that socket's `rx_queue` in `/proc/net/tcp`); 0 if it is gone.
pub fn peer_unread(stream: &TcpStream) -> usize {
    peer_row(stream).map_or(0, |row| row.rx_queue)
}

/// The inode of the socket listening on `addr` (from `/proc/net/tcp`): the same number before and
/// after a reload says the listener kept its socket; `None` when nothing listens there.
pub fn listener_inode(addr: SocketAddr) -> Option<u64> {
    const LISTEN: &str = "0A";
    tcp_table_row(addr, |local, _, state| {
        state == LISTEN && local == Some(addr)
    })
    .map(|r| r.inode)
}

/// True while the kernel's TCP table has a socket from `local` to `remote` (a reset removes it).
pub fn tcp_socket_exists(local: SocketAddr, remote: SocketAddr) -> bool {
    connection_row(local, remote).is_some()
}

/// True once `stream`'s peer socket (its other end, in this network namespace) has sent its FIN
/// and not had it acknowledged, with bytes before it still unacknowledged too (its state in
/// `/proc/net/tcp` is FIN_WAIT1).
pub fn peer_has_sent_its_fin(stream: &TcpStream) -> bool {
    const FIN_WAIT1: u8 = 0x04;
    peer_row(stream).is_some_and(|row| row.state == FIN_WAIT1)
}

/// True once `stream`'s peer has sent its FIN and this side has not closed yet (the socket's
/// state in `/proc/net/tcp` is CLOSE_WAIT).
pub fn peer_has_half_closed(stream: &TcpStream) -> bool {
    const CLOSE_WAIT: u8 = 0x08;
    tcp_row(stream).is_some_and(|row| row.state == CLOSE_WAIT)
}

/// `stream`'s row of the kernel's TCP table, while it has one.
fn tcp_row(stream: &TcpStream) -> Option<TcpRow> {
    connection_row(stream.local_addr().ok()?, stream.peer_addr().ok()?)
}

/// The row of `stream`'s other end (in this network namespace), while it has one.
fn peer_row(stream: &TcpStream) -> Option<TcpRow> {
    connection_row(stream.peer_addr().ok()?, stream.local_addr().ok()?)
}

/// The row of the socket from `local` to `remote`.
fn connection_row(local: SocketAddr, remote: SocketAddr) -> Option<TcpRow> {
    tcp_table_row(local, |l, r, _| l == Some(local) && r == Some(remote))
}

/// What the tests read of a row of the kernel's TCP table.
struct TcpRow {
    state: u8,
    tx_queue: usize,
    rx_queue: usize,
    inode: u64,
}

/// The first row of the kernel's TCP table for `addr`'s family that `pick` chooses from its local
/// address, remote address and state (as printed, in hex).
fn tcp_table_row(
    addr: SocketAddr,
    pick: impl Fn(Option<SocketAddr>, Option<SocketAddr>, &str) -> bool,
) -> Option<TcpRow> {
    let table = if addr.is_ipv4() {
        "/proc/net/tcp"
    } else {
        "/proc/net/tcp6"
    };
    let text = std::fs::read_to_string(table).expect("read the kernel's TCP table");
    text.lines().skip(1).find_map(|row| {
        let fields: Vec<&str> = row.split_whitespace().collect();
        let (local, remote, state, queues) = (fields[1], fields[2], fields[3], fields[4]);
        if !pick(proc_net_addr(local), proc_net_addr(remote), state) {
            return None;
        }
        let (tx, rx) = queues.split_once(':')?;
        Some(TcpRow {
            state: u8::from_str_radix(state, 16).ok()?,
            tx_queue: usize::from_str_radix(tx, 16).ok()?,
            rx_queue: usize::from_str_radix(rx, 16).ok()?,
            inode: fields.get(9)?.parse().ok()?,
        })
    })
}

/// Decodes an address as `/proc/net/tcp{,6}` prints it: the address's bytes in host order, as
/// hex words, then `:` and the port in hex.
fn proc_net_addr(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Vec<u32> = (0..ip.len() / 8)
        .map(|i| u32::from_str_radix(&ip[8 * i..8 * i + 8], 16))
        .collect::<Result<_, _>>()
        .ok()?;
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let ip: IpAddr = match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok()?.into(),
        16 => <[u8; 16]>::try_from(bytes).ok()?.into(),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}
