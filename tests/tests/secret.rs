//! A field marked `#[connector(secret)]` never reaches an error's message: its type must print
//! `[redacted]` (checked at compile time; see `tests/ui/derive-secret-not-redacted.rs`).

use resilience_runtime::redact::Secret;
use resilience_runtime::{Classify, ConnectorError, ErrorClass};

#[derive(Debug, thiserror::Error, ConnectorError)]
pub enum GraphError {
    #[error("token {token} refused for tenant {tenant}")]
    #[connector(auth)]
    Unauthorized {
        #[connector(secret)]
        token: Secret<String>,
        tenant: String,
    },
    #[error("bad credentials {0:?}")]
    #[connector(permanent)]
    BadCredentials(#[connector(secret)] Option<Secret<String>>),
}

#[test]
fn a_secret_field_is_redacted_in_display_and_debug() {
    let e = GraphError::Unauthorized {
        token: Secret::new("eyJhbGciOi.secret".to_owned()),
        tenant: "contoso".into(),
    };
    assert_eq!(e.class(), ErrorClass::Auth);
    for text in [e.to_string(), format!("{e:?}")] {
        assert!(!text.contains("eyJhbGciOi"), "{text}");
        assert!(text.contains("[redacted]"), "{text}");
        assert!(text.contains("contoso"), "{text}");
    }
    let e = GraphError::BadCredentials(Some(Secret::new("hunter2".to_owned())));
    assert!(!e.to_string().contains("hunter2"));
}
