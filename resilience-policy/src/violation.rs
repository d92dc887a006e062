//! A value that breaks a rule, with what to write instead.

use std::error::Error;
use std::fmt;

/// A value that breaks a rule: the key, the value, what is wrong and what to write instead.
///
/// `Display` is the whole message, lowercase and without a period: `"{problem}; {fix}"`. The
/// macro shows it at the offending token; the runtime prefixes the field's path
/// (`breakers.graph.cooldown`).
///
/// ```
/// use resilience_policy::check_window;
///
/// let v = check_window(20_000).unwrap_err();
/// assert_eq!(v.key(), "window");
/// assert_eq!(v.value(), "20000");
/// assert_eq!(v.problem(), "`window = 20000` is outside 1..=10000");
/// assert_eq!(v.to_string(), format!("{}; {}", v.problem(), v.fix()));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    key: String,
    value: String,
    problem: String,
    fix: String,
}

impl Violation {
    pub(crate) fn new(
        key: impl Into<String>,
        value: impl Into<String>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> Violation {
        Violation {
            key: key.into(),
            value: value.into(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    /// The key the rule is about, as written in the attribute or the configuration file
    /// (`retries`, `cooldown`, `base`).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The offending value, as the message shows it (`50`, `1month 13h 26m 24s`).
    pub fn value(&self) -> &str {
        &self.value
    }

    /// What is wrong.
    pub fn problem(&self) -> &str {
        &self.problem
    }

    /// What to write instead.
    pub fn fix(&self) -> &str {
        &self.fix
    }

    /// The same violation with another fix, for a caller that knows more of the context (the
    /// macro knows whether `max` was written at all).
    ///
    /// ```
    /// use std::time::Duration;
    /// use resilience_policy::check_backoff_order;
    ///
    /// let v = check_backoff_order(Duration::from_secs(60), Duration::from_secs(30)).unwrap_err();
    /// let v = v.with_fix("set `max` as well, or lower `base`");
    /// assert_eq!(v.to_string(), "backoff `base` (1m) is longer than `max` (30s); set `max` as well, or lower `base`");
    /// ```
    pub fn with_fix(mut self, fix: impl Into<String>) -> Violation {
        self.fix = fix.into();
        self
    }

    /// The same violation showing the value as the user wrote it (`"90s"`), where the rule could
    /// only show the value it was given (`"1m 30s"`): in the message's `` `key = "value"` `` and
    /// in [`Violation::value`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use resilience_policy::check_duration;
    ///
    /// let v = check_duration("per", Duration::from_secs(31 * 86_400)).unwrap_err();
    /// assert_eq!(v.problem(), "`per = \"1month 13h 26m 24s\"` is longer than the limit of 30 days");
    /// let v = v.written_as("31days");
    /// assert_eq!(v.problem(), "`per = \"31days\"` is longer than the limit of 30 days");
    /// assert_eq!(v.value(), "31days");
    /// ```
    pub fn written_as(mut self, text: &str) -> Violation {
        let shown = format!("`{} = \"{}\"`", self.key, self.value);
        let written = format!("`{} = \"{text}\"`", self.key);
        self.problem = self.problem.replacen(&shown, &written, 1);
        self.value = text.to_owned();
        self
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}; {}", self.problem, self.fix)
    }
}

impl Error for Violation {}
