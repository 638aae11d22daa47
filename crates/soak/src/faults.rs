//! The fault schedule: what is broken, when, for how long, and how long the
//! system took to serve again afterwards.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use keel_contracts::Envelope;
use keel_contracts::events::{DomainEvent, OrderSnapshot};
use uuid::Uuid;

use crate::load::{Delivery, Shared};
use crate::stack::{Dependency, Stack};

/// One fault of the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `kill -9` of the named process, restarted after a second.
    Kill(&'static str),
    /// SIGSTOP, held, then SIGCONT: a hung process.
    Freeze(&'static str),
    /// PostgreSQL `restart -m immediate`; RabbitMQ and Redis stop + start.
    Restart(Dependency),
    /// The proxy closes every connection and refuses new ones.
    Cut(Dependency),
    /// A cut held for minutes (long form only): an outage the outbox and
    /// the retry queues must ride out.
    LongCut(Dependency, u64),
    /// The proxy forwards nothing and closes nothing.
    Blackhole(Dependency),
    /// The proxy delays every chunk.
    Latency(Dependency),
    /// An outbox row with a routing key nobody binds.
    PoisonUnroutable,
    /// An `order.created` whose revenue overflows analytics' bigint.
    PoisonEvent,
    /// A Shopify order whose price is not a number: fails on every attempt.
    PoisonJob,
}

impl Fault {
    /// The kind, for "longest recovery per kind".
    pub fn kind(self) -> String {
        match self {
            Fault::Kill(name) => format!("kill -9 {}", kind_of(name)),
            Fault::Freeze(name) => format!("SIGSTOP {}", kind_of(name)),
            Fault::Restart(d) => format!("restart {}", d.name()),
            Fault::Cut(d) => format!("cut {}", d.name()),
            Fault::LongCut(d, seconds) => format!("{seconds} s outage {}", d.name()),
            Fault::Blackhole(d) => format!("blackhole {}", d.name()),
            Fault::Latency(d) => format!("latency {}", d.name()),
            Fault::PoisonUnroutable => "poison: unroutable outbox row".to_owned(),
            Fault::PoisonEvent => "poison: event failing in SQL".to_owned(),
            Fault::PoisonJob => "poison: job failing every time".to_owned(),
        }
    }

    /// Time a long outage takes beyond its slot (zero for the others).
    pub fn long_secs(self) -> u64 {
        match self {
            Fault::LongCut(_, seconds) => seconds,
            _ => 0,
        }
    }

    pub fn target(self) -> String {
        match self {
            Fault::Kill(name) | Fault::Freeze(name) => name.to_owned(),
            Fault::Restart(d)
            | Fault::Cut(d)
            | Fault::LongCut(d, _)
            | Fault::Blackhole(d)
            | Fault::Latency(d) => d.name().to_owned(),
            _ => "-".to_owned(),
        }
    }
}

fn kind_of(name: &str) -> &str {
    name.split('-').next().unwrap_or(name)
}

/// Every fault kind once, spread so that the same dependency is never hit
/// twice in a row. The unroutable row comes late: a relay it blocks (the
/// finding of issue 14) would otherwise hide what every later fault does.
pub const ROUND: [Fault; 20] = [
    Fault::Latency(Dependency::Postgres),
    Fault::Kill("worker-1"),
    Fault::Cut(Dependency::Redis),
    Fault::Freeze("worker-2"),
    Fault::PoisonEvent,
    Fault::Blackhole(Dependency::Rabbitmq),
    Fault::Kill("gateway-2"),
    Fault::Restart(Dependency::Postgres),
    Fault::Latency(Dependency::Redis),
    Fault::PoisonJob,
    Fault::Cut(Dependency::Postgres),
    Fault::Kill("auth"),
    Fault::Latency(Dependency::Rabbitmq),
    Fault::Restart(Dependency::Redis),
    Fault::Blackhole(Dependency::Redis),
    Fault::Kill("analytics"),
    Fault::Cut(Dependency::Rabbitmq),
    Fault::PoisonUnroutable,
    Fault::Blackhole(Dependency::Postgres),
    Fault::Restart(Dependency::Rabbitmq),
];

/// The long form's extra faults, once each after the first round: a
/// PostgreSQL outage of minutes (analytics must not dead-letter its
/// batches for it) and a RabbitMQ outage (the outbox holds every write).
pub const LONG: [Fault; 2] = [
    Fault::LongCut(Dependency::Postgres, 180),
    Fault::LongCut(Dependency::Rabbitmq, 90),
];

/// Long outages are only in runs at least this long.
pub const LONG_FORM_SECS: u64 = 600;

/// What happened to one injected fault.
#[derive(Debug, Clone)]
pub struct Record {
    pub fault: Fault,
    pub started_ms: u64,
    /// When the fault was lifted (the process restarted, the link restored).
    pub lifted_ms: u64,
    /// When every process was ready and both gateways acknowledged a
    /// signed webhook again; `None` if that never happened within the bound.
    pub recovered_ms: Option<u64>,
    pub note: String,
}

/// The poison injected, for the dead-letter check.
#[derive(Debug, Clone, Default)]
pub struct Poison {
    pub unroutable_rows: Vec<Uuid>,
    pub failing_events: Vec<Uuid>,
    /// The webhook event ids of the failing jobs.
    pub failing_webhook_events: Vec<Uuid>,
}

/// How faults are held.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// How long a windowed fault (cut, blackhole, latency, SIGSTOP) lasts.
    pub hold: Duration,
    pub latency: Duration,
    /// The longest wait for recovery before the fault is marked unrecovered.
    pub recovery_bound: Duration,
}

