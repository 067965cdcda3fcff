//! Connect checks decide which upstream clients reach: backups only while every primary is down,
//! `first` in written order; the one-shot probe's table and exit status; a reload that keeps what
//! the checks found. `fail_timeout=1h` keeps passive health from explaining any return: only a
//! check brings an upstream back.

use super::*;

#[test]
fn with_connect_checks_a_backup_gets_clients_only_while_every_primary_is_down() {
    let one = Named::refusing("one");
    let mut two = Named::refusing("two");
    let backup = Named::listening("backup");
    let run = Running::start(&format!(
        "route 127.0.0.1:0 {},{} backup={} check=connect {FAST_CHECKS} fail_timeout=1h\n",
        s(one.addr()),
        s(two.addr()),
        s(backup.addr())
    ));
    let down = [(one.addr(), "down"), (two.addr(), "down")];
    wait_for_states(run.admin, &[down[0], down[1], (backup.addr(), "up")]);
    assert_eq!(reached_by(run.router.addr, 6), vec!["backup"; 6]);
    two.listen();
    wait_for_states(run.admin, &[(two.addr(), "up")]);
    assert_eq!(reached_by(run.router.addr, 6), vec!["two"; 6]);
    two.stop();
    wait_for_states(run.admin, &[(two.addr(), "down")]);
    assert_eq!(reached_by(run.router.addr, 4), vec!["backup"; 4]);
    two.listen();
    wait_for_states(run.admin, &[(two.addr(), "up")]);
    assert_eq!(reached_by(run.router.addr, 4), vec!["two"; 4]);
}

#[test]
fn with_connect_checks_balance_first_keeps_the_written_order() {
    let mut one = Named::listening("one");
    let two = Named::listening("two");
    let three = Named::listening("three");
    let mut run = Running::start(&format!(
        "route 127.0.0.1:0 {},{},{} balance=first check=connect {FAST_CHECKS} fail_timeout=1h\n",
        s(one.addr()),
        s(two.addr()),
        s(three.addr())
    ));
    let all_up = [(one.addr(), "up"), (two.addr(), "up"), (three.addr(), "up")];
    wait_for_states(run.admin, &all_up);
    assert_eq!(reached_by(run.router.addr, 6), vec!["one"; 6]);
    one.stop();
    run.router.wait_for_line(&format!(
        "upstream {} down: connect: connection refused",
        s(one.addr())
    ));
    wait_for_states(run.admin, &[(one.addr(), "down")]);
    assert_eq!(reached_by(run.router.addr, 6), vec!["two"; 6]);
    one.listen();
    run.router
        .wait_for_line(&format!("upstream {} up: ", s(one.addr())));
    wait_for_states(run.admin, &all_up);
    assert_eq!(reached_by(run.router.addr, 6), vec!["one"; 6]);
}

/// The probe's row for `addr`, split in columns: listener, route, upstream, address, role,
/// state, then the detail's words.
fn probe_row(table: &str, addr: SocketAddr) -> Vec<String> {
    table
        .lines()
        .map(|line| {
            line.split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .find(|columns| columns.get(3).map(String::as_str) == Some(s(addr).as_str()))
        .unwrap_or_else(|| panic!("no row for {addr} in:\n{table}"))
}

#[test]
fn the_probe_prints_each_members_state_and_exits_0_only_when_every_route_has_one_up() {
    let up = Named::listening("up");
    let dead = dead_addr();
    let dead_backup = dead_addr();
    let lonely = dead_addr();
    let dir = temp_dir("probe");
    let healthy = format!(
        "route 127.0.0.1:0 {},{} backup={} check=connect\n",
        s(up.addr()),
        s(dead.addr),
        s(dead_backup.addr)
    );
    let file = dir.write("probe.conf", &healthy);
    let (code, out, err) = run_bin(&["--check", "--probe", "-c", &file]);
    assert_eq!(code, 0, "{out}\n{err}");
    let header: Vec<&str> = out
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["LISTENER", "ROUTE", "UPSTREAM", "ADDRESS", "ROLE", "STATE", "DETAIL"],
        "{out}"
    );
    assert_eq!(
        out.lines().count(),
        4,
        "a header and one row per member:\n{out}"
    );
    let row = probe_row(&out, up.addr());
    assert_eq!(row[2], s(up.addr()), "{out}");
    assert_eq!(row[4..6], ["primary", "up"], "{out}");
    assert_eq!(row[6], "passed", "{out}");
    let row = probe_row(&out, dead.addr);
    assert_eq!(row[4..6], ["primary", "down"], "{out}");
    assert!(
        row[6..].join(" ").contains("connect: connection refused"),
        "{out}"
    );
    let row = probe_row(&out, dead_backup.addr);
    assert_eq!(row[4..6], ["backup", "down"], "{out}");
    assert!(!err.contains("no member up"), "{err}");

    // A second route, on another listener, with no check of its own: a connect check, failing.
    let file = dir.write(
        "probe.conf",
        &format!("{healthy}route 127.0.0.2:0 {}\n", s(lonely.addr)),
    );
    let (code, out, err) = run_bin(&["--check", "--probe", "-c", &file]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert_eq!(
        probe_row(&out, lonely.addr)[4..6],
        ["primary", "down"],
        "{out}"
    );
    assert_eq!(probe_row(&out, up.addr())[5], "up", "{out}");
    let complaints: Vec<&str> = err.lines().filter(|l| l.contains("no member up")).collect();
    assert_eq!(complaints.len(), 1, "{err}");
    assert!(
        complaints[0].contains("route ") && complaints[0].contains(" on 127.0.0.2:"),
        "{err}"
    );
}

/// A member found down stays down across a SIGHUP that changes only another route, though it
/// listens again by then: a fresh start would find it up at its first check (the first result
/// decides at once), while `rise=3` at an hour's interval keeps a kept state down.
#[test]
fn a_reload_changing_another_route_keeps_a_member_down_by_checks_down() {
    let up = Named::listening("up");
    let mut sick = Named::refusing("sick");
    let other = Named::listening("other");
    let moved = Named::listening("moved");
    let (up_addr, sick_addr) = (up.addr(), sick.addr());
    let config = |second: &Named| {
        format!(
            "route 127.0.0.1:0 {},{} check=connect check_interval=1h rise=3 fall=1\n\
             route 127.0.0.2:0 {}\n",
            s(up_addr),
            s(sick_addr),
            s(second.addr())
        )
    };
    let mut run = Running::start(&config(&other));
    let before = wait_for_states(run.admin, &[(up.addr(), "up"), (sick.addr(), "down")]);
    let since = member_at(&before, sick.addr()).unwrap()["since"].clone();
    let second = run.router.listener_with("127.0.0.2:");
    assert_eq!(reached(second), "other");
    sick.listen();

    let from = run.router.drain();
    run.reload(&config(&moved));
    assert_eq!(
        reached(second),
        "moved",
        "the reload changed the other route"
    );
    let after = get_json(run.admin, "/routes");
    let kept = member_at(&after, sick.addr()).expect("the sick member after the reload");
    assert_eq!(kept["state"], "down", "{kept:#}");
    assert_eq!(kept["since"], since, "{kept:#}");
    assert_eq!(reached_by(run.router.addr, 8), vec!["up"; 8]);
    run.router.drain();
    let flaps: Vec<&String> = run.router.seen[from..]
        .iter()
        .filter(|l| l.contains(&format!("upstream {} ", s(sick.addr()))))
        .collect();
    assert!(flaps.is_empty(), "{flaps:#?}");
}
