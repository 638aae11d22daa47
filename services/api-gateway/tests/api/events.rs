//! `GET /api/v1/events` through the real gateway: real access tokens, the
//! edge middleware, the events area as wired in `startup.rs`. Export
//! outcomes are written as the worker writes them (`keel_commerce::exports`:
//! the final status and its event in one transaction) and reach the
//! stream through the outbox relay, `{ns}.events` and this gateway's own
//! queue.

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use keel_commerce::exports::{self, NewExport, RawNewExport, Start, Written};
use keel_contracts::events::ExportCompleted;
use keel_contracts::{DomainEvent, Envelope};
use serde_json::Value;
use uuid::Uuid;

use crate::auth_support::{FakeUpstream, bearer};
use crate::helpers::{TestApp, spawn_app_behind_proxies_with, spawn_app_with};

/// Long enough for the relay and the broker on a loaded machine; a test
/// only waits this long when it is about to fail.
const PATIENCE: Duration = Duration::from_secs(20);

/// One Server-Sent Events block.
#[derive(Debug, Clone, Default, PartialEq)]
struct Frame {
    id: Option<String>,
    event: Option<String>,
    data: Option<String>,
    retry: Option<String>,
    comments: Vec<String>,
}

impl Frame {
    fn parse(block: &str) -> Self {
        let mut frame = Frame::default();
        for line in block.lines() {
            if let Some(comment) = line.strip_prefix(':') {
                frame.comments.push(comment.trim().to_owned());
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
            match field {
                "id" => frame.id = Some(value),
                "event" => frame.event = Some(value),
                "retry" => frame.retry = Some(value),
                "data" => {
                    frame.data = Some(match frame.data.take() {
                        Some(previous) => format!("{previous}\n{value}"),
                        None => value,
                    })
                }
                other => panic!("unexpected field {other:?} in {block:?}"),
            }
        }
        frame
    }

    fn is_event(&self) -> bool {
        self.event.is_some()
    }

    fn export(&self) -> Value {
        serde_json::from_str(self.data.as_deref().unwrap()).unwrap()
    }
}

/// A streaming SSE client over reqwest.
struct SseClient {
    body: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    buffer: String,
}

impl SseClient {
    async fn connect(app: &TestApp, token: &str, last_event_id: Option<&str>) -> Self {
        let response = request(app, token, last_event_id).await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        Self::from_response(response)
    }

    fn from_response(response: reqwest::Response) -> Self {
        Self {
            body: Box::pin(response.bytes_stream()),
            buffer: String::new(),
        }
    }

    /// The next block, `None` when the stream ended.
    async fn next_frame(&mut self) -> Option<Frame> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                return Some(Frame::parse(block.trim_end()));
            }
            match tokio::time::timeout(PATIENCE, self.body.next())
                .await
                .expect("the stream writes something (a heartbeat at least) in time")
            {
                Some(chunk) => self
                    .buffer
                    .push_str(std::str::from_utf8(&chunk.expect("the stream reads")).unwrap()),
                None => return None,
            }
        }
    }

    /// The next event, skipping `retry:` and heartbeats.
    async fn next_event(&mut self) -> Frame {
        loop {
            let frame = self.next_frame().await.expect("the stream stays open");
            if frame.is_event() {
                return frame;
            }
        }
    }
}

async fn request(app: &TestApp, token: &str, last_event_id: Option<&str>) -> reqwest::Response {
    let mut request = app
        .client
        .get(format!("{}/api/v1/events", app.address))
        .header("authorization", bearer(token))
        .header("accept", "text/event-stream");
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    request.send().await.unwrap()
}

/// An export of `user` taken to `succeeded` as the worker does it: the
/// status change and `export.completed` commit together, then the relay
/// publishes the event.
async fn finish_export(app: &TestApp, user: Uuid) -> Uuid {
    let mut client = app.db().pool().get().await.unwrap();
    let new = NewExport::parse(
        RawNewExport {
            resource: Some("orders".into()),
            format: Some("csv".into()),
            ..Default::default()
        },
        user,
        false,
    )
    .unwrap();
    let export = exports::create(&mut client, &new, 100).await.unwrap();
    let started = exports::start(&mut client, export.id).await.unwrap();
    assert!(matches!(started, Start::Run(_)));
    let written = Written {
        rows: 3,
        bytes: 42,
        sha256: "a".repeat(64),
    };
    exports::succeed(&mut client, export.id, &written, Duration::from_secs(3600))
        .await
        .unwrap();
    // As the worker does after its commit: the relay publishes now rather
    // than at its next poll.
    keel_outbox::wake_relays(&client).await.unwrap();
    export.id
}

