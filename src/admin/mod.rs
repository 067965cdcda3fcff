//! The admin endpoint: metrics for Prometheus, readiness and liveness for whatever balances load
//! in front, the live connections and routes as JSON, and a status page; on its own blocking
//! threads, so nothing it does can delay the accept loop or a copy thread.
//!
//! - `endpoint`: the endpoint's life (bound at start, moved or removed by a reload); `intake`:
//!   its accept thread, which refuses strangers at once and reads every request head in one poll
//!   loop; `client`: one request's answer, on a thread of its own.
//! - `http`: the request head and responses; `metrics`, `json`, `page.html`: what is served.
//!
//! It reads the server's shared state (`serve::status`) and changes nothing in it.

mod client;
mod endpoint;
mod http;
mod intake;
mod json;
mod metrics;

pub(crate) use endpoint::AdminEndpoint;
