//! The end of a connection: its log line and rinetd's, its counters, and the release of
//! everything it holds, once the relay is over or the client was refused.

use std::time::SystemTime;

use crate::log::rinetd::LogRecord;
use crate::relay::{Direction, Outcome, Relayed, Released};

use super::job::Job;
use super::metrics::Disposition;
use super::refused::{metrics_result, rinetd_result, Refused};

/// The relay is over: logs and releases the connection, or, released to the new process of a
/// live upgrade (which logs it at its close), only releases it.
///
/// This runs on the copy thread that ended second; the connection ends on the closing thread
/// instead, so the log line's deep frames stay off copy threads (see `closer`). Without one
/// (it could not be started), and for a connection released, here.
/// The job stays boxed until the closing thread takes it: the copy thread's frames stay small
/// (see "One stack page per idle thread" in the relay's module doc).
pub(super) fn relayed(job: Box<Job>, relayed: Relayed) {
    let result = relayed.map_err(|Released| Refused::Upgraded);
    let Some(closer) = job.context.closer.clone().filter(|_| result.is_ok()) else {
        return close(*job, result);
    };
    closer.close(Box::new(move || close(*job, result)));
}

/// Logs the connection (the info line and rinetd's log file) and counts its end, then releases
/// it; one a live upgrade moved is only released (the new process logs it).
pub(super) fn close(job: Job, result: Result<Outcome, Refused>) {
    if let Err(Refused::Upgraded) = result {
        return;
    }
    let record = job.record();
    count_end(&job, &result);
    let duration = record.conn.started.elapsed();
    let reason = result.as_ref().err().map(Refused::to_string);
    let line = record.line(
        duration,
        result.as_ref().map_err(|_| reason.as_deref().unwrap_or("")),
    );
    if log::log_enabled!(log::Level::Info) {
        // Rendered here, not inside the logger, so the two formatting passes do not nest (see
        // "One stack page per idle thread" in the relay's module doc).
        let text = line.to_string();
        log::info!("{text}");
    }
    if let Some(sink) = &job.context.log_file {
        let listen = &record.listener.config.listen;
        let upstream = record.rinetd_upstream();
        let bytes = result.as_ref().map_or([0, 0], |_| line.bytes);
        sink.write(&LogRecord {
            time: SystemTime::now(),
            client: line.client.key(),
            bind_host: &listen.host.to_string(),
            bind_port: listen.port,
            connect_host: &upstream.map_or(String::new(), |u| u.host.to_string()),
            connect_port: upstream.map_or(0, |u| u.port),
            bytes_in: bytes[0],
            bytes_out: bytes[1],
            result: rinetd_result(&result),
        });
    }
    drop(job);
}

/// Counts the connection's end for its route (or, refused before one was chosen, for the
/// listener's `none`), and how each direction ended.
fn count_end(job: &Job, result: &Result<Outcome, Refused>) {
    let record = job.record();
    let stats = record
        .route()
        .map_or(&record.listener.unrouted, |route| &route.stats);
    let disposition = match (result, record.reset_because()) {
        (Ok(_), Some(_)) => Disposition::UpstreamDown,
        _ => metrics_result(result),
    };
    stats.ended(disposition);
    if let Ok(outcome) = result {
        stats.direction_ended(Direction::ClientToUpstream, outcome.sent.end);
        stats.direction_ended(Direction::UpstreamToClient, outcome.received.end);
    }
}
