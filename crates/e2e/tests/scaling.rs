//! Scaling proof: worker processes scaled 1 → 4 → 1 while 20,000 webhook
//! jobs flow. Scale-up is starting processes; scale-down is SIGTERM, as a
//! Deployment scaled by KEDA or an HPA does it. Every job must be applied
//! exactly once: nothing lost to a worker that stopped mid-job, nothing
//! applied twice because a message came back.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use keel_e2e::{Backing, Process, Service};
use keel_webhooks::{NewEvent, capture};

const JOBS: u64 = 20_000;
/// Scale up after this many are applied, and down again after this many.
const SCALE_UP_AT: i64 = 4_000;
const SCALE_DOWN_AT: i64 = 12_000;
const WRITERS: u64 = 4;

fn shopify_order(id: u64) -> Vec<u8> {
    serde_json::json!({
        "id": id,
        "email": "scale@example.com",
        "currency": "EUR",
        "total_price": "12.50",
        "line_items": [{"id": id, "sku": "SCALE-1", "quantity": 1, "price": "12.50"}],
    })
    .to_string()
    .into_bytes()
}

async fn applied(pool: &keel_testkit::database::TestDatabase) -> i64 {
    let client = pool.pool().get().await.unwrap();
    client
        .query_one(
            "SELECT count(*) FROM webhook_events WHERE status = 'processed'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// Waits until at least `target` events are applied; returns when that was.
async fn wait_applied(backing: &Backing, target: i64, workers: &[Process], within: Duration) {
    let deadline = Instant::now() + within;
    let mut last_report = Instant::now();
    loop {
        let done = applied(&backing.database).await;
        if done >= target {
            return;
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            println!("  … {done} applied, {} worker(s)", workers.len());
            last_report = Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "fewer than {target} jobs applied within {within:?} ({} so far)\n{}",
            applied(&backing.database).await,
            workers
                .iter()
                .map(|w| w.log_tail(10))
                .collect::<Vec<_>>()
                .join("\n---\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_scaled_1_4_1_under_flowing_jobs_apply_every_job_exactly_once() {
    let backing = Backing::new().await;
    let mut env = backing.env();
    env.extend([
        // The cache announcement is not what this proves; keep Redis out.
        ("KEEL_ORDER_CACHE__ENABLED".to_owned(), "false".to_owned()),
        ("KEEL_DATABASE__MAX_CONNECTIONS".to_owned(), "8".to_owned()),
        // A job in flight holds a connection: no more of them than the pool
        // (the worker refuses such settings at start, ADR 0026).
        ("KEEL_JOBS__WEBHOOK__CONCURRENCY".to_owned(), "8".to_owned()),
    ]);
    let mut next_log = 0;
    let mut start_worker = async |env: &[(String, String)]| {
        next_log += 1;
        Process::start(
            Service::Worker,
            env,
            backing.log(&format!("worker-{next_log}")),
        )
        .await
    };

    // One worker; it also migrates the schema the captures write to.
    let mut workers = vec![start_worker(&env).await];

    // Jobs flow in the whole time: captured by several writers, as gateway
    // replicas would, while the worker count changes underneath.
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..WRITERS {
        let pool = backing.database.pool().clone();
        writers.spawn(async move {
            let client = pool.get().await.unwrap();
            let headers = serde_json::json!({});
            for n in (writer..JOBS).step_by(WRITERS as usize) {
                let id = 5_000_000 + n;
                capture(
                    &client,
                    &NewEvent {
                        source: "shopify",
                        topic: Some("orders/create"),
                        delivery_id: &format!("scale-{id}"),
                        body: &shopify_order(id),
                        headers: &headers,
                    },
                )
                .await
                .unwrap();
            }
        });
    }

    let mut phases: Vec<(usize, i64, Duration)> = Vec::new();
    let started = Instant::now();
    wait_applied(&backing, SCALE_UP_AT, &workers, Duration::from_secs(120)).await;
    phases.push((1, SCALE_UP_AT, started.elapsed()));

    // Scale up to 4.
    for _ in 0..3 {
        workers.push(start_worker(&env).await);
    }
    let up = Instant::now();
    let at_up = applied(&backing.database).await;
    wait_applied(&backing, SCALE_DOWN_AT, &workers, Duration::from_secs(120)).await;
    let at_down = applied(&backing.database).await;
    phases.push((4, at_down - at_up, up.elapsed()));

    // Scale down to 1: SIGTERM three of them mid-flow; each finishes what
    // it holds and exits 0, the rest of its prefetch returns to the queue.
    let down = Instant::now();
    let mut stopping = tokio::task::JoinSet::new();
    for worker in workers.drain(1..) {
        stopping.spawn(worker.terminate(Duration::from_secs(40)));
    }
    for code in stopping.join_all().await {
        assert_eq!(
            code,
            Some(0),
            "a scaled-down worker did not exit 0 on SIGTERM"
        );
    }
    writers.join_all().await;
    // Captures write no NOTIFY (group commit): wake the relays so the last
    // rows do not wait for their poll.
    keel_outbox::wake_relays(&backing.database.pool().get().await.unwrap())
        .await
        .unwrap();
    wait_applied(&backing, JOBS as i64, &workers, Duration::from_secs(180)).await;
    phases.push((1, JOBS as i64 - at_down, down.elapsed()));

    // Exactly once: one order per Shopify id, one order.created each, no
    // event left unprocessed or failed, nothing dead-lettered.
    let client = backing.database.pool().get().await.unwrap();
    let count = |sql: &'static str| {
        let client = &client;
        async move { client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    let events = count("SELECT count(*) FROM webhook_events").await;
    let processed = count("SELECT count(*) FROM webhook_events WHERE status = 'processed'").await;
    let orders = count("SELECT count(*) FROM orders WHERE source = 'webhook:shopify'").await;
    let distinct =
        count("SELECT count(DISTINCT external_id) FROM orders WHERE source = 'webhook:shopify'")
            .await;
    let created = count("SELECT count(*) FROM outbox WHERE message_type = 'order.created'").await;
    let dead = count("SELECT count(*) FROM dead_letters").await;
    println!(
        "scaling proof: {JOBS} jobs sent, {processed} applied, {} duplicated, {dead} dead-lettered",
        created - distinct
    );
    for (workers, jobs, took) in &phases {
        println!(
            "  {workers} worker(s): {jobs} jobs in {:.1} s = {:.0} jobs/s",
            took.as_secs_f64(),
            *jobs as f64 / took.as_secs_f64()
        );
    }
    assert_eq!(events, JOBS as i64);
    assert_eq!(processed, JOBS as i64);
    assert_eq!(orders, JOBS as i64);
    assert_eq!(distinct, JOBS as i64);
    assert_eq!(
        created, JOBS as i64,
        "an order.created per order, none twice"
    );
    assert_eq!(dead, 0);

    for worker in workers {
        assert_eq!(worker.terminate(Duration::from_secs(40)).await, Some(0));
    }
    drop(client);
    backing.cleanup().await;
}
