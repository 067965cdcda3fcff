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

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

/// rinetd's result for a connection that was never classified.
pub const UNKNOWN_ERROR: &str = "unknown-error";
/// The upstream ("local" in rinetd's words) closed first.
pub const DONE_LOCAL_CLOSED: &str = "done-local-closed";
/// The client ("remote" in rinetd's words) closed first.
pub const DONE_REMOTE_CLOSED: &str = "done-remote-closed";
/// `accept()` failed (rinetd's string includes the ` -`).
pub const ACCEPT_FAILED: &str = "accept-failed -";
/// Creating the upstream socket failed.
pub const LOCAL_SOCKET_FAILED: &str = "local-socket-failed -";
/// Binding the upstream socket (to `src=`) failed.
pub const LOCAL_BIND_FAILED: &str = "local-bind-failed -";
/// Connecting to the upstream failed.
pub const LOCAL_CONNECT_FAILED: &str = "local-connect-failed -";
/// The connection was opened (logged when the forward starts).
pub const OPENED: &str = "opened";
/// The client matched no allow rule of a set that has some.
pub const NOT_ALLOWED: &str = "not-allowed";
/// The client matched a deny rule.
pub const DENIED: &str = "denied";

/// One event to log, with the fields rinetd logs.
#[derive(Debug, Clone, Copy)]
pub struct LogRecord<'a> {
    /// When the event happened (written in UTC).
    pub time: SystemTime,
    /// The client's address.
    pub client: IpAddr,
    /// The listening host as written in the config.
    pub bind_host: &'a str,
    /// The listening port.
    pub bind_port: u16,
    /// The forwarded-to host as written in the config.
    pub connect_host: &'a str,
    /// The forwarded-to port.
    pub connect_port: u16,
    /// Bytes received from the client.
    pub bytes_in: u64,
    /// Bytes sent to the client.
    pub bytes_out: u64,
    /// rinetd's result string, one of this module's constants.
    pub result: &'a str,
}

/// The default (tab-separated) rinetd log line, without a newline.
pub fn tab_line(r: &LogRecord) -> String {
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
        r.result
    )
}

/// The `logcommon` (Apache common log lookalike) rinetd log line, without a newline.
/// As in rinetd, it claims `GET ... HTTP/1.0` and status 200 so web log analyzers keep
/// the line, puts the result in the "URL", and appends bytes from the client at the end.
pub fn common_line(r: &LogRecord) -> String {
    format!(
        "{} - - [{} +0000] \"GET /rinetd-services/{}/{}/{}/{}/{} HTTP/1.0\" 200 {} - - - {}",
        r.client.to_canonical(),
        rinetd_date(r.time),
        r.bind_host,
        r.bind_port,
        r.connect_host,
        r.connect_port,
        r.result,
        r.bytes_out,
        r.bytes_in
    )
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `%d/%b/%Y:%H:%M:%S ` in UTC, trailing space included, as rinetd prints it.
fn rinetd_date(t: SystemTime) -> String {
    let secs = unix_seconds(t);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let month = MONTHS
        .get((m as usize).wrapping_sub(1))
        .copied()
        .unwrap_or("???");
    format!(
        "{d:02}/{month}/{y}:{:02}:{:02}:{:02} ",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

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

/// Proleptic Gregorian (year, month 1–12, day 1–31) for a count of days since
/// 1970-01-01, after Howard Hinnant's `civil_from_days`. 400-year eras make the
/// arithmetic exact for every i64 day count that `unix_seconds` can produce.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468; // days since 0000-03-01
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of year from March 1st
    let mp = (5 * doy + 2) / 153; // March = 0
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn record(time: SystemTime, result: &str) -> LogRecord<'_> {
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
        let r = record(at(1_613_739_909), DONE_REMOTE_CLOSED);
        assert_eq!(
            tab_line(&r),
            "19/Feb/2021:13:05:09 \t192.0.2.7\t0.0.0.0\t80\t127.0.0.1\t8080\t517\t12345\tdone-remote-closed"
        );
    }

    #[test]
    fn common_line_matches_rinetd() {
        let r = record(at(1_613_739_909), DONE_LOCAL_CLOSED);
        assert_eq!(
            common_line(&r),
            "192.0.2.7 - - [19/Feb/2021:13:05:09  +0000] \"GET /rinetd-services/0.0.0.0/80/127.0.0.1/8080/done-local-closed HTTP/1.0\" 200 12345 - - - 517"
        );
    }

    #[test]
    fn ipv6_and_mapped_clients() {
        let mut r = record(at(0), DENIED);
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
    fn civil_conversion_round_trips_day_by_day() {
        // Walk 1600-03-01 .. 2400-03-01 and check the calendar advances one day at a time.
        let start = -135_080; // 1600-03-01
        let mut prev = civil_from_days(start - 1);
        for day in start..start + 292_194 {
            let cur = civil_from_days(day);
            let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            let mdays = [
                31,
                if leap(prev.0) { 29 } else { 28 },
                31,
                30,
                31,
                30,
                31,
                31,
                30,
                31,
                30,
                31,
            ];
            let expected = if prev.2 < mdays[(prev.1 - 1) as usize] {
                (prev.0, prev.1, prev.2 + 1)
            } else if prev.1 < 12 {
                (prev.0, prev.1 + 1, 1)
            } else {
                (prev.0 + 1, 1, 1)
            };
            assert_eq!(cur, expected, "day {day}");
            prev = cur;
        }
        assert_eq!(civil_from_days(start), (1600, 3, 1));
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
        assert!(!civil_from_days(i64::MAX / 86_400).0.to_string().is_empty());
        assert!(!civil_from_days(i64::MIN / 86_400).0.to_string().is_empty());
    }
}
