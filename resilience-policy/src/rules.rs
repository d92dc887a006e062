//! One function per rule: the value (and what it depends on) in, `Ok(())` or a [`Violation`] out.
//!
//! The messages are written for both readers: `key = value` is how the attribute and the
//! configuration file both spell a setting, and the fix says what to write instead.

use std::time::Duration;

use crate::bounds::{
    MAX_DURATION, MAX_HALF_OPEN_PROBES, MAX_KEYS, MAX_RATE, MAX_REFUND, MAX_RETRIES,
    MAX_SUCCESS_THRESHOLD, MAX_WINDOW, MIN_DURATION,
};
use crate::{Schedule, Violation, format_duration};

/// `retries` is at most [`MAX_RETRIES`] (20).
///
/// # Errors
///
/// `retries` is above 20.
///
/// ```
/// use resilience_policy::check_retries;
///
/// assert!(check_retries(20).is_ok());
/// assert_eq!(check_retries(21).unwrap_err().value(), "21");
/// ```
pub fn check_retries(retries: u32) -> Result<(), Violation> {
    if retries > MAX_RETRIES {
        return Err(Violation::new(
            "retries",
            retries.to_string(),
            format!("`retries = {retries}` is above the limit of {MAX_RETRIES}"),
            "lower it (a `deadline` bounds a long outage better than more retries)",
        ));
    }
    Ok(())
}

/// Retrying runs an operation again, so `retries > 0` needs it marked safe to repeat:
/// `idempotent`, or an `idempotency_key` that makes a create safe.
///
/// # Errors
///
/// `retries` is above 0 and neither `idempotent` nor `idempotency_key` is given.
///
/// ```
/// use resilience_policy::check_retries_are_safe;
///
/// assert!(check_retries_are_safe(3, true, false).is_ok());
/// assert!(check_retries_are_safe(3, false, true).is_ok());
/// assert!(check_retries_are_safe(0, false, false).is_ok());
/// assert!(check_retries_are_safe(3, false, false).unwrap_err().fix().contains("`idempotent`"));
/// ```
pub fn check_retries_are_safe(
    retries: u32,
    idempotent: bool,
    idempotency_key: bool,
) -> Result<(), Violation> {
    if retries > 0 && !idempotent && !idempotency_key {
        return Err(Violation::new(
            "retries",
            retries.to_string(),
            format!(
                "`retries = {retries}` runs the operation again after a failure, so it must be safe to repeat"
            ),
            "add `idempotent`, or `idempotency_key = <expr>` for a create, or set `retries = 0`",
        ));
    }
    Ok(())
}

/// A setting that only shapes retries (`backoff`, `jitter`, `budget`, `retry_on`, `abort_on`) is given to a
/// site that retries, or that a configuration may give retries: `retries > 0`, or a site marked
/// safe to repeat (`idempotent` or `idempotency_key`). Elsewhere it has no effect, and says
/// something the site does not do.
///
/// # Errors
///
/// `retries` is 0 and the site is not safe to repeat; the violation is keyed `key`.
///
/// ```
/// use resilience_policy::check_used_by_retries;
///
/// assert!(check_used_by_retries("backoff", 3, true).is_ok());
/// assert!(check_used_by_retries("backoff", 0, true).is_ok());
/// assert_eq!(
///     check_used_by_retries("budget", 0, false).unwrap_err().to_string(),
///     "`budget` has no effect: this site never retries (`retries = 0`, and it is not marked safe to repeat); remove `budget`, or mark the site `idempotent` and give it `retries`"
/// );
/// ```
pub fn check_used_by_retries(
    key: &str,
    retries: u32,
    safe_to_repeat: bool,
) -> Result<(), Violation> {
    if retries == 0 && !safe_to_repeat {
        return Err(Violation::new(
            key,
            "",
            format!(
                "`{key}` has no effect: this site never retries (`retries = 0`, and it is not marked safe to repeat)"
            ),
            format!("remove `{key}`, or mark the site `idempotent` and give it `retries`"),
        ));
    }
    Ok(())
}

/// A named instance (`breaker`, `budget`, `rate_limit`, `bulkhead`) has a name: sites that give
/// the same name share the instance, so an empty one is a mistake.
///
/// # Errors
///
/// `name` is empty or only whitespace; the violation is keyed `key`.
///
/// ```
/// use resilience_policy::check_name;
///
/// assert!(check_name("budget", "graph").is_ok());
/// assert_eq!(
///     check_name("budget", " ").unwrap_err().to_string(),
///     "`budget` needs a non-empty name, e.g. `budget = \"graph\"`; sites with the same name share it"
/// );
/// ```
pub fn check_name(key: &str, name: &str) -> Result<(), Violation> {
    if name.trim().is_empty() {
        return Err(Violation::new(
            key,
            name,
            format!("`{key}` needs a non-empty name, e.g. `{key} = \"graph\"`"),
            "sites with the same name share it",
        ));
    }
    Ok(())
}

