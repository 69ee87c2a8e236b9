//! The metric catalogue: every name ratingd exports, declared and described once, and the
//! Prometheus exporter (`GET /metrics` on `metrics_listen`). Names follow
//! `ratingd_<what>_<unit>[_total]`; labels come from fixed sets only (never an account id).
//! Hot paths count per batch, not per event. [`RateLimitedLog`] keeps repeated log lines (refused
//! requests, rejected events) to one a second.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use tracing::{info, warn};

use crate::domain::usage::{Ack, RejectReason};

pub const EVENTS_RECEIVED: &str = "ratingd_events_received_total";
pub const EVENTS_ACCEPTED: &str = "ratingd_events_accepted_total";
pub const EVENTS_DUPLICATE: &str = "ratingd_events_duplicate_total";
pub const EVENTS_REJECTED: &str = "ratingd_events_rejected_total";
/// Events normalization rules changed before rating (docs/mediation.md).
pub const EVENTS_NORMALIZED: &str = "ratingd_events_normalized_total";
/// Events a normalization rule dropped, by `rule` (the names in the rules file).
pub const EVENTS_DROPPED: &str = "ratingd_events_dropped_total";
/// Spool files taken, by `outcome` (`done`: read and acknowledged; `failed`: not readable).
pub const SPOOL_FILES: &str = "ratingd_spool_files_total";
/// Lines of spool files that were not events, put in suspense with their file and line.
pub const SPOOL_BAD_LINES: &str = "ratingd_spool_bad_lines_total";
/// Partial sessions holding parts, by shard.
pub const PARTIAL_SESSIONS_OPEN: &str = "ratingd_partial_sessions_open";
/// Partial sessions merged with every part and rated.
pub const PARTIAL_SESSIONS_MERGED: &str = "ratingd_partial_sessions_merged_total";
/// Partial sessions merged at their timeout from the parts they had (rated incomplete).
pub const PARTIAL_SESSIONS_TIMED_OUT: &str = "ratingd_partial_sessions_timed_out_total";
pub const REDIS_FLUSH_ERRORS: &str = "ratingd_redis_flush_errors_total";
pub const PERIODS_CLOSED: &str = "ratingd_periods_closed_total";
/// Rated records removed by retention (closed periods older than `retention_days`).
pub const RETENTION_REMOVED: &str = "ratingd_retention_removed_records_total";
/// Retention steps that failed (export or removal) and removed nothing; retried next interval.
pub const RETENTION_ERRORS: &str = "ratingd_retention_errors_total";
pub const ALERTS: &str = "ratingd_alerts_total";
/// Records written by corrections (reversals and replacements), by `action` (rerate, void, amend).
pub const CORRECTION_RECORDS: &str = "ratingd_correction_records_total";
/// Charging sessions holding a reservation.
pub const RESERVATIONS_OPEN: &str = "ratingd_reservations_open";
/// Reservations that lapsed (no update before their expiry) and gave their money back.
pub const RESERVATIONS_EXPIRED: &str = "ratingd_reservations_expired_total";
/// Authorize and Update requests the balance could not pay a single unit of.
pub const RESERVATIONS_DENIED: &str = "ratingd_reservations_denied_total";
/// Balance ledger entries written, by `kind` (topup, reservation, commit, release, expiry,
/// adjustment).
pub const LEDGER_ENTRIES: &str = "ratingd_ledger_entries_total";
pub const BATCH_ACK_DURATION: &str = "ratingd_batch_ack_duration_seconds";
pub const SHARD_QUEUE_DEPTH: &str = "ratingd_shard_queue_depth";
/// Batches admitted and not yet acknowledged (at most `limits.max_inflight_batches`).
pub const BATCHES_IN_FLIGHT: &str = "ratingd_batches_in_flight";
pub const COMMIT_DURATION: &str = "ratingd_commit_duration_seconds";
pub const COMMIT_EVENTS: &str = "ratingd_commit_events";
/// Group commits that failed (write or fsync): ratingd takes no more work until restarted.
pub const COMMIT_FAILURES: &str = "ratingd_commit_failures_total";
pub const REDIS_FLUSH_DURATION: &str = "ratingd_redis_flush_duration_seconds";
pub const REDIS_LAG: &str = "ratingd_redis_lag_seconds";
pub const DEDUPE_WINDOW_IDS: &str = "ratingd_dedupe_window_ids";
/// The part of the window's ids in the cold tier (run files on disk), by shard.
pub const DEDUPE_COLD_IDS: &str = "ratingd_dedupe_cold_ids";
/// Cold-tier pages read because a run's filter said "maybe" (a hit or a false positive).
pub const DEDUPE_COLD_PAGE_READS: &str = "ratingd_dedupe_cold_page_reads_total";
/// Spills to the cold tier (or removals of expired runs) that failed; retried a minute later,
/// the ids answering from memory meanwhile.
pub const DEDUPE_SPILL_ERRORS: &str = "ratingd_dedupe_spill_errors_total";
pub const AGGREGATES: &str = "ratingd_aggregates";
/// Charges rated, in millionths of the currency unit. The metrics facade has integer counters
/// only, so the dashboard figure of SPEC section 8 is kept as an integer counter of micro-units
/// (divide by 1e6); exact totals come from the Query API.
pub const RATED_CHARGE: &str = "ratingd_rated_charge_micros_total";
pub const TARIFF_RELOADS: &str = "ratingd_tariff_reloads_total";
pub const SUSPENSE_EVENTS: &str = "ratingd_suspense_events";
/// Requests and batches refused before anything of them was written, by reason (a fixed set:
/// `security::Refused`).
pub const REQUESTS_REFUSED: &str = "ratingd_requests_refused_total";

