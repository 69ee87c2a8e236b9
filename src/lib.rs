//! ratingd: a high-throughput usage rating and mediation daemon.
//!
//! # Layout
//!
//! The modules follow the data's path (ARCHITECTURE.md draws it):
//!
//! - [`ingest`]: the gRPC front end. Proto <-> domain conversion and every input check
//!   ([`ingest::convert`]), the `Ingest` service; batches are admitted under a bound and handed to
//!   the pipeline.
//! - [`pipeline`]: routing by account hash to shard threads that own their accounts (dedupe,
//!   period usage, totals) and rate without locks; the committer group-commits to sled, fsyncs,
//!   publishes the committed view and acknowledges; spend alerts.
//! - [`store`]: sled: checksummed blocks of rated records, suspense, subscriptions, closes,
//!   alerts ([`store::codec`] for the encodings); shard checkpoint files ([`store::checkpoint`]).
//! - [`export`]: the Redis projection of the committed totals, and period close.
//! - [`query`] and [`admin`]: the read side and the operator's API.
//! - [`security`]: bearer tokens and roles, the guard layer in front of every service (token,
//!   unary timeout), TLS settings, the data dir's secret hash key.
//! - [`telemetry`]: the metric catalogue and the Prometheus exporter.
//! - [`domain`]: pure types and rules: exact money, usage events and reject reasons, the tariff
//!   catalogue and its file format, billing periods, local time, subscriptions, totals.
//! - [`rating`]: the rating engine: `rate(plan, event, period usage)` -> exact charge and an
//!   [`rating::Explanation`]; [`rating::Report`] renders it.
//! - [`config`]: the configuration file, validated whole; [`app`] wires everything;
//!   [`client`] is ratectl's side (usage files, the retrying sender).
//!
//! Dependencies point one way: `domain` and `rating` do no I/O; `pipeline` uses them and `store`;
//! the services talk to `pipeline`; only `app` wires everything.

pub mod admin;
pub mod app;
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
pub mod store;
pub mod telemetry;
pub mod wire;