/// `timeout` and `deadline` need an async fn: a blocking call cannot be interrupted, so neither
/// the attribute nor a configuration can give one to a blocking site.
///
/// # Errors
///
/// `is_async` is false; the violation is keyed `key` and names the fn `operation`.
///
/// ```
/// use resilience_policy::check_needs_async;
///
/// assert!(check_needs_async("timeout", "fetch", true).is_ok());
/// assert_eq!(
///     check_needs_async("timeout", "fetch", false).unwrap_err().to_string(),
///     "`timeout` needs an async fn: a blocking call cannot be interrupted; remove `timeout` or make `fetch` async"
/// );
/// ```
pub fn check_needs_async(key: &str, operation: &str, is_async: bool) -> Result<(), Violation> {
    if !is_async {
        return Err(Violation::new(
            key,
            "",
            format!("`{key}` needs an async fn: a blocking call cannot be interrupted"),
            format!("remove `{key}` or make `{operation}` async"),
        ));
    }
    Ok(())
}

/// A duration setting (`timeout`, `deadline`, `cooldown`, `idle_ttl`, a limiter's `per`, backoff
/// `base` and `max`) lies within [`MIN_DURATION`] (1 ms) and [`MAX_DURATION`] (30 days).
///
/// # Errors
///
/// `value` is zero, shorter than 1 ms or longer than 30 days; the violation is keyed `key`.
///
/// ```
/// use std::time::Duration;
/// use resilience_policy::check_duration;
///
/// assert!(check_duration("timeout", Duration::from_millis(1)).is_ok());
/// assert!(check_duration("timeout", Duration::from_secs(30 * 86_400)).is_ok());
/// let err = check_duration("per", Duration::from_secs(600 * 31_557_600)).unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "`per = \"600years\"` is longer than the limit of 30 days; write at most `per = \"30days\"`"
/// );
/// ```
pub fn check_duration(key: &str, value: Duration) -> Result<(), Violation> {
    let shown = format_duration(value);
    if value.is_zero() {
        return Err(Violation::new(
            key,
            shown,
            format!("`{key}` must be longer than zero"),
            format!("write e.g. `{key} = \"1s\"` or remove it"),
        ));
    }
    if value < MIN_DURATION {
        let min = format_duration(MIN_DURATION);
        return Err(Violation::new(
            key,
            shown.clone(),
            format!("`{key} = \"{shown}\"` is shorter than the minimum of {min}"),
            format!("write at least `{key} = \"{min}\"`"),
        ));
    }
    if value > MAX_DURATION {
        let max = format_duration(MAX_DURATION);
        return Err(Violation::new(
            key,
            shown.clone(),
            format!("`{key} = \"{shown}\"` is longer than the limit of 30 days"),
            format!("write at most `{key} = \"{max}\"`"),
        ));
    }
    Ok(())
}

/// The backoff's first delay is not longer than its largest.
///
/// # Errors
///
/// `base` is longer than `max`; the violation is keyed `base`.
///
/// ```
/// use std::time::Duration;
/// use resilience_policy::check_backoff_order;
///
/// assert!(check_backoff_order(Duration::from_secs(1), Duration::from_secs(1)).is_ok());
/// let err = check_backoff_order(Duration::from_secs(10), Duration::from_secs(5)).unwrap_err();
/// assert_eq!(err.to_string(), "backoff `base` (10s) is longer than `max` (5s); raise `max` or lower `base`");
/// ```
pub fn check_backoff_order(base: Duration, max: Duration) -> Result<(), Violation> {
    if base > max {
        return Err(Violation::new(
            "base",
            format_duration(base),
            format!(
                "backoff `base` ({}) is longer than `max` ({})",
                format_duration(base),
                format_duration(max)
            ),
            "raise `max` or lower `base`",
        ));
    }
    Ok(())
}

