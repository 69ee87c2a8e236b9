//! ratingd: a high-throughput usage rating and mediation daemon.
//!
//! # Layout
//!
//! The modules follow the data's path. Today the crate holds the pure core; the I/O modules of
//! `ARCHITECTURE.md` (ingest, pipeline, store, export, query, telemetry) are added on top of it.
//!
//! - [`domain`]: pure types and rules. Exact money ([`domain::money`]), usage events and reject
//!   reasons ([`domain::usage`]), the tariff catalogue ([`domain::tariff`]) and its file format
//!   with validation ([`domain::tariff_file`]), billing periods ([`domain::period`]), local time
//!   in a plan's zone ([`domain::localtime`]), subscriptions ([`domain::subscription`]).
//! - [`rating`]: the rating engine. `rate(plan, event, period usage)` -> exact charge plus an
//!   [`rating::Explanation`]; [`rating::Report`] renders it for people and as JSON.
//! - [`config`]: the daemon's configuration file: raw serde structs, validation gathering every
//!   error, the typed [`config::Config`].
//!
//! Dependencies point one way: `rating` uses `domain`; `config` uses both; nothing in `domain` or
//! `rating` does I/O.

pub mod admin;
pub mod app;
pub mod client;
pub mod config;
pub mod domain;
pub mod export;
pub mod ingest;
pub mod pipeline;
pub mod query;
pub mod rating;
pub mod store;
pub mod telemetry;
