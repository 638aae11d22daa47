//! The store's business domain: orders and exports, shared by the gateway
//! (which serves them) and the worker (which applies webhooks to orders and
//! builds export files). No HTTP and no object storage here (that is
//! `keel-files`): callers map each module's `Error` onto their own answers.
//!
//! Both modules have the same layout: `domain` (validated types, the state
//! machine, the API's JSON shape), `schema` (the module's own migration
//! set), `queries`, `error`; plus what only one of them needs
//! ([`orders::idempotency`], [`exports::rows`]).

pub mod exports;
pub mod orders;