/// The backoff's growth factor is finite and at least 1, so delays never shrink.
///
/// # Errors
///
/// `factor` is below 1, infinite or not a number.
///
/// ```
/// use resilience_policy::check_backoff_factor;
///
/// assert!(check_backoff_factor(1.0).is_ok());
/// let err = check_backoff_factor(0.5).unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "backoff `factor = 0.5` would shrink the delays; use a factor of at least 1 (`factor = 2` doubles each delay)"
/// );
/// assert!(check_backoff_factor(f64::INFINITY).is_err());
/// ```
pub fn check_backoff_factor(factor: f64) -> Result<(), Violation> {
    if !factor.is_finite() {
        return Err(Violation::new(
            "factor",
            factor.to_string(),
            format!("backoff `factor = {factor}` is not a finite number"),
            "use a factor of at least 1, e.g. `factor = 2` or `factor = 1.5`",
        ));
    }
    if factor < 1.0 {
        return Err(Violation::new(
            "factor",
            factor.to_string(),
            format!("backoff `factor = {factor}` would shrink the delays"),
            "use a factor of at least 1 (`factor = 2` doubles each delay)",
        ));
    }
    Ok(())
}

/// Proportional jitter adds at most this fraction of the delay: from 0 to 1.
///
/// # Errors
///
/// `fraction` is outside `0..=1` or not a number; the violation is keyed `jitter`.
///
/// ```
/// use resilience_policy::check_jitter_fraction;
///
/// assert!(check_jitter_fraction(0.1).is_ok());
/// assert_eq!(check_jitter_fraction(2.0).unwrap_err().key(), "jitter");
/// ```
pub fn check_jitter_fraction(fraction: f64) -> Result<(), Violation> {
    if !(0.0..=1.0).contains(&fraction) {
        return Err(Violation::new(
            "jitter",
            fraction.to_string(),
            format!("proportional jitter of {fraction} is outside 0..=1"),
            "give the fraction of the delay jitter may add, e.g. 0.1 for up to 10% more",
        ));
    }
    Ok(())
}

/// A limiter's `rate` is from 1 to [`MAX_RATE`] (10⁹) permits per period.
///
/// # Errors
///
/// `rate` is 0 or above 10⁹.
///
/// ```
/// use resilience_policy::check_rate;
///
/// assert!(check_rate(1).is_ok());
/// assert!(check_rate(1_000_000_000).is_ok());
/// assert_eq!(check_rate(0).unwrap_err().key(), "rate");
/// ```
pub fn check_rate(rate: u64) -> Result<(), Violation> {
    if rate == 0 || rate > MAX_RATE {
        return Err(outside(
            "rate",
            rate,
            1,
            MAX_RATE,
            "write the permits per `per`, e.g. `rate = 100` with `per = \"1s\"`",
        ));
    }
    Ok(())
}

/// A ratio breaker's `failure_ratio` is above 0 and at most 1.
///
/// # Errors
///
/// `ratio` is 0 or less, above 1, or not a number.
///
/// ```
/// use resilience_policy::check_failure_ratio;
///
/// assert!(check_failure_ratio(1.0).is_ok());
/// assert_eq!(check_failure_ratio(0.0).unwrap_err().problem(), "`failure_ratio = 0` is outside (0, 1]");
/// ```
pub fn check_failure_ratio(ratio: f64) -> Result<(), Violation> {
    if !(ratio > 0.0 && ratio <= 1.0) {
        return Err(Violation::new(
            "failure_ratio",
            ratio.to_string(),
            format!("`failure_ratio = {ratio}` is outside (0, 1]"),
            "write the share of failed calls in the window that opens the breaker, e.g. `failure_ratio = 0.5`",
        ));
    }
    Ok(())
}

/// A ratio breaker's `window` is from 1 to [`MAX_WINDOW`] (10,000) calls.
///
/// # Errors
///
/// `window` is 0 or above 10,000.
///
/// ```
/// use resilience_policy::check_window;
///
/// assert!(check_window(10_000).is_ok());
/// assert!(check_window(10_001).is_err());
/// ```
pub fn check_window(window: u32) -> Result<(), Violation> {
    if window == 0 || window > MAX_WINDOW {
        return Err(outside(
            "window",
            window,
            1,
            MAX_WINDOW,
            "write the number of recent calls a ratio breaker judges, e.g. `window = 20`",
        ));
    }
    Ok(())
}

