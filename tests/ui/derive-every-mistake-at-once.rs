//! Every mistake of one derive is reported in one build, each at its token.
use std::time::Duration;

use resilience_runtime::{ConnectorError, Rejected};

#[derive(Debug, ConnectorError)]
#[connector(breaker = "ignored")]
enum ApiError {
    #[connector(transient, permanent)]
    Busy,
    #[connector(terminal = "licence_exhausted")]
    NoLicense,
    #[connector(status = code)]
    Http { status: u16 },
    #[connector(delegate)]
    Wrapped(std::io::Error, u8),
    #[connector(permanent, code = "")]
    Conflict {
        #[connector(retry_after)]
        wait: Duration,
    },
    #[connector(rejected, breaker = "ignored")]
    Rejected(Rejected),
    #[connector(rejected)]
    AlsoRejected(Rejected),
    Unmarked,
}

fn main() {}
