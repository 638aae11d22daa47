//! The query API, answered from rollups only.
//!
//! - [`params`]: validation of periods, metrics and intervals, and how a
//!   period splits into rollup pieces.
//! - [`store`]: the SQL over rollups.
//! - [`routes`]: the HTTP handlers and their problem+json errors.

pub mod params;
pub mod routes;
pub mod store;
