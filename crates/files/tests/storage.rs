//! The local backend against the real file system (S3 shares every line
//! of [`Storage`] but the constructor; it is configured, not faked here).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use bytes::Bytes;
use futures::TryStreamExt;
use keel_files::{Error, Storage, StorageSettings};

/// A fresh directory per test, removed at the end.
struct TempRoot(PathBuf);

impl TempRoot {
    fn new() -> Self {
        Self(std::env::temp_dir().join(format!("keel-files-{}", uuid::Uuid::new_v4())))
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

async fn read_all(storage: &Storage, key: &str) -> (u64, Vec<u8>) {
    let download = storage.open(key).await.unwrap();
    let chunks: Vec<Bytes> = download.stream.try_collect().await.unwrap();
    (download.size, chunks.concat())
}

/// Deterministic, incompressible-enough content of `len` bytes.
fn content(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[tokio::test]
async fn a_large_object_is_written_in_parts_and_read_back_whole_with_its_size() {
    let root = TempRoot::new();
    let storage = root.storage();
    // Past the 8 MiB part size: the multipart path.
    let data = content(19 * 1024 * 1024 + 7, 3);
    let mut writer = storage.writer("exports/u/big.csv").unwrap();
    for chunk in data.chunks(64 * 1024) {
        writer.write(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    assert_eq!(writer.finish().await.unwrap(), data.len() as u64);

    let (size, read) = read_all(&storage, "exports/u/big.csv").await;
    assert_eq!(size, data.len() as u64);
    assert!(read == data, "content differs");
}

#[tokio::test]
async fn nothing_is_visible_until_the_writer_finishes() {
    let root = TempRoot::new();
    let storage = root.storage();
    let mut writer = storage.writer("a/b.ndjson").unwrap();
    writer.write(Bytes::from_static(b"{}\n")).await.unwrap();
    assert!(!storage.exists("a/b.ndjson").await.unwrap());
    writer.finish().await.unwrap();
    assert!(storage.exists("a/b.ndjson").await.unwrap());
}

#[tokio::test]
async fn rewriting_a_key_replaces_the_object_and_an_aborted_rewrite_keeps_it() {
    let root = TempRoot::new();
    let storage = root.storage();
    for seed in [1, 2] {
        let mut writer = storage.writer("k/file").unwrap();
        writer
            .write(Bytes::from(content(1000, seed)))
            .await
            .unwrap();
        writer.finish().await.unwrap();
    }
    assert_eq!(read_all(&storage, "k/file").await.1, content(1000, 2));

    let mut aborted = storage.writer("k/file").unwrap();
    aborted
        .write(Bytes::from(content(9 * 1024 * 1024, 9)))
        .await
        .unwrap();
    aborted.abort().await.unwrap();
    assert_eq!(read_all(&storage, "k/file").await.1, content(1000, 2));
}

#[tokio::test]
async fn deleting_removes_the_object_and_deleting_again_succeeds() {
    let root = TempRoot::new();
    let storage = root.storage();
    let mut writer = storage.writer("x/y/z.csv.gz").unwrap();
    writer.write(Bytes::from_static(b"data")).await.unwrap();
    writer.finish().await.unwrap();

    storage.delete("x/y/z.csv.gz").await.unwrap();
    assert!(matches!(
        storage.open("x/y/z.csv.gz").await,
        Err(Error::NotFound { .. })
    ));
    storage.delete("x/y/z.csv.gz").await.unwrap();
}

#[test]
fn keys_that_escape_their_prefix_are_refused() {
    let root = TempRoot::new();
    let storage = root.storage();
    for key in ["../etc/passwd", "a//b", "a/./b"] {
        assert!(
            matches!(storage.writer(key), Err(Error::InvalidKey { .. })),
            "{key}"
        );
    }
}

#[test]
fn s3_settings_are_validated_naming_the_key() {
    let mut settings = StorageSettings::local("/tmp/x");
    settings.backend = keel_files::Backend::S3;
    let error = settings.validate_as("exports.storage").unwrap_err();
    assert!(error.to_string().contains("exports.storage.s3"), "{error}");

    settings.part_size = 1024;
    let error = settings.validate_as("exports.storage").unwrap_err();
    assert!(error.to_string().contains("part_size"), "{error}");
}

#[test]
fn an_s3_store_is_configured_without_contacting_it() {
    let mut settings = StorageSettings::local("/unused");
    settings.backend = keel_files::Backend::S3;
    settings.s3 = Some(keel_files::S3Settings {
        bucket: "keel-exports".into(),
        region: "eu-west-1".into(),
        endpoint: Some("http://127.0.0.1:9".into()),
        access_key_id: Some("id".to_owned().into()),
        secret_access_key: Some("secret".to_owned().into()),
        allow_http: true,
        virtual_hosted_style: false,
    });
    settings.validate_as("exports.storage").unwrap();
    Storage::new(&settings).unwrap();
}

#[tokio::test]
async fn listing_shows_complete_objects_and_the_staging_sweep_removes_only_stale_uploads() {
    use futures::TryStreamExt;
    let root = TempRoot::new();
    let storage = root.storage();
    let mut writer = storage.writer("exports/u/done.csv").unwrap();
    writer.write(Bytes::from_static(b"data")).await.unwrap();
    writer.finish().await.unwrap();
    // Staging files as object_store leaves them when a process dies
    // mid-upload: one old, one still being written.
    let folder = root.0.join("exports").join("u");
    let stale = folder.join("killed.csv#1");
    std::fs::write(&stale, b"part").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(7200))
        .unwrap();
    let live = folder.join("writing.csv#3");
    std::fs::write(&live, b"part").unwrap();
    // Not a staging file: the suffix is not a number.
    let named = folder.join("report#final");
    std::fs::write(&named, b"x").unwrap();

    let listed: Vec<String> = storage
        .list("exports")
        .map_ok(|o| o.key)
        .try_collect()
        .await
        .unwrap();
    let mut listed = listed;
    listed.sort();
    assert_eq!(listed, ["exports/u/done.csv", "exports/u/report#final"]);

    let removed = storage
        .remove_stale_staging(std::time::Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(removed, 1);
    assert!(!stale.exists() && live.exists() && named.exists());
}