/// A consecutive breaker's `failure_threshold` is from 1 to [`MAX_WINDOW`] (10,000): the run of
/// failures is its window.
///
/// # Errors
///
/// `threshold` is 0 or above 10,000.
///
/// ```
/// use resilience_policy::check_failure_threshold;
///
/// assert!(check_failure_threshold(5).is_ok());
/// assert_eq!(
///     check_failure_threshold(0).unwrap_err().to_string(),
///     "`failure_threshold = 0` is outside 1..=10000; write the consecutive failures that open the breaker, e.g. `failure_threshold = 5`"
/// );
/// ```
pub fn check_failure_threshold(threshold: u32) -> Result<(), Violation> {
    if threshold == 0 || threshold > MAX_WINDOW {
        return Err(outside(
            "failure_threshold",
            threshold,
            1,
            MAX_WINDOW,
            "write the consecutive failures that open the breaker, e.g. `failure_threshold = 5`",
        ));
    }
    Ok(())
}

/// `half_open_probes` is from 1 to the ratio breaker's `window` (`None` for a consecutive
/// breaker), and at most [`MAX_HALF_OPEN_PROBES`] (255).
///
/// # Errors
///
/// `probes` is 0, above the window or above 255.
///
/// ```
/// use resilience_policy::check_half_open_probes;
///
/// assert!(check_half_open_probes(3, None).is_ok());
/// assert!(check_half_open_probes(3, Some(20)).is_ok());
/// assert!(check_half_open_probes(30, Some(20)).is_err());
/// assert!(check_half_open_probes(256, None).is_err());
/// ```
pub fn check_half_open_probes(probes: u32, window: Option<u32>) -> Result<(), Violation> {
    let upper = window.map_or(MAX_HALF_OPEN_PROBES, |w| w.min(MAX_HALF_OPEN_PROBES));
    if probes == 0 || probes > upper {
        let fix = match window {
            Some(w) if w < MAX_HALF_OPEN_PROBES => format!(
                "a half-open breaker lets through no more probes than its `window` of {w} calls; e.g. `half_open_probes = 1`"
            ),
            _ => "write the probes a half-open breaker lets through at once, e.g. `half_open_probes = 1`".to_owned(),
        };
        return Err(outside("half_open_probes", probes, 1, upper, fix));
    }
    Ok(())
}

/// `success_threshold` is from 1 to [`MAX_SUCCESS_THRESHOLD`] (255).
///
/// # Errors
///
/// `successes` is 0 or above 255.
///
/// ```
/// use resilience_policy::check_success_threshold;
///
/// assert!(check_success_threshold(1).is_ok());
/// assert!(check_success_threshold(300).is_err());
/// ```
pub fn check_success_threshold(successes: u32) -> Result<(), Violation> {
    if successes == 0 || successes > MAX_SUCCESS_THRESHOLD {
        return Err(outside(
            "success_threshold",
            successes,
            1,
            MAX_SUCCESS_THRESHOLD,
            "write the successful probes that close the breaker, e.g. `success_threshold = 1`",
        ));
    }
    Ok(())
}

/// `max_keys` of per-key breakers and limiters is from 1 to [`MAX_KEYS`] (10⁸).
///
/// # Errors
///
/// `keys` is 0 or above 10⁸.
///
/// ```
/// use resilience_policy::check_max_keys;
///
/// assert!(check_max_keys(100_000_000).is_ok());
/// assert!(check_max_keys(0).is_err());
/// ```
pub fn check_max_keys(keys: u64) -> Result<(), Violation> {
    if keys == 0 || keys > MAX_KEYS {
        return Err(outside(
            "max_keys",
            keys,
            1,
            MAX_KEYS,
            "write the most keys (tenants) kept at once, e.g. `max_keys = 10000`",
        ));
    }
    Ok(())
}

/// A retry budget holds at least one token.
///
/// # Errors
///
/// `capacity` is 0.
///
/// ```
/// use resilience_policy::check_budget_capacity;
///
/// assert!(check_budget_capacity(100).is_ok());
/// assert_eq!(check_budget_capacity(0).unwrap_err().key(), "capacity");
/// ```
pub fn check_budget_capacity(capacity: u32) -> Result<(), Violation> {
    if capacity == 0 {
        return Err(Violation::new(
            "capacity",
            "0",
            "`capacity = 0` is below 1",
            "write the tokens of a full bucket, e.g. `capacity = 100`, or `enabled = false` to turn the budget off",
        ));
    }
    Ok(())
}

