//! Bytes move exactly, in order, both ways; ends of stream and resets are passed on faithfully.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use crate::util::*;

/// A request comes back unchanged through the router.
#[test]
fn echo_round_trip() {
    let up = echo_upstream();
    let router = start_router(config_to(&[up.addr]));
    let mut client = connect(router.addr);
    round_trip(&mut client, b"hello, tcp-router\n");
    send_and_close(&mut client, b"bye");
    assert_eq!(read_to_end(&mut client), b"bye");
}

/// The upstream speaks first (SMTP, SSH, MySQL): the client gets the banner without sending.
#[test]
fn server_first_banner_arrives_before_the_client_speaks() {
    let up = upstream(|mut stream| {
        stream
            .write_all(b"220 mail.example ESMTP ready\r\n")
            .unwrap();
        let mut line = [0u8; 6];
        stream.read_exact(&mut line).unwrap();
        assert_eq!(&line, b"QUIT\r\n");
        stream.write_all(b"221 bye\r\n").unwrap();
    });
    let router = start_router(config_to(&[up.addr]));
    let mut client = connect(router.addr);
    assert_eq!(
        read_exact(&mut client, 30),
        b"220 mail.example ESMTP ready\r\n"
    );
    client.write_all(b"QUIT\r\n").unwrap();
    assert_eq!(read_to_end(&mut client), b"221 bye\r\n");
}

/// A client that shuts down its write side still receives the whole answer, which the upstream
/// only sends after it saw the end of the request.
#[test]
fn client_half_close_still_gets_the_whole_answer() {
    let up = upstream(|mut stream| {
        let mut request = Vec::new();
        stream.read_to_end(&mut request).unwrap();
        let answer = random_bytes(request.len() as u64, 3 << 20);
        stream.write_all(&answer).unwrap();
    });
    let router = start_router(config_to(&[up.addr]));
    let mut client = connect(router.addr);
    send_and_close(&mut client, b"give me 3 MiB");
    let answer = read_to_end(&mut client);
    assert_eq!(checksum(&answer), checksum(&random_bytes(13, 3 << 20)));
}

/// The same the other way round: the upstream ends its side first and keeps receiving.
#[test]
fn upstream_half_close_still_gets_the_whole_upload() {
    let (got_tx, got_rx) = mpsc::channel();
    let up = upstream(move |mut stream| {
        stream.write_all(b"send me your data").unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        let mut upload = Vec::new();
        stream.read_to_end(&mut upload).unwrap();
        got_tx.send(checksum(&upload)).unwrap();
    });
    let router = start_router(config_to(&[up.addr]));
    let mut client = connect(router.addr);
    assert_eq!(read_to_end(&mut client), b"send me your data");
    let upload = random_bytes(7, 2 << 20);
    send_and_close(&mut client, &upload);
    assert_eq!(got_rx.recv_timeout(PATIENCE).unwrap(), checksum(&upload));
}

/// A client reset reaches the upstream as a reset, not as a clean end of stream.
#[test]
fn client_reset_is_passed_on_as_reset() {
    let (result_tx, result_rx) = mpsc::channel();
    let up = upstream(move |mut stream| {
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream.write_all(b"ready").unwrap();
        result_tx.send(read_to_close(&mut stream).1).unwrap();
    });
    let router = start_router(config_to(&[up.addr]));
    let mut client = connect(router.addr);
    assert_eq!(read_exact(&mut client, 5), b"ready");
    reset(client);
    assert_eq!(result_rx.recv_timeout(PATIENCE).unwrap(), Ending::Reset);
}

/// An upstream reset reaches the client as a reset.
#[test]
fn upstream_reset_is_passed_on_as_reset() {
    let up = upstream(|stream| {
        let mut buf = [0u8; 5];
        (&stream).read_exact(&mut buf).unwrap();
        reset(stream);
    });
    let router = start_router(config_to(&[up.addr]));
    let mut client = connect(router.addr);
    client.write_all(b"reset").unwrap();
    assert_eq!(read_to_close(&mut client).1, Ending::Reset);
}

