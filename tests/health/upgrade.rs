//! A live upgrade (SIGUSR2) hands over what the checks found: the new process shows a member the
//! old one found down as down at once, and sends it no client, though the member listens again by
//! then (a fresh start would find it up at its first check; `rise=3` at an hour's interval keeps
//! a handed-over state down).

use std::process::Command;

use super::*;

/// SIGUSR2's number, for its bit in /proc/PID/status.
const SIGUSR2: u32 = 12;

/// Kills, by pid, the process an upgrade started (not the test's child) when the test ends.
struct Successor(Option<u32>);

impl Drop for Successor {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = Command::new("kill")
                .args(["-s", "KILL", &pid.to_string()])
                .status();
        }
    }
}

#[test]
fn a_live_upgrade_hands_over_a_member_down_by_checks_and_no_client_reaches_it() {
    let up = Named::listening("up");
    let mut sick = Named::refusing("sick");
    let (listen, admin_port) = (reserve_port(), reserve_port());
    let admin = admin_port.addr();
    let dir = temp_dir("health-upgrade");
    let file = dir.write(
        "health.conf",
        &format!(
            "admin {} {}\nroute {} {},{} check=connect check_interval=1h rise=3 fall=1\n",
            admin.ip(),
            admin.port(),
            s(listen.addr()),
            s(up.addr()),
            s(sick.addr())
        ),
    );
    let pid_file = dir.join("tcp-router.pid");
    let mut command = Command::new(bin());
    command
        .arg("-c")
        .arg(&file)
        .arg("--pid-file")
        .arg(&pid_file);
    let mut router = Process::start_command(command);
    let old = router.child.id();
    let before = wait_for_states(admin, &[(up.addr(), "up"), (sick.addr(), "down")]);
    let since = member_at(&before, sick.addr()).unwrap()["since"].clone();
    sick.listen();

    wait_until("the router to catch SIGUSR2", || catches(old, SIGUSR2));
    let from = router.drain();
    router.signal("USR2");
    let (_, line) = router
        .line_where(from, PATIENCE, |l| {
            l.contains("upgrade: handed over to pid ") || l.contains("upgrade failed:")
        })
        .unwrap_or_else(|_| panic!("no end of the upgrade; saw:\n{}", router.seen.join("\n")));
    let new: Option<u32> = line
        .split("upgrade: handed over to pid ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|pid| pid.parse().ok());
    let _successor = Successor(new);
    assert!(new.is_some(), "the upgrade failed: {line}");
    router.wait_exit();

    let after = get_json(admin, "/routes");
    let handed = member_at(&after, sick.addr()).expect("the sick member after the upgrade");
    assert_eq!(handed["state"], "down", "{handed:#}");
    assert_eq!(handed["since"], since, "{handed:#}");
    assert_eq!(reached_by(listen.addr(), 20), vec!["up"; 20]);
}