/// A retry costs from 1 token to the budget's whole `capacity`.
///
/// # Errors
///
/// `cost` is 0 or above `capacity`.
///
/// ```
/// use resilience_policy::check_retry_cost;
///
/// assert!(check_retry_cost(5, 100).is_ok());
/// assert!(check_retry_cost(0, 100).is_err());
/// assert!(check_retry_cost(101, 100).is_err());
/// ```
pub fn check_retry_cost(cost: u32, capacity: u32) -> Result<(), Violation> {
    if cost == 0 || cost > capacity {
        return Err(outside(
            "retry_cost",
            cost,
            1,
            capacity,
            "a retry costs at least one token and at most the `capacity`, e.g. `retry_cost = 5`",
        ));
    }
    Ok(())
}

/// A success refunds from 0 to [`MAX_REFUND`] (1,000) tokens.
///
/// # Errors
///
/// `refund` is negative, above 1,000 or not a number.
///
/// ```
/// use resilience_policy::check_refund;
///
/// assert!(check_refund(0.5).is_ok());
/// assert!(check_refund(-1.0).is_err());
/// ```
pub fn check_refund(refund: f64) -> Result<(), Violation> {
    if !(0.0..=MAX_REFUND).contains(&refund) {
        return Err(Violation::new(
            "refund",
            refund.to_string(),
            format!("`refund = {refund}` is outside 0..={MAX_REFUND}"),
            "write the tokens a success puts back, e.g. `refund = 1`",
        ));
    }
    Ok(())
}

/// A bulkhead lets at least one call through.
///
/// # Errors
///
/// `max_concurrent` is 0.
///
/// ```
/// use resilience_policy::check_max_concurrent;
///
/// assert!(check_max_concurrent(8).is_ok());
/// assert!(check_max_concurrent(0).is_err());
/// ```
pub fn check_max_concurrent(max_concurrent: u64) -> Result<(), Violation> {
    if max_concurrent == 0 {
        return Err(Violation::new(
            "max_concurrent",
            "0",
            "`max_concurrent = 0` is below 1",
            "write the calls let through at once, e.g. `max_concurrent = 8`",
        ));
    }
    Ok(())
}

/// The per-attempt `timeout` is not longer than the whole call's `deadline`: the deadline would
/// end the call before an attempt could time out.
///
/// # Errors
///
/// `timeout` is longer than `deadline`; the violation is keyed `timeout`.
///
/// ```
/// use std::time::Duration;
/// use resilience_policy::check_timeout_within_deadline;
///
/// let s = Duration::from_secs(1);
/// assert!(check_timeout_within_deadline(10 * s, 10 * s).is_ok());
/// let err = check_timeout_within_deadline(120 * s, 60 * s).unwrap_err();
/// assert_eq!(err.key(), "timeout");
/// assert_eq!(err.fix(), "lower `timeout` to at most \"1m\", or raise `deadline`");
/// ```
pub fn check_timeout_within_deadline(
    timeout: Duration,
    deadline: Duration,
) -> Result<(), Violation> {
    if timeout > deadline {
        let (t, d) = (format_duration(timeout), format_duration(deadline));
        return Err(Violation::new(
            "timeout",
            t.clone(),
            format!(
                "`timeout = \"{t}\"` is longer than `deadline = \"{d}\"`: the deadline ends the call before an attempt can time out"
            ),
            format!("lower `timeout` to at most \"{d}\", or raise `deadline`"),
        ));
    }
    Ok(())
}

/// The `deadline` holds the worst-case schedule: every wait of `retries` retries with jitter at
/// its largest ([`Schedule::worst_case_total`]), plus `retries + 1` attempts of `timeout`.
///
/// # Errors
///
/// `deadline` is shorter than that; the message names both figures.
///
/// ```
/// use std::time::Duration;
/// use resilience_policy::{check_deadline_fits, Jitter, Schedule};
///
/// let s = Duration::from_secs(1);
/// let schedule = Schedule::new().with_jitter(Jitter::None);
/// // 1s + 2s + 4s of backoff, plus 4 attempts of 1s: 11s.
/// assert!(check_deadline_fits(11 * s, 3, &schedule, Some(s)).is_ok());
/// let err = check_deadline_fits(10 * s, 3, &schedule, Some(s)).unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "`deadline = \"10s\"` is shorter than the worst-case schedule of 11s (7s of backoff over 3 retries plus 4 attempts of `timeout = \"1s\"`); raise `deadline` to at least 11s, or lower `retries`, `backoff` or `timeout`"
/// );
/// ```
pub fn check_deadline_fits(
    deadline: Duration,
    retries: u32,
    schedule: &Schedule,
    timeout: Option<Duration>,
) -> Result<(), Violation> {
    let waits = schedule.worst_case_total(retries);
    let attempts = retries.saturating_add(1);
    let running = timeout.map_or(Duration::ZERO, |t| t.saturating_mul(attempts));
    let worst = waits.saturating_add(running);
    if deadline >= worst {
        return Ok(());
    }
    let parts = match timeout {
        Some(t) => format!(
            "{} of backoff over {retries} retries plus {attempts} attempts of `timeout = \"{}\"`",
            format_duration(waits),
            format_duration(t)
        ),
        None => format!(
            "{} of backoff over {retries} retries",
            format_duration(waits)
        ),
    };
    let (shown, worst) = (format_duration(deadline), format_duration(worst));
    Err(Violation::new(
        "deadline",
        shown.clone(),
        format!(
            "`deadline = \"{shown}\"` is shorter than the worst-case schedule of {worst} ({parts})"
        ),
        format!("raise `deadline` to at least {worst}, or lower `retries`, `backoff` or `timeout`"),
    ))
}

