//! The attack suite: real HTTP requests against the four real services,
//! one module per attack class (OWASP API Security Top 10, 2023 edition,
//! where it applies to Keel; plus webhooks and tokens). Each class starts
//! its own stack and runs its cases one after another; each case asserts
//! the exact refusal (status and problem type) and, where an effect could
//! slip through, that it did not happen. Every case leaves a line in the
//! report file that `scripts/test` sums up (`support::report`).
//!
//! docs/security.md maps every class to what stops it and to these tests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod api1_object_level_authorization;
mod api2_broken_authentication;
mod api3_object_property_level;
mod api4_resource_consumption;
mod api5_function_level_authorization;
mod api6_business_flows;
mod api7_ssrf;
mod api8_misconfiguration;
mod api9_inventory;
mod tokens;
mod webhooks;
