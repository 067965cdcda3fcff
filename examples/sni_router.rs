//! An SNI router built in code: TLS clients are sent to a backend by the server name they ask
//! for, without decrypting anything; clients without a matching name (or without TLS) go to the
//! default backend.
//!
//! ```sh
//! cargo run --example sni_router -- 127.0.0.1:8443
//! openssl s_client -connect 127.0.0.1:8443 -servername a.example.com
//! ```
//!
//! The backends here are placeholders on loopback; point them at real TLS servers.

use std::time::Duration;

use tcp_router::Forwarder;

fn main() -> Result<(), tcp_router::Error> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8443".into());
    let forwarder = Forwarder::builder(listen)
        // Exact names win over wildcards, longer wildcards over shorter ones.
        .sni_route("a.example.com", ["127.0.0.1:9001"])
        .sni_route("*.example.com", ["127.0.0.1:9002", "127.0.0.1:9003"])
        // Everyone else: no SNI, another name, or not TLS at all.
        .upstream("127.0.0.1:9000")
        // A client that sends nothing for this long is closed.
        .peek_timeout(Duration::from_secs(5))
        .allow("127.0.0.0/8")
        .bind()?;
    println!(
        "routing TLS on {} by server name: a.example.com -> 127.0.0.1:9001, \
         *.example.com -> 127.0.0.1:9002/9003, anything else -> 127.0.0.1:9000",
        forwarder.local_addr()
    );
    forwarder.serve()?;
    Ok(())
}
