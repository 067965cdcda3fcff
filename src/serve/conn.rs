//! One connection's life on its workers: set up (`setup`), relayed (`relay`), closed (`close`).

use std::sync::Arc;

use crate::relay::{self, Spot, Timeouts};

use super::close;
use super::job::Job;
use super::setup;

/// Serves one connection from accept to close, having read `read` of the client's bytes already
/// (by the old process of a live upgrade, before it had chosen a route; empty for a client just
/// accepted). Everything it holds (slots, registry entry, sockets) is released when the
/// connection's last copy thread has logged it, or when this returns or unwinds without a relay.
pub(crate) fn serve(mut job: Job, read: Vec<u8>) {
    match setup::set_up(&mut job, read) {
        Ok(timeouts) => relay(job, timeouts, [None, None]),
        Err(refused) => close::close(job, Err(refused)),
    }
}

/// Relays until both directions end, each starting at its spot (`None`: from the start; see
/// `relay::relay`); the copy thread that ends last closes the connection.
// The epilogue owns one box: see "One stack page per idle thread" in the relay's module doc.
#[inline(never)]
pub(super) fn relay(job: Job, timeouts: Timeouts, spots: [Option<Box<Spot>>; 2]) {
    let job = Box::new(job);
    let conn = Arc::clone(&job.record().conn);
    let pool = job.context.copy_pool.clone();
    relay::relay(
        &conn,
        timeouts,
        spots,
        |task| pool.execute(task),
        move |relayed| close::relayed(job, relayed),
    );
}
