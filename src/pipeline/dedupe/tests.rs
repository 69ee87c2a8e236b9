//! The dedupe window's tests: exact ids, checkpoints, spills, merges, expiry, damage.

use super::*;
use crate::store::cold::ColdDir;

fn check(w: &DedupeWindow, fingerprint: u128, content: u64) -> Seen {
    w.check(fingerprint, content).expect("no cold tier to fail")
}

#[test]
fn ids_that_share_their_low_bits_stay_apart() {
    let mut w = DedupeWindow::default();
    let a: u128 = (1 << 64) | 42;
    let b: u128 = (2 << 64) | 42;
    assert_eq!(check(&w, a, 7), Seen::New);
    w.insert(a, 100, 7);
    assert_eq!(check(&w, a, 7), Seen::Duplicate);
    assert_eq!(check(&w, a, 8), Seen::Conflict);
    assert_eq!(check(&w, b, 7), Seen::New);
    w.insert(b, 100, 9);
    assert_eq!(check(&w, b, 9), Seen::Duplicate);
    assert_eq!(check(&w, a, 7), Seen::Duplicate);
    assert_eq!(w.len(), 2);
    w.insert((3 << 64) | 43, 101, 1);
    w.retain_from(101);
    assert_eq!(check(&w, a, 7), Seen::New);
    assert_eq!(check(&w, b, 9), Seen::New);
    assert_eq!(check(&w, (3 << 64) | 43, 1), Seen::Duplicate);
}

#[test]
fn survives_a_checkpoint() {
    let mut w = DedupeWindow::default();
    for i in 0..1000u128 {
        w.insert(i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C834), 5, i as u64);
    }
    // Shares its low 64 bits with no other id here, then with one (the overflow).
    w.insert((9 << 64) | 0x9E37_79B9_7F4A_7C15, 6, 1);
    w.insert((10 << 64) | 0x9E37_79B9_7F4A_7C15, 6, 2);
    let (segment, retire) = w.seal();
    assert!(retire.is_empty());
    assert_eq!((segment.claims.len(), segment.newest_day), (1002, 6));
    let mut back = DedupeWindow::default();
    back.load_segment(&segment.claims);
    assert_eq!(back.len(), w.len());
    assert_eq!(back.journal_len(), 0, "loaded claims are in a segment already");
    for i in 0..1000u128 {
        let fp = i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C834);
        assert_eq!(check(&back, fp, i as u64), Seen::Duplicate);
    }
    assert_eq!(check(&back, (9 << 64) | 0x9E37_79B9_7F4A_7C15, 1), Seen::Duplicate);
    assert_eq!(check(&back, (10 << 64) | 0x9E37_79B9_7F4A_7C15, 2), Seen::Duplicate);
}

/// The window of a checkpoint written before id segments (RCK3) is read, and its ids go into the
/// next segment: the first new checkpoint names them.
#[test]
fn a_window_from_an_earlier_checkpoint_is_journaled() {
    let shared = 0x1234_5678_9ABC_DEF0u128;
    let ids: Vec<(u128, u16, u64)> = (0..500u128)
        .map(|i| {
            (
                i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C834),
                7 + (i % 2) as u16,
                i as u64,
            )
        })
        .chain([((3 << 64) | shared, 8, 1), ((4 << 64) | shared, 8, 2)])
        .collect();
    // The RCK3 layout: main slots (low 64 bits, value), then the overflow (whole fingerprint, value).
    let mut bytes = Vec::new();
    let mut writer = crate::store::codec::Writer(&mut bytes);
    let (main, overflow) = ids.split_at(ids.len() - 1);
    writer.u64(main.len() as u64);
    for (fp, day, content) in main {
        writer.u64(*fp as u64);
        writer.u64(value(*fp, *day, *content));
    }
    writer.u64(overflow.len() as u64);
    for (fp, day, content) in overflow {
        writer.u128(*fp);
        writer.u64(value(*fp, *day, *content));
    }
    let mut old = DedupeWindow::decode(&mut Reader::new(&bytes)).expect("decodes");
    let (segment, _) = old.seal();
    assert_eq!(segment.claims.len(), ids.len());
    let mut back = DedupeWindow::default();
    back.load_segment(&segment.claims);
    for (fp, _, content) in &ids {
        assert_eq!(check(&back, *fp, *content), Seen::Duplicate);
        assert_eq!(check(&back, *fp, content + 1), Seen::Conflict);
    }
}

