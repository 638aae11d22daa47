//! PostgreSQL I/O has client-side deadlines (ADR 0021): on a link that
//! silently stops carrying packets, a query fails within
//! `database.tcp.user_timeout` instead of hanging for the kernel's ~15
//! minutes of retransmissions (the relay and the webhook committers used
//! to sit there while liveness stayed green).

use std::time::{Duration, Instant};

use keel_testkit::proxy::TcpProxy;
use secrecy::{ExposeSecret, SecretString};

use crate::helpers::spawn_app;

/// The deadline under test, short so the test is.
const USER_TIMEOUT: Duration = Duration::from_secs(2);
/// Far beyond it: a query still pending here is hanging.
const HANGING: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_query_on_a_silently_dropped_link_fails_within_the_deadline_instead_of_hanging() {
    let app = spawn_app().await;
    let mut settings = app.db().settings();
    let mut url = url::Url::parse(settings.url.expose_secret()).unwrap();
    let upstream = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap());
    let proxy = TcpProxy::start(upstream.parse().unwrap()).await;
    url.set_port(Some(proxy.addr().port())).unwrap();
    settings.url = SecretString::from(url.to_string());
    settings.tcp.user_timeout = USER_TIMEOUT;
    let pool = keel_db::connect(&settings, "public", "keel-deadline-test").unwrap();
    let client = pool.get().await.unwrap();
    client.simple_query("SELECT 1").await.unwrap();

    proxy.blackhole();
    // A userspace proxy cannot stop its kernel from acknowledging what
    // arrives, so the dead link is shown the way TCP sees one that takes
    // nothing more: a statement larger than both socket buffers, whose
    // rest can then neither be sent nor acknowledged. TCP_USER_TIMEOUT
    // bounds that exactly as it bounds unacknowledged bytes on a link
    // that lost its packets.
    // (A simple query: one message, no prepare round trip first.)
    let large = format!("SELECT length('{}')", "x".repeat(32 * 1024 * 1024));
    let started = Instant::now();
    let outcome = tokio::time::timeout(HANGING, client.simple_query(&large)).await;
    let elapsed = started.elapsed();
    let error = outcome
        .unwrap_or_else(|_| panic!("the query still hung after {HANGING:?}"))
        .expect_err("nothing crossed the link, yet the query succeeded");
    assert!(
        keel_db::Error::from(error).is_unavailable(),
        "a dead link reads as 'database unavailable' (503, retry)"
    );
    assert!(elapsed < HANGING, "{elapsed:?}");
    // The broken connection is not handed out again.
    drop(client);
    proxy.restore();
    let fresh = pool.get().await.unwrap();
    fresh.simple_query("SELECT 1").await.unwrap();
    app.stop().await;
}
