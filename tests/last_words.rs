//! A peer's last words before its reset: a server that answers one line and closes with the
//! client's input unread (Linux then sends a reset, not a FIN), and the mirror, a client that
//! sends a last line and closes with the server's data unread. Over a direct connection the other
//! side reads every byte and then the reset; through tcp-router it must too. Each test runs many
//! connections, because the bytes were lost only when the two copy threads met the reset in one
//! order.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::mpsc;
use std::thread;

use crate::util::*;

/// Connections per test: a relay that loses the race keeps the last words of only 25 to 83 in
/// 100, so 200 in a row do not pass by chance.
const CONNECTIONS: usize = 200;

/// Connections running at once, so the copy threads meet the reset in every order.
const AT_ONCE: usize = 4;

/// Connections per test with a megabyte of last words.
const BULK_CONNECTIONS: usize = 50;

/// What the server reads before it answers, and what it leaves unread.
const READ_FIRST: usize = 100;

/// Writes `total` bytes in chunks until done or the connection fails, on a thread of its own.
fn keep_writing(stream: &TcpStream, total: usize) -> thread::JoinHandle<()> {
    let mut stream = stream.try_clone().unwrap();
    thread::spawn(move || {
        let chunk = vec![b'x'; 4096];
        let mut sent = 0;
        while sent < total && stream.write_all(&chunk).is_ok() {
            sent += chunk.len();
        }
    })
}

/// Blocks until `stream` has unread bytes beyond what was read, so closing it sends a reset.
fn wait_for_unread(stream: &TcpStream) {
    let mut one = [0u8; 1];
    stream.peek(&mut one).expect("more input to leave unread");
}

/// Reads `n` bytes, then answers `last` and closes with the rest of the input unread, once `last`
/// has left its send queue: a reset throws away what the sender's own kernel still holds, over a
/// direct connection too, so only bytes that have left are owed to the other side.
fn answer_and_close_unread(mut stream: TcpStream, n: usize, last: &[u8]) {
    let mut first = vec![0u8; n];
    stream.read_exact(&mut first).unwrap();
    wait_for_unread(&stream);
    answer_and_close(stream, last);
}

/// Answers `last` and closes, with input unread.
fn answer_and_close(mut stream: TcpStream, last: &[u8]) {
    stream.write_all(last).unwrap();
    if last.len() > SENT_AT_ONCE {
        wait_until_sent(&stream);
    }
}

/// Last words this short leave the send queue as they are written (one segment on loopback, to a
/// reader with room), so the sender closes at once, as Redis does.
const SENT_AT_ONCE: usize = 4096;

/// Waits until `stream`'s send queue is empty, looking as often as it can so the close follows as
/// closely as it would in a real server.
fn wait_until_sent(stream: &TcpStream) {
    spin_until("the last words to leave", || send_queue(stream) == 0);
}

/// Runs `one` for [`CONNECTIONS`] connections, [`AT_ONCE`] at a time, and returns the failures
/// it reported.
fn run_many(one: impl Fn(usize) -> Result<(), String> + Send + Sync + 'static) -> Vec<String> {
    let one = std::sync::Arc::new(one);
    let (tx, rx) = mpsc::channel();
    let workers: Vec<_> = (0..AT_ONCE)
        .map(|worker| {
            let (one, tx) = (one.clone(), tx.clone());
            thread::spawn(move || {
                for i in (worker..CONNECTIONS).step_by(AT_ONCE) {
                    if let Err(failure) = one(i) {
                        tx.send(format!("connection {i}: {failure}")).unwrap();
                    }
                }
            })
        })
        .collect();
    drop(tx);
    for worker in workers {
        worker.join().unwrap();
    }
    rx.iter().collect()
}

