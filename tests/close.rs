//! Period close: after a period's end plus the grace, its totals are final (status closed in the
//! Query API and in Redis, one announcement per account on `<prefix>:periods:closed`), later events
//! for it are PERIOD_CLOSED, and a restart neither loses nor repeats the announcement.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use common::*;
use ratingd::ingest::proto;

async fn wait_until<F: std::future::Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn stream(url: &str) -> Vec<HashMap<String, String>> {
    xrange(url, "r:periods:closed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_period_closes_once_its_grace_has_passed() {
    let dir = TempDir::new("close");
    let redis = RedisServer::start(free_port());
    let config = write_config(
        &dir.0,
        &format!(
            "[redis]\nurl = \"{}\"\nprefix = \"r\"\nflush_interval_ms = 20\n",
            redis.url()
        ),
    );
    let at = Utc::now() - chrono::Duration::minutes(5);
    let events = vec![
        event("c-1", "saas-0", "api.requests", 1000, 0, at, &[]),
        event("c-2", "saas-1", "api.requests", 2000, 0, at, &[]),
        event("c-3", "saas-1", "storage.gb_hours", 10, 0, at, &[]),
    ];
    let d = TestDaemon::start(&config).await;
    let ack = d
        .ingest()
        .await
        .submit(proto::UsageBatch { batch_id: 1, events })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ack.accepted, 3);
    let plan = catalogue().plan("saas-pro").unwrap().clone();
    let period = plan.period.period_of(plan.time_zone, at);
    // Move the daemon's clock past the period's end plus the 72 h grace.
    let clock = d.running.as_ref().unwrap().clock.clone();
    clock.advance(period.end + chrono::Duration::hours(72) + chrono::Duration::minutes(1) - Utc::now());

    let target = d.target.clone();
    let label = period.label.clone();
    wait_until("the close", || {
        let (target, label) = (target.clone(), label.clone());
        async move {
            totals_at(&target, "saas-1", &label)
                .await
                .is_some_and(|t| t.status == "closed")
        }
    })
    .await;
    let t = d.totals("saas-1", &period.label).await.unwrap();
    assert_eq!(
        t.projected_charge, t.total_charge,
        "a closed period projects what it has"
    );

    // Later events for it are PERIOD_CLOSED and wait in suspense; the next period takes usage.
    let late = event("c-4", "saas-0", "api.requests", 1, 0, at, &[]);
    let next = event(
        "c-5",
        "saas-0",
        "api.requests",
        1,
        0,
        period.end + chrono::Duration::hours(1),
        &[],
    );
    let ack = d
        .ingest()
        .await
        .submit(proto::UsageBatch {
            batch_id: 2,
            events: vec![late, next],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((ack.accepted, ack.rejected), (1, 1));
    assert_eq!(ack.results[0].reason, proto::RejectReason::PeriodClosed as i32);

    // Redis: status closed, one announcement per account with the final totals.
    let url = redis.url();
    wait_until("the announcement", || {
        let url = url.clone();
        async move { stream(&url).len() >= 2 }
    })
    .await;
    let entries = stream(&redis.url());
    assert_eq!(entries.len(), 2);
    let saas1 = entries.iter().find(|e| e["account"] == "saas-1").unwrap();
    assert_eq!(saas1["close_id"], format!("saas-1|{}", period.label));
    assert_eq!(saas1["total_charge"], t.total_charge);
    assert_eq!(saas1["total_amount"], t.total_amount);
    assert_eq!(saas1["currency"], "USD");
    let meters: serde_json::Value = serde_json::from_str(&saas1["meters"]).unwrap();
    assert_eq!(meters["api.requests"]["events"], 1);
    let url = redis.url();
    let key = format!("r:agg:{{saas-1}}:{}", period.label);
    wait_until("status closed in redis", || {
        let (url, key) = (url.clone(), key.clone());
        async move {
            let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
            redis::cmd("HGET")
                .arg(&key)
                .arg("status")
                .query::<String>(&mut c)
                .is_ok_and(|s| s == "closed")
        }
    })
    .await;
    d.stop().await;

    // After a restart the close holds and nothing is announced twice.
    let d = TestDaemon::start(&config).await;
    d.running.as_ref().unwrap().clock.advance(clock.now() - Utc::now());
    let t = d.totals("saas-1", &period.label).await.unwrap();
    assert_eq!(t.status, "closed");
    let late = event("c-6", "saas-1", "api.requests", 1, 0, at, &[]);
    let ack = d
        .ingest()
        .await
        .submit(proto::UsageBatch {
            batch_id: 3,
            events: vec![late],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ack.results[0].reason, proto::RejectReason::PeriodClosed as i32);
    // Let several flushes pass, then count again.
    wait_for_flushes(&redis.url(), "r", 3).await;
    assert_eq!(
        stream(&redis.url()).len(),
        2,
        "no announcement repeated after a restart"
    );
    d.stop().await;
}
