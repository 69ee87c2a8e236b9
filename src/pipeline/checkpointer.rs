//! The checkpoint writer thread: for each shard copy it is handed (once the commits it reflects
//! are durable), writes the copy's id segment, then the checkpoint that names every segment still
//! needed and holds the totals, then deletes the segment files no checkpoint names any more.
//!
//! A segment that cannot be written is kept in memory and written before the next checkpoint of
//! its shard; until then no checkpoint of that shard is written (the previous one stays, and a
//! restart replays a little more): a checkpoint never names less than every id claimed before
//! its cut.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crossbeam_channel::Receiver;
use tracing::{error, info};

use super::dedupe::IdSegment;
use super::shard::{ShardSnapshot, encode_state};
use crate::store::checkpoint::CheckpointFiles;
use crate::store::segments::SegmentMeta;

/// What the writer keeps per shard.
#[derive(Default)]
struct ShardFiles {
    /// The segments on disk that the next checkpoint names, oldest first.
    live: Vec<SegmentMeta>,
    /// Segments not written yet (a write failed), oldest first.
    unwritten: Vec<IdSegment>,
}

/// Runs until the committer drops its sender. `live`: per shard, the segments its checkpoint
/// named at start (recovery loaded them).
pub fn write_checkpoints(
    files: CheckpointFiles,
    live: Vec<Vec<SegmentMeta>>,
    rx: Receiver<(usize, u64, ShardSnapshot)>,
    pending: Arc<AtomicUsize>,
) {
    let shards = live.len();
    let mut state: Vec<ShardFiles> = live
        .into_iter()
        .map(|live| ShardFiles {
            live,
            unwritten: Vec::new(),
        })
        .collect();
    for (shard, next_seq, snapshot) in rx {
        if let Some(files_of) = state.get_mut(shard) {
            write_one(&files, shards, shard, next_seq, snapshot, files_of);
        }
        let _ = pending.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| Some(n.saturating_sub(1)));
    }
}

fn write_one(
    files: &CheckpointFiles,
    shards: usize,
    shard: usize,
    next_seq: u64,
    snapshot: ShardSnapshot,
    state: &mut ShardFiles,
) {
    let started = std::time::Instant::now();
    let ShardSnapshot {
        segment,
        retire,
        totals,
    } = snapshot;
    state
        .live
        .retain(|m| !retire.iter().any(|r| r.covers(m.number, m.newest_day)));
    state.unwritten.push(segment);
    let mut ids = 0u64;
    while let Some(segment) = state.unwritten.first() {
        if segment.claims.is_empty() {
            state.unwritten.remove(0);
            continue;
        }
        match files.write_segment(shard, segment.number, segment.newest_day, &segment.claims) {
            Ok(meta) => {
                ids += meta.count;
                state.live.push(meta);
                state.unwritten.remove(0);
            }
            Err(e) => {
                let path = files.segment_path(shard, segment.number);
                error!(shard, error = %e, path = %path.display(), "id segment not written; retried with the next checkpoint");
                return;
            }
        }
    }
    let bytes = encode_state(&state.live, &totals);
    drop(totals);
    match files.write(shard, shards, next_seq, &bytes) {
        Ok(()) => {
            let keep: Vec<u64> = state.live.iter().map(|m| m.number).collect();
            files.remove_segments_except(shard, &keep);
            info!(
                shard,
                next_seq,
                ids,
                segments = keep.len(),
                bytes = bytes.len(),
                ms = started.elapsed().as_millis() as u64,
                "checkpoint written"
            );
        }
        Err(e) => error!(shard, error = %e, path = %files.path(shard).display(), "checkpoint not written"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::dedupe::{Claim, Retire};

    fn snapshot(number: u64, newest_day: u16, ids: u64, retire: Vec<Retire>) -> ShardSnapshot {
        ShardSnapshot {
            segment: IdSegment {
                number,
                newest_day,
                claims: (0..ids)
                    .map(|n| Claim::new(u128::from(number * 1000 + n), u64::from(newest_day) << 48))
                    .collect(),
            },
            retire,
            totals: Vec::new(),
        }
    }

    fn named(files: &CheckpointFiles) -> Vec<u64> {
        let c = files.read(0).unwrap().expect("a checkpoint");
        let mut r = crate::store::codec::Reader::new(&c.state);
        (0..r.u64().unwrap())
            .map(|_| {
                let number = r.u64().unwrap();
                // Count and checksum, then the newest day.
                r.u128().unwrap();
                r.u16().unwrap();
                number
            })
            .collect()
    }

    /// Each checkpoint names every segment still needed; a retired one is no longer named and
    /// its file goes; a segment that cannot be written holds back the shard's checkpoints until
    /// it is written.
    #[test]
    fn checkpoints_name_the_segments_still_needed() {
        let dir = std::env::temp_dir().join(format!("ratingd-checkpointer-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let files = CheckpointFiles::new(&dir);
        let mut state = ShardFiles::default();
        write_one(&files, 1, 0, 10, snapshot(0, 100, 50, Vec::new()), &mut state);
        write_one(&files, 1, 0, 20, snapshot(1, 101, 50, Vec::new()), &mut state);
        assert_eq!(named(&files), vec![0, 1]);
        // A spill named after both were sealed holds day 100 only.
        let retire = Retire {
            sealed_before: 2,
            days_before: 101,
        };
        write_one(&files, 1, 0, 30, snapshot(2, 101, 0, vec![retire]), &mut state);
        assert_eq!(named(&files), vec![1], "0 retired; the empty segment 2 is not written");
        assert_eq!(files.segment_numbers(0), vec![1]);
        // Segment 3 cannot be written (its temporary file's name is taken by a directory).
        std::fs::create_dir_all(files.segment_path(0, 3).with_extension("ids-3.tmp")).unwrap();
        write_one(&files, 1, 0, 40, snapshot(3, 102, 10, Vec::new()), &mut state);
        let c = files.read(0).unwrap().unwrap();
        assert_eq!(
            (c.next_seq, named(&files)),
            (30, vec![1]),
            "the last good checkpoint stays"
        );
        std::fs::remove_dir_all(files.segment_path(0, 3).with_extension("ids-3.tmp")).unwrap();
        write_one(&files, 1, 0, 50, snapshot(4, 102, 10, Vec::new()), &mut state);
        let c = files.read(0).unwrap().unwrap();
        assert_eq!((c.next_seq, named(&files)), (50, vec![1, 3, 4]));
        let meta = state.live.iter().find(|m| m.number == 3).unwrap();
        assert_eq!(files.read_segment(0, meta).unwrap().len(), 10);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
