//! The `connector` label of annotated sites, in the Prometheus exposition: the crate's name
//! (this test's crate is `metrics`) whether or not the site has a breaker and whatever module it
//! is in, or the attribute's `connector = "..."`.

use std::time::Duration;

use resilience_runtime::{ConnectorError, Registry, Rejected, prometheus, resilient};

#[derive(Debug, ConnectorError)]
enum E {
    #[connector(transient)]
    Busy,
    #[connector(rejected)]
    Rejected(Rejected),
}

#[resilient]
async fn plain() -> Result<u32, E> {
    Ok(1)
}

#[resilient(breaker = "metrics_graph")]
async fn guarded() -> Result<u32, E> {
    Err(E::Busy)
}

mod client {
    use super::*;

    #[resilient(timeout = "100ms")]
    pub async fn nested() -> Result<u32, E> {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok(1)
    }

    #[resilient(connector = "msgraph", breaker = "metrics_graph")]
    pub async fn labelled() -> Result<u32, E> {
        Ok(1)
    }
}

/// The exposition's line for one series, whole.
fn line<'a>(text: &'a str, series: &str) -> &'a str {
    let found: Vec<&str> = text
        .lines()
        .filter(|l| l.rsplit_once(' ').is_some_and(|(s, _)| s == series))
        .collect();
    assert_eq!(found.len(), 1, "{series}:\n{text}");
    found[0]
}

#[tokio::test(start_paused = true)]
async fn sites_are_labelled_with_their_crate_or_their_connector() {
    let registry = Registry::new();
    registry
        .scope(async {
            assert_eq!(plain().await.unwrap(), 1);
            assert!(matches!(guarded().await, Err(E::Busy)));
            assert!(matches!(
                client::nested().await,
                Err(E::Rejected(Rejected::AttemptTimeout { .. }))
            ));
            assert_eq!(client::labelled().await.unwrap(), 1);
        })
        .await;
    let text = prometheus::encode(&registry).unwrap();

    // Without a breaker, with one, in a nested module: one connector, the crate's.
    line(
        &text,
        r#"requests_total{connector="metrics",operation="plain",status="ok"}"#,
    );
    line(
        &text,
        r#"requests_total{connector="metrics",operation="guarded",status="transient"}"#,
    );
    assert_eq!(
        line(
            &text,
            r#"requests_total{connector="metrics",operation="nested",status="rejected",reason="timeout"}"#
        )
        .rsplit_once(' ')
        .map(|(_, v)| v),
        Some("1")
    );
    // `connector = "..."` overrides it.
    line(
        &text,
        r#"requests_total{connector="msgraph",operation="labelled",status="ok"}"#,
    );
    for l in text.lines().filter(|l| l.contains("connector=")) {
        assert!(
            l.contains(r#"connector="metrics""#)
                || l.contains(r#"connector="msgraph""#)
                // The breaker's state is labelled with the breaker.
                || l.starts_with(r#"circuit_breaker_state{connector="metrics_graph"}"#),
            "{l}"
        );
    }
}