/// Where a batch's time goes, by `stage` (one of [`STAGES`]): the tail of
/// `ratingd_batch_ack_duration_seconds` explained from a scrape.
pub const STAGE_DURATION: &str = "ratingd_stage_duration_seconds";
/// The values of `stage`: waiting for a place in the pipeline (per batch), waiting in a shard's
/// queue (per job), rating a job in its shard (per job), a job's records waiting for their group
/// commit to start (per job), and the fsync of a group commit.
pub const STAGES: [&str; 5] = ["admission_wait", "shard_queue", "rate", "commit_wait", "fsync"];

/// A stage's histogram handle (resolve it once per thread, record per batch or job).
pub fn stage(name: &'static str) -> metrics::Histogram {
    metrics::histogram!(STAGE_DURATION, "stage" => name)
}

/// Every metric name, for checks such as the dashboard's.
pub const ALL: [&str; 39] = [
    EVENTS_RECEIVED,
    EVENTS_ACCEPTED,
    EVENTS_DUPLICATE,
    EVENTS_REJECTED,
    EVENTS_NORMALIZED,
    EVENTS_DROPPED,
    PARTIAL_SESSIONS_OPEN,
    PARTIAL_SESSIONS_MERGED,
    PARTIAL_SESSIONS_TIMED_OUT,
    SPOOL_FILES,
    SPOOL_BAD_LINES,
    REDIS_FLUSH_ERRORS,
    PERIODS_CLOSED,
    RETENTION_REMOVED,
    RETENTION_ERRORS,
    DEDUPE_COLD_IDS,
    DEDUPE_COLD_PAGE_READS,
    DEDUPE_SPILL_ERRORS,
    ALERTS,
    CORRECTION_RECORDS,
    RESERVATIONS_OPEN,
    RESERVATIONS_EXPIRED,
    RESERVATIONS_DENIED,
    LEDGER_ENTRIES,
    BATCH_ACK_DURATION,
    SHARD_QUEUE_DEPTH,
    BATCHES_IN_FLIGHT,
    COMMIT_DURATION,
    COMMIT_EVENTS,
    COMMIT_FAILURES,
    REDIS_FLUSH_DURATION,
    REDIS_LAG,
    DEDUPE_WINDOW_IDS,
    AGGREGATES,
    RATED_CHARGE,
    TARIFF_RELOADS,
    SUSPENSE_EVENTS,
    REQUESTS_REFUSED,
    STAGE_DURATION,
];

/// Latency buckets (seconds): 100 us .. 10 s.
const SECONDS_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 10.0,
];
/// Events per commit: 1 .. 100,000.
const COMMIT_EVENTS_BUCKETS: [f64; 11] = [
    1.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 20000.0, 100000.0,
];

