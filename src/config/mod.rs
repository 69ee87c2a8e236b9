//! The daemon's configuration file (`config/ratingd.toml`): raw serde structs that refuse unknown
//! keys, then one validation pass that gathers every error with its path, then the typed
//! [`Config`]. Relative paths are taken from the working directory.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::domain::mediation::Rules;
use crate::domain::partial::PartialLimits;
use crate::domain::subscription::Subscription;
use crate::domain::tariff::Catalogue;
use crate::domain::tariff_file::parse_catalogue;
use crate::security::auth::Token;
use crate::security::tls::{TlsFiles, plaintext_refused};

mod raw;
mod sections;

use raw::*;
use sections::*;

use crate::limits::{
    DEFAULT_MAX_ATTRIBUTE_BYTES, DEFAULT_MAX_ATTRIBUTES, DEFAULT_MAX_BATCH_EVENTS, DEFAULT_MAX_CONCURRENT_STREAMS,
    DEFAULT_MAX_INFLIGHT_BATCHES, DEFAULT_MAX_INFLIGHT_PER_STREAM, DEFAULT_MAX_MESSAGE_BYTES, MAX_CLOSE_GRACE_HOURS,
    MAX_DEDUPE_WINDOW_DAYS, MAX_FLUSH_INTERVAL_MS, MAX_ID_BYTES, MAX_SHARDS, MIN_FLUSH_INTERVAL_MS,
};

/// Settings of the Redis projection (`[redis]`; the key layout is `export::Keys`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    pub url: String,
    pub prefix: String,
    pub flush_interval_ms: u64,
}

/// A validated configuration, with the tariff catalogue it names already loaded.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    /// gRPC listen address (ingest and query).
    pub listen: SocketAddr,
    /// Log filter (tracing `EnvFilter` syntax, e.g. `info` or `ratingd=debug`); RUST_LOG wins.
    pub log_level: String,
    /// Prometheus scrape address (`GET /metrics`); `None` when disabled (an empty string).
    pub metrics_listen: Option<SocketAddr>,
    pub data_dir: PathBuf,
    /// Rating shards (threads that own their accounts outright).
    pub shards: usize,
    pub limits: Limits,
    /// Events older than this are TOO_OLD; it is also the dedupe window (SPEC section 2).
    pub dedupe_window_days: u32,
    /// Ids of events older than this many hours leave memory for the window's cold tier on disk.
    pub dedupe_hot_hours: u32,
    /// Events further than this in the future are TOO_FAR_IN_FUTURE.
    pub future_skew_seconds: u32,
    /// Most events in one group commit (one block, one fsync).
    pub commit_max_events: usize,
    /// A charging session's reservation lapses this long after its last grant (docs/charging.md).
    pub reservation_ttl_seconds: u32,
    /// A checkpoint is written after this many records have been committed since the last one.
    pub checkpoint_every_records: u64,
    /// Graceful shutdown: how long in-flight batches may take to drain after SIGTERM.
    pub shutdown_grace_seconds: u32,
    /// The Redis projection of the totals.
    pub redis: RedisConfig,
    /// A billing period closes this many hours after its end: its totals become final.
    pub period_close_grace_hours: u32,
    /// Records of closed periods that ended more than this many days ago are removed, with their
    /// final totals, index and alerts, and suspense entries as old (0: kept forever).
    pub retention_days: u32,
    /// Where retention writes the records it removes (JSONL, fsynced before the delete); `None`:
    /// not written anywhere.
    pub retention_export_dir: Option<PathBuf>,
    pub tariffs_path: PathBuf,
    pub catalogue: Catalogue,
    /// `[mediation] rules`: the normalization rules file, reloaded with the tariffs; `None`: no
    /// rules, every event is rated as sent.
    pub mediation_rules_path: Option<PathBuf>,
    pub mediation_rules: Rules,
    /// `[mediation.partial]`: bounds and timeout of partial sessions (docs/mediation.md).
    pub partial_limits: PartialLimits,
    /// `[mediation.spool]`: `None` when no spool directory is configured.
    pub spool: Option<SpoolConfig>,
    /// Plan for accounts with no subscription; `None` sends their events to suspense (`NO_TARIFF`).
    pub default_plan: Option<String>,
    pub subscriptions: Vec<Subscription>,
    /// Spend-alert thresholds per plan id (period charges in the plan's currency).
    pub plan_alerts: Vec<(String, Vec<rust_decimal::Decimal>)>,
    /// TLS on the gRPC listener; `None` is plaintext (loopback only, unless allowed below).
    pub tls: Option<TlsFiles>,
    pub allow_plaintext_non_loopback: bool,
    pub allow_unauthenticated_non_loopback: bool,
    /// Bearer tokens; none means every caller may call everything (loopback only, unless allowed).
    pub tokens: Vec<Token>,
}