fn assert_none_failed(failures: &[String], of: usize) {
    assert!(
        failures.is_empty(),
        "{} of {of} connections lost their last words; first: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
}

/// The server side of the forward case, and the client's view of it through `addr`: the client
/// keeps sending, the server reads [`READ_FIRST`] bytes, answers `last` and closes with input
/// unread; the client must read all of `last`, then a reset.
fn server_last_words(addr: SocketAddr, last: &[u8], half_close: bool) -> Result<(), String> {
    let mut client = connect(addr);
    let writer = if half_close {
        client.write_all(&[b'x'; 4 * READ_FIRST]).unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        None
    } else {
        Some(keep_writing(&client, 8 << 20))
    };
    let (got, ending) = read_to_close(&mut client);
    drop(client);
    if let Some(writer) = writer {
        writer.join().unwrap();
    }
    check(got, ending, last)
}

fn check(got: Vec<u8>, ending: Ending, last: &[u8]) -> Result<(), String> {
    if got != last {
        return Err(format!(
            "{} of {} bytes, then {ending:?}",
            got.len(),
            last.len()
        ));
    }
    if ending != Ending::Reset {
        return Err(format!("every byte, then {ending:?} instead of a reset"));
    }
    Ok(())
}

/// A line like Redis's answer to a bad request.
const ERROR_LINE: &[u8] = b"-ERR Protocol error: too big inline request\r\n";

fn big_last_words() -> Vec<u8> {
    random_bytes(20, 1 << 20)
}

fn server_answers_and_resets(last: Vec<u8>) -> Upstream {
    upstream(move |stream| answer_and_close_unread(stream, READ_FIRST, &last))
}

/// Like [`server_answers_and_resets`], but answers only once the client's FIN has arrived, so
/// the reset comes during the half-close.
fn server_answers_half_closed_and_resets(last: Vec<u8>) -> Upstream {
    upstream(move |mut stream| {
        let mut first = vec![0u8; READ_FIRST];
        stream.read_exact(&mut first).unwrap();
        wait_until("the client's FIN", || peer_has_half_closed(&stream));
        answer_and_close(stream, &last);
    })
}

/// The forward case against a router in this process, for `last`.
fn through_the_router(last: Vec<u8>, half_close: bool) -> Vec<String> {
    let up = if half_close {
        server_answers_half_closed_and_resets(last.clone())
    } else {
        server_answers_and_resets(last.clone())
    };
    let router = start_router(config_to(&[up.addr]));
    let addr = router.addr;
    let failures = run_many(move |_| server_last_words(addr, &last, half_close));
    drop(router);
    failures
}

/// An upstream that answers one line and closes with input unread: the client reads the line,
/// then the reset, every time.
#[test]
fn an_upstreams_last_line_before_its_reset_reaches_the_client() {
    assert_none_failed(&through_the_router(ERROR_LINE.to_vec(), false), CONNECTIONS);
}

/// The same with a last answer large enough to move in bulk (through splice where it works).
#[test]
fn an_upstreams_last_megabyte_before_its_reset_reaches_the_client() {
    assert_none_failed(&through_the_router(big_last_words(), false), CONNECTIONS);
}

/// The client has half-closed its side, then the upstream answers and resets: the answer, then
/// the reset.
#[test]
fn an_upstreams_last_words_after_the_clients_half_close_reach_the_client() {
    assert_none_failed(&through_the_router(ERROR_LINE.to_vec(), true), CONNECTIONS);
}

/// The same through the binary with splice turned off, so the buffer path carries the bulk too.
#[test]
fn an_upstreams_last_megabyte_reaches_the_client_without_splice() {
    let last = big_last_words();
    let up = server_answers_and_resets(last.clone());
    let mut command = std::process::Command::new(bin());
    command
        .env("TCP_ROUTER_NO_SPLICE", "1")
        .args(["127.0.0.1:0", &up.addr.to_string()]);
    let router = Process::start_command(command);
    let addr = router.addr;
    assert_none_failed(
        &run_many(move |_| server_last_words(addr, &last, false)),
        CONNECTIONS,
    );
}

/// The mirror: the upstream keeps sending; the client reads [`READ_FIRST`] bytes, sends `last`
/// and closes with the rest unread. The upstream must read all of `last`, then a reset.
fn client_last_words(
    addr: SocketAddr,
    heard: &mpsc::Receiver<(Vec<u8>, Ending)>,
    last: &[u8],
) -> Result<(), String> {
    let client = connect(addr);
    answer_and_close_unread(client, READ_FIRST, last);
    let (got, ending) = heard
        .recv_timeout(PATIENCE)
        .map_err(|_| "the upstream heard no end".to_string())?;
    check(got, ending, last)
}

/// An upstream that keeps writing to each connection and reports what it read, and how the
/// stream ended.
fn upstream_hearing_last_words() -> (Upstream, mpsc::Receiver<(Vec<u8>, Ending)>) {
    reporting_upstream(|mut stream| {
        let writer = keep_writing(&stream, 8 << 20);
        let heard = read_to_close(&mut stream);
        drop(stream);
        writer.join().unwrap();
        heard
    })
}

/// A client that sends a last line and closes with the upstream's data unread: the upstream reads
/// the line, then the reset, every time.
#[test]
fn a_clients_last_line_before_its_reset_reaches_the_upstream() {
    let (up, heard) = upstream_hearing_last_words();
    let router = start_router(config_to(&[up.addr]));
    let mut failures = Vec::new();
    // One at a time: the upstream's reports arrive in order on one channel.
    for i in 0..CONNECTIONS {
        if let Err(failure) = client_last_words(router.addr, &heard, b"QUIT\r\n") {
            failures.push(format!("connection {i}: {failure}"));
        }
    }
    assert_none_failed(&failures, CONNECTIONS);
}

/// The same with a last upload large enough to move in bulk.
#[test]
fn a_clients_last_megabyte_before_its_reset_reaches_the_upstream() {
    let (up, heard) = upstream_hearing_last_words();
    let router = start_router(config_to(&[up.addr]));
    let last = big_last_words();
    let mut failures = Vec::new();
    for i in 0..BULK_CONNECTIONS {
        if let Err(failure) = client_last_words(router.addr, &heard, &last) {
            failures.push(format!("connection {i}: {failure}"));
        }
    }
    assert_none_failed(&failures, BULK_CONNECTIONS);
}

/// Writes filler to `stream` until its peer socket holds [`STUCK`] bytes its program has not
/// read, then `last`, and waits until all of it has left this socket: the peer's reader is then
/// busy elsewhere (blocked writing to someone who does not read) with the last words queued
/// behind the filler. Returns the filler's length: a few MiB, as the relay's socket to the one
/// who does not read grows its send buffer first.
fn queue_behind_a_stuck_reader(stream: &mut TcpStream, last: &[u8]) -> usize {
    let filler = [b'f'; 64 * 1024];
    let mut sent = 0;
    while peer_unread(stream) < STUCK {
        stream.write_all(&filler).unwrap();
        sent += filler.len();
    }
    stream.write_all(last).unwrap();
    wait_until_sent(stream);
    sent
}

/// Unread bytes at the relay's socket that show its reader is stuck, not just late.
const STUCK: usize = 32 * 1024;

/// Rounds of the deterministic cases below.
const ROUNDS: usize = 10;

/// The forward case with the reset arriving while the relay's reader of the upstream is blocked
/// writing to a client that reads nothing yet: the upstream's filler and last line wait in the
/// relay's socket, the reset comes, and only then does the client read. A relay that drops what
/// it holds at the reset loses the line every round.
#[test]
fn an_upstreams_last_line_queued_behind_a_stuck_reader_reaches_the_client() {
    let (closed_tx, closed) = mpsc::channel();
    let closed_tx = std::sync::Mutex::new(closed_tx);
    let up = upstream(move |mut stream| {
        let mut first = [0u8; READ_FIRST];
        stream.read_exact(&mut first).unwrap();
        let filler = queue_behind_a_stuck_reader(&mut stream, ERROR_LINE);
        drop(stream);
        closed_tx.lock().unwrap().send(filler).unwrap();
    });
    let router = start_router(config_to(&[up.addr]));
    let mut failures = Vec::new();
    for round in 0..ROUNDS {
        let mut client = connect(router.addr);
        let writer = keep_writing(&client, 8 << 20);
        let filler = closed.recv_timeout(PATIENCE).unwrap();
        let (got, ending) = read_to_close(&mut client);
        writer.join().unwrap();
        let mut want = vec![b'f'; filler];
        want.extend_from_slice(ERROR_LINE);
        if let Err(failure) = check(got, ending, &want) {
            failures.push(format!("round {round}: {failure}"));
        }
    }
    assert_none_failed(&failures, ROUNDS);
}

/// The mirror: the client's filler and last line wait in the relay's socket while the relay's
/// reader of the client is blocked writing to an upstream that reads nothing yet; the client
/// closes (a reset); only then does the upstream read.
#[test]
fn a_clients_last_line_queued_behind_a_stuck_reader_reaches_the_upstream() {
    let (start_tx, start) = mpsc::channel::<usize>();
    let start = std::sync::Mutex::new(start);
    let (heard_tx, heard) = mpsc::channel();
    let heard_tx = std::sync::Mutex::new(heard_tx);
    let up = upstream(move |mut stream| {
        let writer = keep_writing(&stream, 8 << 20);
        let filler = start.lock().unwrap().recv_timeout(PATIENCE).unwrap();
        let heard = read_to_close(&mut stream);
        drop(stream);
        writer.join().unwrap();
        heard_tx.lock().unwrap().send((filler, heard)).unwrap();
    });
    let router = start_router(config_to(&[up.addr]));
    let mut failures = Vec::new();
    for round in 0..ROUNDS {
        let mut client = connect(router.addr);
        let mut first = [0u8; READ_FIRST];
        client.read_exact(&mut first).unwrap();
        let filler = queue_behind_a_stuck_reader(&mut client, b"QUIT\r\n");
        drop(client);
        start_tx.send(filler).unwrap();
        let (filler, (got, ending)) = heard.recv_timeout(PATIENCE).unwrap();
        let mut want = vec![b'f'; filler];
        want.extend_from_slice(b"QUIT\r\n");
        if let Err(failure) = check(got, ending, &want) {
            failures.push(format!("round {round}: {failure}"));
        }
    }
    assert_none_failed(&failures, ROUNDS);
}

/// A reset during a half-close: the upstream sends its answer and its FIN to a client that reads
/// nothing yet, so the relay holds the tail of the answer and the FIN for the client; then the
/// upstream resets. The client, reading only once the reset has reached the relay, gets the whole
/// answer before the reset.
#[test]
fn an_answer_before_the_upstreams_fin_reaches_the_client_when_the_upstream_then_resets() {
    const ANSWER: usize = 256 * 1024;
    let (go_tx, go) = mpsc::channel::<()>();
    let go = std::sync::Mutex::new(go);
    let (reset_tx, reset) = mpsc::channel::<()>();
    let reset_tx = std::sync::Mutex::new(reset_tx);
    let up = upstream(move |mut stream| {
        let mut first = [0u8; READ_FIRST];
        stream.read_exact(&mut first).unwrap();
        stream.write_all(&random_bytes(7, ANSWER)).unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        go.lock().unwrap().recv_timeout(PATIENCE).unwrap();
        let (local, relay) = (stream.local_addr().unwrap(), stream.peer_addr().unwrap());
        drop(stream);
        wait_until("the reset reaches the relay", || {
            !tcp_socket_exists(relay, local)
        });
        reset_tx.lock().unwrap().send(()).unwrap();
    });
    let router = start_router(config_to(&[up.addr]));
    let mut failures = Vec::new();
    for round in 0..ROUNDS {
        let mut client = connect(router.addr);
        let writer = keep_writing(&client, 8 << 20);
        wait_until("the relay's FIN to the client", || {
            peer_has_sent_its_fin(&client)
        });
        go_tx.send(()).unwrap();
        reset.recv_timeout(PATIENCE).unwrap();
        let (got, ending) = read_to_close(&mut client);
        writer.join().unwrap();
        // The FIN before the reset was passed on as it came, so the client may read it first.
        let ending = if ending == Ending::Fin {
            Ending::Reset
        } else {
            ending
        };
        if let Err(failure) = check(got, ending, &random_bytes(7, ANSWER)) {
            failures.push(format!("round {round}: {failure}"));
        }
    }
    assert_none_failed(&failures, ROUNDS);
}

/// Over a direct connection the same exchanges always keep their last words: the tests above
/// measure the router, not the kernel.
#[test]
fn direct_connections_keep_their_last_words() {
    for last in [ERROR_LINE.to_vec(), big_last_words()] {
        let up = server_answers_and_resets(last.clone());
        let addr = up.addr;
        let forward = run_many(move |_| server_last_words(addr, &last, false));
        assert_none_failed(&forward, CONNECTIONS);
    }
    let (up, heard) = upstream_hearing_last_words();
    for last in [ERROR_LINE, &big_last_words()] {
        for _ in 0..BULK_CONNECTIONS {
            client_last_words(up.addr, &heard, last).unwrap();
        }
    }
}
