//! Fuzzes the values of active checks: a `check=` value (`CheckKind`), a `check_status` range
//! and an upstream's `*W` weight suffix. No panics; a refusal is one line; a check or a status
//! range taken prints as text that parses back to an equal value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tcp_router::config::{split_weight, CheckKind, StatusRange};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match text.parse::<CheckKind>() {
        Ok(check) => {
            let shown = check.to_string();
            assert!(!shown.contains([' ', '\n']), "{text:?} shown as {shown:?}");
            assert_eq!(shown.parse::<CheckKind>(), Ok(check), "{text:?} shown as {shown:?}");
        }
        Err(why) => assert_eq!(why.lines().count(), 1, "{text:?}: {why:?}"),
    }
    match text.parse::<StatusRange>() {
        Ok(range) => {
            assert!(100 <= range.low && range.low <= range.high && range.high <= 599);
            assert_eq!(range.to_string().parse(), Ok(range), "{text:?}");
        }
        Err(why) => assert_eq!(why.lines().count(), 1, "{text:?}: {why:?}"),
    }
    match split_weight(text) {
        Ok((address, weight)) => {
            assert!((1..=256).contains(&weight), "{text:?}");
            assert!(text.starts_with(address), "{text:?}");
        }
        Err(why) => assert_eq!(why.lines().count(), 1, "{text:?}: {why:?}"),
    }
});
