//! The metric catalogue: every name ratingd exports, declared and described once, and the
//! Prometheus exporter (`GET /metrics` on `metrics_listen`). Names follow
//! `ratingd_<what>_<unit>[_total]`; labels come from fixed sets only (never an account id).
//! Hot paths count per batch, not per event.

use std::net::SocketAddr;

use metrics::{counter, describe_counter};
use metrics_exporter_prometheus::PrometheusBuilder;
use tracing::{info, warn};

use crate::domain::usage::{Ack, RejectReason};

pub const EVENTS_RECEIVED: &str = "ratingd_events_received_total";
pub const EVENTS_ACCEPTED: &str = "ratingd_events_accepted_total";
pub const EVENTS_DUPLICATE: &str = "ratingd_events_duplicate_total";
pub const EVENTS_REJECTED: &str = "ratingd_events_rejected_total";
pub const REDIS_FLUSH_ERRORS: &str = "ratingd_redis_flush_errors_total";
pub const PERIODS_CLOSED: &str = "ratingd_periods_closed_total";
pub const ALERTS: &str = "ratingd_alerts_total";

fn describe() {
    describe_counter!(
        EVENTS_RECEIVED,
        "Events received in acknowledged batches (accepted + duplicate + rejected)."
    );
    describe_counter!(EVENTS_ACCEPTED, "Events rated and durably stored.");
    describe_counter!(
        EVENTS_DUPLICATE,
        "Events already rated with the same content (a success)."
    );
    describe_counter!(EVENTS_REJECTED, "Events rejected into suspense, by reason.");
    describe_counter!(
        REDIS_FLUSH_ERRORS,
        "Flushes of the Redis projection that failed (Redis unreachable or erroring)."
    );
    describe_counter!(PERIODS_CLOSED, "Billing periods (plan, period) closed.");
    describe_counter!(ALERTS, "Spend alerts raised.");
}

/// Installs the Prometheus recorder and its HTTP listener. A failure (port taken, a recorder
/// already installed in this process) is logged and ratingd runs on without metrics.
pub fn install(listen: Option<SocketAddr>) {
    let Some(addr) = listen else { return };
    match PrometheusBuilder::new().with_http_listener(addr).install() {
        Ok(()) => {
            describe();
            info!(%addr, "metrics served at /metrics");
        }
        Err(error) => warn!(%error, %addr, "metrics exporter not started"),
    }
}

/// Counts one acknowledged batch.
pub fn count_ack(ack: &Ack) {
    counter!(EVENTS_RECEIVED).increment(u64::from(ack.accepted + ack.duplicate + ack.rejected));
    counter!(EVENTS_ACCEPTED).increment(u64::from(ack.accepted));
    counter!(EVENTS_DUPLICATE).increment(u64::from(ack.duplicate));
    let mut by_reason = [0u64; RejectReason::ALL.len()];
    for r in &ack.results {
        if let Some(reason) = r.rejected {
            by_reason[usize::from(reason.code())] += 1;
        }
    }
    for (reason, n) in RejectReason::ALL.iter().zip(by_reason) {
        if n > 0 {
            counter!(EVENTS_REJECTED, "reason" => reason.as_str()).increment(n);
        }
    }
}
