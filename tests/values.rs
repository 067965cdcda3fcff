//! One rule for every value: the command line, the config file and the builder refuse the same
//! values for the same reason, naming what the user wrote; no value panics anything.

use std::time::Duration;

use tcp_router::{Error, Forwarder};

use crate::util::*;

/// A value each place refuses: the flag, the file key, the value as text, and the reason.
struct Refused {
    flag: &'static str,
    key: &'static str,
    value: &'static str,
    reason: &'static str,
}

const REFUSED: &[Refused] = &[
    Refused {
        flag: "--connect-timeout",
        key: "connect_timeout",
        value: "0",
        reason: "must be greater than zero",
    },
    Refused {
        flag: "--peek-timeout",
        key: "peek_timeout",
        value: "0",
        reason: "must be greater than zero",
    },
    Refused {
        flag: "--connect-timeout",
        key: "connect_timeout",
        value: "5000000000000000h",
        reason: "must be at most 8760h (365 days)",
    },
    Refused {
        flag: "--idle-timeout",
        key: "idle_timeout",
        value: "9223372036854775807s",
        reason: "must be at most 8760h (365 days)",
    },
    Refused {
        flag: "--max-connections",
        key: "max_connections",
        value: "0",
        reason: "must be at least 1",
    },
    Refused {
        flag: "--max-connections",
        key: "max_connections",
        value: "99999999999",
        reason: "must be at most 1048576",
    },
    Refused {
        flag: "--max-connections",
        key: "max_connections",
        value: "-1",
        reason: "expected a whole number",
    },
    Refused {
        flag: "--max-fails",
        key: "max_fails",
        value: "0",
        reason: "must be at least 1",
    },
    Refused {
        flag: "--fail-timeout",
        key: "fail_timeout",
        value: "0",
        reason: "must be greater than zero",
    },
    Refused {
        flag: "--balance",
        key: "balance",
        value: "random",
        reason: "expected roundrobin, first, leastconn or source",
    },
    Refused {
        flag: "--health-check",
        key: "check",
        value: r"send:PING\q",
        reason: r"unknown escape \q (use \r, \n, \t, \\ or \xHH)",
    },
    Refused {
        flag: "--health-check",
        key: "check",
        value: "http:health",
        reason: "the path 'health' must start with /",
    },
    Refused {
        flag: "--health-check",
        key: "check",
        value: "send:",
        reason: "'send:' has no TEXT",
    },
    Refused {
        flag: "--check-status",
        key: "check_status",
        value: "600",
        reason: "status 600 is not from 100 to 599",
    },
    Refused {
        flag: "--check-port",
        key: "check_port",
        value: "0",
        reason: "expected a port number from 1 to 65535",
    },
    Refused {
        flag: "--check-interval",
        key: "check_interval",
        value: "0",
        reason: "must be greater than zero",
    },
    Refused {
        flag: "--rise",
        key: "rise",
        value: "0",
        reason: "must be at least 1",
    },
    Refused {
        flag: "--fall",
        key: "fall",
        value: "x",
        reason: "expected a whole number",
    },
    Refused {
        flag: "--on-down",
        key: "on_down",
        value: "drop",
        reason: "expected keep or close",
    },
];

/// The reason of a builder's refusal, one line per problem.
fn builder_error(result: Result<Forwarder, Error>) -> String {
    match result {
        Ok(_) => panic!("the builder took it"),
        Err(err) => err.to_string(),
    }
}

