//! Terminal reasons to and from real `tonic::Status` values, across the wire encoding and wrap
//! chains (feature `tonic`).
#![cfg(feature = "tonic")]

use std::error::Error;
use std::fmt;

use resilience_runtime::tonic::{
    DOMAIN, find_status, find_terminal, from_status, rate_limited, retry_delay, to_status,
    to_status_in,
};
use resilience_runtime::{
    Classify, ErrorClass, TerminalError, TerminalReason, find_terminal_reason,
};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// Sends a status the way a server does (headers or trailers) and reads it back as a client does.
fn over_the_wire(status: Status) -> Status {
    let response = status.into_http::<()>();
    Status::from_header_map(response.headers()).expect("a grpc-status header")
}

#[derive(Debug)]
struct Wrap(&'static str, Box<dyn Error + Send + Sync + 'static>);
impl fmt::Display for Wrap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}
impl Error for Wrap {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.1)
    }
}

#[test]
fn every_reason_round_trips_through_the_wire_with_its_code_and_error_info() {
    for reason in TerminalReason::ALL {
        let err = TerminalError::new(reason, format!("{reason}: upstream said no (E0000038)"));
        let status = over_the_wire(to_status(&err));
        let want = if reason == TerminalReason::OperationNotPermitted {
            Code::PermissionDenied
        } else {
            Code::FailedPrecondition
        };
        assert_eq!(status.code(), want, "{reason}");
        assert_eq!(status.message(), err.detail());
        let info = status
            .get_details_error_info()
            .expect("an ErrorInfo detail");
        assert_eq!(info.reason, reason.as_str().to_ascii_uppercase());
        assert_eq!(info.domain, DOMAIN);
        assert_eq!(from_status(&status), Some(err.clone()));
        assert_eq!(find_terminal(&status), Some(err.clone()));
        assert_eq!(status.terminal_reason(), Some(reason));
        assert_eq!(status.class(), reason.class());
        assert!(!status.class().is_retryable());
    }
}

#[test]
fn the_reason_is_found_again_across_wrap_chains() {
    let err = TerminalError::new(
        TerminalReason::TargetManagedExternally,
        "group governed by a rule",
    );

    // A status from the wire, wrapped twice by the caller.
    let status = over_the_wire(Status::from(err.clone()));
    let wrapped = Wrap(
        "grant failed",
        Box::new(Wrap("okta: add member", Box::new(status))),
    );
    assert_eq!(find_terminal(&wrapped), Some(err.clone()));

    // A terminal error a server turned into a status without details (`Status::from_error`):
    // the code is Unknown, but the source chain still holds the reason.
    let lossy = Status::from_error(Box::new(Wrap("grant", Box::new(err.clone()))));
    assert_eq!(lossy.code(), Code::Unknown);
    assert_eq!(find_terminal(&lossy), Some(err.clone()));
    assert_eq!(
        find_terminal_reason(&lossy),
        Some(TerminalReason::TargetManagedExternally)
    );

    // Boxed as `dyn Error`, as application code often holds it.
    let boxed: Box<dyn Error + Send + Sync> = Box::new(Wrap("outer", Box::new(to_status(&err))));
    assert_eq!(find_terminal(&*boxed), Some(err));
}

#[test]
fn foreign_statuses_carry_no_reason_and_classify_by_code() {
    // Another service's ErrorInfo with a reason we do not know.
    let other = Status::with_error_details(
        Code::FailedPrecondition,
        "quota",
        ErrorDetails::with_error_info(
            "QUOTA_PROJECT_MISSING",
            "googleapis.com",
            std::collections::HashMap::new(),
        ),
    );
    assert_eq!(from_status(&over_the_wire(other.clone())), None);
    assert_eq!(other.class(), ErrorClass::Permanent);

    for (code, class) in [
        (Code::Unavailable, ErrorClass::Transient),
        (Code::DeadlineExceeded, ErrorClass::Transient),
        (Code::ResourceExhausted, ErrorClass::Transient),
        (Code::Aborted, ErrorClass::Transient),
        (Code::Unauthenticated, ErrorClass::Auth),
        (Code::PermissionDenied, ErrorClass::PolicyViolation),
        (Code::NotFound, ErrorClass::Permanent),
        (Code::InvalidArgument, ErrorClass::Permanent),
    ] {
        let s = Status::new(code, "x");
        assert_eq!(s.class(), class, "{code:?}");
        assert_eq!(
            Classify::code(&s),
            Some(resilience_runtime::tonic::code_name(code))
        );
        assert_eq!(s.terminal_reason(), None);
    }
}

#[test]
fn a_service_can_name_its_own_domain() {
    let err = TerminalError::new(TerminalReason::LicenseExhausted, "E0000038 seats");
    let status = over_the_wire(to_status_in(&err, "okta.connector.example"));
    assert_eq!(
        status.get_details_error_info().unwrap().domain,
        "okta.connector.example"
    );
    assert_eq!(find_terminal(&status), Some(err));
}

#[test]
fn a_rate_limit_with_retry_info_is_throttled_with_its_hint_across_the_wire_and_wraps() {
    let hint = std::time::Duration::from_millis(1500);
    let status = over_the_wire(rate_limited("grants per minute exceeded", hint));
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(retry_delay(&status), Some(hint));
    assert_eq!(status.class(), ErrorClass::Throttled);
    assert_eq!(status.retry_after(), Some(hint));
    assert_eq!(status.terminal_reason(), None);

    // Found again in a wrap chain, as a caller's error type holds it.
    let wrapped = Wrap("grant", Box::new(Wrap("rpc", Box::new(status))));
    let found = find_status(&wrapped).expect("the status in the chain");
    assert_eq!(
        (found.class(), found.retry_after()),
        (ErrorClass::Throttled, Some(hint))
    );
    assert!(find_status(&Wrap("plain", Box::new(std::fmt::Error))).is_none());

    // Without RetryInfo a RESOURCE_EXHAUSTED stays transient, with no hint; a RetryInfo on
    // another code is a hint, not a class.
    let bare = Status::new(Code::ResourceExhausted, "quota");
    assert_eq!(
        (bare.class(), bare.retry_after()),
        (ErrorClass::Transient, None)
    );
    let unavailable = Status::with_error_details(
        Code::Unavailable,
        "draining",
        ErrorDetails::with_retry_info(Some(hint)),
    );
    assert_eq!(
        (unavailable.class(), unavailable.retry_after()),
        (ErrorClass::Transient, Some(hint))
    );
}
