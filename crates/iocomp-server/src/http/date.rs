//! HTTP dates (RFC 9110 §5.6.7): formatting without allocation, a per-second
//! cache for the `Date` header, and lenient parsing of request dates.
//!
//! Formatting is done here (a few nanoseconds, straight into a fixed array)
//! rather than through `httpdate`, which is used for parsing only. Times are
//! whole seconds since the Unix epoch as `i64`, which is what `fstat` returns;
//! they are clamped to 1970..=9999 first (`httpdate` would panic outside that
//! range), so a file with a strange modification time — a negative
//! `st_mtime` is legal — can never bring the server down.

use std::time::{SystemTime, UNIX_EPOCH};

use httpdate::HttpDate;

/// The length of a formatted IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
pub const DATE_LEN: usize = 29;

/// The last second `httpdate` can represent: 9999-12-31T23:59:59Z.
const MAX_SECS: i64 = 253_402_300_799;

/// Clamps Unix seconds into the range HTTP dates can express (1970..=9999).
#[inline]
pub fn clamp_secs(secs: i64) -> i64 {
    secs.clamp(0, MAX_SECS)
}

/// Unix seconds of `t`, clamped like [`clamp_secs`] (times before 1970 give 0).
pub fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => clamp_secs(i64::try_from(d.as_secs()).unwrap_or(MAX_SECS)),
        Err(_) => 0,
    }
}

/// A UTC calendar date and time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Civil {
    /// The year (1970..=9999 after clamping).
    pub(crate) year: u16,
    /// The month, 1..=12.
    pub(crate) month: u8,
    /// The day of the month, 1..=31.
    pub(crate) day: u8,
    /// The hour, 0..=23.
    pub(crate) hour: u8,
    /// The minute, 0..=59.
    pub(crate) minute: u8,
    /// The second, 0..=59.
    pub(crate) second: u8,
    /// The day of the week, 0 = Sunday.
    pub(crate) weekday: u8,
}

/// The calendar fields of Unix seconds, clamped like [`clamp_secs`]
/// (Howard Hinnant's `civil_from_days`; no allocation, no panics).
pub(crate) fn civil(secs: i64) -> Civil {
    let secs = clamp_secs(secs);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // 1970-01-01 was a Thursday.
    let weekday = (days + 4).rem_euclid(7);
    let small = |v: i64| u8::try_from(v).unwrap_or(0);
    Civil {
        year: u16::try_from(year).unwrap_or(9999),
        month: small(month),
        day: small(day),
        hour: small(rem / 3600),
        minute: small(rem / 60 % 60),
        second: small(rem % 60),
        weekday: small(weekday),
    }
}

/// Two ASCII digits of `v` (taken modulo 100).
fn two(v: u8) -> [u8; 2] {
    [b'0' + v / 10 % 10, b'0' + v % 10]
}

