//! The tutorial's forwarder: every connection to 127.0.0.1:11000 is relayed, byte for byte, to
//! the Redis server on 127.0.0.1:6379.
//!
//! ```sh
//! cargo run --example forward        # then, in another terminal:
//! redis-cli -p 11000 PING            # PONG
//! ```

use tcp_router::Forwarder;

fn main() -> Result<(), tcp_router::Error> {
    let forwarder = Forwarder::new("127.0.0.1:11000", "127.0.0.1:6379")?;
    println!(
        "forwarding {} to 127.0.0.1:6379; try: redis-cli -p 11000 PING",
        forwarder.local_addr()
    );
    forwarder.serve()?;
    Ok(())
}
