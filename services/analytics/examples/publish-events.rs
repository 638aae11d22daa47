//! Benchmark helper (`scripts/bench analytics`): publishes N pre-built
//! domain events to `{ns}.events` with publisher confirms, many in flight,
//! after declaring `{ns}.events.analytics` so none is unroutable.
//!
//! `publish-events <count> [days]`, broker from `KEEL_AMQP__URL` and
//! `KEEL_AMQP__NAMESPACE`. Events spread over the last `days` (default 1),
//! 10,000 users, three currencies; the mix resembles a store's traffic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::cast_precision_loss
)]

use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use keel_contracts::Envelope;
use keel_contracts::events::{
    DomainEvent, ExportCompleted, OrderSnapshot, OrderUpdated, UserLoggedIn, UserRegistered,
    WebhookReceived,
};
use keel_messaging::{AmqpSettings, Broker, Publisher};
use uuid::Uuid;

/// A cheap deterministic generator (xorshift): no RNG dependency needed.
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn event(rng: &mut Xorshift, users: &[Uuid], days: i64) -> Envelope<DomainEvent> {
    let user = users[usize::try_from(rng.below(users.len() as u64)).unwrap()];
    let span = days * 86_400_000;
    let at = Utc::now()
        - chrono::TimeDelta::milliseconds(i64::try_from(rng.below(span as u64)).unwrap());
    let order = |rng: &mut Xorshift, status: &str| OrderSnapshot {
        order_id: Uuid::now_v7(),
        user_id: Some(user),
        status: status.to_owned(),
        currency: ["EUR", "USD", "GBP"][usize::try_from(rng.below(3)).unwrap()].to_owned(),
        total_cents: i64::try_from(100 + rng.below(20_000)).unwrap(),
        source: "api".to_owned(),
    };
    let body = match rng.below(20) {
        0..=7 => DomainEvent::OrderCreated(order(rng, "pending")),
        8..=11 => DomainEvent::UserLoggedIn(UserLoggedIn {
            user_id: user,
            session_id: Uuid::now_v7(),
        }),
        12..=13 => DomainEvent::UserRegistered(UserRegistered {
            user_id: user,
            registered_at: at,
        }),
        14..=16 => DomainEvent::WebhookReceived(WebhookReceived {
            event_id: Uuid::now_v7(),
            source: "shopify".to_owned(),
            topic: Some("orders/create".to_owned()),
        }),
        17..=18 => DomainEvent::OrderUpdated(OrderUpdated {
            order: order(rng, "paid"),
            previous_status: "pending".to_owned(),
        }),
        _ => DomainEvent::ExportCompleted(ExportCompleted {
            export_id: Uuid::now_v7(),
            user_id: user,
            rows_written: 100,
            bytes: 10_000,
        }),
    };
    Envelope::with_id(Uuid::now_v7(), at, body)
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let count: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .expect("usage: publish-events <count> [days]");
    let days: i64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let settings = AmqpSettings {
        url: secrecy::SecretString::from(std::env::var("KEEL_AMQP__URL").expect("KEEL_AMQP__URL")),
        namespace: std::env::var("KEEL_AMQP__NAMESPACE").expect("KEEL_AMQP__NAMESPACE"),
        publish_timeout: Duration::from_secs(60),
        ..AmqpSettings::default()
    };
    let broker = Broker::new(settings, "bench-publisher");
    let channel = broker.channel().await.expect("broker reachable");
    broker
        .topology()
        .declare_event_queue(&channel, analytics::ingest::CONSUMER, &["#"])
        .await
        .expect("queue declared");

    // Built first, so the timed part is publishing only.
    let mut rng = Xorshift(0x9E37_79B9_7F4A_7C15);
    let users: Vec<Uuid> = (0..10_000).map(|_| Uuid::new_v4()).collect();
    let events: Vec<Envelope<DomainEvent>> =
        (0..count).map(|_| event(&mut rng, &users, days)).collect();

    let publisher = Publisher::new(broker.clone());
    let started = Instant::now();
    let published = futures::stream::iter(events.iter())
        .map(|e| publisher.publish_event(e))
        .buffer_unordered(512)
        .filter(|r| std::future::ready(r.is_ok()))
        .count()
        .await;
    let seconds = started.elapsed().as_secs_f64();
    broker.close().await;
    // One JSON line for the bench script.
    println!(
        "{{\"published\": {published}, \"seconds\": {seconds:.3}, \"rate\": {:.1}}}",
        published as f64 / seconds
    );
    assert_eq!(published, count, "some publishes failed");
}
