//! `--check` predicts the start: what would fail at start fails the check with one line, what
//! would start but serve no one as meant is a warning, and `--explain` needs `--check`.

use std::process::Command;

use crate::util::*;

#[test]
fn a_log_file_that_cannot_be_opened_fails_the_check_as_it_fails_the_start() {
    let dir = temp_dir("check-log");
    let missing = dir.join("no-such-dir").join("x.log");
    let file = dir.write(
        "log.conf",
        &format!("logfile {}\n127.0.0.1 0 127.0.0.1 1\n", missing.display()),
    );
    let (code, stdout, stderr) = run_bin(&["--check", "-c", &file]);
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "log file '{}' cannot be opened",
            missing.display()
        )),
        "{stderr}"
    );
    let (code, _, stderr) = run_bin(&["-c", &file]);
    assert_ne!(code, 0, "the start did not fail: {stderr}");

    let fine = dir.write(
        "fine.conf",
        &format!(
            "logfile {}\n127.0.0.1 0 127.0.0.1 1\n",
            dir.join("x.log").display()
        ),
    );
    let (code, _, stderr) = run_bin(&["--check", "-c", &fine]);
    assert_eq!(code, 0, "{stderr}");
    assert!(!dir.join("x.log").exists(), "--check created the log file");
}

#[test]
fn patterns_that_can_never_match_are_refused_at_check() {
    let (code, _, stderr) = run_bin(&[
        "--check",
        "--allow",
        "10.0.0.300",
        "127.0.0.1:0",
        "127.0.0.1:1",
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("'10.0.0.300': can never match"), "{stderr}");
    let dir = temp_dir("check-deny");
    let file = dir.write("deny.conf", "deny 1.2.3\n127.0.0.1 0 127.0.0.1 1\n");
    let (code, _, stderr) = run_bin(&["--check", "-c", &file]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(":1: invalid address pattern '1.2.3': can never match"),
        "{stderr}"
    );
}

#[test]
fn no_listener_is_a_warning_at_check_and_at_start() {
    let dir = temp_dir("check-empty");
    let file = dir.write("empty.conf", "# nothing yet\n");
    let (code, stdout, _) = run_bin(&["--check", "-c", &file]);
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains("warning: no listener: nothing would be served"),
        "{stdout}"
    );
    let mut command = Command::new(bin());
    command.args(["-c", &file]);
    let mut router = Process::spawn_command(command);
    router.wait_for_line("no listener configured: nothing is served");
}

#[test]
fn a_privileged_port_without_the_capability_is_a_warning() {
    let test = "check::a_privileged_port_without_the_capability_is_a_warning";
    let start: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(1024);
    if start <= 80 {
        return skip(test, "port 80 is unprivileged on this system");
    }
    if skip_without(test, &["setpriv"]) {
        return;
    }
    // Without CAP_NET_BIND_SERVICE in the bounding set, even root cannot bind port 80.
    let out = Command::new("setpriv")
        .args(["--bounding-set=-net_bind_service", bin()])
        .args(["--check", "127.0.0.1:80", "127.0.0.1:1"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("warning: command line: listen 127.0.0.1:80: port 80 is below"),
        "{stdout}"
    );
    let (_, stdout, _) = run_bin(&["--check", "127.0.0.1:8080", "127.0.0.1:1"]);
    assert!(!stdout.contains("warning"), "{stdout}");
}

#[test]
fn explain_without_check_is_one_line_and_exit_2() {
    let reserved = reserve_port();
    let listen = format!("127.0.0.1:{}", reserved.port);
    let (code, _, stderr) = run_bin(&["--explain", "a.example", &listen, "127.0.0.1:1"]);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--explain needs --check"), "{stderr}");
}

/// The config reader refuses what it cannot sensibly read, in one line and at once: a device
/// (`-c /dev/zero`, which would be read until memory ran out), and a megabyte-long allow pattern
/// (quoted by its start and length, not whole); 100,000 bad lines are 100 lines and a count.
#[test]
fn the_config_reader_refuses_what_it_cannot_sensibly_read_in_one_line() {
    let (code, _, stderr) = run_bin(&["--check", "-c", "/dev/zero"]);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(
        stderr.trim(),
        "cannot read config file '/dev/zero': not a regular file"
    );
    let dir = temp_dir("check-huge");
    let huge = dir.write("huge.conf", &format!("allow {}\n", "1".repeat(1 << 20)));
    let (code, _, stderr) = run_bin(&["--check", "-c", &huge]);
    assert_eq!(code, 2);
    assert_eq!(stderr.lines().count(), 1, "{}", stderr.len());
    assert!(stderr.len() < 300, "{} bytes", stderr.len());
    assert!(stderr.contains("(1048576 bytes)"), "{stderr}");
    let bad: String = (0..100_000).map(|_| "bogus line\n").collect();
    let bad = dir.write("bad.conf", &bad);
    let (code, _, stderr) = run_bin(&["--check", "-c", &bad]);
    assert_eq!(code, 2);
    assert_eq!(stderr.lines().count(), 101);
    assert!(
        stderr.ends_with("... and 99900 more error(s) not shown\n"),
        "{}",
        stderr.lines().last().unwrap()
    );
}

/// `tcp-router --check ... | head -n 1`: the reader going away is not an error of the program's,
/// and no panic ("failed printing to stdout: Broken pipe").
#[test]
fn a_reader_that_goes_away_does_not_panic_the_summary() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let dir = temp_dir("check-pipe");
    let routes: String = (0..5_000)
        .map(|i| format!("route 127.0.0.1:443 127.0.0.1:1 sni=h{i}.example\n"))
        .collect();
    let file = dir.write("many.conf", &routes);
    let mut child = Command::new(bin())
        .args(["--check", "-c", &file])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("configuration OK"), "{first}");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}

#[test]
fn the_summary_shows_each_routes_check_and_the_weights_that_are_not_one() {
    let dir = temp_dir("check-health");
    let file = dir.write(
        "health.conf",
        "route 127.0.0.1:0 127.0.0.1:6379*3,127.0.0.1:6380 backup=localhost:6381*2 \
         check=send:ROLE\\r\\n,expect:master rise=1 on_down=close\n\
         route 127.0.0.1:0 127.0.0.1:80 sni=a.example check=http:/ready check_status=200\n",
    );
    let (code, stdout, stderr) = run_bin(&["--check", "-c", &file]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("-> 127.0.0.1:6379*3, 127.0.0.1:6380 ("),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            " backup=localhost:6381*2 check=send:ROLE\\r\\n,expect:master check_interval=2s \
             check_timeout=2s rise=1 fall=3 on_down=close resolve_interval=30s"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains(" check=http:/ready check_status=200 check_interval=2s"),
        "{stdout}"
    );
    let members = stdout
        .lines()
        .find(|l| l.starts_with("    localhost:6381 is "))
        .unwrap_or_else(|| panic!("no members line for the named backup:\n{stdout}"));
    assert!(members.contains("127.0.0.1:6381"), "{members}");
}
