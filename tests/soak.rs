//! The soak: 400 simulated days of traffic (1,000 events a day over 100 accounts) on the
//! injectable clock, with periods closing and retention removing as the days go by. Memory and
//! the data dir must level off (bounded by the dedupe window and the retention, not by the days
//! run), no resend inside the window may be charged again, and every event inside the retention
//! must still be queryable, across a restart. Its figures are printed for BENCHMARKS.md.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Duration, Utc};
use common::*;
use ratingd::wire::proto;
use ratingd::wire::proto::query_client::QueryClient;

const DAYS: i64 = 400;
const EVENTS_PER_DAY: usize = 1_000;
const ACCOUNTS: usize = 100;
const WINDOW_DAYS: i64 = 35;
const RETENTION_DAYS: i64 = 60;

fn dir_bytes(path: &Path) -> u64 {
    let mut total = 0;
    // The daemon runs on: a file listed may be gone (a cold run written or merged away) by the
    // time it is measured.
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        total += if meta.is_dir() {
            dir_bytes(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

/// This process's resident memory (the daemon runs in it), from /proc.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

fn day_events(day: i64, now: DateTime<Utc>) -> Vec<proto::UsageEvent> {
    (0..EVENTS_PER_DAY)
        .map(|i| {
            let at = now - Duration::seconds(60 * i as i64 + 1);
            event(
                &format!("d{day}-{i}"),
                &format!("s-{}", i % ACCOUNTS),
                "api.requests",
                1 + (i % 50) as i64,
                0,
                at,
                &[],
            )
        })
        .collect()
}

struct Sample {
    day: i64,
    data_dir: u64,
    rss: u64,
    totals_in_memory: usize,
    window_ids: f64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_hundred_days_level_off_and_lose_nothing() {
    let dir = TempDir::new("soak");
    let metrics = format!("127.0.0.1:{}", free_port());
    let config = write_config(
        &dir.0,
        &format!(
            "metrics_listen = {metrics:?}\ndefault_plan = \"saas-pro\"\ndedupe_window_days = {WINDOW_DAYS}\n\
             retention_days = {RETENTION_DAYS}\ncheckpoint_every_records = 50000\n\
             [redis]\nurl = \"redis://127.0.0.1:1\"\nflush_interval_ms = 20\n"
        ),
    );
    let data = dir.0.join("data");
    let start = test_now();
    let reference = Reference::shipped();
    let plan = reference.plan("saas-pro").clone();
    let mut d = TestDaemon::start(&config).await;
    let clock = d.running.as_ref().unwrap().clock.clone();
    // Events sent per (account, day).
    let mut sent: BTreeMap<(String, i64), usize> = BTreeMap::new();
    let mut samples: Vec<Sample> = Vec::new();
    let mut batch = 0u64;
    for day in 0..DAYS {
        let now = start + Duration::days(day);
        clock.advance(now - clock.now());
        batch += 1;
        let events = day_events(day, now);
        for e in &events {
            *sent.entry((e.account_id.clone(), day)).or_default() += 1;
        }
        let ack = d.submit(batch, events).await;
        assert_eq!(
            ack.accepted as usize,
            EVENTS_PER_DAY,
            "day {day}: {:?}",
            ack.results.first()
        );
        // A resend of a day inside the window is a duplicate, never a second charge.
        if day >= WINDOW_DAYS - 5 && day % 7 == 0 {
            let old = day - (WINDOW_DAYS - 5);
            let again: Vec<_> = day_events(old, start + Duration::days(old))
                .into_iter()
                .step_by(5)
                .collect();
            batch += 1;
            let ack = d.submit(batch, again.clone()).await;
            assert_eq!(
                (ack.accepted, ack.duplicate as usize),
                (0, again.len()),
                "day {day}: resend of day {old}"
            );
        }
        if day % 50 == 49 {
            // The period that ended more than the retention ago is removed by now: wait for the
            // closer and the retention to catch up with the clock before measuring.
            let old_period = plan.period_of(now - Duration::days(RETENTION_DAYS + 35));
            if plan.period_end(&old_period) + Duration::days(RETENTION_DAYS) < now && day > RETENTION_DAYS + 35 {
                let target = d.target.clone();
                wait_until(60, "retention to catch up", || {
                    let (target, old_period) = (target.clone(), old_period.clone());
                    async move {
                        let mut q = QueryClient::new(channel(&target).await);
                        q.get_totals(proto::GetTotalsRequest {
                            account_id: "s-1".into(),
                            period: old_period,
                            ..Default::default()
                        })
                        .await
                        .is_err_and(|s| s.message().contains("past retention"))
                    }
                })
                .await;
            }
            let scraped = scrape_metrics(&metrics);
            let window_ids = scraped
                .iter()
                .filter(|(k, _)| k.starts_with("ratingd_dedupe_window_ids"))
                .map(|(_, v)| v)
                .sum();
            samples.push(Sample {
                day,
                data_dir: dir_bytes(&data),
                rss: rss_bytes(),
                totals_in_memory: d.running.as_ref().unwrap().committed.totals.len(),
                window_ids,
            });
        }
    }
    eprintln!("soak: day, data dir bytes, RSS bytes, totals in memory, dedupe window ids");
    for s in &samples {
        eprintln!(
            "soak: {:>4} {:>12} {:>12} {:>6} {:>8}",
            s.day, s.data_dir, s.rss, s.totals_in_memory, s.window_ids
        );
    }
    // Bounded by the window, the open periods and the retention, not by the days run. The window
    // holds its days plus a day of margin and the current day; a week of spills merged into one
    // run leaves when its newest day does, so up to 6 days more.
    for s in &samples {
        assert!(s.data_dir > 0, "day {}: the data dir was measured", s.day);
        assert!(
            s.window_ids <= ((WINDOW_DAYS + 2 + 6) as usize * EVENTS_PER_DAY) as f64,
            "day {}: {} ids in the window",
            s.day,
            s.window_ids
        );
        assert!(
            s.totals_in_memory <= 2 * ACCOUNTS,
            "day {}: {} totals in memory",
            s.day,
            s.totals_in_memory
        );
    }
    let at = |day: i64| samples.iter().find(|s| s.day == day).unwrap();
    let (mid, last) = (at(199), at(399));
    assert!(
        last.data_dir <= mid.data_dir + mid.data_dir / 3,
        "the data dir grew from {} bytes at day 200 to {} at day 400",
        mid.data_dir,
        last.data_dir
    );
    assert!(
        last.rss <= mid.rss + mid.rss / 2 + (16 << 20),
        "RSS grew from {} bytes at day 200 to {} at day 400",
        mid.rss,
        last.rss
    );

    // Every event inside the retention is still there, after a restart too.
    let end = start + Duration::days(DAYS - 1);
    let kept_from = end - Duration::days(RETENTION_DAYS - 5);
    let totals_before = d.totals("s-7", &plan.period_of(end)).await.unwrap();
    d.stop().await;
    let started = std::time::Instant::now();
    d = TestDaemon::start(&config).await;
    eprintln!(
        "soak: restart with {} bytes of data dir took {} ms",
        dir_bytes(&data),
        started.elapsed().as_millis()
    );
    let clock = d.running.as_ref().unwrap().clock.clone();
    clock.advance(end - clock.now());
    assert_eq!(d.totals("s-7", &plan.period_of(end)).await.unwrap(), totals_before);
    let first_day = (kept_from - start).num_days() + 1;
    let want: usize = (first_day..DAYS).map(|day| sent[&("s-7".to_string(), day)]).sum();
    let got = records_from(
        &d.target,
        "s-7",
        Some(start + Duration::days(first_day) - Duration::days(1)),
    )
    .await;
    let got_days = got
        .iter()
        .filter(|r| {
            let day: i64 = r.event_id[1..r.event_id.find('-').unwrap()].parse().unwrap();
            day >= first_day
        })
        .count();
    assert_eq!(got_days, want, "records of s-7 inside the retention");
    // And a resend inside the window is still a duplicate after the restart.
    let again: Vec<_> = day_events(DAYS - 10, start + Duration::days(DAYS - 10))
        .into_iter()
        .take(100)
        .collect();
    let ack = d.submit(batch + 1, again).await;
    assert_eq!((ack.accepted, ack.duplicate), (0, 100));
    d.stop().await;
}
