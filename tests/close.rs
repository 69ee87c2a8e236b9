//! Period close: after a period's end plus the grace, its totals are final (status closed in the
//! Query API and in Redis, one announcement per account on `<prefix>:periods:closed`), later events
//! for it are PERIOD_CLOSED, and a restart neither loses nor repeats the announcement.

mod common;

use std::collections::HashMap;

use common::*;
use ratingd::wire::proto;
use rust_decimal::Decimal;

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
    let at = test_now() - chrono::Duration::minutes(5);
    let events = vec![
        event("c-1", "saas-0", "api.requests", 1000, 0, at, &[]),
        event("c-2", "saas-1", "api.requests", 2000, 0, at, &[]),
        event("c-3", "saas-1", "storage.gb_hours", 10, 0, at, &[]),
    ];
    let d = TestDaemon::start(&config).await;
    let ack = d
        .ingest()
        .await
        .submit(proto::UsageBatch {
            batch_id: 1,
            events: events.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ack.accepted, 3);
    let reference = Reference::shipped();
    let want = reference.rate(&events).totals;
    let plan = reference.plan("saas-pro");
    let label = plan.period_of(at);
    let end = plan.period_end(&label);
    // Move the daemon's clock past the period's end plus the 72 h grace.
    let clock = d.running.as_ref().unwrap().clock.clone();
    clock.advance(end + chrono::Duration::hours(72) + chrono::Duration::minutes(1) - clock.now());

    let target = d.target.clone();
    wait_until(20, "the close", || {
        let (target, label) = (target.clone(), label.clone());
        async move {
            totals_at(&target, "saas-1", &label)
                .await
                .is_some_and(|t| t.status == "closed")
        }
    })
    .await;
    let t = d.totals("saas-1", &label).await.unwrap();
    assert_totals_equal(
        &reference,
        "saas-1",
        &label,
        &t,
        &want[&("saas-1".to_string(), label.clone())],
    );
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
        end + chrono::Duration::hours(1),
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
    wait_until(20, "the announcement", || {
        let url = url.clone();
        async move { stream(&url).len() >= 2 }
    })
    .await;
    let entries = stream(&redis.url());
    assert_eq!(entries.len(), 2);
    // Each announcement carries the reference's final totals.
    for account in ["saas-0", "saas-1"] {
        let entry = entries.iter().find(|e| e["account"] == account).unwrap();
        let w = &want[&(account.to_string(), label.clone())];
        assert_eq!(entry["close_id"], format!("{account}|{label}"));
        assert_eq!(
            entry["total_charge"].parse::<Decimal>().unwrap(),
            w.total_charge,
            "{account}"
        );
        assert_eq!(
            entry["total_amount"].parse::<Decimal>().unwrap(),
            w.total_amount,
            "{account}"
        );
        assert_eq!(entry["currency"], "USD");
        let meters: serde_json::Value = serde_json::from_str(&entry["meters"]).unwrap();
        for (meter, m) in &w.meters {
            assert_eq!(meters[meter]["events"], m.events, "{account} {meter}");
            let charge = meters[meter]["charge"].as_str().unwrap().parse::<Decimal>().unwrap();
            assert_eq!(charge, m.charge, "{account} {meter}");
        }
    }
    let url = redis.url();
    let key = format!("r:agg:{{saas-1}}:{label}");
    wait_until(20, "status closed in redis", || {
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
    d.running.as_ref().unwrap().clock.advance(clock.now() - d.now());
    let t = d.totals("saas-1", &label).await.unwrap();
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