/// "`key = value` is outside lo..=hi; fix".
fn outside(
    key: &str,
    value: impl std::fmt::Display,
    lo: u64,
    hi: impl std::fmt::Display,
    fix: impl Into<String>,
) -> Violation {
    Violation::new(
        key,
        value.to_string(),
        format!("`{key} = {value}` is outside {lo}..={hi}"),
        fix,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn durations_at_the_bounds_pass_and_past_them_fail() {
        assert!(check_duration("t", MIN_DURATION).is_ok());
        assert!(check_duration("t", MAX_DURATION).is_ok());
        let below = check_duration("t", Duration::from_micros(999)).unwrap_err();
        assert_eq!(
            below.to_string(),
            "`t = \"999us\"` is shorter than the minimum of 1ms; write at least `t = \"1ms\"`"
        );
        let above = check_duration("t", MAX_DURATION + Duration::from_nanos(1)).unwrap_err();
        assert_eq!(above.key(), "t");
        assert!(check_duration("t", Duration::MAX).is_err());
    }

    #[test]
    fn integer_bounds_are_inclusive() {
        assert!(check_retries(MAX_RETRIES).is_ok());
        assert!(check_window(1).is_ok() && check_window(0).is_err());
        assert!(check_failure_threshold(MAX_WINDOW).is_ok());
        assert!(check_failure_threshold(MAX_WINDOW + 1).is_err());
        assert!(check_half_open_probes(MAX_HALF_OPEN_PROBES, Some(MAX_WINDOW)).is_ok());
        assert!(check_half_open_probes(MAX_HALF_OPEN_PROBES + 1, Some(MAX_WINDOW)).is_err());
        assert!(check_half_open_probes(1, Some(1)).is_ok());
        assert!(check_half_open_probes(2, Some(1)).is_err());
        assert!(check_half_open_probes(0, None).is_err());
        assert!(check_success_threshold(MAX_SUCCESS_THRESHOLD).is_ok());
        assert!(check_success_threshold(0).is_err());
        assert!(check_rate(MAX_RATE + 1).is_err());
        assert!(check_max_keys(1).is_ok() && check_max_keys(MAX_KEYS + 1).is_err());
        assert!(check_retry_cost(100, 100).is_ok());
    }

    #[test]
    fn ratios_and_fractions_refuse_not_a_number() {
        assert!(check_failure_ratio(f64::NAN).is_err());
        assert!(check_failure_ratio(f64::MIN_POSITIVE).is_ok());
        assert!(check_failure_ratio(1.000_001).is_err());
        assert!(check_jitter_fraction(f64::NAN).is_err());
        assert!(check_jitter_fraction(0.0).is_ok() && check_jitter_fraction(1.0).is_ok());
        assert!(check_refund(f64::NAN).is_err());
        assert!(check_backoff_factor(f64::NAN).is_err());
    }

    #[test]
    fn the_deadline_counts_every_attempt_and_saturates() {
        let none = Schedule::new().with_jitter(crate::Jitter::None);
        assert!(check_deadline_fits(S, 0, &none, Some(S)).is_ok());
        assert!(check_deadline_fits(S, 0, &none, Some(2 * S)).is_err());
        let err = check_deadline_fits(S, 2, &none, None).unwrap_err();
        assert_eq!(
            err.problem(),
            "`deadline = \"1s\"` is shorter than the worst-case schedule of 3s (3s of backoff over 2 retries)"
        );
        let huge = Schedule::new().with_max(Duration::MAX).with_factor(1e300);
        assert!(check_deadline_fits(MAX_DURATION, u32::MAX, &huge, Some(Duration::MAX)).is_err());
    }
}