/// `[mediation.spool]`: a directory whose CDR files ratingd reads exactly once (docs/mediation.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    /// CSV files are read through this mapping (`ratectl send --mapping`'s format); without it,
    /// ratingd's own CSV columns.
    pub mapping: Option<PathBuf>,
    pub poll_interval_ms: u64,
    /// Events per batch through the door (at most `limits.max_batch_events`).
    pub batch_events: usize,
}

/// Every problem found in a configuration, each with its path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<String>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("\n"))
    }
}

/// Bounds on input and on everything queued (SPEC section 10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Most events in one batch; a larger batch is refused whole (ResourceExhausted).
    pub max_batch_events: usize,
    /// Largest decoded gRPC message.
    pub max_message_bytes: usize,
    /// Batches admitted into the pipeline and not yet acknowledged, over all streams: the bound on
    /// queued memory (max_inflight_batches x max_batch_events events at most).
    pub max_inflight_batches: usize,
    /// Batches in flight on one stream; past it the stream is not read (HTTP/2 flow control).
    pub max_inflight_per_stream: usize,
    /// Most attributes per event, and their key and value length.
    pub max_attributes: usize,
    pub max_attribute_bytes: usize,
    /// Longest event id, account id and meter id (at most 128, SPEC section 2).
    pub max_id_bytes: usize,
    /// HTTP/2 streams one connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS).
    pub max_concurrent_streams: u32,
    /// A ping goes to an idle connection this often; one not answered within the timeout closes
    /// the connection (agents that died without closing it are reaped). 0 turns pings off.
    pub keepalive_interval_seconds: u64,
    pub keepalive_timeout_seconds: u64,
    /// A unary call not answered within this is DEADLINE_EXCEEDED (streams have no such bound).
    pub request_timeout_seconds: u64,
    /// A connection that has not finished its TLS handshake within this is closed (a client that
    /// speaks plaintext to a TLS port, or one that stalls, holds nothing for long).
    pub tls_handshake_timeout_seconds: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_batch_events: DEFAULT_MAX_BATCH_EVENTS,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_inflight_batches: DEFAULT_MAX_INFLIGHT_BATCHES,
            max_inflight_per_stream: DEFAULT_MAX_INFLIGHT_PER_STREAM,
            max_attributes: DEFAULT_MAX_ATTRIBUTES,
            max_attribute_bytes: DEFAULT_MAX_ATTRIBUTE_BYTES,
            max_id_bytes: MAX_ID_BYTES,
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            keepalive_interval_seconds: 30,
            keepalive_timeout_seconds: 10,
            request_timeout_seconds: 30,
            tls_handshake_timeout_seconds: 10,
        }
    }
}

