//! `/api/v1/exports` through the real gateway (real access tokens, the edge
//! middleware): acceptance, validation, the active limit, scoping, 409
//! before success, downloads by token and by signed link (tampered or
//! expired → 403), expiry. The worker's part (building files) is proven in
//! `services/worker/tests/exports`; here a finished file is stored through
//! the same `keel_files` and recorded with `keel_commerce::exports`, as the
//! worker does.

use std::path::PathBuf;

use bytes::Bytes;
use keel_commerce::exports::{self, Written};
use keel_files::{Storage, StorageSettings};
use keel_token::Role;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::Digest;
use uuid::Uuid;

use crate::auth_support::{FakeUpstream, bearer};
use crate::helpers::{TestApp, spawn_app_with};

/// A storage directory of this test's own.
struct TempRoot(PathBuf);

impl TempRoot {
    fn new() -> Self {
        Self(std::env::temp_dir().join(format!("keel-gw-exports-{}", Uuid::new_v4())))
    }

    fn storage(&self) -> Storage {
        Storage::new(&StorageSettings::local(&self.0)).unwrap()
    }
}

impl Drop for TempRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Env {
    upstream: FakeUpstream,
    app: TestApp,
    root: TempRoot,
}

async fn env() -> Env {
    env_with(|_| {}).await
}

async fn env_with(configure: impl FnOnce(&mut api_gateway::settings::Settings)) -> Env {
    let upstream = FakeUpstream::start().await;
    let root = TempRoot::new();
    let storage_root = root.0.clone();
    let app = spawn_app_with(|s| {
        upstream.configure(s);
        s.exports.storage = StorageSettings::local(&storage_root);
        configure(s);
    })
    .await;
    Env {
        upstream,
        app,
        root,
    }
}

