//! The runtime's clock: `tokio::time::Instant`, so paused-clock tests drive breakers and backoff.

use std::sync::OnceLock;
use std::time::Duration;

pub(crate) use tokio::time::Instant;

/// A point well before any instant the process will read, so that instants stored as nanoseconds
/// since it are never negative, even when a paused test clock starts before it was taken.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(|| {
        let now = std::time::Instant::now();
        let back = [86_400 * 365, 86_400, 3_600, 60, 0]
            .into_iter()
            .find_map(|s| now.checked_sub(Duration::from_secs(s)))
            .unwrap_or(now);
        Instant::from_std(back)
    })
}

/// Nanoseconds since the epoch, on the (possibly paused) tokio clock.
pub(crate) fn now_nanos() -> u64 {
    let e = epoch();
    u64::try_from(Instant::now().saturating_duration_since(e).as_nanos()).unwrap_or(u64::MAX)
}

pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The instant `nanos` nanoseconds after the epoch (the inverse of [`now_nanos`]).
pub(crate) fn instant_at(nanos: u64) -> Instant {
    let e = epoch();
    e.checked_add(Duration::from_nanos(nanos))
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365 * 30))
}