impl Config {
    /// Reads and validates the configuration at `path` and the tariff file it names.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigErrors(vec![format!("{}: cannot read: {e}", path.display())]))?;
        let mut raw: RawConfig = toml::from_str(&text).map_err(|e| {
            ConfigErrors(vec![format!(
                "{}: {}",
                path.display(),
                e.to_string().trim_end().replace('\n', " | ")
            )])
        })?;
        let tariff_text = std::fs::read_to_string(&raw.tariffs)
            .map_err(|e| ConfigErrors(vec![format!("tariffs: cannot read {}: {e}", raw.tariffs.display())]))?;
        let catalogue = parse_catalogue(&tariff_text).map_err(|errors| {
            ConfigErrors(
                errors
                    .0
                    .iter()
                    .map(|e| format!("{}: {e}", raw.tariffs.display()))
                    .collect(),
            )
        })?;
        let mut errors = Vec::new();
        let mediation_rules = match &raw.mediation.rules {
            None => Rules::default(),
            Some(path) => load_rules(path).unwrap_or_else(|e| {
                errors.extend(e);
                Rules::default()
            }),
        };
        let partial_limits = partial_limits(&raw.mediation.partial, &mut errors);
        let spool = raw.mediation.spool.take().map(|s| {
            if s.poll_interval_ms == 0 {
                errors.push("mediation.spool.poll_interval_ms: must be at least 1".into());
            }
            if !(1..=raw.limits.max_batch_events).contains(&s.batch_events) {
                errors.push(format!(
                    "mediation.spool.batch_events: must be 1..={} (limits.max_batch_events)",
                    raw.limits.max_batch_events
                ));
            }
            SpoolConfig {
                dir: s.dir,
                mapping: s.mapping,
                poll_interval_ms: s.poll_interval_ms,
                batch_events: s.batch_events,
            }
        });
        let listen = raw
            .listen
            .parse::<SocketAddr>()
            .map_err(|_| {
                errors.push(format!(
                    "listen: {:?} is not an address like 127.0.0.1:50051",
                    raw.listen
                ))
            })
            .ok();
        let metrics_listen = if raw.metrics_listen.is_empty() {
            None
        } else {
            raw.metrics_listen
                .parse::<SocketAddr>()
                .map_err(|_| {
                    errors.push(format!(
                        "metrics_listen: {:?} is not an address like 127.0.0.1:9898",
                        raw.metrics_listen
                    ))
                })
                .ok()
        };
        if tracing_subscriber::EnvFilter::try_new(&raw.log_level).is_err() {
            errors.push(format!(
                "log_level: {:?} is not a log filter such as \"info\" or \"ratingd=debug\"",
                raw.log_level
            ));
        }
        let shards = if raw.shards == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            raw.shards
        };
        if shards > MAX_SHARDS {
            errors.push(format!("shards: at most {MAX_SHARDS}"));
        }
        if !(1..=MAX_DEDUPE_WINDOW_DAYS).contains(&raw.dedupe_window_days) {
            errors.push(format!(
                "dedupe_window_days: must be between 1 and {MAX_DEDUPE_WINDOW_DAYS}"
            ));
        }
        if raw.dedupe_hot_hours == 0 {
            // Ids of today's events would spill as they come: one run file per job.
            errors.push("dedupe_hot_hours: must be at least 1".to_string());
        }
        if !raw.redis.url.starts_with("redis://") && !raw.redis.url.starts_with("rediss://") {
            errors.push(format!("redis.url: {:?} is not a redis:// URL", raw.redis.url));
        }
        if raw.redis.prefix.is_empty() || raw.redis.prefix.contains(char::is_whitespace) {
            errors.push("redis.prefix: must be non-empty, without spaces".to_string());
        }
        if !(MIN_FLUSH_INTERVAL_MS..=MAX_FLUSH_INTERVAL_MS).contains(&raw.redis.flush_interval_ms) {
            errors.push(format!(
                "redis.flush_interval_ms: must be between {MIN_FLUSH_INTERVAL_MS} and {MAX_FLUSH_INTERVAL_MS}"
            ));
        }
        if raw.period_close_grace_hours > MAX_CLOSE_GRACE_HOURS {
            errors.push("period_close_grace_hours: at most a year".to_string());
        }
        if raw.retention_days != 0 {
            if raw.retention_days < raw.dedupe_window_days {
                errors.push(format!(
                    "retention_days: {} is shorter than dedupe_window_days ({}): a removed record's id \
                     could still be resent and charged again",
                    raw.retention_days, raw.dedupe_window_days
                ));
            }
            if u64::from(raw.retention_days) * 24 < u64::from(raw.period_close_grace_hours) {
                errors.push(format!(
                    "retention_days: {} days is shorter than period_close_grace_hours ({} h): records \
                     would be removed before their period closes",
                    raw.retention_days, raw.period_close_grace_hours
                ));
            }
        }
        if raw.reservation_ttl_seconds == 0 {
            errors.push("reservation_ttl_seconds: must be at least 1".to_string());
        }
        if raw.commit_max_events == 0 {
            errors.push("commit_max_events: must be at least 1".to_string());
        }
        let l = raw.limits;
        for (name, value) in [
            ("limits.max_batch_events", l.max_batch_events),
            ("limits.max_message_bytes", l.max_message_bytes),
            ("limits.max_inflight_batches", l.max_inflight_batches),
            ("limits.max_inflight_per_stream", l.max_inflight_per_stream),
            ("limits.max_attribute_bytes", l.max_attribute_bytes),
            ("limits.max_id_bytes", l.max_id_bytes),
            ("limits.max_concurrent_streams", l.max_concurrent_streams as usize),
            ("limits.request_timeout_seconds", l.request_timeout_seconds as usize),
            (
                "limits.tls_handshake_timeout_seconds",
                l.tls_handshake_timeout_seconds as usize,
            ),
        ] {
            if value == 0 {
                errors.push(format!("{name}: must be at least 1"));
            }
        }
        if l.max_id_bytes > MAX_ID_BYTES {
            errors.push(format!("limits.max_id_bytes: at most {MAX_ID_BYTES} (SPEC section 2)"));
        }
        if l.keepalive_interval_seconds > 0 && l.keepalive_timeout_seconds == 0 {
            errors.push("limits.keepalive_timeout_seconds: must be at least 1 when pings are on".to_string());
        }
        let tls = raw.tls.map(|t| {
            let handshake = std::time::Duration::from_secs(l.tls_handshake_timeout_seconds);
            TlsFiles::load(t.cert, t.key, t.client_ca, handshake, &mut errors)
        });
        let tokens = tokens(raw.tokens, &mut errors);
        if let Some(listen) = listen {
            if plaintext_refused(listen, tls.is_some(), raw.allow_plaintext_non_loopback) {
                errors.push(format!(
                    "listen: {listen} is not a loopback address and [tls] is not set; set [tls] \
                     (docs/security.md), or allow_plaintext_non_loopback = true to accept plaintext"
                ));
            }
            // Client certificates from the configured CA authenticate callers as well as tokens do.
            let mutual_tls = tls.as_ref().is_some_and(|t| t.client_ca.is_some());
            if tokens.is_empty() && !mutual_tls && !listen.ip().is_loopback() && !raw.allow_unauthenticated_non_loopback
            {
                errors.push(format!(
                    "listen: {listen} is not a loopback address and no [[tokens]] are set; add tokens \
                     (docs/security.md), or allow_unauthenticated_non_loopback = true to let anyone call"
                ));
            }
        }
        if let Some(plan) = &raw.default_plan
            && catalogue.plan(plan).is_none()
        {
            errors.push(format!("default_plan: unknown plan {plan:?}"));
        }
        let subscriptions = raw
            .subscriptions
            .into_iter()
            .enumerate()
            .filter_map(|(i, s)| subscription(&catalogue, &format!("subscriptions[{i}]"), s, &mut errors))
            .collect::<Vec<_>>();
        overlapping(&subscriptions, &catalogue, &mut errors);
        let mut plan_alerts = Vec::new();
        for (i, a) in raw.alerts.iter().enumerate() {
            if catalogue.plan(&a.plan).is_none() {
                errors.push(format!("alerts[{i}].plan: unknown plan {:?}", a.plan));
            }
            plan_alerts.push((
                a.plan.clone(),
                thresholds(&format!("alerts[{i}].thresholds"), &a.thresholds, &mut errors),
            ));
        }
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        Ok(Config {
            path: path.to_path_buf(),
            // Invariant: an unparsable address pushed an error and returned above.
            listen: listen.expect("listen validated"),
            metrics_listen,
            log_level: raw.log_level,
            data_dir: raw.data_dir,
            shards,
            limits: raw.limits,
            dedupe_window_days: raw.dedupe_window_days,
            dedupe_hot_hours: raw.dedupe_hot_hours,
            future_skew_seconds: raw.future_skew_seconds,
            commit_max_events: raw.commit_max_events,
            reservation_ttl_seconds: raw.reservation_ttl_seconds,
            checkpoint_every_records: raw.checkpoint_every_records,
            shutdown_grace_seconds: raw.shutdown_grace_seconds,
            period_close_grace_hours: raw.period_close_grace_hours,
            retention_days: raw.retention_days,
            retention_export_dir: raw.retention_export_dir,
            redis: RedisConfig {
                url: raw.redis.url,
                prefix: raw.redis.prefix,
                flush_interval_ms: raw.redis.flush_interval_ms,
            },
            tariffs_path: raw.tariffs,
            catalogue,
            mediation_rules_path: raw.mediation.rules,
            partial_limits,
            spool,
            mediation_rules,
            default_plan: raw.default_plan,
            subscriptions,
            plan_alerts,
            tls,
            allow_plaintext_non_loopback: raw.allow_plaintext_non_loopback,
            allow_unauthenticated_non_loopback: raw.allow_unauthenticated_non_loopback,
            tokens,
        })
    }
}