async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> reqwest::Response {
    let mut request = app.client.request(method, format!("{}{path}", app.address));
    if let Some(token) = token {
        request = request.header("authorization", bearer(token));
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    request.send().await.unwrap()
}

async fn create(app: &TestApp, token: &str, body: Value) -> (String, Value) {
    let response = send(
        app,
        Method::POST,
        "/api/v1/exports",
        Some(token),
        Some(&body),
    )
    .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    (location, response.json().await.unwrap())
}

/// What the worker does on success: the file under the export's key, then
/// `succeed` with its size and checksum.
async fn finish_with(env: &Env, id: Uuid, content: &[u8]) {
    let mut client = env.app.db().pool().get().await.unwrap();
    let exports::Start::Run(export) = exports::start(&mut client, id).await.unwrap() else {
        panic!("the export starts");
    };
    let mut writer = env.root.storage().writer(&export.object_key).unwrap();
    for chunk in content.chunks(64 * 1024) {
        writer.write(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    writer.finish().await.unwrap();
    let written = Written {
        rows: content.iter().filter(|&&b| b == b'\n').count() as i64 - 1,
        bytes: content.len() as i64,
        sha256: hex::encode(sha2::Sha256::digest(content)),
    };
    exports::succeed(
        &mut client,
        id,
        &written,
        std::time::Duration::from_secs(3600),
    )
    .await
    .unwrap();
}

/// A CSV body of a few MiB (several storage reads and response chunks).
fn csv_content() -> Vec<u8> {
    let mut file = b"id,status,total_cents\n".to_vec();
    for i in 0..60_000 {
        file.extend_from_slice(format!("{},paid,{}\n", Uuid::from_u128(i), i * 7).as_bytes());
    }
    file
}

fn id_of(body: &Value) -> Uuid {
    body["id"].as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn an_export_is_accepted_queued_with_its_job_and_a_location() {
    let env = env().await;
    let (_, alice) = env.upstream.customer_token();
    let (location, body) = create(
        &env.app,
        &alice,
        json!({"resource": "orders", "format": "csv"}),
    )
    .await;
    assert_eq!(body["status"], "queued");
    assert_eq!(
        location,
        format!("/api/v1/exports/{}", body["id"].as_str().unwrap())
    );

    let got = send(&env.app, Method::GET, &location, Some(&alice), None).await;
    assert_eq!(got.status(), 200);
    let got: Value = got.json().await.unwrap();
    assert_eq!(
        (got["id"].clone(), got["status"].clone()),
        (body["id"].clone(), json!("queued"))
    );
    assert_eq!(
        (got["rows_written"].clone(), got["bytes"].clone()),
        (json!(0), json!(0))
    );
    assert!(got.get("download_url").is_none(), "{got}");

    let client = env.app.db().pool().get().await.unwrap();
    let jobs: i64 = client
        .query_one(
            "SELECT count(*) FROM outbox WHERE message_type = 'export.run' AND payload->'data'->>'export_id' = $1",
            &[&body["id"].as_str().unwrap()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(jobs, 1);
    env.app.stop().await;
}

#[tokio::test]
async fn invalid_fields_are_422_naming_each_field() {
    let env = env().await;
    let (_, alice) = env.upstream.customer_token();
    let response = send(
        &env.app,
        Method::POST,
        "/api/v1/exports",
        Some(&alice),
        Some(&json!({
            "resource": "orders",
            "format": "xlsx",
            "filter": {"created_after": "2026-02-01T00:00:00Z", "created_before": "2026-01-01T00:00:00Z", "status": "lost"}
        })),
    )
    .await;
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
    assert_eq!(fields, ["format", "filter.status", "filter.created_before"]);
    // Nothing was stored.
    let client = env.app.db().pool().get().await.unwrap();
    let stored: i64 = client
        .query_one("SELECT count(*) FROM exports", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 0);
    env.app.stop().await;
}

#[tokio::test]
async fn past_the_active_limit_an_export_is_429_with_retry_after() {
    let env = env_with(|s| s.exports.max_active_per_user = 2).await;
    let (_, alice) = env.upstream.customer_token();
    let (_, bob) = env.upstream.customer_token();
    let request = json!({"resource": "orders", "format": "ndjson"});
    create(&env.app, &alice, request.clone()).await;
    create(&env.app, &alice, request.clone()).await;
    let refused = send(
        &env.app,
        Method::POST,
        "/api/v1/exports",
        Some(&alice),
        Some(&request),
    )
    .await;
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "30");
    let problem: Value = refused.json().await.unwrap();
    assert!(
        problem["type"]
            .as_str()
            .unwrap()
            .ends_with("too-many-active-exports"),
        "{problem}"
    );
    // Another user is not affected.
    create(&env.app, &bob, request).await;
    env.app.stop().await;
}

#[tokio::test]
async fn someone_elses_export_is_404_and_downloading_before_success_is_409() {
    let env = env().await;
    let (_, alice) = env.upstream.customer_token();
    let (_, mallory) = env.upstream.customer_token();
    let admin = env.upstream.token_for(Uuid::new_v4(), vec![Role::Admin]);
    let (location, _) = create(
        &env.app,
        &alice,
        json!({"resource": "orders", "format": "csv"}),
    )
    .await;
    let download = format!("{location}/download");

    for path in [&location, &download] {
        let theirs = send(&env.app, Method::GET, path, Some(&mallory), None).await;
        assert_eq!(theirs.status(), 404, "{path}");
    }
    assert_eq!(
        send(&env.app, Method::GET, &location, Some(&admin), None)
            .await
            .status(),
        200
    );
    let early = send(&env.app, Method::GET, &download, Some(&alice), None).await;
    assert_eq!(early.status(), 409);
    let problem: Value = early.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("queued"),
        "{problem}"
    );
    assert_eq!(
        send(
            &env.app,
            Method::GET,
            "/api/v1/exports/not-a-uuid",
            Some(&alice),
            None
        )
        .await
        .status(),
        404
    );
    env.app.stop().await;
}

#[tokio::test]
async fn a_succeeded_export_streams_by_token_and_by_signed_link_without_one() {
    let env = env().await;
    let (_, alice) = env.upstream.customer_token();
    let (location, body) = create(
        &env.app,
        &alice,
        json!({"resource": "orders", "format": "csv"}),
    )
    .await;
    let content = csv_content();
    finish_with(&env, id_of(&body), &content).await;

    let export: Value = send(&env.app, Method::GET, &location, Some(&alice), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(export["status"], "succeeded");
    assert_eq!(export["bytes"], json!(content.len()));
    let sha = hex::encode(sha2::Sha256::digest(&content));
    assert_eq!(export["sha256"], json!(sha));
    let url = export["download_url"].as_str().unwrap().to_owned();
    assert!(
        url.starts_with(&format!("{location}/download?expires=")),
        "{url}"
    );

    // A browser following the link: no Authorization header.
    let by_link = send(&env.app, Method::GET, &url, None, None).await;
    assert_eq!(by_link.status(), 200);
    let headers = by_link.headers().clone();
    assert_eq!(headers["content-type"], "text/csv; charset=utf-8");
    assert_eq!(
        headers["content-length"],
        content.len().to_string().as_str()
    );
    assert_eq!(
        headers["content-disposition"],
        format!(
            "attachment; filename=\"orders-{}.csv\"",
            body["id"].as_str().unwrap()
        )
        .as_str()
    );
    let downloaded = by_link.bytes().await.unwrap();
    assert!(downloaded == content, "downloaded bytes differ");
    assert_eq!(hex::encode(sha2::Sha256::digest(&downloaded)), sha);

    let by_token = send(
        &env.app,
        Method::GET,
        &format!("{location}/download"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(by_token.status(), 200);
    assert!(by_token.bytes().await.unwrap() == content);

    // Each GET mints its link anew; an earlier one keeps working until it expires.
    let again: Value = send(&env.app, Method::GET, &location, Some(&alice), None)
        .await
        .json()
        .await
        .unwrap();
    assert!(again["download_url"].as_str().is_some());
    // Neither a token nor a link.
    let anonymous = send(
        &env.app,
        Method::GET,
        &format!("{location}/download"),
        None,
        None,
    )
    .await;
    assert_eq!(anonymous.status(), 401);
    assert!(anonymous.headers().contains_key("www-authenticate"));
    env.app.stop().await;
}

#[tokio::test]
async fn a_tampered_or_expired_link_is_403() {
    let env = env().await;
    let (_, alice) = env.upstream.customer_token();
    let (location, body) = create(
        &env.app,
        &alice,
        json!({"resource": "orders", "format": "csv"}),
    )
    .await;
    let id = id_of(&body);
    finish_with(&env, id, b"id\n1\n").await;
    let export: Value = send(&env.app, Method::GET, &location, Some(&alice), None)
        .await
        .json()
        .await
        .unwrap();
    let url = export["download_url"].as_str().unwrap().to_owned();
    let (path, query) = url.split_once('?').unwrap();
    let params: Vec<(&str, &str)> = query
        .split('&')
        .map(|p| p.split_once('=').unwrap())
        .collect();
    let (expires, signature) = (params[0].1, params[1].1);
    let expires: i64 = expires.parse().unwrap();

    // Another export of the same user: a link is bound to its export.
    let (other, _) = create(
        &env.app,
        &alice,
        json!({"resource": "orders", "format": "csv"}),
    )
    .await;
    let flipped: String = signature.chars().rev().collect();
    let signer = api_gateway::exports::signing::LinkSigner::new(&secrecy::SecretString::from(
        api_gateway::exports::settings::DEVELOPMENT_DOWNLOAD_SECRET,
    ))
    .unwrap();
    let past = chrono::Utc::now().timestamp() - 1;
    let expired_but_signed = signer.sign(id, past);
    for tampered in [
        format!("{path}?expires={}&signature={signature}", expires + 3600),
        format!("{path}?expires={expires}&signature={flipped}"),
        format!("{other}/download?expires={expires}&signature={signature}"),
        format!("{path}?expires={expires}"),
        format!("{path}?signature={signature}"),
        format!("{path}?expires=soon&signature={signature}"),
        format!("{path}?expires={past}&signature={expired_but_signed}"),
    ] {
        let response = send(&env.app, Method::GET, &tampered, None, None).await;
        assert_eq!(response.status(), 403, "{tampered}");
        let problem: Value = response.json().await.unwrap();
        assert!(
            problem["type"]
                .as_str()
                .unwrap()
                .ends_with("invalid-download-link")
        );
    }
    let expired = send(
        &env.app,
        Method::GET,
        &format!("{path}?expires={past}&signature={expired_but_signed}"),
        None,
        None,
    )
    .await;
    assert!(
        expired.json::<Value>().await.unwrap()["detail"]
            .as_str()
            .unwrap()
            .contains("expired")
    );
    // The genuine link still works.
    assert_eq!(
        send(&env.app, Method::GET, &url, None, None).await.status(),
        200
    );
    env.app.stop().await;
}

#[tokio::test]
async fn an_expired_export_has_no_link_and_its_download_is_gone() {
    let env = env().await;
    let (_, alice) = env.upstream.customer_token();
    let (location, body) = create(
        &env.app,
        &alice,
        json!({"resource": "orders", "format": "ndjson", "compression": "gzip"}),
    )
    .await;
    let id = id_of(&body);
    finish_with(&env, id, b"{}\n").await;
    let client = env.app.db().pool().get().await.unwrap();
    assert!(exports::mark_expired(&client, id).await.unwrap());

    let export: Value = send(&env.app, Method::GET, &location, Some(&alice), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(export["status"], "expired");
    assert!(export.get("download_url").is_none());
    let gone = send(
        &env.app,
        Method::GET,
        &format!("{location}/download"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(gone.status(), 410);
    env.app.stop().await;
}

#[tokio::test]
async fn the_listing_holds_only_the_callers_exports_newest_first_in_pages() {
    let env = env().await;
    let (_, alice) = env.upstream.customer_token();
    let (_, bob) = env.upstream.customer_token();
    let mut mine = Vec::new();
    for format in ["csv", "ndjson", "csv"] {
        let (_, body) = create(
            &env.app,
            &alice,
            json!({"resource": "orders", "format": format}),
        )
        .await;
        mine.push(body["id"].clone());
    }
    create(
        &env.app,
        &bob,
        json!({"resource": "orders", "format": "csv"}),
    )
    .await;
    mine.reverse();

    let first: Value = send(
        &env.app,
        Method::GET,
        "/api/v1/exports?limit=2",
        Some(&alice),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    let cursor = first["next_cursor"].as_str().unwrap();
    let second: Value = send(
        &env.app,
        Method::GET,
        &format!("/api/v1/exports?limit=2&cursor={cursor}"),
        Some(&alice),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    let listed: Vec<Value> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["items"].as_array().unwrap())
        .map(|e| e["id"].clone())
        .collect();
    assert_eq!(listed, mine);
    assert!(second["next_cursor"].is_null());

    let bad = send(
        &env.app,
        Method::GET,
        "/api/v1/exports?limit=0&cursor=nope",
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(bad.status(), 422);
    let fields: Vec<String> = bad.json::<Value>().await.unwrap()["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(fields, ["limit", "cursor"]);
    env.app.stop().await;
}