fn describe() {
    describe_counter!(
        EVENTS_RECEIVED,
        "Events received in acknowledged batches (accepted + duplicate + rejected + dropped)."
    );
    describe_counter!(
        EVENTS_NORMALIZED,
        "Events normalization rules changed before their checks and rating."
    );
    describe_counter!(
        SPOOL_FILES,
        "Spool files taken, by outcome (done: acknowledged and moved to done/; failed: moved to failed/)."
    );
    describe_counter!(
        SPOOL_BAD_LINES,
        "Lines of spool files that were not events, put in suspense with their file and line."
    );
    describe_gauge!(PARTIAL_SESSIONS_OPEN, "Partial sessions holding parts, by shard.");
    describe_counter!(
        PARTIAL_SESSIONS_MERGED,
        "Partial sessions merged with every part and rated as one event."
    );
    describe_counter!(
        PARTIAL_SESSIONS_TIMED_OUT,
        "Partial sessions rated at their timeout from the parts they had (incomplete)."
    );
    describe_counter!(
        EVENTS_DROPPED,
        "Events a normalization rule dropped (not rated, not kept), by rule."
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
    describe_counter!(
        RETENTION_ERRORS,
        "Retention steps that failed (the export or the removal) and removed nothing; retried."
    );
    describe_counter!(
        RETENTION_REMOVED,
        "Rated records removed by retention (closed periods that ended more than retention_days ago)."
    );
    describe_counter!(ALERTS, "Spend alerts raised.");
    describe_counter!(
        CORRECTION_RECORDS,
        "Records written by corrections (reversals and replacements), by action: rerate, void, amend."
    );
    describe_gauge!(RESERVATIONS_OPEN, "Charging sessions holding a reservation.");
    describe_counter!(
        RESERVATIONS_EXPIRED,
        "Reservations that lapsed without an update and gave their money back."
    );
    describe_counter!(
        RESERVATIONS_DENIED,
        "Authorize and Update requests the balance could not pay a single unit of."
    );
    describe_counter!(
        LEDGER_ENTRIES,
        "Balance ledger entries written, by kind: topup, reservation, commit, release, expiry, adjustment."
    );
    describe_histogram!(
        BATCH_ACK_DURATION,
        Unit::Seconds,
        "From a batch's admission to its acknowledgement (after fsync)."
    );
    describe_gauge!(SHARD_QUEUE_DEPTH, "Jobs waiting in a shard's queue, by shard.");
    describe_gauge!(
        BATCHES_IN_FLIGHT,
        "Batches admitted and not yet acknowledged, over all streams (bounded by limits.max_inflight_batches)."
    );
    describe_histogram!(
        COMMIT_DURATION,
        Unit::Seconds,
        "One group commit: sled batch write plus fsync."
    );
    describe_histogram!(COMMIT_EVENTS, "Rated records per group commit.");
    describe_counter!(
        COMMIT_FAILURES,
        "Group commits that failed (sled write or fsync); after one, ratingd acknowledges nothing more until restarted."
    );
    describe_histogram!(
        REDIS_FLUSH_DURATION,
        Unit::Seconds,
        "One flush of the Redis projection."
    );
    describe_gauge!(
        REDIS_LAG,
        Unit::Seconds,
        "Seconds since the Redis projection last flushed successfully."
    );
    describe_gauge!(
        DEDUPE_WINDOW_IDS,
        "Event ids held in the dedupe window (memory and cold tier), by shard."
    );
    describe_gauge!(
        DEDUPE_COLD_IDS,
        "Event ids of the dedupe window in its cold tier on disk, by shard."
    );
    describe_counter!(
        DEDUPE_COLD_PAGE_READS,
        "Cold-tier pages read because a run's filter said maybe (a hit or a false positive)."
    );
    describe_counter!(
        DEDUPE_SPILL_ERRORS,
        "Spills to the dedupe cold tier or removals of expired runs that failed; retried a minute later."
    );
    describe_gauge!(AGGREGATES, "Account-period totals held.");
    describe_counter!(
        RATED_CHARGE,
        "Charges rated, by currency, in millionths of the unit. APPROXIMATE (rounded per job, for dashboards); exact totals come from the Query API."
    );
    describe_counter!(TARIFF_RELOADS, "Tariff reloads, by result (ok, refused).");
    describe_counter!(
        REQUESTS_REFUSED,
        "Requests or batches refused whole, nothing written, by reason (unauthenticated, permission_denied, \
         resource_exhausted, deadline_exceeded, invalid_argument, data_loss)."
    );
    describe_gauge!(SUSPENSE_EVENTS, "Rejected events waiting in suspense.");
    describe_histogram!(
        STAGE_DURATION,
        Unit::Seconds,
        "Time in one pipeline stage, by stage: admission_wait (per batch), shard_queue, rate and commit_wait (per shard job), fsync (per group commit)."
    );
}

/// Installs the Prometheus recorder and its HTTP listener. A failure (port taken, a recorder
/// already installed in this process) is logged and ratingd runs on without metrics.
pub fn install(listen: Option<SocketAddr>) {
    let Some(addr) = listen else { return };
    let builder = PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(COMMIT_EVENTS.into()), &COMMIT_EVENTS_BUCKETS));
    match builder.and_then(|b| b.install()) {
        Ok(()) => {
            describe();
            info!(%addr, "metrics served at /metrics");
        }
        Err(error) => warn!(%error, %addr, "metrics exporter not started"),
    }
}