/// Formats Unix seconds (clamped) as an IMF-fixdate, e.g.
/// `Sun, 06 Nov 1994 08:49:37 GMT`, without allocating.
pub fn format(secs: i64) -> [u8; DATE_LEN] {
    const DAYS: [&[u8; 3]; 7] = [b"Sun", b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat"];
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let c = civil(secs);
    let wday = DAYS.get(usize::from(c.weekday)).copied().unwrap_or(b"Sun");
    let mon = MONTHS
        .get(usize::from(c.month).wrapping_sub(1))
        .copied()
        .unwrap_or(b"Jan");
    let [y1, y2] = two(u8::try_from(c.year / 100).unwrap_or(99));
    let [y3, y4] = two(u8::try_from(c.year % 100).unwrap_or(99));
    let [d1, d2] = two(c.day);
    let [h1, h2] = two(c.hour);
    let [m1, m2] = two(c.minute);
    let [s1, s2] = two(c.second);
    let [w1, w2, w3] = *wday;
    let [n1, n2, n3] = *mon;
    [
        w1, w2, w3, b',', b' ', d1, d2, b' ', n1, n2, n3, b' ', y1, y2, y3, y4, b' ', h1, h2, b':',
        m1, m2, b':', s1, s2, b' ', b'G', b'M', b'T',
    ]
}

/// Parses an HTTP-date (IMF-fixdate, RFC 850 or asctime form) into Unix seconds.
///
/// Returns `None` for anything invalid; RFC 9110 requires invalid dates in
/// conditional headers to be ignored.
pub fn parse(value: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(value).ok()?;
    let date: HttpDate = text.parse().ok()?;
    Some(unix_secs(SystemTime::from(date)))
}

/// The `Date` header value, reformatted only when the second changes.
///
/// One per worker thread; formatting costs a few hundred nanoseconds, reading
/// the cache a comparison.
#[derive(Clone, Debug)]
pub struct DateCache {
    /// The second `buf` was formatted for.
    secs: i64,
    /// The formatted date.
    buf: [u8; DATE_LEN],
}

impl DateCache {
    /// A cache holding the current time.
    pub fn new() -> DateCache {
        let secs = unix_secs(SystemTime::now());
        DateCache {
            secs,
            buf: format(secs),
        }
    }

    /// The formatted date for `now`, reformatting only if its second differs
    /// from the cached one.
    pub fn at(&mut self, now: SystemTime) -> &[u8; DATE_LEN] {
        let secs = unix_secs(now);
        if secs != self.secs {
            self.secs = secs;
            self.buf = format(secs);
        }
        &self.buf
    }

    /// The formatted current date (`SystemTime::now()`, cached per second).
    pub fn now(&mut self) -> &[u8; DATE_LEN] {
        self.at(SystemTime::now())
    }

    /// The date last returned, without consulting the clock.
    pub fn cached(&self) -> &[u8; DATE_LEN] {
        &self.buf
    }
}

impl Default for DateCache {
    fn default() -> DateCache {
        DateCache::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::XorShift;

    #[test]
    fn formats_known_dates() {
        assert_eq!(&format(784_111_777), b"Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(&format(0), b"Thu, 01 Jan 1970 00:00:00 GMT");
    }

    #[test]
    fn clamps_instead_of_panicking() {
        assert_eq!(&format(-1), b"Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(&format(i64::MIN), b"Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(&format(i64::MAX), b"Fri, 31 Dec 9999 23:59:59 GMT");
        assert_eq!(&format(MAX_SECS + 1), b"Fri, 31 Dec 9999 23:59:59 GMT");
        assert_eq!(unix_secs(UNIX_EPOCH - std::time::Duration::from_secs(5)), 0);
    }

    #[test]
    fn parses_all_three_forms() {
        for s in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(parse(s.as_bytes()), Some(784_111_777), "{s}");
        }
    }

    #[test]
    fn rejects_invalid_dates() {
        for s in [
            &b""[..],
            b"yesterday",
            b"Sun, 06 Nov 1994 08:49:37",
            b"Sun, 32 Nov 1994 08:49:37 GMT",
            b"Sun, 06 Nov 1994 08:49:37 GMT\xff",
            b"\xe2\x82\xac",
            b"-1",
            b"784111777",
        ] {
            assert_eq!(parse(s), None, "{s:?}");
        }
    }

    #[test]
    fn cache_reformats_per_second() {
        let mut cache = DateCache::new();
        let t = UNIX_EPOCH + std::time::Duration::from_secs(784_111_777);
        assert_eq!(cache.at(t), b"Sun, 06 Nov 1994 08:49:37 GMT");
        let later = t + std::time::Duration::from_millis(999);
        assert_eq!(cache.at(later), b"Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(
            cache.at(t + std::time::Duration::from_secs(1)),
            b"Sun, 06 Nov 1994 08:49:38 GMT"
        );
        assert_eq!(cache.cached(), b"Sun, 06 Nov 1994 08:49:38 GMT");
        assert_eq!(cache.now().len(), DATE_LEN);
        assert_eq!(DateCache::default().cached().len(), DATE_LEN);
    }

    #[test]
    fn civil_fields() {
        let c = civil(784_111_777);
        assert_eq!(
            (c.year, c.month, c.day, c.hour, c.minute, c.second, c.weekday),
            (1994, 11, 6, 8, 49, 37, 0)
        );
        assert_eq!(civil(951_782_400).day, 29);
        assert_eq!(civil(i64::MAX).year, 9999);
    }

    /// The hand-written formatter agrees with `httpdate` everywhere.
    #[test]
    fn randomized_matches_httpdate() {
        use std::time::Duration;
        let mut rng = XorShift::new(4);
        for i in 0..20_000u64 {
            let secs = match i {
                0 => 0,
                1 => MAX_SECS as u64,
                _ => rng.next() % (MAX_SECS as u64 + 1),
            };
            let want = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs));
            assert_eq!(&format(secs as i64)[..], want.as_bytes(), "{secs}");
        }
    }

    #[test]
    fn randomized_round_trip() {
        let mut rng = XorShift::new(99);
        for _ in 0..5000 {
            let secs = (rng.next() % (MAX_SECS as u64 + 1)) as i64;
            let text = format(secs);
            assert_eq!(parse(&text), Some(secs));
        }
    }
}
