//! Leaving a sick upstream (`on_down=close`): when a member goes down, every connection open to
//! it through a route that says so is reset on both sides, and its log line says
//! `result=upstream-down`. The checker calls this hook at each change of state; the connections
//! are found in the registry by the member their lease counts against.

use std::sync::{Arc, Weak};

use crate::config::OnDown;
use crate::health::checker::OnChange;
use crate::health::marks::Condition;
use crate::health::member::Member;

use super::registry::Registry;

/// What the log line and the metrics call a connection reset because its upstream went down.
pub(crate) const UPSTREAM_DOWN: &str = "upstream-down";

/// Has `registry`'s connections left behind when their member goes down (routes with
/// `on_down=close`).
pub(crate) fn hook(registry: &Arc<Registry>) -> OnChange {
    let registry: Weak<Registry> = Arc::downgrade(registry);
    Box::new(move |member, change| {
        if change.to != Condition::Down {
            return;
        }
        if let Some(registry) = registry.upgrade() {
            close_connections_to(&registry, member);
        }
    })
}

/// Resets every connection open to `member` through a route with `on_down=close`.
fn close_connections_to(registry: &Registry, member: &Arc<Member>) {
    let mut closed = 0;
    for record in registry.snapshot() {
        let leaves = record
            .route()
            .is_some_and(|route| route.config.on_down == OnDown::Close);
        if leaves && record.went_to(member) && record.reset(UPSTREAM_DOWN) {
            closed += 1;
        }
    }
    if closed > 0 {
        log::info!(
            "upstream {} down: reset {closed} connection(s) to it (on_down=close)",
            member.describe()
        );
    }
}
