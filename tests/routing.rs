//! Name routing (SNI, Host, ALPN) and PROXY protocol end to end, with real TLS peers where installed.

use crate::util::*;
