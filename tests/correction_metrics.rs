//! The corrections' metric, in a test binary of its own (the metrics recorder is one per process,
//! so counts are exact only without other daemons beside it): the records each action wrote,
//! counted once, and never as received events.

mod common;

use chrono::{TimeZone, Utc};
use common::*;
use ratingd::wire::proto::{self, admin_client::AdminClient};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn correction_records_are_counted_by_action_and_not_as_events() {
    let dir = TempDir::new("corr-metrics");
    let metrics = format!("127.0.0.1:{}", free_port());
    let d = TestDaemon::start(&write_config(&dir.0, &format!("metrics_listen = \"{metrics}\""))).await;
    let at = Utc.with_ymd_and_hms(2026, 11, 17, 10, 0, 0).unwrap();
    let events = vec![
        event("a1", "saas-0", "api.requests", 1000, 0, at, &[]),
        event("a2", "saas-0", "api.requests", 2000, 0, at, &[]),
        event("g1", "saas-0", "storage.gb_hours", 150, 0, at, &[]),
    ];
    assert_eq!(d.submit(1, events).await.accepted, 3);
    let mut admin = AdminClient::new(channel(&d.target).await);
    let void = proto::VoidEventRequest {
        account_id: "saas-0".into(),
        event_id: "a1".into(),
        reason: "test".into(),
        id: String::new(),
    };
    // a1 reversed; a2's usage before moves but its charge does not (same volume tier): 1 record.
    let voided = admin.void_event(void.clone()).await.unwrap().into_inner();
    assert_eq!(voided.records_changed, 1);
    // Again: already applied, nothing written or counted.
    admin.void_event(void).await.unwrap();
    // g1: 150 GB-hours in 2 blocks of 100 -> 250 in 3 blocks: reversed and replaced, 2 records.
    let amend = proto::AmendEventRequest {
        account_id: "saas-0".into(),
        event_id: "g1".into(),
        quantity: Some(proto::Quantity { units: 250, nanos: 0 }),
        attributes: Vec::new(),
        reason: "test".into(),
        id: String::new(),
    };
    admin.amend_event(amend).await.unwrap();
    let scraped = scrape_metrics(&metrics);
    let count = |k: &str| scraped.get(k).copied().unwrap_or(0.0);
    assert_eq!(
        count("ratingd_correction_records_total{action=\"void\"}"),
        1.0,
        "{scraped:?}"
    );
    assert_eq!(count("ratingd_correction_records_total{action=\"amend\"}"), 2.0);
    assert_eq!(count("ratingd_events_received_total"), 3.0);
    assert_eq!(count("ratingd_events_accepted_total"), 3.0);
    d.stop().await;
}
