//! The wire formats tcp-router reads and writes, as pure functions over `&[u8]`: the TLS
//! ClientHello ([`tls`]), the HTTP/1.x request head ([`http`]), an SSH client's identification
//! string ([`ssh`]), a literal byte pattern ([`prefix`]), a regular expression over the first
//! bytes ([`pattern`]) and the PROXY protocol v1/v2 ([`proxy`], with its encoder).
//!
//! Each reader takes the bytes received so far and answers [`Parsed::Complete`] with what it
//! found, [`Parsed::Partial`] when it needs more, or an error when the bytes cannot start a valid
//! message. They never panic, allocate little and read no socket, so they are unit-tested on every
//! prefix and split of real captures and fuzzed (`fuzz/`). The socket loop around them lives in
//! `serve::peek`.
//!
//! Architecture invariant: nothing here imports anything outside `proto/` (the readers share a
//! bounds-checked cursor and the host-name rule, [`name`](self)).
//!
//! ```
//! use tcp_router::proto::{http, Parsed};
//!
//! let head = b"GET / HTTP/1.1\r\nHost: Example.com:8080\r\n\r\n";
//! assert_eq!(http::parse_host(head), Ok(Parsed::Complete(Some("example.com".into()))));
//! assert_eq!(http::parse_host(&head[..20]), Ok(Parsed::Partial));
//! ```

mod cursor;
pub mod http;
pub(crate) mod name;
pub mod pattern;
pub mod prefix;
pub mod proxy;
pub mod ssh;
pub mod tls;

pub use cursor::Parsed;
