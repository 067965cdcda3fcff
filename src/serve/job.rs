//! A connection's job: what a worker needs to serve one connection from set-up to close, built
//! in one place for a client just accepted and for one taken over in a live upgrade.

use std::sync::Arc;

use crate::log::rinetd::LogSink;

use super::admit::Admission;
use super::clients::PerClient;
use super::closer::Closer;
use super::permits::Permit;
use super::pool::Pool;
use super::record::Record;
use super::registry::Registration;

/// What every connection served under one configuration shares with the server. Made afresh at
/// each reload (rinetd's log file is reopened, the per-client table starts anew); a connection
/// keeps the one it was accepted under.
#[derive(Debug)]
pub(crate) struct Context {
    /// Where connections are logged and released once relayed (see `closer`); `None` if its
    /// thread could not start (they end on their copy threads then).
    pub(crate) closer: Option<Closer>,
    /// Where the copy threads come from: a pool of their own, whose threads run nothing but
    /// copy loops, so an idle one has touched only the pages a copy loop needs.
    pub(crate) copy_pool: Pool,
    /// rinetd's log file, if configured.
    pub(crate) log_file: Option<Arc<LogSink>>,
    /// The process-wide per-client limit.
    pub(crate) per_client: Arc<PerClient>,
}

/// One connection, from set-up to close. Its fields drop in order: the client's places first,
/// then the registry entry, then the connection slots, so a client let in because a slot came
/// free finds its own places free too.
#[derive(Debug)]
pub(crate) struct Job {
    /// Its places under the per-client and peek-phase limits, and whether a limit refused it.
    pub(crate) admission: Admission,
    /// Its place in the registry, with its record.
    pub(crate) registration: Registration,
    /// The process-wide connection slot, held until the job ends.
    #[allow(dead_code, reason = "held for its Drop, which gives the slot back")]
    permit: Permit,
    /// The listener's own slot, if it has a cap.
    #[allow(dead_code, reason = "held for its Drop, which gives the slot back")]
    listener_permit: Option<Permit>,
    /// What it shares with the server.
    pub(crate) context: Arc<Context>,
}

impl Job {
    /// The job of the connection registered as `registration`, holding its slots, under
    /// `admission`.
    pub(crate) fn new(
        context: &Arc<Context>,
        registration: Registration,
        (permit, listener_permit): (Permit, Option<Permit>),
        admission: Admission,
    ) -> Job {
        Job {
            admission,
            registration,
            permit,
            listener_permit,
            context: Arc::clone(context),
        }
    }

    /// What is known about the connection.
    pub(crate) fn record(&self) -> &Arc<Record> {
        &self.registration.record
    }
}
