//! The mediation metrics, in a test binary of their own (one metrics recorder per process, so the
//! counts are exactly this test's): events normalized, dropped by rule, and received = accepted +
//! duplicate + rejected + dropped.

mod common;

use chrono::Duration;
use common::*;

const RULES: &str = r#"
[[rule]]
name = "national-to-e164"
when = { meter = ["voice.seconds"], attributes = { destination = '^0[1-9]' } }
rewrite = { field = "destination", pattern = '^0', replacement = "+49" }

[[rule]]
name = "drop-test-traffic"
when = { attributes = { traffic = '^test$' } }
drop = true

[[rule]]
name = "drop-internal"
when = { attributes = { destination = '^\+49301000' } }
drop = true
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_normalized_and_dropped_by_rule_are_counted() {
    let dir = TempDir::new("mediation-metrics");
    let port = free_port();
    let rules = dir.0.join("mediation.toml");
    std::fs::write(&rules, RULES).unwrap();
    let extra = format!(
        "metrics_listen = \"127.0.0.1:{port}\"\n[mediation]\nrules = {:?}\n",
        rules.display().to_string()
    );
    let d = TestDaemon::start(&write_config(&dir.0, &extra)).await;
    let at = d.now() - Duration::hours(1);
    let call = |id: &str, to: &str| event(id, "tel-1", "voice.seconds", 61, 0, at, &[("destination", to)]);
    let ack = d
        .submit(
            1,
            vec![
                call("c-1", "0301234567"),
                call("c-2", "+441632960000"),
                // Normalized first, then dropped by a later rule: counted as dropped only.
                call("c-3", "0301000123"),
                event("c-4", "tel-1", "sms.count", 1, 0, at, &[("traffic", "test")]),
                event("c-5", "tel-1", "sms.count", 1, 0, at, &[("traffic", "test")]),
                event("c-6", "tel-1", "no.such.meter", 1, 0, at, &[]),
            ],
        )
        .await;
    assert_eq!((ack.accepted, ack.rejected, ack.dropped), (2, 1, 3), "{ack:?}");
    // A resend: the normalized event is a duplicate, and normalized again.
    assert_eq!(d.submit(2, vec![call("c-1", "0301234567")]).await.duplicate, 1);
    let m = scrape_metrics(&format!("127.0.0.1:{port}"));
    assert_eq!(m["ratingd_events_normalized_total"], 2.0);
    assert_eq!(m["ratingd_events_dropped_total{rule=\"drop-test-traffic\"}"], 2.0);
    assert_eq!(m["ratingd_events_dropped_total{rule=\"drop-internal\"}"], 1.0);
    assert_eq!(m["ratingd_events_received_total"], 7.0);
    assert_eq!(
        m["ratingd_events_received_total"],
        m["ratingd_events_accepted_total"]
            + m["ratingd_events_duplicate_total"]
            + m["ratingd_events_rejected_total{reason=\"UNKNOWN_METER\"}"]
            + 3.0
    );
    d.stop().await;
}
