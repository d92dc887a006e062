//! The backoff schedule's arithmetic: delays before jitter, the longest jittered delays, and the
//! worst case of a whole call.

use std::time::Duration;

use crate::rules::{
    check_backoff_factor, check_backoff_order, check_duration, check_jitter_fraction,
};
use crate::{Jitter, Violation, defaults};

/// An exponential backoff schedule: the delay before retry `n` (0-based) is
/// `min(base * factor^n, max)`, then jittered.
///
/// Every method saturates: no argument, however large or invalid, overflows or panics; a sum
/// that does not fit is `Duration::MAX`.
///
/// ```
/// use std::time::Duration;
/// use resilience_policy::{Jitter, Schedule};
///
/// const POLICY: Schedule = Schedule::new().with_max(Duration::from_secs(16)).with_jitter(Jitter::None);
/// let delays: Vec<u64> = (0..6).map(|n| POLICY.raw_delay(n).as_secs()).collect();
/// assert_eq!(delays, [1, 2, 4, 8, 16, 16]);
/// assert_eq!(POLICY.worst_case_total(5), Duration::from_secs(31));
/// assert!(POLICY.check().is_ok());
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// The first delay.
    pub base: Duration,
    /// The largest delay before jitter.
    pub max: Duration,
    /// The growth factor per retry; at least 1.
    pub factor: f64,
    /// The jitter kind.
    pub jitter: Jitter,
}

impl Schedule {
    /// The defaults: base 1s, max 30s, factor 2, proportional jitter of 10%.
    pub const fn new() -> Schedule {
        Schedule {
            base: defaults::BACKOFF_BASE,
            max: defaults::BACKOFF_MAX,
            factor: defaults::BACKOFF_FACTOR,
            jitter: defaults::JITTER,
        }
    }

    /// Sets the first delay.
    pub const fn with_base(mut self, base: Duration) -> Schedule {
        self.base = base;
        self
    }

    /// Sets the largest delay before jitter.
    pub const fn with_max(mut self, max: Duration) -> Schedule {
        self.max = max;
        self
    }

    /// Sets the growth factor.
    pub const fn with_factor(mut self, factor: f64) -> Schedule {
        self.factor = factor;
        self
    }

    /// Sets the jitter kind.
    pub const fn with_jitter(mut self, jitter: Jitter) -> Schedule {
        self.jitter = jitter;
        self
    }

    /// Checks the schedule; the first rule broken, keyed `base`, `max`, `factor` or `jitter`.
    ///
    /// # Errors
    ///
    /// - `base` or `max` outside 1 ms to 30 days ([`check_duration`]);
    /// - `base` longer than `max` ([`check_backoff_order`]);
    /// - `factor` below 1 or not finite ([`check_backoff_factor`]);
    /// - a proportional jitter's fraction outside 0 to 1 ([`check_jitter_fraction`]).
    ///
    /// ```
    /// use std::time::Duration;
    /// use resilience_policy::Schedule;
    ///
    /// let err = Schedule::new().with_base(Duration::from_secs(60)).check().unwrap_err();
    /// assert_eq!(err.key(), "base");
    /// assert_eq!(Schedule::new().with_factor(0.5).check().unwrap_err().key(), "factor");
    /// ```
    pub fn check(&self) -> Result<(), Violation> {
        check_duration("base", self.base)?;
        check_duration("max", self.max)?;
        check_backoff_order(self.base, self.max)?;
        check_backoff_factor(self.factor)?;
        if let Jitter::Proportional(fraction) = self.jitter {
            check_jitter_fraction(fraction)?;
        }
        Ok(())
    }

    /// The delay before retry `retry` (0 for the first retry) without jitter:
    /// `min(base * factor^retry, max)`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use resilience_policy::Schedule;
    ///
    /// assert_eq!(Schedule::new().raw_delay(2), Duration::from_secs(4));
    /// assert_eq!(Schedule::new().raw_delay(u32::MAX), Duration::from_secs(30));
    /// ```
    pub fn raw_delay(&self, retry: u32) -> Duration {
        let exponent = i32::try_from(retry).unwrap_or(i32::MAX);
        let d = self.base.as_secs_f64() * self.factor.powi(exponent);
        // Not a number (a NaN factor), past `max`, or negative (an invalid negative factor):
        // `max`, the longest delay the schedule allows.
        if d.is_nan() || d >= self.max.as_secs_f64() {
            return self.max;
        }
        Duration::try_from_secs_f64(d).unwrap_or(self.max)
    }

    /// The longest delay jitter can give before retry `retry`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use resilience_policy::{Jitter, Schedule};
    ///
    /// assert_eq!(Schedule::new().max_delay(0), Duration::from_millis(1_100));
    /// assert_eq!(Schedule::new().with_jitter(Jitter::Decorrelated).max_delay(0), Duration::from_secs(30));
    /// ```
    pub fn max_delay(&self, retry: u32) -> Duration {
        self.jittered_at_most(self.raw_delay(retry))
    }

