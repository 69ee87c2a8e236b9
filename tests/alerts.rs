//! Spend alerts: one `<prefix>:alerts` entry when an account's period charge first reaches a
//! threshold of its plan or subscription; never twice for the same threshold and period, even when
//! a volume tier lowers the charge and it rises again, and not again after a restart.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use ratingd::wire::proto;

fn alerts(url: &str) -> Vec<HashMap<String, String>> {
    xrange(url, "r:alerts")
}

async fn wait_for_alerts(url: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while alerts(url).len() < n {
        assert!(Instant::now() < deadline, "expected {n} alerts, have {:?}", alerts(url));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thresholds_alert_once_each() {
    let dir = TempDir::new("alerts");
    let redis = RedisServer::start(free_port());
    let extra = format!(
        "[redis]\nurl = \"{}\"\nprefix = \"r\"\nflush_interval_ms = 20\n[[alerts]]\nplan = \"saas-pro\"\nthresholds = [\"1\", \"800\"]\n",
        redis.url()
    );
    let config = write_config(&dir.0, &extra);
    let d = TestDaemon::start(&config).await;
    let mut admin = proto::admin_client::AdminClient::new(common::channel(&d.target.clone()).await);
    let mut s = proto::Subscription {
        account_id: "spender".into(),
        plan_id: "saas-pro".into(),
        from: "2020-01-01T00:00:00Z".into(),
        ..Default::default()
    };
    s.alert_thresholds = vec!["1.5".into()];
    admin.upsert_subscription(s).await.unwrap();
    let at = test_now() - chrono::Duration::minutes(5);
    // api.requests on saas-pro: 0.0009 each up to 1,000,000 in the month, then 0.00072 each for all.
    let steps = [1_200, 998_800, 1, 120_000];
    let mut client = d.ingest().await;
    let mut sent = Vec::new();
    for (i, n) in steps.iter().enumerate() {
        let e = event(&format!("s-{i}"), "spender", "api.requests", *n, 0, at, &[]);
        sent.push(e.clone());
        let ack = client
            .submit(proto::UsageBatch {
                batch_id: i as u64,
                events: vec![e],
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(ack.accepted, 1);
    }
    let t = d.totals("spender", "2026-11").await.unwrap();
    assert_eq!(
        t.total_charge, "806.400720000",
        "above 800 again after dropping to 720.00072"
    );
    let mut reference = Reference::shipped();
    let since_2020 = chrono::DateTime::parse_from_rfc3339("2020-01-01T00:00:00Z")
        .unwrap()
        .to_utc();
    reference.subscribe("spender", "saas-pro", since_2020, None, rust_decimal::Decimal::ZERO);
    let key = ("spender".to_string(), "2026-11".to_string());
    assert_totals_equal(&reference, &key.0, &key.1, &t, &reference.rate(&sent).totals[&key]);
    // The first alert's figure is the charge after the first step alone.
    assert_eq!(
        reference.rate(&sent[..1]).totals[&key].total_charge.to_string(),
        "1.080000000"
    );
    wait_for_alerts(&redis.url(), 3).await;
    let got = alerts(&redis.url());
    let mut thresholds: Vec<&str> = got.iter().map(|a| a["threshold"].as_str()).collect();
    thresholds.sort_unstable();
    assert_eq!(thresholds, ["1", "1.5", "800"], "800 is not raised a second time");
    let first = got.iter().find(|a| a["threshold"] == "1").unwrap();
    assert_eq!(first["total_charge"], "1.080000000");
    assert_eq!(first["currency"], "USD");
    assert_eq!(first["alert_id"], "spender|2026-11|1");
    d.stop().await;

    // A restart raises nothing again.
    let d = TestDaemon::start(&config).await;
    let more = event("s-9", "spender", "api.requests", 10, 0, at, &[]);
    d.ingest()
        .await
        .submit(proto::UsageBatch {
            batch_id: 9,
            events: vec![more],
        })
        .await
        .unwrap();
    // Let several flushes pass, then count again.
    wait_for_flushes(&redis.url(), "r", 3).await;
    assert_eq!(alerts(&redis.url()).len(), 3);
    d.stop().await;
}
