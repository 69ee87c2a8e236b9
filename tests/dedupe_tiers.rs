//! The dedupe window's cold tier, on the injectable clock: ids older than `dedupe_hot_hours` move
//! to run files on disk and answer DUPLICATE and CONFLICT from there, across a restart (when the
//! checkpoint no longer holds them), after a run is damaged (rebuilt from the blocks), and leave
//! whole once past the window.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::Duration;
use common::*;
use ratingd::app::StartOptions;
use ratingd::pipeline::Clock;
use ratingd::wire::proto;

fn metric_sum(addr: &str, name: &str) -> f64 {
    scrape_metrics(addr)
        .iter()
        .filter(|(k, _)| k.as_str() == name || k.starts_with(&format!("{name}{{")))
        .map(|(_, v)| *v)
        .sum()
}

fn run_files(data: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for shard in std::fs::read_dir(data.join("dedupe")).unwrap().flatten() {
        for f in std::fs::read_dir(shard.path()).unwrap().flatten() {
            if f.path().extension().is_some_and(|e| e == "cold") {
                out.push(f.path());
            }
        }
    }
    out.sort();
    out
}

async fn resend_all_duplicate(d: &TestDaemon, batch_id: u64, events: &[proto::UsageEvent]) {
    let ack = d.submit(batch_id, events.to_vec()).await;
    assert_eq!(
        (ack.accepted, ack.duplicate, ack.rejected),
        (0, events.len() as u32, 0),
        "every resend of an old id is a duplicate: {:?}",
        ack.results
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_ids_answer_from_the_cold_tier_across_restarts_damage_and_expiry() {
    let dir = TempDir::new("tiers");
    let data = dir.0.join("data");
    let addr = format!("127.0.0.1:{}", free_port());
    let config = write_config(
        &dir.0,
        &format!("metrics_listen = \"{addr}\"\ndedupe_hot_hours = 1\ncheckpoint_every_records = 100"),
    );
    let clock = Arc::new(Clock::starting_at(test_now()));
    let options = || StartOptions {
        clock: Some(clock.clone()),
        ..Default::default()
    };
    // Three days old: inside the 35-day window, older than the one hot hour.
    let old = generate_at(400, 0.0, 5, test_now() - Duration::days(3));
    let cold_ids = || metric_sum(&addr, "ratingd_dedupe_cold_ids");

    let d = TestDaemon::start_with(&config, options()).await;
    let ack = d.submit(1, old.clone()).await;
    assert_eq!(ack.accepted, 400, "{:?}", ack.results);
    // Ids of days already past the hot tier (late ones) wait in memory for the next day's spill:
    // the first job of the next day moves them out, once the outputs that claimed them are
    // committed (they are: acknowledged).
    assert_eq!(cold_ids(), 0.0);
    clock.advance(Duration::days(1));
    let ack = d.submit(2, generate_at(100, 0.0, 6, d.now())).await;
    assert_eq!(ack.accepted, 100);
    wait_until(30, "the old ids in the cold tier", || async { cold_ids() == 400.0 }).await;
    let reads_before = metric_sum(&addr, "ratingd_dedupe_cold_page_reads_total");
    resend_all_duplicate(&d, 3, &old).await;
    let reads = metric_sum(&addr, "ratingd_dedupe_cold_page_reads_total") - reads_before;
    assert!(reads >= 400.0, "each cold hit reads a page ({reads})");
    // The same id with other content and another time (today): a CONFLICT found on disk.
    let mut changed = old[7].clone();
    changed.quantity.as_mut().unwrap().units += 1;
    changed.timestamp_unix_nanos = (d.now() - Duration::minutes(5)).timestamp_nanos_opt().unwrap();
    let ack = d.submit(4, vec![changed]).await;
    assert_eq!(ack.rejected, 1);
    assert_eq!(
        ack.results[0].reason,
        proto::RejectReason::Conflict as i32,
        "{:?}",
        ack.results
    );
    d.stop().await;

    // The shutdown checkpoint holds only hot ids: after the restart the old ones are on disk alone.
    let d = TestDaemon::start_with(&config, options()).await;
    resend_all_duplicate(&d, 5, &old).await;
    d.stop().await;

    // A damaged run: found at start, deleted and rebuilt from the blocks; nothing gets through.
    let runs = run_files(&data);
    assert!(!runs.is_empty(), "the cold tier has runs");
    let mut bytes = std::fs::read(&runs[0]).unwrap();
    bytes[40] ^= 0x20;
    std::fs::write(&runs[0], &bytes).unwrap();
    let d = TestDaemon::start_with(&config, options()).await;
    resend_all_duplicate(&d, 6, &old).await;
    // The rebuilt shard's ids spill again (with the late ids of yesterday from batch 2, which a
    // restart spills at once).
    wait_until(30, "the rebuilt ids back in the cold tier", || async {
        cold_ids() >= 400.0
    })
    .await;
    resend_all_duplicate(&d, 7, &old).await;

    // Damage while running: the lookup that reads the page fails its batch (never a silent miss),
    // ratingd takes no more work, and the restart rebuilds the run from the blocks.
    let runs = run_files(&data);
    for run in &runs {
        let mut bytes = std::fs::read(run).unwrap();
        for b in bytes.iter_mut().skip(32) {
            *b ^= 0x01;
        }
        std::fs::write(run, &bytes).unwrap();
    }
    let refused = d
        .ingest()
        .await
        .submit(proto::UsageBatch {
            batch_id: 70,
            events: old.clone(),
        })
        .await
        .expect_err("a damaged page fails the batch");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused}");
    assert!(refused.message().contains("cold tier"), "{refused}");
    d.stop().await;
    let d = TestDaemon::start_with(&config, options()).await;
    resend_all_duplicate(&d, 71, &old).await;

    // Forty days on, the old ids are past the window: their runs are removed whole.
    clock.advance(Duration::days(40));
    // Events of the last half hour: hot, so nothing new moves to disk.
    let mut recent = generate_at(200, 0.0, 9, d.now());
    for (i, e) in recent.iter_mut().enumerate() {
        let at = d.now() - Duration::seconds(60 + 9 * i as i64);
        e.timestamp_unix_nanos = at.timestamp_nanos_opt().unwrap();
    }
    let ack = d.submit(8, recent).await;
    assert_eq!(ack.accepted + ack.rejected, 200);
    // (A move still under way from the restart is named, then removed at once: its days are past
    // the window too.)
    wait_until(30, "the expired runs removed", || async {
        cold_ids() == 0.0 && run_files(&data).is_empty()
    })
    .await;
    d.stop().await;
}

#[test]
fn no_hot_hours_is_refused() {
    let dir = TempDir::new("tiers-config");
    let Err(error) = ratingd::config::Config::load(&write_config(&dir.0, "dedupe_hot_hours = 0\n")) else {
        panic!("dedupe_hot_hours = 0 accepted")
    };
    assert!(
        error.to_string().contains("dedupe_hot_hours: must be at least 1"),
        "{error}"
    );
    let config = load(&write_config(&dir.0, ""));
    assert_eq!(config.dedupe_hot_hours, 24, "the documented default");
}
