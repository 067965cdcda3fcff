//! A program that embeds a forwarder: it serves on a thread of its own while the program does its
//! work, and is stopped when the program decides (here: once three messages have been echoed
//! through it), draining the connection still open before it reports.
//!
//! ```sh
//! cargo run --example embed                    # with its own echo upstream on loopback
//! cargo run --example embed -- 127.0.0.1:7     # or in front of an echo server you run
//! ```

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use tcp_router::Forwarder;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let upstream = match std::env::args().nth(1) {
        Some(addr) => addr.parse()?,
        None => start_echo_upstream()?,
    };
    let forwarder = Forwarder::builder("127.0.0.1:0")
        .upstream(upstream)
        .idle_timeout(Duration::from_secs(60))
        .bind()?;
    let addr = forwarder.local_addr();
    let running = forwarder.spawn()?;
    println!("forwarding {addr} to {upstream}");

    // The program's own work: a client talking through the forwarder.
    let stream = TcpStream::connect(addr)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    for n in 1..=3 {
        writeln!(writer, "message {n}")?;
        let mut echoed = String::new();
        reader.read_line(&mut echoed)?;
        print!("echoed: {echoed}");
    }

    // Its condition is met: stop accepting. The connection still open may finish within the
    // drain deadline; it sends one last line and closes.
    let stopper = thread::spawn(move || running.stop_within(Duration::from_secs(5)));
    wait_until_refused(addr);
    println!("stopping: new clients are refused, the open connection may finish");
    writeln!(writer, "goodbye")?;
    let mut last = String::new();
    reader.read_line(&mut last)?;
    print!("echoed: {last}");
    writer.shutdown(std::net::Shutdown::Write)?;
    let report = stopper
        .join()
        .expect("the stopping thread does not panic")?;
    println!(
        "drain report: {} active when the stop began, {} finished, {} cut",
        report.active, report.finished, report.cut
    );
    Ok(())
}

/// Waits (up to five seconds) until `addr` refuses new connections: the listener has closed.
fn wait_until_refused(addr: SocketAddr) {
    for _ in 0..500 {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
            return;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// An echo server on a free loopback port, for when no upstream is given.
fn start_echo_upstream() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            thread::spawn(move || {
                let mut reader = stream;
                let mut writer = match reader.try_clone() {
                    Ok(writer) => writer,
                    Err(_) => return,
                };
                let _ = std::io::copy(&mut reader, &mut writer);
            });
        }
    });
    Ok(addr)
}
