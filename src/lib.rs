//! ratingd: a high-throughput usage rating and mediation daemon.
//!
//! # Layout
//!
//! The modules follow the data's path (ARCHITECTURE.md draws it, and its table of allowed
//! dependencies is enforced by `tests/architecture.rs`):
//!
//! - [`ingest`]: the Ingest service: a batch's size and the token's scope, then the pipeline.
//! - [`pipeline`]: the one door ([`pipeline::Pipeline::intake`]: admission, the clock, every
//!   event check, fingerprints), routing by account hash to shard threads that own their accounts
//!   (dedupe, period usage, totals) and rate without locks; the committer group-commits to sled,
//!   fsyncs, publishes the committed view and acknowledges; spend alerts.
//! - [`store`]: sled: checksummed blocks of rated records ([`store::blocks`]), the tables kept
//!   beside them ([`store::tables`]: subscriptions, suspense, closes, alerts), every encoding
//!   ([`store::codec`]); shard checkpoint files ([`store::checkpoint`]).
//! - [`export`]: the Redis projection of the committed totals, alerts, and period close.
//! - [`query`] and [`admin`]: the read side and the operator's API.
//! - [`wire`]: the gRPC contract's generated types, every proto <-> domain conversion, and the
//!   one mapping of errors to gRPC statuses ([`wire::ApiError`]).
//! - [`security`]: bearer tokens and roles, the guard layer in front of every service (token,
//!   unary timeout), TLS settings.
//! - [`telemetry`]: the metric catalogue, the Prometheus exporter, rate-limited log lines.
//! - [`domain`]: pure types and rules: exact money, usage events (as received, checked,
//!   rejected), rated records, the tariff catalogue and its file format, billing periods, local
//!   time, subscriptions, totals, alerts, the keyed hash.
//! - [`rating`]: the rating engine: `rate(plan, event, period usage)` -> exact charge and an
//!   [`rating::Explanation`]; `rerate` rebuilds one from a stored record; [`rating::Report`]
//!   renders it.
//! - [`config`]: the configuration file, validated whole; [`app`] wires everything;
//!   [`client`] is ratectl's side (one module per command, usage files, the retrying sender).
//!
//! Dependencies point one way: `domain` and `rating` do no I/O; nothing below the services names
//! tonic or a proto type; services talk to `pipeline` and `wire`, never to each other; only
//! `app` wires everything.

pub mod admin;
pub mod app;
pub mod charging;
pub mod client;
pub mod config;
pub mod domain;
pub mod export;
#[doc(hidden)]
pub mod fuzzing;
pub mod ingest;
pub mod pipeline;
pub mod query;
pub mod rating;
pub mod security;
pub mod spool;
pub mod store;
pub mod telemetry;
pub mod wire;
