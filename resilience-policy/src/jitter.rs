//! Jitter kinds and their names.

use std::str::FromStr;

use crate::Violation;
use crate::defaults;

/// How a computed delay is randomised, so that clients that failed together do not retry together.
///
/// The names are the ones `#[resilient(jitter = "...")]` and a configuration accept; parse them
/// with [`Jitter::from_name`] (or `str::parse`).
///
/// ```
/// use resilience_policy::Jitter;
///
/// assert_eq!("full".parse::<Jitter>(), Ok(Jitter::Full));
/// assert_eq!(Jitter::from_name("proportional"), Ok(Jitter::Proportional(0.1)));
/// let err = Jitter::from_name("gaussian").unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "unknown jitter `gaussian`; expected one of `none`, `full`, `equal`, `decorrelated`, `proportional`"
/// );
/// assert_eq!(Jitter::DEFAULT.name(), "proportional");
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Jitter {
    /// No randomisation: the delay is exact.
    None,
    /// `uniform(0, delay)`.
    Full,
    /// `delay / 2 + uniform(0, delay / 2)`.
    Equal,
    /// `min(max, uniform(base, previous * 3))`, as AWS's "decorrelated jitter".
    Decorrelated,
    /// `delay + uniform(0, delay * p)`: the connector platforms' default with `p = 0.1`.
    Proportional(f64),
}

impl Jitter {
    /// The kinds' names, as written in `#[resilient(jitter = "...")]`; for "did you mean" and
    /// for the list of accepted values in messages.
    pub const NAMES: [&'static str; 5] = ["none", "full", "equal", "decorrelated", "proportional"];

    /// The default: proportional, 10%.
    pub const DEFAULT: Jitter = defaults::JITTER;

    /// The kind's name.
    pub const fn name(&self) -> &'static str {
        match self {
            Jitter::None => "none",
            Jitter::Full => "full",
            Jitter::Equal => "equal",
            Jitter::Decorrelated => "decorrelated",
            Jitter::Proportional(_) => "proportional",
        }
    }

    /// The kind named `name`; `"proportional"` is 10% of the delay.
    ///
    /// # Errors
    ///
    /// `name` is not one of [`Jitter::NAMES`]; the violation's fix lists them.
    pub fn from_name(name: &str) -> Result<Jitter, Violation> {
        match name {
            "none" => Ok(Jitter::None),
            "full" => Ok(Jitter::Full),
            "equal" => Ok(Jitter::Equal),
            "decorrelated" => Ok(Jitter::Decorrelated),
            "proportional" => Ok(Jitter::DEFAULT),
            other => Err(Violation::new(
                "jitter",
                other,
                format!("unknown jitter `{other}`"),
                format!("expected one of {}", backticked(&Jitter::NAMES)),
            )),
        }
    }
}

impl Default for Jitter {
    fn default() -> Self {
        Jitter::DEFAULT
    }
}

impl FromStr for Jitter {
    type Err = Violation;

    fn from_str(s: &str) -> Result<Jitter, Violation> {
        Jitter::from_name(s)
    }
}

/// "`a`, `b`, `c`".
fn backticked(items: &[&str]) -> String {
    items
        .iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back_to_its_kind() {
        for name in Jitter::NAMES {
            assert_eq!(Jitter::from_name(name).map(|j| j.name()), Ok(name));
        }
    }

    #[test]
    fn names_are_case_sensitive_and_exact() {
        for bad in ["Full", " full", "proportional(0.1)", ""] {
            let err = Jitter::from_name(bad).unwrap_err();
            assert_eq!(err.key(), "jitter");
            assert_eq!(err.value(), bad);
        }
    }
}