/// Injects `fault`, holds it, lifts it and measures the recovery.
pub async fn inject(
    fault: Fault,
    stack: &mut Stack,
    shared: &Arc<Shared>,
    db_url: &str,
    poison: &mut Poison,
    timing: Timing,
) -> Record {
    let started_ms = shared.now_ms();
    let note = match apply(fault, stack, shared, db_url, poison, timing).await {
        Ok(note) => note,
        Err(error) => format!("injection failed: {error:#}"),
    };
    let lifted_ms = shared.now_ms();
    let recovered_ms = recover(stack, shared, timing.recovery_bound).await;
    Record {
        fault,
        started_ms,
        lifted_ms,
        recovered_ms,
        note,
    }
}

async fn apply(
    fault: Fault,
    stack: &mut Stack,
    shared: &Arc<Shared>,
    db_url: &str,
    poison: &mut Poison,
    timing: Timing,
) -> Result<String> {
    match fault {
        Fault::Kill(name) => {
            let index = stack.index_of(name).context("no such process")?;
            stack.procs[index].kill9().await?;
            tokio::time::sleep(Duration::from_secs(1)).await;
            stack.procs[index].restart()?;
            Ok(String::new())
        }
        Fault::Freeze(name) => {
            let index = stack.index_of(name).context("no such process")?;
            stack.procs[index].freeze(true).await?;
            tokio::time::sleep(timing.hold).await;
            stack.procs[index].freeze(false).await?;
            Ok(String::new())
        }
        Fault::Restart(dependency) => {
            stack.servers.restart(dependency).await?;
            Ok(String::new())
        }
        Fault::LongCut(d, seconds) => {
            let proxy = &stack.proxies[&d];
            proxy.cut();
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            proxy.restore();
            Ok(String::new())
        }
        Fault::Cut(d) | Fault::Blackhole(d) | Fault::Latency(d) => {
            let proxy = &stack.proxies[&d];
            match fault {
                Fault::Cut(_) => proxy.cut(),
                Fault::Blackhole(_) => proxy.blackhole(),
                _ => proxy.add_latency(timing.latency),
            }
            tokio::time::sleep(timing.hold).await;
            proxy.restore();
            Ok(String::new())
        }
        Fault::PoisonUnroutable => {
            let db = crate::check::connect(db_url).await?;
            let id = Uuid::new_v4();
            db.execute(
                "INSERT INTO store.outbox (id, target, routing_key, message_type, payload) \
                 VALUES ($1, 'jobs', 'soak.nobody-binds-this', 'soak.unroutable', '{}'::jsonb)",
                &[&id],
            )
            .await?;
            poison.unroutable_rows.push(id);
            Ok(format!("outbox row {id}"))
        }
        Fault::PoisonEvent => {
            // Valid JSON and a valid event; the day's EUR revenue plus
            // i64::MAX does not fit analytics' bigint, so its SQL fails.
            let id = Uuid::new_v4();
            let envelope = Envelope::with_id(
                id,
                chrono::Utc::now(),
                DomainEvent::OrderCreated(OrderSnapshot {
                    order_id: Uuid::new_v4(),
                    user_id: None,
                    status: "pending".to_owned(),
                    currency: "EUR".to_owned(),
                    total_cents: i64::MAX,
                    source: "api".to_owned(),
                }),
            );
            let payload = serde_json::to_value(&envelope)?;
            let db = crate::check::connect(db_url).await?;
            db.execute(
                "INSERT INTO store.outbox (id, target, routing_key, message_type, payload) \
                 VALUES ($1, 'events', 'order.created', 'order.created', $2)",
                &[&id, &payload],
            )
            .await?;
            poison.failing_events.push(id);
            Ok(format!("event {id}"))
        }
        Fault::PoisonJob => {
            let delivery = Delivery::poison();
            if !delivery.deliver(shared, true).await {
                anyhow::bail!("the poison delivery was never acknowledged");
            }
            let event = shared
                .ledger()
                .deliveries
                .get(&(delivery.source.to_owned(), delivery.delivery_id.clone()))
                .and_then(|ack| ack.event_ids.iter().next().copied());
            if let Some(event) = event {
                poison.failing_webhook_events.push(event);
            }
            Ok(format!("webhook delivery {}", delivery.delivery_id))
        }
    }
}

/// Waits until every process answers `/readyz` 200 and each gateway
/// acknowledges a signed webhook; the time it happened.
async fn recover(stack: &Stack, shared: &Arc<Shared>, bound: Duration) -> Option<u64> {
    let deadline = Instant::now() + bound;
    let ready = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .ok()?;
    let mut n = 0u64;
    loop {
        let mut all = true;
        for proc in &stack.procs {
            let ok = matches!(
                ready.get(proc.url("/readyz")).send().await,
                Ok(response) if response.status().is_success()
            );
            all &= ok;
            if !all {
                break;
            }
        }
        if all {
            for gateway in stack.gateways() {
                n += 1;
                let delivery = Delivery::new("standard", n);
                all &= delivery.probe(shared, &gateway).await;
            }
        }
        if all {
            return Some(shared.now_ms());
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
