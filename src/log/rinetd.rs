//! rinetd's two logfile line formats (tab-separated default, and `logcommon`).
//!
//! The fields, their order and the date format are rinetd 0.73's (`logEvent()` in
//! rinetd.c, and the format strings in Debian's rinetd 0.73 binary):
//!
//! - date: `strftime("%d/%b/%Y:%H:%M:%S ")`, note the trailing space, which rinetd keeps
//!   in both formats (so the tab format's first field ends in a space and the common
//!   format has two spaces before the zone);
//! - tab format: `DATE\tCLIENT\tBINDHOST\tBINDPORT\tCONNECTHOST\tCONNECTPORT\tBYTES_FROM_CLIENT\tBYTES_TO_CLIENT\tRESULT`;
//! - common format: `CLIENT - - [DATE +0000] "GET /rinetd-services/BINDHOST/BINDPORT/CONNECTHOST/CONNECTPORT/RESULT HTTP/1.0" 200 BYTES_TO_CLIENT - - - BYTES_FROM_CLIENT`.
//!
//! rinetd writes local time with the local UTC offset; we always write UTC (`+0000` in
//! the common format), so logs do not depend on the host's time zone. Lines carry no
//! trailing newline. IPv4-mapped IPv6 clients are written as IPv4, as the ACLs see them.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use time::format_description::FormatItem;
use time::macros::format_description;
use time::OffsetDateTime;

use crate::config::LogFile;
use crate::route::access::{Refusal, RefusalReason};

/// rinetd's result word for a connection, the last field of its line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogResult {
    /// The connection ended in a way rinetd has no word for (a peek that failed, a bad PROXY
    /// header, no route, a stop before connecting).
    UnknownError,
    /// The upstream ("local" in rinetd's words) closed first.
    DoneLocalClosed,
    /// The client ("remote" in rinetd's words) closed first.
    DoneRemoteClosed,
    /// No upstream could be connected (rinetd's word includes the ` -`).
    LocalConnectFailed,
    /// The client matched no allow rule of a set that has some.
    NotAllowed,
    /// The client matched a deny rule.
    Denied,
}

impl LogResult {
    /// The word as rinetd writes it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            LogResult::UnknownError => "unknown-error",
            LogResult::DoneLocalClosed => "done-local-closed",
            LogResult::DoneRemoteClosed => "done-remote-closed",
            LogResult::LocalConnectFailed => "local-connect-failed -",
            LogResult::NotAllowed => "not-allowed",
            LogResult::Denied => "denied",
        }
    }

    /// The word for a client that allow/deny refused.
    pub(crate) fn refused(refusal: &Refusal) -> LogResult {
        match refusal.reason {
            RefusalReason::Denied(_) => LogResult::Denied,
            RefusalReason::NotAllowed { .. } => LogResult::NotAllowed,
        }
    }
}

/// One event to log, with the fields rinetd logs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogRecord<'a> {
    /// When the event happened (written in UTC).
    pub(crate) time: SystemTime,
    /// The client's address.
    pub(crate) client: IpAddr,
    /// The listening host as written in the config.
    pub(crate) bind_host: &'a str,
    /// The listening port.
    pub(crate) bind_port: u16,
    /// The forwarded-to host as written in the config.
    pub(crate) connect_host: &'a str,
    /// The forwarded-to port.
    pub(crate) connect_port: u16,
    /// Bytes received from the client.
    pub(crate) bytes_in: u64,
    /// Bytes sent to the client.
    pub(crate) bytes_out: u64,
    /// rinetd's result word.
    pub(crate) result: LogResult,
}

/// The default (tab-separated) rinetd log line, without a newline.
pub(crate) fn tab_line(r: &LogRecord) -> String {
    format!(
        "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
        rinetd_date(r.time),
        r.client.to_canonical(),
        r.bind_host,
        r.bind_port,
        r.connect_host,
        r.connect_port,
        r.bytes_in,
        r.bytes_out,
        r.result.as_str()
    )
}

/// The `logcommon` (Apache common log lookalike) rinetd log line, without a newline.
/// As in rinetd, it claims `GET ... HTTP/1.0` and status 200 so web log analyzers keep
/// the line, puts the result in the "URL", and appends bytes from the client at the end.
pub(crate) fn common_line(r: &LogRecord) -> String {
    format!(
        "{} - - [{} +0000] \"GET /rinetd-services/{}/{}/{}/{}/{} HTTP/1.0\" 200 {} - - - {}",
        r.client.to_canonical(),
        rinetd_date(r.time),
        r.bind_host,
        r.bind_port,
        r.connect_host,
        r.connect_port,
        r.result.as_str(),
        r.bytes_out,
        r.bytes_in
    )
}

