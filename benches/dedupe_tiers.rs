//! The dedupe window's tiers at scale (issue 16): 100 million ids (`DEDUPE_BENCH_IDS` to change),
//! spread over 35 event days of one shard, each day moved to the cold tier as the day after it
//! begins, as a running shard does. Reports the memory per id of each tier (counted from the
//! structures, and the process's resident set), the disk per id of the cold tier, how long a
//! check takes for a new id (it probes every run's filter) and for an old one (a page read), and
//! how often a new id costs a page read (the filters' false "maybe").
//!
//! `cargo bench --bench dedupe_tiers`; the figures go to BENCHMARKS.md.

use std::time::Instant;

use ratingd::pipeline::dedupe::{ColdTier, DedupeWindow, Seen};
use ratingd::store::cold::ColdDir;

const DAYS: u16 = 35;
const FIRST_DAY: u16 = 20_000;

fn fp(i: u64) -> u128 {
    // Keyed fingerprints are uniform: a multiplicative hash of the index stands in for them.
    let lo = (i ^ 0x5DEE_CE66_D1CE_4E5B).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let hi = i.wrapping_mul(0xC2B2_AE3D_27D4_EB4F).rotate_left(17);
    (u128::from(hi) << 64) | u128::from(lo ^ (lo >> 29))
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

fn dir_bytes(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn main() {
    let ids: u64 = std::env::var("DEDUPE_BENCH_IDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000_000);
    let root = std::env::temp_dir().join(format!("ratingd-bench-tiers-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let dir = ColdDir::new(&root, 0, 1);
    let mut window = DedupeWindow::default();
    window.set_cold(ColdTier::open(dir.clone()).expect("an empty cold tier"));
    let rss_start = rss_bytes();
    let per_day = ids / u64::from(DAYS);
    let started = Instant::now();
    let mut peak_hot = 0usize;
    let mut spill_seconds = 0.0f64;
    let mut merges = 0;
    for d in 0..DAYS {
        let day = FIRST_DAY + d;
        let cold_heap = window.heap_bytes();
        for i in u64::from(d) * per_day..u64::from(d + 1) * per_day {
            window.insert(fp(i), day, i);
        }
        peak_hot = peak_hot.max(window.heap_bytes() - cold_heap);
        // The next day begins: this one leaves memory (every output committed: 1 of 1), and
        // after every 7th spill the week's runs merge into one.
        let spill = Instant::now();
        window.maintain(day + 1, 0, 1, 1);
        let done = window.finish(1);
        assert!(done.installed.is_some(), "day {day} moved to the cold tier: {done:?}");
        window.maintain(day + 1, 0, 1, 1);
        if window.finish(1).merged.is_some() {
            merges += 1;
        }
        spill_seconds += spill.elapsed().as_secs_f64();
    }
    let total = per_day * u64::from(DAYS);
    let load_seconds = started.elapsed().as_secs_f64();
    assert_eq!(window.cold_len() as u64, total);
    assert_eq!(window.memory_len(), 0);
    let cold_heap = window.heap_bytes();
    let rss = rss_bytes().saturating_sub(rss_start);
    let disk = dir_bytes(dir.path());

    // New ids: every run's filter is probed; a false "maybe" reads a page.
    let probes = 1_000_000u64;
    window.take_cold_reads();
    let t = Instant::now();
    let mut new = 0u64;
    for i in 0..probes {
        if window.check(fp(total + 1 + i), 0).expect("readable") == Seen::New {
            new += 1;
        }
    }
    let new_ns = t.elapsed().as_nanos() as f64 / probes as f64;
    let first_runs = window.cold_runs();
    let false_reads = window.take_cold_reads();
    assert_eq!(new, probes, "no absent id is taken for a seen one");
    // Old ids (resends from days ago): a page read each, from the page cache.
    let hits = 200_000u64;
    let t = Instant::now();
    let step = total / hits;
    for n in 0..hits {
        let i = n * step;
        let seen = window.check(fp(i), i).expect("readable");
        assert_eq!(seen, Seen::Duplicate, "id {i}");
    }
    let hit_ns = t.elapsed().as_nanos() as f64 / hits as f64;
    // The most runs a 35-day window keeps: 5 merged weeks and 6 spills not yet merged.
    for d in DAYS..DAYS + 6 {
        let day = FIRST_DAY + d;
        for i in u64::from(d) * per_day..u64::from(d + 1) * per_day {
            window.insert(fp(i), day, i);
        }
        window.maintain(day + 1, 0, 1, 1);
        assert!(window.finish(1).installed.is_some());
    }
    let most_runs = window.cold_runs();
    window.take_cold_reads();
    let t = Instant::now();
    for i in 0..probes {
        assert_eq!(window.check(fp(u64::MAX - i), 0).expect("readable"), Seen::New);
    }
    let most_ns = t.elapsed().as_nanos() as f64 / probes as f64;
    let most_reads = window.take_cold_reads();

    // A restart: every run read whole and checked, filters and indexes rebuilt. Its resident
    // set growth is what a restarted shard holds for its cold tier.
    drop(window);
    let rss_before_reopen = rss_bytes();
    let t = Instant::now();
    let reopened = ColdTier::open(dir.clone()).expect("reopens");
    let reopen_seconds = t.elapsed().as_secs_f64();
    let reopen_rss = rss_bytes().saturating_sub(rss_before_reopen);
    let reopen_ids = reopened.len();
    drop(reopened);

    println!("dedupe tiers: {total} ids over {DAYS} days, one shard");
    println!(
        "  cold tier memory (filters + page index): {:.2} B/id",
        cold_heap as f64 / total as f64
    );
    println!(
        "  resident set growth after the load: {:.2} B/id ({} MiB)",
        rss as f64 / total as f64,
        rss >> 20
    );
    println!(
        "  cold tier disk: {:.2} B/id ({} MiB)",
        disk as f64 / total as f64,
        disk >> 20
    );
    println!(
        "  hot tier at its peak (one day, {per_day} ids): {:.1} B/id",
        peak_hot as f64 / per_day as f64
    );
    println!(
        "  load {load_seconds:.1} s, of which spills and {merges} merges (sort, write, fsync) {spill_seconds:.1} s"
    );
    println!(
        "  check of a new id ({first_runs} runs): {new_ns:.0} ns; page reads per new id {:.4}",
        false_reads as f64 / probes as f64
    );
    println!(
        "  check of a new id ({most_runs} runs, the most a 35-day window keeps): {most_ns:.0} ns; page reads per new id {:.4}",
        most_reads as f64 / probes as f64
    );
    println!("  check of an old id (cold hit, one page read): {hit_ns:.0} ns");
    println!(
        "  reopen (read and check every run, {reopen_ids} ids): {reopen_seconds:.1} s; resident set growth {:.2} B/id",
        reopen_rss as f64 / reopen_ids as f64
    );
    let _ = std::fs::remove_dir_all(&root);
}