/// TCP urgent data in the middle of a bulk upload: the urgent byte is dropped (the relay reads
/// without SO_OOBINLINE and sends no urgent data), everything around it arrives in order, and the
/// stream still ends cleanly. Splice stops at the urgent mark, so this checks the hand-over to
/// the buffer path.
#[test]
fn urgent_data_is_dropped_and_the_stream_goes_on() {
    const BULK: usize = 1 << 20;
    let (got_tx, got_rx) = mpsc::channel();
    let up = upstream(move |mut stream| {
        let mut upload = Vec::new();
        stream.read_to_end(&mut upload).unwrap();
        got_tx.send(upload).unwrap();
    });
    let router = start_router(config_to(&[up.addr]));
    let mut client = connect(router.addr);
    let before = random_bytes(11, BULK);
    let after = random_bytes(12, BULK);
    client.write_all(&before).unwrap();
    socket2::SockRef::from(&client)
        .send_out_of_band(b"!")
        .unwrap();
    client.write_all(&after).unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let upload = got_rx.recv_timeout(PATIENCE).unwrap();
    assert_eq!(upload.len(), 2 * BULK);
    assert!(upload[..BULK] == before[..] && upload[BULK..] == after[..]);
}

/// Closes with SO_LINGER 0, which sends an RST.
fn reset(stream: std::net::TcpStream) {
    socket2::SockRef::from(&stream)
        .set_linger(Some(std::time::Duration::ZERO))
        .unwrap();
    drop(stream);
}

/// 200 connections at once, each moving 2 MiB of random data up and back down, checked by checksum.
#[test]
fn many_concurrent_streams_arrive_intact() {
    const CONNECTIONS: u64 = 200;
    const BYTES: usize = 2 << 20;
    let up = echo_upstream();
    let router = start_router(config_to(&[up.addr]));
    let clients: Vec<_> = (0..CONNECTIONS)
        .map(|seed| {
            let addr = router.addr;
            thread::spawn(move || {
                let data = random_bytes(seed, BYTES);
                let expected = checksum(&data);
                let mut client = connect(addr);
                let mut writer = client.try_clone().unwrap();
                let sender = thread::spawn(move || send_and_close(&mut writer, &data));
                let mut sum = Checksum::new();
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = client.read(&mut buf).expect("read echo");
                    if n == 0 {
                        break;
                    }
                    sum.update(&buf[..n]);
                }
                sender.join().unwrap();
                assert_eq!(sum.finish(), expected, "connection {seed}");
            })
        })
        .collect();
    for client in clients {
        client.join().expect("client thread");
    }
}

/// A reader that stops reading stalls the writer after a bounded amount (the sockets' buffers):
/// the router blocks instead of buffering what is in flight. The whole stream then arrives intact.
#[test]
fn slow_reader_stalls_the_writer_and_gets_everything() {
    const TOTAL: usize = 128 << 20;
    const CHUNK: usize = 1 << 20;
    let written = Arc::new(AtomicUsize::new(0));
    let progress = Arc::clone(&written);
    let up = upstream(move |mut stream| {
        // Read the request first: closing with unread bytes would (rightly) reset the connection.
        let mut go = [0u8; 2];
        stream.read_exact(&mut go).unwrap();
        for i in 0..TOTAL / CHUNK {
            if stream.write_all(&random_bytes(i as u64, CHUNK)).is_err() {
                return;
            }
            progress.fetch_add(CHUNK, Ordering::SeqCst);
        }
    });
    let router = start_router(config_to(&[up.addr]));
    let mut client = connect(router.addr);
    client.write_all(b"go").unwrap();

    // Wait until the writer stops making progress while we read nothing.
    let mut last = usize::MAX;
    let mut still = 0;
    let deadline = Instant::now() + PATIENCE;
    while still < 5 {
        assert!(Instant::now() < deadline, "writer never stalled");
        thread::sleep(Duration::from_millis(50));
        let now = written.load(Ordering::SeqCst);
        still = if now == last { still + 1 } else { 0 };
        last = now;
    }
    assert!(
        last < TOTAL * 3 / 4,
        "{} MiB accepted with nobody reading: the router is buffering",
        last >> 20
    );

    let mut sum = Checksum::new();
    let mut expected = Checksum::new();
    for i in 0..TOTAL / CHUNK {
        expected.update(&random_bytes(i as u64, CHUNK));
    }
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = client.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        sum.update(&buf[..n]);
    }
    assert_eq!(sum.finish(), expected.finish());
}
