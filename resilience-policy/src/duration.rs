//! Durations the way the messages show them.

use std::fmt::Write;
use std::time::Duration;

/// A duration the way humans read it and the duration parsers read back: `"1m 5s"`, `"250ms"`,
/// `"30days"`. The same text as `humantime::format_duration`, so a message reads the same from the
/// macro and from the runtime.
///
/// ```
/// use std::time::Duration;
/// use resilience_policy::format_duration;
///
/// assert_eq!(format_duration(Duration::from_secs(65)), "1m 5s");
/// assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
/// assert_eq!(format_duration(Duration::from_secs(30 * 86_400)), "30days");
/// assert_eq!(format_duration(Duration::ZERO), "0s");
/// ```
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let nanos = d.subsec_nanos();
    if secs == 0 && nanos == 0 {
        return "0s".to_owned();
    }
    // A year of 365.25 days and a month of 30.44 days, as the parsers read them.
    const YEAR: u64 = 31_557_600;
    const MONTH: u64 = 2_630_016;
    let years = secs / YEAR;
    let months = secs % YEAR / MONTH;
    let rest = secs % YEAR % MONTH;
    let days = rest / 86_400;
    let day_secs = rest % 86_400;
    let parts: [(u64, &str, bool); 9] = [
        (years, "year", true),
        (months, "month", true),
        (days, "day", true),
        (day_secs / 3_600, "h", false),
        (day_secs % 3_600 / 60, "m", false),
        (day_secs % 60, "s", false),
        (u64::from(nanos / 1_000_000), "ms", false),
        (u64::from(nanos / 1_000 % 1_000), "us", false),
        (u64::from(nanos % 1_000), "ns", false),
    ];
    let mut out = String::new();
    for (value, unit, plural) in parts {
        if value == 0 {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        let _ = write!(out, "{value}{unit}");
        if plural && value > 1 {
            out.push('s');
        }
    }
    out
}

/// A wait or a remaining time for a message: [`format_duration`] rounded to the nearest
/// millisecond once it is at least one (a timer's remaining time is never a round figure, and
/// `59s 999ms 651us 436ns` says no more than `1m`).
///
/// ```
/// use std::time::Duration;
/// use resilience_policy::format_rounded;
///
/// assert_eq!(format_rounded(Duration::new(59, 999_651_436)), "1m");
/// assert_eq!(format_rounded(Duration::from_micros(2_400_600)), "2s 401ms");
/// assert_eq!(format_rounded(Duration::from_micros(250)), "250us");
/// ```
pub fn format_rounded(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        return format_duration(d);
    }
    let ms = d.as_nanos().saturating_add(500_000) / 1_000_000;
    let ms = u64::try_from(ms).unwrap_or(u64::MAX);
    format_duration(Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_every_unit() {
        let cases = [
            (Duration::from_nanos(1), "1ns"),
            (Duration::from_micros(1_500), "1ms 500us"),
            (Duration::from_secs(3_600), "1h"),
            (Duration::from_secs(86_400 + 61), "1day 1m 1s"),
            (Duration::from_secs(31 * 86_400), "1month 13h 26m 24s"),
            (Duration::from_secs(600 * 31_557_600), "600years"),
            (
                Duration::MAX,
                "584542046090years 7months 15days 17h 5m 3s 999ms 999us 999ns",
            ),
        ];
        for (d, text) in cases {
            assert_eq!(format_duration(d), text);
        }
    }
}