static REJECTIONS_LOG: RateLimitedLog = RateLimitedLog::new();

/// Counts a batch's events the normalization rules changed (at the door, once per batch).
pub fn count_normalized(events: u64) {
    if events > 0 {
        counter!(EVENTS_NORMALIZED).increment(events);
    }
}

/// Counts a batch's dropped events, once per rule that dropped some.
fn count_dropped(results: &[crate::domain::usage::EventOutcome]) {
    let mut by_rule: Vec<(&str, u64)> = Vec::new();
    for rule in results.iter().filter_map(|r| r.dropped_by.as_deref()) {
        match by_rule.iter_mut().find(|(r, _)| *r == rule) {
            Some((_, n)) => *n += 1,
            None => by_rule.push((rule, 1)),
        }
    }
    for (rule, n) in by_rule {
        counter!(EVENTS_DROPPED, "rule" => rule.to_string()).increment(n);
    }
}

/// Counts one acknowledged batch.
pub fn count_ack(ack: &Ack) {
    counter!(EVENTS_RECEIVED).increment(u64::from(ack.accepted + ack.duplicate + ack.rejected + ack.dropped));
    if ack.dropped > 0 {
        count_dropped(&ack.results);
    }
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
    // A bad agent can send nothing but rejects: one line a second at most, with the first
    // rejection's detail, the batch's counts and how many batches with rejects were not logged.
    if ack.rejected > 0
        && let Some(held_back) = REJECTIONS_LOG.allow()
    {
        let first = ack.results.iter().find(|r| r.rejected.is_some());
        let reasons: Vec<String> = RejectReason::ALL
            .iter()
            .zip(by_reason)
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| format!("{}={n}", r.as_str()))
            .collect();
        info!(
            batch = ack.batch_id,
            rejected = ack.rejected,
            reasons = reasons.join(","),
            first_detail = first.map_or("", |r| r.detail.as_str()),
            batches_not_logged_since_last = held_back,
            "events rejected into suspense"
        );
    }
}

/// A log line at most once a second: `allow` says whether to log now and how many were held back
/// since the last line.
pub struct RateLimitedLog {
    last_second: AtomicU64,
    held_back: AtomicU64,
}

impl RateLimitedLog {
    pub const fn new() -> RateLimitedLog {
        RateLimitedLog {
            last_second: AtomicU64::new(0),
            held_back: AtomicU64::new(0),
        }
    }

    /// `Some(held back)` when a line may be logged now; `None` (and one more held back) otherwise.
    pub fn allow(&self) -> Option<u64> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self.last_second.load(Ordering::Relaxed);
        if now > last
            && self
                .last_second
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            Some(self.held_back.swap(0, Ordering::Relaxed))
        } else {
            self.held_back.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

impl Default for RateLimitedLog {
    fn default() -> Self {
        RateLimitedLog::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_limited_log_lets_one_line_through_per_second_and_counts_the_rest() {
        let log = RateLimitedLog::new();
        assert_eq!(log.allow(), Some(0), "the first line goes out");
        // Pretend the last line went out in a second that has not ended yet: everything waits.
        log.last_second.store(u64::MAX, Ordering::Relaxed);
        assert_eq!((0..3).map(|_| log.allow()).collect::<Vec<_>>(), vec![None; 3]);
        // A second later the next line goes out and says how many were held back.
        log.last_second.store(0, Ordering::Relaxed);
        assert_eq!(log.allow(), Some(3));
    }
}
