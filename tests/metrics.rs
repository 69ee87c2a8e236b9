//! The Prometheus scrape of the built binary: after a known workload, received = accepted +
//! duplicate + rejected in the scraped text, rejections by reason, a refused batch by reason, and
//! Redis flush errors while Redis is unreachable.

mod common;

use std::time::{Duration, Instant};

use common::*;
use ratingd::wire::proto;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scrape_accounts_for_every_event() {
    let dir = TempDir::new("metrics");
    let addr = format!("127.0.0.1:{}", free_port());
    let config = write_config(
        &dir.0,
        &format!("metrics_listen = \"{addr}\"\n[limits]\nmax_batch_events = 100"),
    );
    let daemon = DaemonProcess::spawn(&config);
    // The binary runs on the real clock: dates from safe_now(), in one open period.
    let at = safe_now();
    let mut events = generate_at(500, 0.0, 71, at);
    events.extend(events[..50].to_vec()); // 50 duplicates
    events.push(event("x-1", "nobody", "api.requests", 1, 0, at, &[])); // NO_TARIFF
    events.push(event("x-2", "saas-0", "fax.pages", 1, 0, at, &[])); // UNKNOWN_METER
    events.push(event("x-3", "saas-0", "fax.pages", 1, 0, at, &[])); // UNKNOWN_METER
    let mut client = proto::ingest_client::IngestClient::new(common::channel(&daemon.target.clone()).await);
    for b in batches(&events, 100) {
        client.submit(b).await.unwrap();
    }
    // One batch over the limit: refused whole, counted by reason, nothing of it received.
    let over = proto::UsageBatch {
        batch_id: 9_999,
        events: generate_at(101, 0.0, 72, at),
    };
    let refused = client.submit(over).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    let m = scrape_metrics(&addr);
    let get = |k: &str| m.get(k).copied().unwrap_or(0.0);
    assert_eq!(get("ratingd_events_received_total"), events.len() as f64);
    assert_eq!(get("ratingd_events_accepted_total"), 500.0);
    assert_eq!(get("ratingd_events_duplicate_total"), 50.0);
    assert_eq!(get("ratingd_events_rejected_total{reason=\"NO_TARIFF\"}"), 1.0);
    assert_eq!(get("ratingd_events_rejected_total{reason=\"UNKNOWN_METER\"}"), 2.0);
    let rejected: f64 = m
        .iter()
        .filter(|(k, _)| k.starts_with("ratingd_events_rejected_total"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(
        get("ratingd_events_received_total"),
        get("ratingd_events_accepted_total") + get("ratingd_events_duplicate_total") + rejected
    );
    // The rest of the catalogue, from the same workload.
    let batches_sent = events.len().div_ceil(100) as f64;
    assert_eq!(get("ratingd_batch_ack_duration_seconds_count"), batches_sent);
    assert_eq!(
        get("ratingd_commit_events_sum"),
        500.0,
        "every rated record in exactly one commit"
    );
    assert_eq!(get("ratingd_suspense_events"), 3.0);
    let ids: f64 = m
        .iter()
        .filter(|(k, _)| k.starts_with("ratingd_dedupe_window_ids{"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(ids, 500.0);
    assert!(
        m.keys()
            .any(|k| k.starts_with("ratingd_shard_queue_depth{shard=\"0\"}"))
    );
    assert!(get("ratingd_aggregates") > 0.0);
    assert!(get("ratingd_rated_charge_micros_total{currency=\"USD\"}") > 0.0);
    assert!(get("ratingd_rated_charge_micros_total{currency=\"EUR\"}") > 0.0);
    assert!(get("ratingd_commit_duration_seconds_count") > 0.0);
    assert_eq!(
        get("ratingd_requests_refused_total{reason=\"resource_exhausted\"}"),
        1.0
    );
    // The test config points Redis at a closed port: flushes fail and are counted.
    let deadline = Instant::now() + Duration::from_secs(20);
    while scrape_metrics(&addr)
        .get("ratingd_redis_flush_errors_total")
        .copied()
        .unwrap_or(0.0)
        < 1.0
    {
        assert!(Instant::now() < deadline, "no redis flush error counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The shipped Grafana dashboard queries only metrics ratingd exports.
#[test]
fn the_dashboard_uses_only_exported_metrics() {
    let dashboard: serde_json::Value = serde_json::from_str(include_str!("../config/grafana-dashboard.json")).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 7);
    let mut used = 0;
    for target in panels.iter().flat_map(|p| p["targets"].as_array().unwrap()) {
        let expr = target["expr"].as_str().unwrap();
        for (i, _) in expr.match_indices("ratingd_") {
            let name: String = expr[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .fold(name.clone(), |n, s| n.strip_suffix(s).map_or(n.clone(), str::to_string));
            assert!(
                ratingd::telemetry::ALL.contains(&base.as_str()),
                "{name} in {expr:?} is not exported"
            );
            used += 1;
        }
    }
    assert!(used >= 10);
}
