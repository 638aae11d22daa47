//! `/api/v1/orders`: create, get, list, transitions, cancel, validation,
//! scoping, ETags and the outbox, against real PostgreSQL and Redis.

use reqwest::Method;
use serde_json::{Value, json};

use crate::orders_support::{As, OrdersEnv, outbox_events, sample_order};

#[tokio::test]
async fn creating_an_order_answers_201_with_the_order_and_its_location() {
    let env = OrdersEnv::new().await;
    let app = env.spawn().await;
    let me = As::customer();

    let response = app.create(me, &sample_order()).await;

    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert!(response.headers().contains_key("etag"));
    let order: Value = response.json().await.unwrap();
    assert_eq!(
        location,
        format!("/api/v1/orders/{}", order["id"].as_str().unwrap())
    );
    assert_eq!(order["status"], "pending");
    assert_eq!(order["currency"], "EUR");
    assert_eq!(order["total_cents"], 2 * 1500 + 899);
    assert_eq!(order["user_id"], me.user.to_string());
    assert_eq!(order["source"], "api");
    assert_eq!(order["external_id"], Value::Null);
    assert_eq!(order["customer_email"], "ada@example.com");
    // Only webhook orders have one (recorded by the worker).
    assert_eq!(order["fulfillment_status"], Value::Null);
    assert_eq!(
        order["items"],
        json!([
            {"sku": "TSHIRT-M", "quantity": 2, "unit_price_cents": 1500},
            {"sku": "MUG", "quantity": 1, "unit_price_cents": 899}
        ])
    );
    let keys: Vec<&str> = order
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut keys = keys;
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "created_at",
            "currency",
            "customer_email",
            "external_id",
            "fulfillment_status",
            "id",
            "items",
            "source",
            "status",
            "total_cents",
            "updated_at",
            "user_id"
        ]
    );

    let fetched = app.get(me, order["id"].as_str().unwrap()).await;
    assert_eq!(fetched.status(), 200);
    assert_eq!(fetched.json::<Value>().await.unwrap(), order);
}

#[tokio::test]
async fn creating_an_order_writes_order_created_to_the_outbox() {
    let env = OrdersEnv::new().await;
    let app = env.spawn().await;
    let order = app.create_ok(As::customer()).await;

    let events = outbox_events(env.pool(), "order.created").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["data"]["order_id"], order["id"]);
    assert_eq!(events[0]["data"]["total_cents"], order["total_cents"]);
    assert_eq!(events[0]["data"]["status"], "pending");
}

#[tokio::test]
async fn invalid_orders_are_refused_with_422_naming_each_field() {
    let env = OrdersEnv::new().await;
    let app = env.spawn().await;
    let body = json!({
        "currency": "eur",
        "items": [
            {"sku": "OK", "quantity": 1, "unit_price_cents": 100},
            {"sku": "", "quantity": 10001, "unit_price_cents": -5}
        ],
        "customer_email": "not-an-email"
    });

    let response = app.create(As::customer(), &body).await;

    assert_eq!(response.status(), 422);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = response.json().await.unwrap();
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "currency",
            "customer_email",
            "items[1].sku",
            "items[1].quantity",
            "items[1].unit_price_cents"
        ]
    );
    assert!(outbox_events(env.pool(), "order.created").await.is_empty());
}

#[tokio::test]
async fn a_wrongly_typed_field_is_named_too() {
    let env = OrdersEnv::new().await;
    let app = env.spawn().await;
    let body = json!({"currency": "EUR", "items": [{"sku": "A", "quantity": "two", "unit_price_cents": 1}]});

    let response = app.create(As::customer(), &body).await;

    assert_eq!(response.status(), 422);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "items[0].quantity");
}

#[tokio::test]
async fn someone_elses_order_is_not_found() {
    let env = OrdersEnv::new().await;
    let app = env.spawn().await;
    let order = app.create_ok(As::customer()).await;
    let id = order["id"].as_str().unwrap();
    let stranger = As::customer();

    // Twice: the second read would come from the cache.
    for _ in 0..2 {
        let response = app.get(stranger, id).await;
        assert_eq!(response.status(), 404);
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
    }
    // 404 before anything is said about the status asked for.
    for status in ["paid", "cancelled"] {
        assert_eq!(app.patch_status(stranger, id, status).await.status(), 404);
    }
    assert_eq!(app.cancel(stranger, id).await.status(), 404);
    // An admin sees it.
    assert_eq!(app.get(As::admin(), id).await.status(), 200);
}