#[test]
fn the_command_line_and_a_config_file_refuse_alike_naming_what_was_written() {
    let dir = temp_dir("values");
    for case in REFUSED {
        let (code, _, stderr) = run_bin(&[case.flag, case.value, "127.0.0.1:0", "127.0.0.1:1"]);
        assert_eq!(code, 2, "{} {}: {stderr}", case.flag, case.value);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        let named = format!(
            "'{}' with value '{}': {}",
            case.flag, case.value, case.reason
        );
        assert!(stderr.contains(&named), "wanted {named:?} in {stderr}");

        let line = format!(
            "route 127.0.0.1:0 127.0.0.1:1 {}={}\n",
            case.key, case.value
        );
        let file = dir.write("values.conf", &line);
        let (code, _, stderr) = run_bin(&["--check", "-c", &file]);
        assert_eq!(code, 2, "{line}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        let named = format!(":1: invalid {} '{}': {}", case.key, case.value, case.reason);
        assert!(stderr.contains(&named), "wanted {named:?} in {stderr}");
    }
}

#[test]
fn the_builder_refuses_what_the_command_line_refuses() {
    let zero = Forwarder::builder("127.0.0.1:0")
        .upstream("127.0.0.1:1")
        .connect_timeout(Duration::ZERO)
        .bind();
    let err = builder_error(zero);
    assert!(err.contains("invalid connect_timeout '0s'"), "{err}");
    assert!(err.ends_with("must be greater than zero"), "{err}");

    let huge = Forwarder::builder("127.0.0.1:0")
        .upstream("127.0.0.1:1")
        .peek_timeout(Duration::MAX)
        .drain_timeout(Duration::from_secs(u64::MAX))
        .bind();
    let err = builder_error(huge);
    assert_eq!(err.lines().count(), 2, "{err}");
    assert!(err.contains("invalid drain_timeout"), "{err}");
    assert!(err.contains("invalid peek_timeout"), "{err}");
    assert!(err.contains("must be at most 8760h (365 days)"), "{err}");

    let port_0 = Forwarder::builder("127.0.0.1:0")
        .upstream("127.0.0.1:0")
        .bind();
    let err = builder_error(port_0);
    assert!(
        err.contains("invalid upstream '127.0.0.1:0': port 0 is not allowed"),
        "{err}"
    );
    let twice = Forwarder::builder("127.0.0.1:0")
        .upstream("127.0.0.1:1")
        .upstream("127.0.0.1:1")
        .bind();
    let err = builder_error(twice);
    assert!(
        err.contains("upstream '127.0.0.1:1' is listed twice"),
        "{err}"
    );

    let cap = Forwarder::builder("127.0.0.1:0")
        .upstream("127.0.0.1:1")
        .max_connections(usize::MAX)
        .bind();
    assert!(builder_error(cap).contains("must be at most 1048576"));
}

#[test]
fn the_command_line_refuses_port_0_and_the_same_upstream_twice() {
    for (args, needle) in [
        (
            ["127.0.0.1:0", "127.0.0.1:0"],
            "invalid upstream '127.0.0.1:0': port 0 is not allowed",
        ),
        (
            ["127.0.0.1:0", "127.0.0.1:1"],
            "upstream '127.0.0.1:1' is listed twice",
        ),
    ] {
        let mut argv = vec!["--check"];
        argv.extend(args);
        if needle.contains("twice") {
            argv.push("127.0.0.1:1");
        }
        let (code, _, stderr) = run_bin(&argv);
        assert_eq!(code, 2, "{argv:?}: {stderr}");
        assert!(stderr.contains(needle), "{argv:?}: {stderr}");
    }
}

/// Stopping with `Duration::MAX`, "as long as it takes", does not panic the forwarder's thread
/// ("overflow when adding duration to instant").
#[test]
fn stopping_within_the_longest_duration_does_not_panic() {
    let upstream = echo_upstream();
    let forwarder = Forwarder::builder("127.0.0.1:0")
        .upstream(upstream.addr)
        .bind()
        .unwrap();
    let running = forwarder.spawn().unwrap();
    let report = running.stop_within(Duration::MAX).unwrap();
    assert_eq!(report.cut, 0);
}

/// A property test: durations and counts from the edges (zero, the bounds and one past them,
/// the largest a type holds) and from a seeded random spread, given to every builder setting.
/// The builder either takes them or refuses with one line per problem; nothing panics, and what
/// it takes serves and stops.
#[test]
fn extreme_durations_and_counts_never_panic_the_builder() {
    let max = tcp_router::config::MAX_DURATION;
    let mut durations = vec![
        Duration::ZERO,
        Duration::from_nanos(1),
        max,
        max + Duration::from_nanos(1),
        Duration::from_secs(u64::MAX),
        Duration::MAX,
    ];
    let mut counts = vec![0, 1, tcp_router::config::MAX_CONNECTIONS_CAP, usize::MAX];
    for chunk in random_bytes(22, 8 * 40).chunks(8) {
        let n = u64::from_le_bytes(chunk.try_into().unwrap());
        durations.push(Duration::from_nanos(n >> (n % 64)));
        counts.push((n >> (n % 64)) as usize);
    }
    let upstream = echo_upstream();
    for (i, &d) in durations.iter().enumerate() {
        let built = Forwarder::builder("127.0.0.1:0")
            .upstream(upstream.addr)
            .connect_timeout(d)
            .idle_timeout(d)
            .fin_timeout(d)
            .peek_timeout(d)
            .drain_timeout(d)
            .max_connections(counts[i % counts.len()])
            .bind();
        match built {
            Ok(forwarder) => {
                let running = forwarder.spawn().unwrap();
                running.stop_within(d).unwrap();
            }
            Err(Error::Config(lines)) => {
                assert!(!lines.is_empty());
                assert!(lines.iter().all(|l| !l.contains('\n')), "{lines:?}");
            }
            Err(other) => panic!("{d:?}: {other}"),
        }
    }
    let long_name = format!("{}:1", "a".repeat(300));
    for address in [
        "",
        ":",
        "[]:1",
        "[::1",
        "::1:80",
        "127.0.0.1:65536",
        "127.0.0.1:-1",
        "http://x:80",
        "tcp://127.0.0.1:1",
        "a:1,b:2",
        "0:0",
        &long_name,
    ] {
        let built = Forwarder::builder(address).upstream(address).bind();
        match built {
            Err(Error::Config(lines)) => assert!(!lines.is_empty(), "{address}"),
            Err(other) => panic!("{address}: {other}"),
            Ok(_) => panic!("{address:?} was taken as an address"),
        }
    }
}

/// The one line the binary prints for `args` (exit 2), and for the file `text` under `--check`.
fn refusals(args: &[&str], text: &str) -> (String, String) {
    let (code, _, from_args) = run_bin(args);
    assert_eq!(code, 2, "{args:?}: {from_args}");
    assert_eq!(from_args.lines().count(), 1, "{from_args}");
    let dir = temp_dir("values-health");
    let file = dir.write("health.conf", text);
    let (code, _, from_file) = run_bin(&["--check", "-c", &file]);
    assert_eq!(code, 2, "{text}: {from_file}");
    assert_eq!(from_file.lines().count(), 1, "{from_file}");
    (from_args, from_file)
}

#[test]
fn weights_out_of_range_are_refused_naming_the_upstream() {
    let reason = "invalid weight '*0' in '127.0.0.1:1*0': expected a whole number from 1 to 256";
    let (args, file) = refusals(
        &["127.0.0.1:0", "127.0.0.1:1*0"],
        "route 127.0.0.1:0 127.0.0.1:1*0\n",
    );
    assert!(args.contains(reason), "{args}");
    assert!(file.contains(&format!(":1: {reason}")), "{file}");
    let (_, file) = refusals(
        &["127.0.0.1:0", "127.0.0.1:1*257"],
        "route 127.0.0.1:0 127.0.0.1:1 backup=127.0.0.1:2*x\n",
    );
    assert!(
        file.contains("invalid weight '*x' in '127.0.0.1:2*x'"),
        "{file}"
    );
}

#[test]
fn check_settings_without_a_check_are_refused_naming_the_key() {
    let (args, file) = refusals(
        &["--rise", "2", "127.0.0.1:0", "127.0.0.1:1"],
        "route 127.0.0.1:0 127.0.0.1:1 rise=2\n",
    );
    assert!(
        args.contains("command line: 'rise=2' needs check="),
        "{args}"
    );
    assert!(file.contains(":1: 'rise=2' needs check="), "{file}");
}

#[test]
fn a_check_more_often_than_every_100ms_is_refused() {
    let (args, file) = refusals(
        &[
            "--health-check",
            "connect",
            "--check-interval",
            "50ms",
            "127.0.0.1:0",
            "127.0.0.1:1",
        ],
        "route 127.0.0.1:0 127.0.0.1:1 check=connect check_interval=50ms\n",
    );
    let reason = "invalid check_interval '50ms': must be at least 100ms";
    assert!(args.contains(reason), "{args}");
    assert!(file.contains(reason), "{file}");
}
