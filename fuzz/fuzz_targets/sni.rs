//! Fuzzes the TLS ClientHello reader: no panics, stable answers for prefixes.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use tcp_router::proto::Parsed;
use tcp_router::proto::tls::{parse_client_hello, MAX_HELLO_BYTES};

fuzz_target!(|data: &[u8]| {
    common::check_prefixes(data, parse_client_hello);
    match parse_client_hello(data) {
        Ok(Parsed::Complete(hello)) => {
            if let Some(name) = hello.server_name {
                assert!(!name.is_empty() && !name.ends_with('.'));
                assert_eq!(name, name.to_ascii_lowercase());
            }
        }
        // The read cap guarantees an answer once it is reached.
        Ok(Parsed::Partial) => assert!(data.len() < MAX_HELLO_BYTES),
        Err(_) => {}
    }
});
