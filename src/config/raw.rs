//! The configuration file as written: serde structs that refuse unknown keys, with the defaults
//! of every key left out. [`super::Config::load`] validates them whole.

use std::path::PathBuf;

use serde::Deserialize;

use super::Limits;
use crate::domain::partial::PartialLimits;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawRedis {
    pub(super) url: String,
    pub(super) prefix: String,
    pub(super) flush_interval_ms: u64,
}

impl Default for RawRedis {
    fn default() -> Self {
        RawRedis {
            url: "redis://127.0.0.1:6379".into(),
            prefix: "ratingd".into(),
            flush_interval_ms: 1000,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) redis: RawRedis,
    #[serde(default = "default_listen")]
    pub(super) listen: String,
    #[serde(default = "default_metrics_listen")]
    pub(super) metrics_listen: String,
    #[serde(default = "default_log_level")]
    pub(super) log_level: String,
    #[serde(default = "default_data_dir")]
    pub(super) data_dir: PathBuf,
    #[serde(default)]
    pub(super) shards: usize,
    #[serde(default)]
    pub(super) limits: Limits,
    #[serde(default = "default_window")]
    pub(super) dedupe_window_days: u32,
    #[serde(default = "default_hot_hours")]
    pub(super) dedupe_hot_hours: u32,
    #[serde(default = "default_skew")]
    pub(super) future_skew_seconds: u32,
    #[serde(default = "default_commit_max")]
    pub(super) commit_max_events: usize,
    #[serde(default = "default_checkpoint")]
    pub(super) checkpoint_every_records: u64,
    #[serde(default = "default_grace")]
    pub(super) shutdown_grace_seconds: u32,
    #[serde(default = "default_close_grace")]
    pub(super) period_close_grace_hours: u32,
    #[serde(default = "default_retention")]
    pub(super) retention_days: u32,
    #[serde(default = "default_reservation_ttl")]
    pub(super) reservation_ttl_seconds: u32,
    pub(super) retention_export_dir: Option<PathBuf>,
    pub(super) tariffs: PathBuf,
    #[serde(default)]
    pub(super) mediation: RawMediation,
    pub(super) default_plan: Option<String>,
    #[serde(default)]
    pub(super) subscriptions: Vec<RawSubscription>,
    #[serde(default)]
    pub(super) alerts: Vec<RawAlerts>,
    pub(super) tls: Option<RawTls>,
    #[serde(default)]
    pub(super) allow_plaintext_non_loopback: bool,
    #[serde(default)]
    pub(super) allow_unauthenticated_non_loopback: bool,
    #[serde(default)]
    pub(super) tokens: Vec<RawToken>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMediation {
    pub(super) rules: Option<PathBuf>,
    #[serde(default)]
    pub(super) partial: RawPartial,
    pub(super) spool: Option<RawSpool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSpool {
    pub(super) dir: PathBuf,
    pub(super) mapping: Option<PathBuf>,
    #[serde(default = "default_spool_poll")]
    pub(super) poll_interval_ms: u64,
    #[serde(default = "default_spool_batch")]
    pub(super) batch_events: usize,
}

fn default_spool_poll() -> u64 {
    1000
}

fn default_spool_batch() -> usize {
    1000
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPartial {
    #[serde(default = "default_partial_timeout")]
    pub(super) timeout_seconds: u32,
    #[serde(default = "default_partial_parts")]
    pub(super) max_parts: u32,
    #[serde(default = "default_partial_quantity")]
    pub(super) max_quantity: String,
}

impl Default for RawPartial {
    fn default() -> Self {
        RawPartial {
            timeout_seconds: default_partial_timeout(),
            max_parts: default_partial_parts(),
            max_quantity: default_partial_quantity(),
        }
    }
}

fn default_partial_timeout() -> u32 {
    PartialLimits::default().timeout_seconds
}

fn default_partial_parts() -> u32 {
    PartialLimits::default().max_parts
}

fn default_partial_quantity() -> String {
    PartialLimits::default().max_quantity.to_string()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
    pub(super) client_ca: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawToken {
    pub(super) name: String,
    pub(super) sha256: String,
    pub(super) role: String,
    pub(super) account_prefix: Option<String>,
    pub(super) expires: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSubscription {
    pub(super) account: String,
    pub(super) plan: String,
    pub(super) from: String,
    pub(super) to: Option<String>,
    pub(super) discount_percent: Option<String>,
    #[serde(default)]
    pub(super) alert_thresholds: Vec<String>,
    #[serde(default)]
    pub(super) prepaid: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAlerts {
    pub(super) plan: String,
    pub(super) thresholds: Vec<String>,
}

fn default_listen() -> String {
    "127.0.0.1:50051".to_string()
}
fn default_log_level() -> String {
    "info".to_string()
}
fn default_metrics_listen() -> String {
    "127.0.0.1:9898".to_string()
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("./data")
}
fn default_window() -> u32 {
    35
}
fn default_skew() -> u32 {
    300
}
fn default_commit_max() -> usize {
    20_000
}
fn default_checkpoint() -> u64 {
    2_000_000
}
fn default_grace() -> u32 {
    30
}
fn default_close_grace() -> u32 {
    72
}

/// Thirteen months and a little more: a year of invoices and the disputes of the last one.
fn default_hot_hours() -> u32 {
    24
}

fn default_retention() -> u32 {
    400
}

fn default_reservation_ttl() -> u32 {
    300
}
