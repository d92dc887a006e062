//! `#[derive(ConnectorError)]`: classes, codes, Retry-After, terminal reasons, delegation and
//! rejections, beside `thiserror`.

use std::time::Duration;

use resilience_runtime::{
    CarriesRejected, Classify, ConnectorError, ErrorClass, Rejected, TerminalReason,
};

#[derive(Debug, thiserror::Error, ConnectorError)]
enum HttpError {
    #[error("http {status}")]
    #[connector(status = status)]
    Status { status: u16 },
    #[error("reset")]
    #[connector(transient, code = "reset")]
    Reset,
}

#[derive(Debug, thiserror::Error, ConnectorError)]
#[connector(default = "permanent")]
enum GraphError {
    #[error("throttled")]
    #[connector(transient, code = "429")]
    Throttled {
        #[connector(retry_after)]
        retry_after: Option<Duration>,
    },
    #[error("token expired")]
    #[connector(auth)]
    Unauthorized,
    #[error("forbidden: {0}")]
    #[connector(policy)]
    Forbidden(String),
    #[error("license cap reached")]
    #[connector(terminal = "license_exhausted")]
    LicenseExhausted,
    #[error(transparent)]
    #[connector(delegate)]
    Http(#[from] HttpError),
    #[error(transparent)]
    #[connector(rejected)]
    Rejected(#[from] Rejected),
    #[error("decode")]
    Decode,
}

#[test]
fn variants_classify_as_marked() {
    let throttled = GraphError::Throttled {
        retry_after: Some(Duration::from_secs(3)),
    };
    assert_eq!(throttled.class(), ErrorClass::Transient);
    assert_eq!(throttled.retry_after(), Some(Duration::from_secs(3)));
    assert_eq!(throttled.code(), Some("429"));
    assert_eq!(GraphError::Unauthorized.class(), ErrorClass::Auth);
    assert_eq!(
        GraphError::Forbidden("scope".into()).class(),
        ErrorClass::PolicyViolation
    );
    assert_eq!(GraphError::Decode.class(), ErrorClass::Permanent);
    assert_eq!(GraphError::Decode.code(), None);
}

#[test]
fn terminal_reasons_carry_their_class_and_code() {
    let e = GraphError::LicenseExhausted;
    assert_eq!(e.terminal_reason(), Some(TerminalReason::LicenseExhausted));
    assert_eq!(e.class(), ErrorClass::Permanent);
    assert_eq!(e.code(), Some("license_exhausted"));
}

#[test]
fn status_fields_use_the_status_table() {
    for (status, class) in [
        (429, ErrorClass::Throttled),
        (503, ErrorClass::Transient),
        (404, ErrorClass::Permanent),
        (401, ErrorClass::Auth),
        (403, ErrorClass::PolicyViolation),
    ] {
        let e = HttpError::Status { status };
        assert_eq!(e.class(), class, "{status}");
        assert_eq!(e.code(), Some(status.to_string().as_str()));
    }
}

#[test]
fn delegate_asks_the_inner_error() {
    let e = GraphError::from(HttpError::Status { status: 502 });
    assert_eq!(e.class(), ErrorClass::Transient);
    assert_eq!(e.code(), Some("502"));
    assert_eq!(GraphError::from(HttpError::Reset).code(), Some("reset"));
}

#[test]
fn the_rejected_variant_carries_rejections() {
    let r = Rejected::AttemptTimeout {
        timeout: Duration::from_secs(10),
    };
    let e = GraphError::from_rejected(r.clone());
    assert_eq!(e.rejected(), Some(&r));
    assert_eq!(e.class(), ErrorClass::Transient);
    assert_eq!(e.code(), Some("timeout"));
    assert_eq!(GraphError::Decode.rejected(), None);
    // thiserror's `#[from]` and `#[error(transparent)]` still work.
    assert_eq!(
        GraphError::from(r).to_string(),
        "attempt timed out after 10s"
    );
}

#[derive(Debug, ConnectorError)]
#[connector(transient)]
struct Busy {
    #[connector(retry_after)]
    wait: Duration,
}

#[derive(Debug, ConnectorError)]
enum Generic<E: std::fmt::Debug> {
    #[connector(delegate)]
    Inner(E),
    #[connector(permanent)]
    Other,
}

#[test]
fn structs_and_generic_errors_derive_too() {
    let b = Busy {
        wait: Duration::from_millis(250),
    };
    assert_eq!(b.class(), ErrorClass::Transient);
    assert_eq!(b.retry_after(), Some(Duration::from_millis(250)));
    let g: Generic<HttpError> = Generic::Inner(HttpError::Status { status: 401 });
    assert_eq!(g.class(), ErrorClass::Auth);
    assert_eq!(Generic::<HttpError>::Other.class(), ErrorClass::Permanent);
}