async fn app_with(
    configure: impl FnOnce(&mut api_gateway::settings::Settings),
) -> (FakeUpstream, TestApp) {
    let upstream = FakeUpstream::start().await;
    let app = spawn_app_with(|settings| {
        upstream.configure(settings);
        configure(settings);
    })
    .await;
    (upstream, app)
}

#[tokio::test]
async fn a_stream_receives_its_own_export_completed_and_nothing_of_another_users() {
    let (upstream, app) = app_with(|_| {}).await;
    let (alice, alice_token) = upstream.customer_token();
    let (bob, bob_token) = upstream.customer_token();
    let mut alices = SseClient::connect(&app, &alice_token, None).await;
    let mut bobs = SseClient::connect(&app, &bob_token, None).await;
    assert_eq!(
        alices.next_frame().await.unwrap().retry.as_deref(),
        Some("3000")
    );

    // Bob's export first, and seen by Bob's stream before Alice's export
    // exists: had it leaked into Alice's stream it would come first there.
    let bobs_export = finish_export(&app, bob).await;
    let frame = bobs.next_event().await;
    assert_eq!(frame.event.as_deref(), Some("export.completed"));
    assert_eq!(frame.export()["id"], bobs_export.to_string());

    let alices_export = finish_export(&app, alice).await;
    let frame = alices.next_event().await;
    assert_eq!(frame.event.as_deref(), Some("export.completed"));
    let export = frame.export();
    assert_eq!(export["id"], alices_export.to_string());
    assert_eq!(export["status"], "succeeded");
    assert_eq!(export["rows_written"], 3);
    assert_eq!(export["sha256"], "a".repeat(64));
    assert!(export.get("user_id").is_none(), "{export}");
    // Minted as GET /api/v1/exports/{id} mints it: a browser can follow it.
    let download_url = export["download_url"].as_str().unwrap();
    assert!(
        download_url.starts_with(&format!(
            "/api/v1/exports/{alices_export}/download?expires="
        )),
        "{download_url}"
    );
    let id = frame.id.unwrap();
    assert!(
        id.ends_with(&format!("-{alices_export}")),
        "the id names the export: {id}"
    );

    let metrics = app.get("/metrics").await.text().await.unwrap();
    for line in [
        "keel_events_streams_open 2",
        r#"keel_events_delivered_total{event="export.completed"} 2"#,
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line} in:\n{metrics}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn the_subscription_comes_back_after_a_broker_outage_and_nothing_is_lost() {
    let upstream = FakeUpstream::start().await;
    let app = spawn_app_behind_proxies_with(|settings| upstream.configure(settings)).await;
    let (alice, token) = upstream.customer_token();
    let mut stream = SseClient::connect(&app, &token, None).await;
    let proxies = app.proxies.as_ref().unwrap();
    // An event delivered proves the subscription is up (live, through its
    // queue, or by the catch-up it triggers once it is).
    let before = finish_export(&app, alice).await;
    assert_eq!(stream.next_event().await.export()["id"], before.to_string());

    // The gateway's connection (its exclusive queue with it) goes away; an
    // export finishes meanwhile and its event waits in the outbox.
    proxies.rabbitmq.cut();
    let during = finish_export(&app, alice).await;
    proxies.rabbitmq.restore();
    // Published once the relay reconnects: live if the new queue is bound
    // by then, else by the catch-up every stream does when it is.
    assert_eq!(stream.next_event().await.export()["id"], during.to_string());

    // The subscription is back (the event above needed it either way), so
    // this one can only arrive through the re-declared, re-bound queue.
    let after = finish_export(&app, alice).await;
    assert_eq!(stream.next_event().await.export()["id"], after.to_string());
    app.stop().await;
}

#[tokio::test]
async fn an_idle_stream_gets_heartbeats() {
    let (upstream, app) = app_with(|s| {
        s.events.heartbeat_interval = Duration::from_millis(200);
    })
    .await;
    let (_, token) = upstream.customer_token();
    let mut stream = SseClient::connect(&app, &token, None).await;
    let first = stream.next_frame().await.unwrap();
    assert_eq!(first.retry.as_deref(), Some("3000"));
    let heartbeat = stream.next_frame().await.unwrap();
    assert_eq!(heartbeat.comments, vec!["ping".to_owned()]);
    assert!(!heartbeat.is_event());
    app.stop().await;
}

#[tokio::test]
async fn resuming_with_last_event_id_replays_what_finished_while_disconnected_exactly_once() {
    let (upstream, app) = app_with(|_| {}).await;
    let (alice, token) = upstream.customer_token();

    let mut first = SseClient::connect(&app, &token, None).await;
    let before = finish_export(&app, alice).await;
    let seen = first.next_event().await;
    assert_eq!(seen.export()["id"], before.to_string());
    let last_event_id = seen.id.unwrap();
    drop(first);

    // Finishes while no stream is open.
    let missed = finish_export(&app, alice).await;

    let mut resumed = SseClient::connect(&app, &token, Some(&last_event_id)).await;
    let replayed = resumed.next_event().await;
    assert_eq!(replayed.event.as_deref(), Some("export.completed"));
    assert_eq!(replayed.export()["id"], missed.to_string());
    let missed_id = replayed.id.clone().unwrap();
    assert!(
        missed_id > last_event_id,
        "{missed_id} after {last_event_id}"
    );

    // The missed export's event also arrives live (published late, or
    // again by a relay that retried): the stream has written it already.
    let client = app.db().pool().get().await.unwrap();
    keel_outbox::enqueue_event(
        &client,
        &Envelope::new(DomainEvent::ExportCompleted(ExportCompleted {
            export_id: missed,
            user_id: alice,
            rows_written: 3,
            bytes: 42,
        })),
    )
    .await
    .unwrap();
    keel_outbox::wake_relays(&client).await.unwrap();
    drop(client);
    let after = finish_export(&app, alice).await;
    let next = resumed.next_event().await;
    assert_eq!(
        next.export()["id"],
        after.to_string(),
        "the missed export is written once, then the next one"
    );

    // Clients that cannot set headers resume with the query parameter.
    let response = app
        .client
        .get(format!(
            "{}/api/v1/events?last_event_id={last_event_id}",
            app.address
        ))
        .header("authorization", bearer(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut by_query = SseClient::from_response(response);
    assert_eq!(
        by_query.next_event().await.export()["id"],
        missed.to_string()
    );
    assert_eq!(
        by_query.next_event().await.export()["id"],
        after.to_string()
    );
    app.stop().await;
}

#[tokio::test]
async fn a_stream_without_a_token_is_refused() {
    let (_upstream, app) = app_with(|_| {}).await;
    let response = app.get("/api/v1/events").await;
    assert_eq!(response.status(), 401);
    assert!(response.headers().contains_key("www-authenticate"));
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_malformed_last_event_id_is_a_400_naming_it() {
    let (upstream, app) = app_with(|_| {}).await;
    let (_, token) = upstream.customer_token();
    let response = request(&app, &token, Some("yesterday")).await;
    assert_eq!(response.status(), 400);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "Last-Event-ID");
    app.stop().await;
}

#[tokio::test]
async fn streams_past_the_per_user_cap_are_refused_with_429() {
    let (upstream, app) = app_with(|s| s.events.max_streams_per_user = 1).await;
    let (_, token) = upstream.customer_token();
    let (_, someone_else) = upstream.customer_token();
    let _open = SseClient::connect(&app, &token, None).await;
    let refused = request(&app, &token, None).await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    // The cap is per user.
    let _other = SseClient::connect(&app, &someone_else, None).await;
    app.stop().await;
}

#[tokio::test]
async fn open_streams_end_when_the_gateway_stops_instead_of_holding_its_drain() {
    let (upstream, app) = app_with(|s| {
        s.http.shutdown_grace = Duration::from_secs(60);
    })
    .await;
    let (_, token) = upstream.customer_token();
    let mut stream = SseClient::connect(&app, &token, None).await;
    assert!(stream.next_frame().await.unwrap().retry.is_some());
    // Well under the 60 s grace the server would otherwise wait out.
    tokio::time::timeout(Duration::from_secs(20), app.stop())
        .await
        .expect("the gateway stops without waiting for the open stream");
    assert_eq!(stream.next_frame().await, None, "the stream ended cleanly");
}

#[tokio::test]
async fn a_browser_page_may_send_last_event_id_cross_origin() {
    let (_upstream, app) = app_with(|_| {}).await;
    let origin = "http://localhost:5173";
    let response = app
        .client
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/api/v1/events", app.address),
        )
        .header("origin", origin)
        .header("access-control-request-method", "GET")
        .header(
            "access-control-request-headers",
            "authorization,last-event-id",
        )
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    assert_eq!(response.headers()["access-control-allow-origin"], origin);
    let allowed = response.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(allowed.contains("last-event-id"), "{allowed}");
    app.stop().await;
}