#[tokio::test]
async fn unknown_and_malformed_ids_are_not_found() {
    let env = OrdersEnv::new().await;
    let app = env.spawn().await;
    let me = As::customer();
    assert_eq!(
        app.get(me, &uuid::Uuid::new_v4().to_string())
            .await
            .status(),
        404
    );
    assert_eq!(app.get(me, "not-a-uuid").await.status(), 404);
}

#[tokio::test]
async fn orders_need_a_caller() {
    let env = OrdersEnv::new().await;
    let app = env.spawn().await;
    let response = app
        .client
        .get(format!("{}/api/v1/orders", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(response.headers().contains_key("www-authenticate"));
}

#[tokio::test]
async fn an_admin_moves_an_order_through_its_states_and_each_change_is_an_event() {
    let env = OrdersEnv::new().await;
    let app = env.spawn().await;
    let (me, admin) = (As::customer(), As::admin());
    let order = app.create_ok(me).await;
    let id = order["id"].as_str().unwrap();

    let paid = app.patch_status(admin, id, "paid").await;
    assert_eq!(paid.status(), 200);
    let paid: Value = paid.json().await.unwrap();
    assert_eq!(paid["status"], "paid");
    assert!(paid["updated_at"].as_str() > order["updated_at"].as_str());

    let fulfilled: Value = app
        .patch_status(admin, id, "fulfilled")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(fulfilled["status"], "fulfilled");

    let events = outbox_events(env.pool(), "order.updated").await;
    let changes: Vec<(&str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["data"]["previous_status"].as_str().unwrap(),
                e["data"]["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(changes, [("pending", "paid"), ("paid", "fulfilled")]);
}

#[tokio::test]
async fn an_illegal_transition_is_a_409_and_changes_nothing() {
    let env = OrdersEnv::new().await;
    let app = env.spawn().await;
    let me = As::customer();
    let order = app.create_ok(me).await;
    let id = order["id"].as_str().unwrap();

    let response = app.patch_status(As::admin(), id, "fulfilled").await;

    assert_eq!(response.status(), 409);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["type"], "urn:keel:problem:illegal-transition");
    let current: Value = app.get(me, id).await.json().await.unwrap();
    assert_eq!(current["status"], "pending");
    assert!(outbox_events(env.pool(), "order.updated").await.is_empty());
}

#[tokio::test]
async fn an_unknown_status_is_a_422_naming_status() {
    let env = OrdersEnv::new().await;
    let app = env.spawn().await;
    let me = As::customer();
    let order = app.create_ok(me).await;

    let response = app
        .patch_status(me, order["id"].as_str().unwrap(), "shipped")
        .await;

    assert_eq!(response.status(), 422);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "status");
}

#[tokio::test]
async fn deleting_cancels_softly_and_again_is_harmless() {
    let env = OrdersEnv::new().await;
    let app = env.spawn().await;
    let me = As::customer();
    let order = app.create_ok(me).await;
    let id = order["id"].as_str().unwrap();

    assert_eq!(app.cancel(me, id).await.status(), 204);
    assert_eq!(app.cancel(me, id).await.status(), 204);

    let current: Value = app.get(me, id).await.json().await.unwrap();
    assert_eq!(current["status"], "cancelled");
    // One change, one event.
    assert_eq!(outbox_events(env.pool(), "order.updated").await.len(), 1);
    // A cancelled order is final, even for an admin.
    assert_eq!(
        app.patch_status(As::admin(), id, "paid").await.status(),
        409
    );
}

#[tokio::test]
async fn a_matching_if_none_match_gets_304() {
    let env = OrdersEnv::new().await;
    let app = env.spawn().await;
    let me = As::customer();
    let order = app.create_ok(me).await;
    let id = order["id"].as_str().unwrap();
    let etag = app.get(me, id).await.headers()["etag"]
        .to_str()
        .unwrap()
        .to_owned();

    let not_modified = app
        .request(Method::GET, &format!("/api/v1/orders/{id}"), me)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(not_modified.status(), 304);
    assert_eq!(not_modified.headers()["etag"].to_str().unwrap(), etag);

    // After a change the old tag no longer matches.
    app.patch_status(As::admin(), id, "paid").await;
    let changed = app
        .request(Method::GET, &format!("/api/v1/orders/{id}"), me)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 200);
    assert_ne!(changed.headers()["etag"].to_str().unwrap(), etag);
}

#[tokio::test]
async fn customers_list_only_their_own_orders_newest_first_and_admins_see_all() {
    let env = OrdersEnv::new().await;
    let app = env.spawn().await;
    let (me, other) = (As::customer(), As::customer());
    let first = app.create_ok(me).await;
    let second = app.create_ok(me).await;
    app.create_ok(other).await;

    let page: Value = app.list(me, "").await.json().await.unwrap();
    let ids: Vec<&Value> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| &o["id"])
        .collect();
    assert_eq!(ids, [&second["id"], &first["id"]]);
    assert_eq!(page["next_cursor"], Value::Null);

    let all: Value = app.list(As::admin(), "").await.json().await.unwrap();
    assert_eq!(all["items"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn listing_pages_through_every_order_exactly_once() {
    let env = OrdersEnv::new().await;
    let app = env.spawn().await;
    let me = As::customer();
    let mut created = Vec::new();
    for _ in 0..7 {
        created.push(app.create_ok(me).await["id"].clone());
    }
    created.reverse();

    let mut seen = Vec::new();
    let mut query = "?limit=3".to_owned();
    let mut pages = 0;
    loop {
        let page: Value = app.list(me, &query).await.json().await.unwrap();
        pages += 1;
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["id"].clone()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => query = format!("?limit=3&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, created);
}

#[tokio::test]
async fn listing_filters_by_status_and_creation_time() {
    let env = OrdersEnv::new().await;
    let app = env.spawn().await;
    let me = As::customer();
    let old = app.create_ok(me).await;
    let paid = app.create_ok(me).await;
    app.patch_status(As::admin(), paid["id"].as_str().unwrap(), "paid")
        .await;

    let only_paid: Value = app.list(me, "?status=paid").await.json().await.unwrap();
    let ids: Vec<&Value> = only_paid["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| &o["id"])
        .collect();
    assert_eq!(ids, [&paid["id"]]);

    let since = paid["created_at"].as_str().unwrap();
    let after: Value = app
        // RFC 3339 in UTC ("Z"): nothing to percent-encode.
        .list(me, &format!("?created_after={since}"))
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<&Value> = after["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| &o["id"])
        .collect();
    assert_eq!(ids, [&paid["id"]]);

    let before: Value = app
        // RFC 3339 in UTC ("Z"): nothing to percent-encode.
        .list(me, &format!("?created_before={since}"))
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<&Value> = before["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| &o["id"])
        .collect();
    assert_eq!(ids, [&old["id"]]);
}

#[tokio::test]
async fn bad_list_parameters_are_a_422_naming_them() {
    let env = OrdersEnv::new().await;
    let app = env.spawn().await;
    let response = app
        .list(
            As::customer(),
            "?limit=0&status=lost&cursor=nonsense&created_before=soon",
        )
        .await;
    assert_eq!(response.status(), 422);
    let problem: Value = response.json().await.unwrap();
    let mut fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    fields.sort_unstable();
    assert_eq!(fields, ["created_before", "cursor", "limit", "status"]);
}

/// The problem body of a refused status change, checked to be a 403.
async fn forbidden(response: reqwest::Response) -> Value {
    assert_eq!(response.status(), 403);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["type"], "urn:keel:problem:forbidden");
    assert_eq!(problem["title"], "Forbidden");
    problem
}

#[tokio::test]
async fn a_customer_cannot_mark_her_own_order_paid_or_fulfilled_or_back_to_pending() {
    let env = OrdersEnv::new().await;
    let app = env.spawn().await;
    let me = As::customer();
    let order = app.create_ok(me).await;
    let id = order["id"].as_str().unwrap();

    for status in ["paid", "fulfilled", "pending"] {
        let problem = forbidden(app.patch_status(me, id, status).await).await;
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            detail.contains("only cancel") && detail.contains(status),
            "{detail}"
        );
    }

    let current: Value = app.get(me, id).await.json().await.unwrap();
    assert_eq!(current["status"], "pending");
    assert!(outbox_events(env.pool(), "order.updated").await.is_empty());
}

#[tokio::test]
async fn a_customer_cancels_her_pending_order_but_not_a_paid_one_which_an_admin_can() {
    let env = OrdersEnv::new().await;
    let app = env.spawn().await;
    let me = As::customer();
    let pending = app.create_ok(me).await;
    let paid = app.create_ok(me).await;
    let (pending, paid) = (
        pending["id"].as_str().unwrap(),
        paid["id"].as_str().unwrap(),
    );
    assert_eq!(
        app.patch_status(As::admin(), paid, "paid").await.status(),
        200
    );
    // Cached before the refusals: a refusal must not disturb the cache.
    assert_eq!(app.get(me, paid).await.status(), 200);

    let cancelled = app.patch_status(me, pending, "cancelled").await;
    assert_eq!(cancelled.status(), 200);
    assert_eq!(
        cancelled.json::<Value>().await.unwrap()["status"],
        "cancelled"
    );

    let problem = forbidden(app.patch_status(me, paid, "cancelled").await).await;
    assert!(
        problem["detail"].as_str().unwrap().contains("paid"),
        "{problem}"
    );
    forbidden(app.cancel(me, paid).await).await;
    let current: Value = app.get(me, paid).await.json().await.unwrap();
    assert_eq!(current["status"], "paid");

    assert_eq!(app.cancel(As::admin(), paid).await.status(), 204);
    let current: Value = app.get(me, paid).await.json().await.unwrap();
    assert_eq!(current["status"], "cancelled");
}

#[tokio::test]
async fn what_no_one_may_do_is_a_409_for_customers_and_admins_alike() {
    let env = OrdersEnv::new().await;
    let app = env.spawn().await;
    let me = As::customer();
    let order = app.create_ok(me).await;
    let id = order["id"].as_str().unwrap();
    for status in ["paid", "fulfilled"] {
        assert_eq!(
            app.patch_status(As::admin(), id, status).await.status(),
            200
        );
    }

    // A fulfilled order is final: cancelling it is illegal, whoever asks.
    for caller in [me, As::admin()] {
        for response in [
            app.patch_status(caller, id, "cancelled").await,
            app.cancel(caller, id).await,
        ] {
            assert_eq!(response.status(), 409);
            let problem: Value = response.json().await.unwrap();
            assert_eq!(problem["type"], "urn:keel:problem:illegal-transition");
        }
    }
}

#[tokio::test]
async fn an_external_id_is_unique_per_customer_not_across_customers() {
    let env = OrdersEnv::new().await;
    let app = env.spawn().await;
    let (alice, bob) = (As::customer(), As::customer());
    let mut body = sample_order();
    body["external_id"] = json!("cart-7");

    let hers = app.create(alice, &body).await;
    let his = app.create(bob, &body).await;

    assert_eq!(hers.status(), 201);
    assert_eq!(his.status(), 201, "{:?}", his.text().await);
    let again = app.create(bob, &body).await;
    assert_eq!(again.status(), 409);
    let problem: Value = again.json().await.unwrap();
    assert_eq!(problem["type"], "urn:keel:problem:duplicate-external-id");
    let all: Value = app.list(As::admin(), "").await.json().await.unwrap();
    assert_eq!(all["items"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_created_order_is_published_without_waiting_for_the_relays_poll() {
    // The order's outbox row carries no NOTIFY (it would serialise
    // concurrent commits): the handler raises the in-process relay after
    // the commit, and order.created goes out at once, poll or no poll.
    let env = OrdersEnv::with_relay().await;
    let broker = env.broker.as_ref().unwrap();
    let channel = broker.channel().await;
    let queue = broker
        .topology()
        .declare_event_queue(&channel, "orders-test", &["order.created"])
        .await
        .unwrap()
        .name;
    let app = env
        .spawn_with(|s| s.outbox.poll_interval = std::time::Duration::from_secs(120))
        .await;
    // The relay's first pass (at start) must be over, or it would find the
    // row without being woken: it LISTENs once that pass is under way.
    let pool = env.pool().clone();
    let listening = || async {
        pool.get()
            .await
            .unwrap()
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND query LIKE 'LISTEN %'",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while listening().await == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the relay never listened"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let order = app.create_ok(As::customer()).await;

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let message = loop {
        let got = channel
            .basic_get(
                queue.as_str().into(),
                lapin::options::BasicGetOptions { no_ack: true },
            )
            .await
            .unwrap();
        if let Some(message) = got {
            break message;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "order.created not published 10 s after the commit (poll interval 120 s)"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(message.delivery.routing_key.as_str(), "order.created");
    let event: Value = serde_json::from_slice(&message.delivery.data).unwrap();
    assert_eq!(event["data"]["order_id"], order["id"]);
}

/// The orders table locked from a transaction of the test's, so the group
/// commit's (single) committer waits on it and later orders queue.
struct OrdersLocked {
    client: keel_db::Client,
}

impl OrdersLocked {
    async fn take(pool: &keel_db::Pool) -> Self {
        let client = pool.get().await.unwrap();
        client
            .batch_execute("BEGIN; LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
            .await
            .unwrap();
        Self { client }
    }

    /// Waits until a statement waits for the lock.
    async fn wait_for_a_waiter(&self, pool: &keel_db::Pool) {
        let client = pool.get().await.unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let waiting: i64 = client
                .query_one(
                    "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
                     WHERE NOT l.granted AND c.relname = 'orders' \
                       AND l.database = (SELECT oid FROM pg_database \
                                         WHERE datname = current_database())",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            if waiting > 0 {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "nothing waits on the lock"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    async fn release(self) {
        self.client.batch_execute("ROLLBACK").await.unwrap();
    }
}

/// Waits until `count` orders wait for the group commit.
async fn wait_for_queued(app: &crate::orders_support::OrdersApp, count: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while app.orders.orders_waiting() < count {
        assert!(
            std::time::Instant::now() < deadline,
            "{count} orders never queued"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

fn post_later(
    app: &crate::orders_support::OrdersApp,
    caller: As,
    body: &Value,
) -> tokio::task::JoinHandle<reqwest::Response> {
    let request = app
        .request(Method::POST, "/api/v1/orders", caller)
        .json(body);
    tokio::spawn(async move { request.send().await.unwrap() })
}

#[tokio::test]
async fn an_order_failing_in_a_shared_commit_fails_alone() {
    let env = OrdersEnv::new().await;
    let app = env
        .spawn_with(|s| s.orders.group_commit.concurrent_batches = 1)
        .await;
    let me = As::customer();
    let mut reused = sample_order();
    reused["external_id"] = json!("ref-1");
    assert_eq!(app.create(me, &reused).await.status(), 201);

    // The one committer waits on the lock with the first order; the next
    // three queue meanwhile and are taken as one batch.
    let lock = OrdersLocked::take(env.pool()).await;
    let first = post_later(&app, me, &sample_order());
    lock.wait_for_a_waiter(env.pool()).await;
    let others = [
        post_later(&app, me, &sample_order()),
        post_later(&app, me, &reused),
        post_later(&app, me, &sample_order()),
    ];
    wait_for_queued(&app, 3).await;
    lock.release().await;

    assert_eq!(first.await.unwrap().status(), 201);
    let [before, duplicate, after] = others;
    assert_eq!(before.await.unwrap().status(), 201);
    let duplicate = duplicate.await.unwrap();
    assert_eq!(duplicate.status(), 409);
    let problem: Value = duplicate.json().await.unwrap();
    assert_eq!(problem["type"], "urn:keel:problem:duplicate-external-id");
    assert_eq!(after.await.unwrap().status(), 201);
    // Four orders, four events: nothing of the refused one.
    let listed: Value = app.list(me, "").await.json().await.unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 4, "{listed}");
    assert_eq!(outbox_events(env.pool(), "order.created").await.len(), 4);
}

#[tokio::test]
async fn orders_past_the_group_commits_waiting_bound_get_a_503_with_retry_after_at_once() {
    let env = OrdersEnv::new().await;
    let app = env
        .spawn_with(|s| {
            s.orders.group_commit.concurrent_batches = 1;
            s.orders.group_commit.max_waiting = 1;
        })
        .await;
    let me = As::customer();
    let lock = OrdersLocked::take(env.pool()).await;
    let committing = post_later(&app, me, &sample_order());
    lock.wait_for_a_waiter(env.pool()).await;
    let waiting = post_later(&app, me, &sample_order());
    wait_for_queued(&app, 1).await;

    let refused = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        app.create(me, &sample_order()),
    )
    .await
    .expect("refused at once, not queued");
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["type"], "urn:keel:problem:unavailable");

    lock.release().await;
    assert_eq!(committing.await.unwrap().status(), 201);
    assert_eq!(waiting.await.unwrap().status(), 201);
    assert_eq!(outbox_events(env.pool(), "order.created").await.len(), 2);
}