#[test]
fn at_most_40_bytes_per_id() {
    let mut w = DedupeWindow::default();
    for n in [1_000u128, 100_000, 1_000_000] {
        while (w.len() as u128) < n {
            let i = w.len() as u128 + 1;
            w.insert(i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835), 1, 0);
        }
        let per_id = w.heap_bytes() as f64 / w.len() as f64;
        eprintln!("dedupe window: {n} ids, {per_id:.1} bytes per id");
        assert!(per_id <= 40.0, "{per_id} bytes per id at {n} ids");
    }
}

fn tempdir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ratingd-tiers-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn fp(i: u128) -> u128 {
    i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C834) | 1
}

#[test]
fn old_days_move_to_the_cold_tier_and_answer_the_same() {
    let root = tempdir("move");
    let dir = ColdDir::new(&root, 0, 1);
    let mut w = DedupeWindow::default();
    w.set_cold(ColdTier::open(dir.clone()).expect("empty tier"));
    for i in 0..3000u128 {
        w.insert(fp(i), 100 + (i % 3) as u16, i as u64);
    }
    // Days 100 and 101 are older than the hot tier; the outputs that claimed them (5) are
    // not all committed yet (4): the run is written but not named, the ids answer from memory.
    let first = w.maintain(102, 90, 5, 4);
    assert_eq!(first, Maintenance::default());
    assert!(w.spilling());
    assert_eq!(w.memory_len(), 3000);
    assert_eq!(check(&w, fp(0), 0), Seen::Duplicate);
    let waiting = w.finish(4);
    assert!(waiting.installed.is_none(), "not named before its commits");
    assert!(w.spilling());
    let done = w.finish(5);
    let (path, ids) = done.installed.expect("named once committed");
    assert_eq!(ids, 2000);
    assert!(path.ends_with(".cold"), "{path}");
    assert!(!w.spilling());
    assert_eq!((w.memory_len(), w.cold_len()), (1000, 2000));
    for i in 0..3000u128 {
        assert_eq!(check(&w, fp(i), i as u64), Seen::Duplicate, "{i}");
    }
    // A resend with other content (whatever its time) is a CONFLICT from the cold tier too.
    assert_eq!(check(&w, fp(3), 4), Seen::Conflict);
    assert_eq!(check(&w, fp(5000), 1), Seen::New);
    assert!(w.take_cold_reads() >= 2001, "cold hits read pages");
    // The cold tier survives a restart: a new window over the same directory answers alike.
    let mut again = DedupeWindow::default();
    again.set_cold(ColdTier::open(dir.clone()).expect("reopens"));
    assert_eq!(again.cold_len(), 2000);
    assert_eq!(check(&again, fp(3), 3), Seen::Duplicate);
    assert_eq!(
        check(&again, fp(2), 2),
        Seen::New,
        "day 102 was hot: in the checkpoint, not here"
    );
    // A late id of a spilled day waits in memory for the next day's spill, then gets a run of
    // its own; runs leave whole once their newest day is past the window.
    w.insert(fp(7000), 100, 1);
    assert_eq!(w.maintain(102, 90, 6, 6), Maintenance::default());
    assert!(!w.spilling(), "no spill for one late id before the next day");
    w.maintain(103, 90, 6, 6);
    assert_eq!(
        w.finish(6).installed.map(|(_, n)| n),
        Some(1001),
        "day 102 and the late id"
    );
    assert_eq!(w.cold_len(), 3001);
    let expired = w.maintain(103, 102, 6, 6);
    assert_eq!(
        expired.expired, 1,
        "the first run's newest day (101) is past the window"
    );
    assert_eq!(w.cold_len(), 1001);
    assert_eq!(check(&w, fp(3), 3), Seen::New);
    assert_eq!(check(&w, fp(2), 2), Seen::Duplicate);
    let files = std::fs::read_dir(dir.path()).expect("dir").count();
    assert_eq!(files, 2, "the manifest and one run");
    let _ = std::fs::remove_dir_all(root);
}