/// `%d/%b/%Y:%H:%M:%S ` in UTC, trailing space included, as rinetd prints it. Times outside the
/// years 1..=9999 (which no clock shows) are written as the nearest of those.
fn rinetd_date(t: SystemTime) -> String {
    const FORMAT: &[FormatItem<'_>] =
        format_description!("[day]/[month repr:short]/[year]:[hour]:[minute]:[second] ");
    let secs = unix_seconds(t).clamp(FIRST_SECOND, LAST_SECOND);
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|time| time.format(FORMAT).ok())
        .unwrap_or_default()
}

/// 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z as Unix times.
const FIRST_SECOND: i64 = -62_135_596_800;
const LAST_SECOND: i64 = 253_402_300_799;

/// Whole seconds since the epoch, rounded down (also before 1970), saturating at the
/// ends of i64 so no SystemTime can make it overflow.
fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => {
            let d = e.duration();
            let s = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            let s = if d.subsec_nanos() > 0 {
                s.saturating_add(1)
            } else {
                s
            };
            s.saturating_neg()
        }
    }
}
/// rinetd's `logfile`: one line per connection, appended, in rinetd's format or common log format.
#[derive(Debug)]
pub(crate) struct LogSink {
    file: Mutex<File>,
    common: bool,
}

impl LogSink {
    /// Opens (creating if needed) the log file for appending. A symbolic link at the path is
    /// not followed (`O_NOFOLLOW`): an error, so that whoever can write the log's directory
    /// cannot make the process (often root) append to a file of their choosing.
    pub(crate) fn open(config: &LogFile) -> io::Result<LogSink> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&config.path)
            .map_err(|err| match err.raw_os_error() {
                Some(code) if code == rustix::io::Errno::LOOP.raw_os_error() => io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "it is a symbolic link, which is not followed; name the file itself",
                ),
                _ => err,
            })?;
        Ok(LogSink {
            file: Mutex::new(file),
            common: config.common,
        })
    }

    /// Appends one record as one write, so lines from concurrent connections never interleave.
    pub(crate) fn write(&self, record: &LogRecord<'_>) {
        let mut line = if self.common {
            common_line(record)
        } else {
            tab_line(record)
        };
        line.push('\n');
        let mut file = self.file.lock().unwrap_or_else(|poisoned| {
            // A thread panicked while writing. The file handle itself is fine: the worst case is
            // one partial line, so keep logging rather than dropping every later line.
            log::warn!("the log file's lock was poisoned by a panic; writing on");
            self.file.clear_poison();
            PoisonError::into_inner(poisoned)
        });
        if let Err(err) = file.write_all(line.as_bytes()) {
            log::warn!("cannot write to the log file: {err}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn record(time: SystemTime, result: LogResult) -> LogRecord<'static> {
        LogRecord {
            time,
            client: "192.0.2.7".parse().unwrap(),
            bind_host: "0.0.0.0",
            bind_port: 80,
            connect_host: "127.0.0.1",
            connect_port: 8080,
            bytes_in: 517,
            bytes_out: 12345,
            result,
        }
    }

    #[test]
    fn tab_line_matches_rinetd() {
        // 2021-02-19 13:05:09 UTC
        let r = record(at(1_613_739_909), LogResult::DoneRemoteClosed);
        assert_eq!(
            tab_line(&r),
            "19/Feb/2021:13:05:09 \t192.0.2.7\t0.0.0.0\t80\t127.0.0.1\t8080\t517\t12345\tdone-remote-closed"
        );
    }

    #[test]
    fn common_line_matches_rinetd() {
        let r = record(at(1_613_739_909), LogResult::DoneLocalClosed);
        assert_eq!(
            common_line(&r),
            "192.0.2.7 - - [19/Feb/2021:13:05:09  +0000] \"GET /rinetd-services/0.0.0.0/80/127.0.0.1/8080/done-local-closed HTTP/1.0\" 200 12345 - - - 517"
        );
    }

    #[test]
    fn ipv6_and_mapped_clients() {
        let mut r = record(at(0), LogResult::Denied);
        r.client = "2001:db8::1".parse().unwrap();
        r.bytes_in = 0;
        r.bytes_out = 0;
        assert_eq!(
            tab_line(&r),
            "01/Jan/1970:00:00:00 \t2001:db8::1\t0.0.0.0\t80\t127.0.0.1\t8080\t0\t0\tdenied"
        );
        r.client = "::ffff:198.51.100.4".parse().unwrap();
        assert!(common_line(&r).starts_with("198.51.100.4 - - [01/Jan/1970:00:00:00  +0000]"));
    }

    #[test]
    fn dates() {
        let d = |s: u64| rinetd_date(at(s));
        assert_eq!(d(0), "01/Jan/1970:00:00:00 ");
        assert_eq!(d(86_399), "01/Jan/1970:23:59:59 ");
        assert_eq!(d(951_782_400), "29/Feb/2000:00:00:00 "); // leap century
        assert_eq!(d(1_709_164_800), "29/Feb/2024:00:00:00 ");
        assert_eq!(d(1_735_689_599), "31/Dec/2024:23:59:59 ");
        assert_eq!(d(4_107_542_400), "01/Mar/2100:00:00:00 "); // 2100 is not leap
        assert_eq!(d(253_402_300_799), "31/Dec/9999:23:59:59 ");
        // Sub-second parts are dropped, not rounded.
        assert_eq!(
            rinetd_date(at(59) + Duration::from_millis(999)),
            "01/Jan/1970:00:00:59 "
        );
    }

    #[test]
    fn dates_before_1970_round_down() {
        let before = |d: Duration| rinetd_date(UNIX_EPOCH - d);
        assert_eq!(before(Duration::from_secs(1)), "31/Dec/1969:23:59:59 ");
        assert_eq!(before(Duration::from_millis(1)), "31/Dec/1969:23:59:59 ");
        assert_eq!(
            before(Duration::from_secs(86_400 * 365)),
            "01/Jan/1969:00:00:00 "
        );
    }

    #[test]
    fn extreme_times_do_not_panic() {
        let far = UNIX_EPOCH.checked_add(Duration::from_secs(i64::MAX as u64 / 2));
        if let Some(t) = far {
            assert!(!rinetd_date(t).is_empty());
        }
        let past = UNIX_EPOCH.checked_sub(Duration::from_secs(i64::MAX as u64 / 2));
        if let Some(t) = past {
            assert!(!rinetd_date(t).is_empty());
        }
        assert_eq!(
            rinetd_date(UNIX_EPOCH + Duration::from_secs(u64::MAX / 4)),
            "31/Dec/9999:23:59:59 "
        );
    }

    #[test]
    fn a_poisoned_sink_keeps_writing() {
        let dir = crate::test_support::temp_dir("rinetd-log");
        let path = dir.join("log");
        let sink = std::sync::Arc::new(LogSink::open(&LogFile::new(&path)).unwrap());
        let poisoner = std::sync::Arc::clone(&sink);
        let _ = std::thread::spawn(move || {
            let _guard = poisoner.file.lock().unwrap();
            panic!("poison the lock");
        })
        .join();
        assert!(sink.file.is_poisoned());
        sink.write(&record(at(0), LogResult::Denied));
        sink.write(&record(at(1), LogResult::Denied));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
    }

    #[test]
    fn a_symlink_planted_at_the_log_path_is_not_followed() {
        let dir = crate::test_support::temp_dir("rinetd-log-link");
        let target = dir.join("victim");
        std::fs::write(&target, "precious\n").unwrap();
        let path = dir.join("log");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let err = LogSink::open(&LogFile::new(&path)).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
    }

    #[test]
    fn refusals_get_rinetd_words() {
        use crate::config::acl::{Action, Rule};
        let rule = Rule {
            action: Action::Deny,
            pattern: "10.0.0.0/8".parse().unwrap(),
        };
        let denied = Refusal {
            set: crate::route::access::RuleSet::Global,
            reason: RefusalReason::Denied(rule),
        };
        assert_eq!(LogResult::refused(&denied).as_str(), "denied");
        let not_allowed = Refusal {
            set: crate::route::access::RuleSet::Rule,
            reason: RefusalReason::NotAllowed { allow_rules: 1 },
        };
        assert_eq!(LogResult::refused(&not_allowed).as_str(), "not-allowed");
    }
}
