//! What tcp-router writes about each connection: the one line at info level on stderr ([`mod@line`]:
//! who, where to, bytes each way, how each direction ended), and rinetd's `logfile` in its two
//! formats ([`rinetd`]). Only the library calls `log` macros; the binary installs the logger.

pub(crate) mod line;
pub(crate) mod rinetd;