/// A segment is redundant once a named run holds every day in it, and only if it was sealed
/// before the spill froze its tables; until then every checkpoint names it.
#[test]
fn segments_retire_once_a_named_run_holds_their_days() {
    let root = tempdir("retire");
    let mut w = DedupeWindow::default();
    w.set_cold(ColdTier::open(ColdDir::new(&root, 0, 1)).expect("empty tier"));
    for i in 0..200u128 {
        w.insert(fp(i), 100, i as u64);
    }
    let (day_100, _) = w.seal();
    for i in 200..400u128 {
        w.insert(fp(i), 100 + (i % 2) as u16, i as u64);
    }
    let (both_days, _) = w.seal();
    w.maintain(101, 90, 1, 0);
    assert!(w.spilling(), "day 100 frozen, its run not named");
    // A late id of day 100 after the freeze: hot, not in the run.
    w.insert(fp(1000), 100, 1000);
    let (late, retire) = w.seal();
    assert!(retire.is_empty(), "nothing retires before the run is named");
    assert!(w.finish(1).installed.is_some());
    let (_, retire) = w.seal();
    let covered = |s: &IdSegment| retire.iter().any(|r| r.covers(s.number, s.newest_day));
    assert!(covered(&day_100));
    assert!(!covered(&both_days), "holds day 101, still hot");
    assert!(!covered(&late), "sealed after the freeze");
    // Past the window, every segment sealed before goes, spilled or not.
    w.retain_from(102);
    let (_, retire) = w.seal();
    assert!(retire.iter().any(|r| r.covers(both_days.number, both_days.newest_day)));
    assert!(retire.iter().any(|r| r.covers(late.number, late.newest_day)));
    let _ = std::fs::remove_dir_all(root);
}

#[test]
fn a_week_of_spills_merges_into_one_run() {
    let root = tempdir("merge");
    let dir = ColdDir::new(&root, 0, 1);
    let mut w = DedupeWindow::default();
    w.set_cold(ColdTier::open(dir.clone()).expect("empty tier"));
    let mut merged = None;
    for day in 100..108u16 {
        for i in 0..300u128 {
            let n = u128::from(day) * 1000 + i;
            w.insert(fp(n), day, n as u64);
        }
        // The day after: this day spills; from the 7th spill on, a merge follows.
        w.maintain(day + 1, 90, 1, 1);
        assert!(w.finish(1).installed.is_some(), "day {day} spilled");
        w.maintain(day + 1, 90, 1, 1);
        if let Some(m) = w.finish(1).merged {
            merged = Some((day, m));
        }
    }
    let (day, (path, runs)) = merged.expect("a merge");
    assert_eq!((day, runs), (106, MERGE_RUNS), "{path}");
    let cold = w.cold.as_ref().expect("cold tier");
    let levels: Vec<u8> = cold.runs.iter().map(|r| r.info.level).collect();
    assert_eq!(levels, vec![1, 0], "one merged run and the last spill");
    assert_eq!(w.cold_len(), 8 * 300);
    for day in 100..108u128 {
        for i in (0..300u128).step_by(7) {
            let n = day * 1000 + i;
            assert_eq!(check(&w, fp(n), n as u64), Seen::Duplicate, "{n}");
        }
    }
    assert_eq!(check(&w, fp(99_999), 0), Seen::New);
    // The merged runs' files are gone; a restart finds the same tier.
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("dir").count(),
        3,
        "manifest and two runs"
    );
    let again = ColdTier::open(dir.clone()).expect("reopens");
    assert_eq!(again.len(), 8 * 300);
    // The merged run leaves whole once its newest day (106) is past the window.
    assert_eq!(w.maintain(108, 106, 1, 1).expired, 0);
    assert_eq!(w.maintain(108, 107, 1, 1).expired, 1);
    assert_eq!(w.cold_len(), 300);
    let _ = std::fs::remove_dir_all(root);
}

#[test]
fn runs_being_merged_expire_after_the_merge() {
    let root = tempdir("merge-expire");
    let mut w = DedupeWindow::default();
    w.set_cold(ColdTier::open(ColdDir::new(&root, 0, 1)).expect("empty tier"));
    for day in 100..107u16 {
        w.insert(fp(u128::from(day)), day, 1);
        w.maintain(day + 1, 90, 1, 1);
        assert!(w.finish(1).installed.is_some());
    }
    // The 7th spill is named; the merge starts in the same step.
    w.maintain(107, 90, 1, 1);
    assert!(w.spilling(), "a merge under way");
    // Every day is now past the window, but the merge is reading the runs: they stay.
    let during = w.maintain(107, 200, 1, 1);
    assert_eq!(during.expired, 0);
    assert!(w.finish(1).merged.is_some(), "the merge completes");
    assert_eq!(w.maintain(107, 200, 1, 1).expired, 1, "then the merged run expires");
    assert_eq!(w.cold_len(), 0);
    let _ = std::fs::remove_dir_all(root);
}
