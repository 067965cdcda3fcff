//! Fuzzes the live upgrade's hand-off wire decoder (`Message::decode`, through
//! `upgrade::decode_round_trip`): no panics, and a message read, written back out, reads the
//! same.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tcp_router::upgrade::decode_round_trip(data);
});
