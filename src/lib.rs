//! ratingd: a high-throughput usage rating and mediation daemon.
//!
//! # Layout
//!
//! The modules stand in layers and follow the data's path (ARCHITECTURE.md draws it; its table
//! of layers and allowed dependencies is enforced by `tests/architecture.rs`). From the bottom:
//!
//! - [`limits`]: every bound with its reason, relations asserted at compile time;
//!   [`shutdown`]: the stop signal every task watches.
//! - [`domain`]: pure types and rules: exact money, usage events (as received, checked,
//!   rejected), where an event comes from ([`domain::origin`]), rated records, the tariff
//!   catalogue and its file format, billing periods, local time, subscriptions, totals, prepaid
//!   balances, corrections, normalization rules, partial records, the keyed hash.
//! - [`rating`]: the rating engine: `rate(plan, event, period usage)` -> exact charge and an
//!   [`rating::Explanation`]; `rerate` rebuilds one from a stored record; corrections priced;
//!   grants (the most units a balance pays).
//! - [`telemetry`]: the metric catalogue, the Prometheus exporter, rate-limited log lines.
//! - [`wire`]: the gRPC contract's generated types and pure proto <-> domain conversions (bad
//!   input is their only error); the usage file formats.
//! - [`store`]: sled: checksummed blocks of rated records ([`store::blocks`]), the tables kept
//!   beside them ([`store::tables`], [`store::balance`]), every encoding ([`store::codec`],
//!   [`store::compact`]); shard checkpoint files and the dedupe window's cold tier.
//! - [`security`]: bearer tokens, roles and account scopes, TLS settings, refusals counted.
//! - [`pipeline`]: the one door ([`pipeline::Pipeline::intake`]: admission, the clock, every
//!   event check, fingerprints), routing by account hash to shard threads that own their accounts
//!   (dedupe, period usage, totals, wallets, charging sessions, partial sessions) and rate
//!   without locks; the committer group-commits to sled, fsyncs, publishes the committed view and
//!   acknowledges; spend alerts; corrections and balance operations through the shards.
//! - [`config`]: the configuration file, validated whole; [`client`]: ratectl's side (one module
//!   per command, the retrying sender).
//! - [`billing`]: the billing cycle: fees and their proration, minimum true-ups, the period
//!   close, statements, projections, retention policy.
//! - [`export`]: the Redis projection of the committed totals, balances, alerts and closes.
//! - [`spool`]: CDR files taken from a directory through the pipeline's door.
//! - [`edge`]: the service edge: [`edge::ApiError`] and the one mapping to gRPC statuses, the
//!   guard in front of every service, the caller's scope, requests checked into operations.
//! - [`ingest`], [`query`], [`admin`], [`charging`]: one gRPC service each, thin.
//! - [`app`]: wires everything.
//!
//! Dependencies point one way, down: `domain` and `rating` do no I/O; nothing below the edge
//! names tonic or a proto type; services talk to the edge, the billing cycle, the pipeline and
//! the contract, never to each other; only `app` wires everything.

pub mod admin;
pub mod app;
pub mod billing;
pub mod charging;
pub mod client;
pub mod config;
pub mod domain;
pub mod edge;
pub mod export;
#[doc(hidden)]
pub mod fuzzing;
pub mod ingest;
pub mod limits;
pub mod pipeline;
pub mod query;
pub mod rating;
pub mod security;
pub mod shutdown;
pub mod spool;
pub mod store;
pub mod telemetry;
pub mod wire;
