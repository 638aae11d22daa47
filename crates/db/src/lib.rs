//! PostgreSQL access shared by every service.
//!
//! # Layout
//! - [`settings`]: the `database` configuration section.
//! - [`pool`]: a deadpool-postgres pool whose connections are pinned to the
//!   owning service's schema (`search_path`), so SQL names tables unqualified.
//! - [`migrate`]: embedded migrations, applied under an advisory lock so two
//!   instances starting together do not race.
//! - [`error`]: the crate's error type and [`Retryability`], the one
//!   classification of failures into unavailable, transient ("not now"),
//!   bad input (classes 22, 23) and permanent.
//! - [`page`]: newest-first keyset paging shared by every listing: the
//!   opaque [`page::Cursor`], a [`page::Filter`] of numbered parameters,
//!   [`page::Page`] (the API's `{items, next_cursor}`) and the fetch of
//!   `limit + 1` rows.

pub mod error;
pub mod migrate;
pub mod page;
pub mod pool;
pub mod settings;

pub use deadpool_postgres::{GenericClient, Object as Client, Pool, Transaction};
pub use error::{Error, Result, Retryability};
pub use migrate::{
    Migration, MigrationSet, STARTUP_PATIENCE, connect_and_migrate, migrate, migrate_when_ready,
};
pub use pool::{check, connect, connection_config};
pub use settings::{DatabaseSettings, TcpDeadlines};
