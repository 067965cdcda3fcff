//! Checks of a route that sends PROXY headers send one too, so an upstream that requires one
//! accepts them: haproxy with `accept-proxy` in front of a name server closes a connection whose
//! header is missing or malformed before its backend is reached, so a check expecting the
//! backend's greeting passes only if haproxy accepted the header. The same check from a route
//! without `proxy_protocol` fails, which shows the test can.

use super::*;

#[test]
fn checks_of_a_route_sending_proxy_headers_are_accepted_by_haproxy_with_accept_proxy() {
    if skip_without(
        "health::proxy_checks::checks_of_a_route_sending_proxy_headers_are_accepted_by_haproxy_with_accept_proxy",
        &["haproxy"],
    ) {
        return;
    }
    let named = Named::listening("shielded");
    let [v2, v1, none] = [0, 1, 2].map(|_| Haproxy::start(named.addr()));
    let check = r"check=send:hello\n,expect:shielded";
    let run = Running::start(&format!(
        "route 127.0.0.1:0 {} proxy_protocol=v2 {check} {FAST_CHECKS}\n\
         route 127.0.0.2:0 {} proxy_protocol=v1 {check} {FAST_CHECKS}\n\
         route 127.0.0.3:0 {} {check} {FAST_CHECKS}\n",
        s(v2.addr),
        s(v1.addr),
        s(none.addr)
    ));
    wait_for_states(
        run.admin,
        &[(v2.addr, "up"), (v1.addr, "up"), (none.addr, "down")],
    );
    assert_eq!(reached(run.router.addr), "shielded");
}