    /// The worst-case sum of the waits of `retries` retries, jitter at its largest.
    /// `Duration::MAX` when the sum does not fit. (With an invalid factor, below 1 or not a
    /// number, the sum given is an upper bound: `retries` times the longest delay.)
    ///
    /// The one computation of it: the macro compares it with a site's `deadline` at compile time,
    /// the runtime bounds a call's waits for capacity with it at run time.
    ///
    /// ```
    /// use std::time::Duration;
    /// use resilience_policy::{Jitter, Schedule};
    ///
    /// // 1s + 2s + 4s + 8s + 16s.
    /// let b = Schedule::new().with_max(Duration::from_secs(16)).with_jitter(Jitter::None);
    /// assert_eq!(b.worst_case_total(5), Duration::from_secs(31));
    /// // Decorrelated jitter may wait `max` every time.
    /// let d = Schedule::new().with_jitter(Jitter::Decorrelated);
    /// assert_eq!(d.worst_case_total(2), Duration::from_secs(60));
    /// // Saturates instead of overflowing.
    /// let huge = Schedule::new().with_max(Duration::MAX).with_factor(10.0);
    /// assert_eq!(huge.worst_case_total(u32::MAX), Duration::MAX);
    /// ```
    pub fn worst_case_total(&self, retries: u32) -> Duration {
        if self.factor.is_nan() || self.factor < 1.0 {
            // An invalid factor (below 1, or not a number): no delay is longer than `max`.
            return self.jittered_at_most(self.max).saturating_mul(retries);
        }
        let mut total = Duration::ZERO;
        for n in 0..retries {
            let d = self.max_delay(n);
            // From the first delay at `max` on (with a factor of 1, from the start) every delay
            // is this one: the rest of the sum is a product, so that even `u32::MAX` retries
            // cost a few dozen iterations.
            if self.factor == 1.0 || self.raw_delay(n) >= self.max {
                return total.saturating_add(d.saturating_mul(retries - n));
            }
            total = total.saturating_add(d);
        }
        total
    }

    /// The longest delay jitter can make of a delay of `d` before jitter.
    fn jittered_at_most(&self, d: Duration) -> Duration {
        match self.jitter {
            Jitter::None | Jitter::Full | Jitter::Equal => d,
            Jitter::Decorrelated => self.max,
            Jitter::Proportional(p) => d.saturating_add(scaled(d, p)),
        }
    }
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule::new()
    }
}

/// `d * f`, saturating; 0 for a factor that is not positive.
fn scaled(d: Duration, f: f64) -> Duration {
    if f > 0.0 {
        Duration::try_from_secs_f64(d.as_secs_f64() * f).unwrap_or(Duration::MAX)
    } else {
        Duration::ZERO
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    /// The sum by definition, one retry at a time.
    fn by_definition(s: &Schedule, retries: u32) -> Duration {
        (0..retries).fold(Duration::ZERO, |acc, n| acc.saturating_add(s.max_delay(n)))
    }

    #[test]
    fn the_shortcut_sums_what_the_definition_sums() {
        let jitters = [
            Jitter::None,
            Jitter::Full,
            Jitter::Equal,
            Jitter::Decorrelated,
            Jitter::Proportional(0.1),
            Jitter::Proportional(1.0),
        ];
        let factors = [1.0, 1.000_001, 1.5, 2.0, 3.0, 10.0, f64::INFINITY];
        let maxes = [S, 16 * S, 30 * S, 86_400 * S, Duration::MAX];
        for jitter in jitters {
            for factor in factors {
                for max in maxes {
                    let s = Schedule::new()
                        .with_max(max)
                        .with_factor(factor)
                        .with_jitter(jitter);
                    for retries in [0, 1, 2, 5, 20, 64, 200] {
                        assert_eq!(
                            s.worst_case_total(retries),
                            by_definition(&s, retries),
                            "{s:?} over {retries}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn an_invalid_factor_gives_an_upper_bound() {
        for factor in [0.5, f64::NAN, -2.0] {
            let s = Schedule::new()
                .with_factor(factor)
                .with_jitter(Jitter::None);
            assert_eq!(s.worst_case_total(3), 90 * S);
            assert!(s.worst_case_total(3) >= by_definition(&s, 3));
        }
    }

    #[test]
    fn nothing_overflows_or_panics() {
        let s = Schedule::new()
            .with_max(Duration::MAX)
            .with_factor(10.0)
            .with_jitter(Jitter::Proportional(1.0));
        assert_eq!(s.raw_delay(u32::MAX), Duration::MAX);
        assert_eq!(s.max_delay(u32::MAX), Duration::MAX);
        assert_eq!(s.worst_case_total(20), Duration::MAX);
        assert_eq!(s.worst_case_total(u32::MAX), Duration::MAX);
        let invalid = Schedule::new()
            .with_factor(-3.0)
            .with_jitter(Jitter::Proportional(f64::NAN));
        assert_eq!(invalid.raw_delay(1), invalid.max);
        assert_eq!(invalid.max_delay(1), invalid.max);
        let inf = Schedule::new().with_jitter(Jitter::Proportional(f64::INFINITY));
        assert_eq!(inf.max_delay(0), Duration::MAX);
        assert_eq!(inf.worst_case_total(3), Duration::MAX);
    }

    #[test]
    fn max_is_exact_not_rounded_through_floats() {
        let s = Schedule::new()
            .with_max(Duration::new(16, 123_456_789))
            .with_jitter(Jitter::None);
        assert_eq!(s.raw_delay(10), Duration::new(16, 123_456_789));
    }
}
