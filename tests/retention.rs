//! Bounded memory and disk: a closed period's totals leave memory (queries read them from disk,
//! across restarts); retention removes the records of closed periods older than `retention_days`
//! with their totals and old suspense entries, exports them first, and queries for them answer
//! NOT_FOUND naming the retention. A retention shorter than the window or the grace is refused.

mod common;

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use common::*;
use ratingd::wire::proto;
use ratingd::wire::proto::admin_client::AdminClient;
use ratingd::wire::proto::query_client::QueryClient;

/// The fields of one `ratectl export --format jsonl` line.
const EXPORT_FIELDS: [&str; 12] = [
    "event_id",
    "account",
    "meter",
    "quantity",
    "timestamp",
    "attributes",
    "plan",
    "version",
    "period",
    "rated_quantity",
    "charge",
    "period_usage_before",
];

fn move_clock(d: &TestDaemon, to: DateTime<Utc>) {
    let clock = d.running.as_ref().unwrap().clock.clone();
    clock.advance(to - clock.now());
}

fn in_memory(d: &TestDaemon, account: &str, period: &str) -> bool {
    let committed = &d.running.as_ref().unwrap().committed;
    committed.totals.contains_key(&(Arc::from(account), Arc::from(period)))
}

async fn records(target: &str, account: &str, to: &str) -> Result<proto::ListRatedRecordsResponse, tonic::Status> {
    QueryClient::new(channel(target).await)
        .list_rated_records(proto::ListRatedRecordsRequest {
            account_id: account.into(),
            to: to.into(),
            page_size: 100,
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

async fn get_totals(target: &str, account: &str, period: &str) -> Result<proto::Totals, tonic::Status> {
    QueryClient::new(channel(target).await)
        .get_totals(proto::GetTotalsRequest {
            account_id: account.into(),
            period: period.into(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

async fn suspended(target: &str) -> usize {
    AdminClient::new(channel(target).await)
        .list_suspense(proto::ListSuspenseRequest {
            page_size: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_periods_leave_memory_and_retention_removes_them_with_an_export() {
    let dir = TempDir::new("retention");
    let export_dir = dir.0.join("export");
    let config = write_config(
        &dir.0,
        &format!(
            "retention_days = 40\nretention_export_dir = {:?}\n[redis]\nurl = \"redis://127.0.0.1:1\"\nflush_interval_ms = 20\n",
            export_dir.display().to_string()
        ),
    );
    let at = test_now() - Duration::minutes(5);
    let november = vec![
        event("n-1", "saas-1", "api.requests", 1000, 0, at, &[]),
        event("n-2", "saas-1", "api.requests", 2500, 0, at, &[]),
        event("n-3", "saas-1", "storage.gb_hours", 10, 0, at, &[]),
        event("n-4", "saas-2", "api.requests", 700, 0, at, &[]),
        // No subscription and no default plan: NO_TARIFF, into suspense.
        event("n-5", "nobody", "api.requests", 1, 0, at, &[]),
    ];
    let reference = Reference::shipped();
    let plan = reference.plan("saas-pro");
    let label = plan.period_of(at);
    let end = plan.period_end(&label);
    let want = reference.rate(&november[..4]).totals;

    let d = TestDaemon::start(&config).await;
    let ack = d.submit(1, november.clone()).await;
    assert_eq!((ack.accepted, ack.rejected), (4, 1));
    assert!(in_memory(&d, "saas-1", &label));
    let stored = records(&d.target, "saas-1", "").await.unwrap().records;
    assert_eq!(stored.len(), 3);

    // Past the grace: the period closes, and its totals leave memory but are still served.
    move_clock(&d, end + Duration::hours(72) + Duration::minutes(1));
    let december = end + Duration::days(3);
    assert_eq!(
        d.submit(2, vec![event("d-1", "saas-1", "api.requests", 400, 0, december, &[])])
            .await
            .accepted,
        1
    );
    let target = d.target.clone();
    wait_until(20, "the November close", || {
        let (target, label) = (target.clone(), label.clone());
        async move {
            get_totals(&target, "saas-1", &label)
                .await
                .is_ok_and(|t| t.status == "closed")
        }
    })
    .await;
    wait_until(20, "the closed totals to leave memory", || {
        let gone = !in_memory(&d, "saas-1", &label) && !in_memory(&d, "saas-2", &label);
        async move { gone }
    })
    .await;
    let closed = get_totals(&d.target, "saas-1", &label).await.unwrap();
    let expected = &want[&("saas-1".to_string(), label.clone())];
    assert_totals_equal(&reference, "saas-1", &label, &closed, expected);
    // The statement reads the records and the final totals from disk; they agree.
    let statement = QueryClient::new(channel(&d.target).await)
        .statement(proto::StatementRequest {
            account_id: "saas-1".into(),
            period: label.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(statement.total_charge, closed.total_charge);
    let accounts = QueryClient::new(channel(&d.target).await)
        .list_accounts(proto::ListAccountsRequest {
            period: label.clone(),
            page_size: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .accounts;
    assert_eq!(accounts, vec!["saas-1".to_string(), "saas-2".to_string()]);
    let december_label = plan.period_of(december);
    assert!(
        in_memory(&d, "saas-1", &december_label),
        "the open period stays in memory"
    );

    // A restart does not bring the closed period back into memory, and still serves it.
    d.stop().await;
    let d = TestDaemon::start(&config).await;
    move_clock(&d, end + Duration::hours(72) + Duration::minutes(2));
    assert!(!in_memory(&d, "saas-1", &label));
    assert!(in_memory(&d, "saas-1", &december_label));
    assert_eq!(get_totals(&d.target, "saas-1", &label).await.unwrap(), closed);
    assert_eq!(suspended(&d.target).await, 1);

    // Retention: 40 days after the end of November, its records, totals and the suspense entry
    // received then are removed, after the export is written.
    move_clock(&d, end + Duration::days(40) + Duration::minutes(1));
    let target = d.target.clone();
    wait_until(20, "retention to remove November", || {
        let (target, label) = (target.clone(), label.clone());
        async move {
            get_totals(&target, "saas-1", &label)
                .await
                .is_err_and(|s| s.code() == tonic::Code::NotFound)
        }
    })
    .await;
    let refused = get_totals(&d.target, "saas-1", &label).await.unwrap_err();
    assert!(
        refused.message().contains("past retention") && refused.message().contains("retention_days = 40"),
        "{refused:?}"
    );
    let refused = QueryClient::new(channel(&d.target).await)
        .statement(proto::StatementRequest {
            account_id: "saas-1".into(),
            period: label.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::NotFound);
    assert!(refused.message().contains("retention"), "{refused:?}");
    let refused = records(&d.target, "saas-1", &end.to_rfc3339()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::NotFound);
    assert!(refused.message().contains("retention"), "{refused:?}");
    // What is kept is still there, and the answer says records before the end of November may
    // be missing.
    let kept = records(&d.target, "saas-1", "").await.unwrap();
    assert_eq!(
        kept.records.iter().map(|r| r.event_id.as_str()).collect::<Vec<_>>(),
        vec!["d-1"]
    );
    assert_eq!(kept.removed_before, end.to_rfc3339());
    assert!(
        get_totals(&d.target, "saas-1", &december_label)
            .await
            .is_ok_and(|t| t.total_charge != "0")
    );
    assert_eq!(
        suspended(&d.target).await,
        0,
        "the suspense entry as old as the records went"
    );

    // The export holds the removed records, with the fields of `ratectl export`.
    let mut lines: Vec<serde_json::Value> = Vec::new();
    for entry in std::fs::read_dir(&export_dir).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(path.extension().and_then(|e| e.to_str()), Some("jsonl"), "{path:?}");
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            lines.push(serde_json::from_str(line).unwrap());
        }
    }
    assert_eq!(lines.len(), 4, "{lines:?}");
    for r in &stored {
        let line = lines
            .iter()
            .find(|l| l["event_id"] == r.event_id.as_str())
            .unwrap_or_else(|| panic!("{} exported", r.event_id));
        let keys: Vec<&str> = line.as_object().unwrap().keys().map(String::as_str).collect();
        let mut want_keys = EXPORT_FIELDS.to_vec();
        want_keys.sort_unstable();
        assert_eq!(keys, want_keys);
        assert_eq!(line["charge"], r.charge.as_str());
        assert_eq!(line["quantity"], r.quantity.as_str());
        assert_eq!(line["timestamp"], r.timestamp.as_str());
        assert_eq!(line["period_usage_before"], r.period_usage_before.as_str());
    }

    // After a restart the removal is remembered: still NOT_FOUND naming the retention.
    d.stop().await;
    let d = TestDaemon::start(&config).await;
    move_clock(&d, end + Duration::days(40) + Duration::minutes(2));
    let refused = get_totals(&d.target, "saas-2", &label).await.unwrap_err();
    assert!(refused.message().contains("past retention"), "{refused:?}");
    assert_eq!(records(&d.target, "saas-1", "").await.unwrap().records.len(), 1);
    d.stop().await;
}

/// A removal that cannot export first removes nothing: the period stays served as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_nothing_when_its_export_cannot_be_written() {
    let dir = TempDir::new("retention-no-export");
    // A file where the export directory should be: creating it fails.
    let blocked = dir.0.join("not-a-dir");
    std::fs::write(&blocked, b"x").unwrap();
    // The only test of this file with metrics: the error counter is this test's alone.
    let metrics = format!("127.0.0.1:{}", free_port());
    let config = write_config(
        &dir.0,
        &format!(
            "metrics_listen = {metrics:?}\nretention_days = 40\nretention_export_dir = {:?}\n[redis]\nurl = \"redis://127.0.0.1:1\"\nflush_interval_ms = 20\n",
            blocked.display().to_string()
        ),
    );
    let at = test_now() - Duration::minutes(5);
    let d = TestDaemon::start(&config).await;
    assert_eq!(
        d.submit(1, vec![event("x-1", "saas-3", "api.requests", 100, 0, at, &[])])
            .await
            .accepted,
        1
    );
    let plan = Reference::shipped().plan("saas-pro").clone();
    let label = plan.period_of(at);
    let end = plan.period_end(&label);
    move_clock(&d, end + Duration::hours(72) + Duration::minutes(1));
    let target = d.target.clone();
    wait_until(20, "the close", || {
        let (target, label) = (target.clone(), label.clone());
        async move {
            get_totals(&target, "saas-3", &label)
                .await
                .is_ok_and(|t| t.status == "closed")
        }
    })
    .await;
    let before = get_totals(&d.target, "saas-3", &label).await.unwrap();
    move_clock(&d, end + Duration::days(41));
    wait_until(20, "a failed retention step", || {
        let failed = scrape_metrics(&metrics)
            .get("ratingd_retention_errors_total")
            .copied()
            .unwrap_or(0.0)
            >= 1.0;
        async move { failed }
    })
    .await;
    assert_eq!(get_totals(&d.target, "saas-3", &label).await.unwrap(), before);
    assert_eq!(records(&d.target, "saas-3", "").await.unwrap().records.len(), 1);
    // Once the export can be written, the next step exports, then removes.
    std::fs::remove_file(&blocked).unwrap();
    let target = d.target.clone();
    wait_until(20, "the removal", || {
        let (target, label) = (target.clone(), label.clone());
        async move { get_totals(&target, "saas-3", &label).await.is_err() }
    })
    .await;
    let exported: usize = std::fs::read_dir(&blocked)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap().lines().count())
        .sum();
    assert_eq!(exported, 1);
    d.stop().await;
}

#[test]
fn a_retention_shorter_than_the_window_or_the_grace_is_refused() {
    let dir = TempDir::new("retention-config");
    for (extra, want) in [
        ("retention_days = 20\n", "shorter than dedupe_window_days (35)"),
        (
            "retention_days = 2\ndedupe_window_days = 1\n",
            "shorter than period_close_grace_hours (72 h)",
        ),
    ] {
        let path = write_config(&dir.0, extra);
        let Err(error) = ratingd::config::Config::load(&path) else {
            panic!("{extra}: accepted")
        };
        let error = error.to_string();
        assert!(error.contains(want), "{extra}: {error}");
    }
    // 0 keeps records forever.
    load(&write_config(&dir.0, "retention_days = 0\n"));
}

/// A data dir whose closes were written by an earlier release (a `k/` entry, no final totals on
/// disk): the first start writes the final totals from the recovered records, then serves the
/// closed period from disk like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closes_of_an_earlier_release_get_their_final_totals_at_the_first_start() {
    use ratingd::store::{Commit, Store, StoredClose, codec, compact::SegmentWriter};
    let dir = TempDir::new("retention-upgrade");
    let config = write_config(&dir.0, "");
    let reference = Reference::shipped();
    let plan = reference.plan("saas-pro").clone();
    let at = test_now() - Duration::days(40);
    let label = plan.period_of(at);
    {
        let mut store = Store::open(&dir.0.join("data")).unwrap();
        let mut segment = SegmentWriter::default();
        segment.begin(Vec::new());
        for (n, charge) in [(1, 1_500_000_000i64), (2, 250_000_000)] {
            let record = ratingd::domain::record::RatedRecord {
                content: n,
                event_id: format!("old-{n}"),
                account_id: "saas-4".into(),
                meter: "api.requests".into(),
                quantity: rust_decimal::Decimal::from(10),
                timestamp_unix_nanos: at.timestamp_nanos_opt().unwrap(),
                attributes: Vec::new(),
                plan: "saas-pro".into(),
                version: 1,
                period: label.clone(),
                period_usage_before: rust_decimal::Decimal::ZERO,
                subscription_discount: None,
                rated_quantity: rust_decimal::Decimal::from(10),
                charge: rust_decimal::Decimal::new(charge, 9),
                correction: None,
                as_sent: None,
            };
            segment.push(&record.as_ref());
        }
        store
            .commit(Commit {
                parts: codec::seal_segments([segment.finish().as_slice()]),
                accounts: vec!["saas-4".into()],
                ..Commit::default()
            })
            .unwrap();
        store
            .closes()
            .put(&StoredClose {
                plan: "saas-pro".into(),
                period: label.clone(),
                announced: true,
                entries: Vec::new(),
            })
            .unwrap();
        assert!(!store.finals().complete().unwrap());
    }
    let d = TestDaemon::start(&config).await;
    assert!(!in_memory(&d, "saas-4", &label));
    let t = get_totals(&d.target, "saas-4", &label).await.unwrap();
    assert_eq!((t.status.as_str(), t.total_charge.as_str()), ("closed", "1.750000000"));
    d.stop().await;
    let store = reopen(&dir.0.join("data"));
    assert!(store.finals().complete().unwrap());
    assert_eq!(store.finals().of("saas-4", &label).unwrap().len(), 1);
}
