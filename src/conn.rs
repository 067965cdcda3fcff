//! One client's life on a pool worker: connect upstream (with failover), relay, log one line.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::conn_log::Summary;
use crate::limits::Permit;
use crate::net;
use crate::pool::Pool;
use crate::registry::Entry;
use crate::relay;
use crate::route::RouteState;

/// What the accept loop hands to a worker for one client.
#[derive(Debug)]
pub struct Job {
    /// The client, registered.
    pub entry: Entry,
    /// The connection slot, held until the job ends.
    pub permit: Permit,
    /// The listener that accepted it.
    pub listener: SocketAddr,
    /// The route its clients take.
    pub route: Arc<RouteState>,
    /// Where the second copy thread comes from.
    pub pool: Pool,
}

/// Serves one client from connect to close. Everything it holds (the slot, the registry entry,
/// both sockets) is released when it returns or unwinds.
pub fn handle(job: Job) {
    let Job {
        entry,
        permit: _permit,
        listener,
        route,
        pool,
    } = job;
    let conn = &entry.conn;
    net::tune(&conn.client);

    let mut failed = Vec::new();
    let connected = route
        .upstreams
        .connect(route.connect_options(), &mut failed);
    for attempt in &failed {
        log::warn!("conn #{} from {}: connect to {attempt}", conn.id, conn.peer);
    }
    let mut summary = Summary {
        id: conn.id,
        client: conn.peer,
        listener,
        upstream: None,
        duration: Default::default(),
        result: Err(String::new()),
    };
    let Some(upstream) = connected else {
        log::warn!(
            "conn #{} from {}: no upstream reachable ({} tried: {}); closing the client",
            conn.id,
            conn.peer,
            failed.len(),
            route.describe_upstreams()
        );
        summary.duration = conn.started.elapsed();
        summary.result = Err("no-upstream".to_string());
        log::info!("{summary}");
        return;
    };
    net::tune(&upstream.stream);
    summary.upstream = Some((upstream.upstream.to_string(), upstream.addr));
    conn.attach_upstream(upstream.stream);
    log::debug!(
        "conn #{} from {}: connected to {}",
        conn.id,
        conn.peer,
        upstream.addr
    );

    let outcome = relay::relay(conn, route.timeouts(), &pool);
    summary.duration = conn.started.elapsed();
    summary.result = Ok(outcome);
    log::info!("{summary}");
}
