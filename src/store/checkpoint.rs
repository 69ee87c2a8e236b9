//! Shard checkpoints: each shard's derived state (dedupe window, period totals) as of a commit, in
//! a file of its own under `<data_dir>/checkpoints/`, so a restart replays only the blocks after
//! it. A checkpoint is written off the commit path (it is large: 16 bytes per id in the window),
//! by a thread of its own, after the blocks it reflects are durable; a crash before it is complete
//! leaves the previous one, and a checkpoint that fails its checksum is not used (the blocks are
//! the truth; the state is replayed from them).
//!
//! File: `RCK4` (`RCK3`, and `RCK2` before the dedupe cold tier, still read), shard count (u32),
//! first commit seq NOT reflected (u64), state length (u64), xxh3 checksum of the state seeded
//! with that seq (u64), state (see `pipeline::shard`). An `RCK4` state names the id segments
//! (`store::segments`) that hold the window's ids in memory; an `RCK3` state holds them itself.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Since id segments: the state names the segment files that hold the ids in memory. An earlier
/// release does not know `RCK4` and replays the blocks instead, which rebuilds the whole window:
/// a downgrade cannot let an id through.
const MAGIC: &[u8; 4] = b"RCK4";
/// Since the dedupe cold tier: the state holds the ids in memory only, the rest being in
/// `dedupe/`. Still read; its ids go into the first segment written after it.
const MAGIC_WINDOW_IN_STATE: &[u8; 4] = b"RCK3";
/// The same layout from the release before the cold tier (the whole window in the state): read
/// as it is; its ids move to the cold tier with the next spill.
const MAGIC_WHOLE_WINDOW: &[u8; 4] = b"RCK2";
/// Checkpoints of releases that kept one totals per account and period, whatever its plans: not
/// used (their sums may mix a plan change's currencies); the state is replayed from the blocks,
/// whose records name their plan.
const MAGIC_BEFORE_PLAN_PARTS: &[u8; 4] = b"RCK1";
const HEADER: usize = 4 + 4 + 8 + 8 + 8;
use crate::limits::CHECKPOINT_SYNC_BYTES as SYNC_EVERY_BYTES;

/// One shard's checkpoint as read back.
pub struct Checkpoint {
    /// The shard count it was taken with (a different count means it cannot be used).
    pub shards: u32,
    /// Commits with a seq from here on are not in it.
    pub next_seq: u64,
    /// True for `RCK4`: the state names id segments; false when it holds the window itself.
    pub segmented: bool,
    pub state: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct CheckpointFiles {
    dir: PathBuf,
}

impl CheckpointFiles {
    pub fn new(data_dir: &Path) -> CheckpointFiles {
        CheckpointFiles {
            dir: data_dir.join("checkpoints"),
        }
    }

    /// The directory of the checkpoints and their id segments.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, shard: usize) -> PathBuf {
        self.dir.join(format!("shard-{shard}.ckpt"))
    }

    /// Writes a checkpoint durably: a temporary file, fsync, rename over the old one, fsync of
    /// the directory.
    pub fn write(&self, shard: usize, shards: usize, next_seq: u64, state: &[u8]) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let path = self.path(shard);
        let tmp = path.with_extension("ckpt.tmp");
        let mut file = std::fs::File::create(&tmp)?;
        let mut header = Vec::with_capacity(HEADER);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&(shards as u32).to_le_bytes());
        header.extend_from_slice(&next_seq.to_le_bytes());
        header.extend_from_slice(&(state.len() as u64).to_le_bytes());
        header.extend_from_slice(&xxhash_rust::xxh3::xxh3_64_with_seed(state, next_seq).to_le_bytes());
        file.write_all(&header)?;
        // Synced a few MiB at a time: a large file's dirty pages would otherwise all be written
        // out inside some commit's fsync (one journal on ext4), stalling acknowledgements.
        for chunk in state.chunks(SYNC_EVERY_BYTES) {
            file.write_all(chunk)?;
            file.sync_data()?;
        }
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(&self.dir)?.sync_all()
    }

    /// The shard's checkpoint, `Ok(None)` when there is none, `Err` (with the file and what is
    /// wrong) when it cannot be trusted.
    pub fn read(&self, shard: usize) -> Result<Option<Checkpoint>, String> {
        let path = self.path(shard);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let bad = |what: &str| Err(format!("{}: {what}", path.display()));
        if bytes.starts_with(MAGIC_BEFORE_PLAN_PARTS) {
            return bad("written by an earlier release (RCK1, totals not kept per plan); replayed from the blocks");
        }
        let magic = bytes.get(..4).unwrap_or_default();
        if bytes.len() < HEADER || ![&MAGIC[..], &MAGIC_WINDOW_IN_STATE[..], &MAGIC_WHOLE_WINDOW[..]].contains(&magic) {
            return bad("not a checkpoint (bad magic or truncated header)");
        }
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or_default());
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or_default());
        let (shards, next_seq, len, checksum) = (u32_at(4), u64_at(8), u64_at(16), u64_at(24));
        let state = &bytes[HEADER..];
        if state.len() as u64 != len {
            return bad("truncated");
        }
        if xxhash_rust::xxh3::xxh3_64_with_seed(state, next_seq) != checksum {
            return bad("checksum mismatch");
        }
        Ok(Some(Checkpoint {
            shards,
            next_seq,
            segmented: &bytes[..4] == MAGIC,
            state: state.to_vec(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_a_flipped_byte_is_caught() {
        let dir = std::env::temp_dir().join(format!("ratingd-ckpt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let files = CheckpointFiles::new(&dir);
        assert!(files.read(0).unwrap().is_none());
        files.write(0, 2, 41, b"state bytes").unwrap();
        let c = files.read(0).unwrap().unwrap();
        assert_eq!((c.shards, c.next_seq, c.state.as_slice()), (2, 41, &b"state bytes"[..]));
        let mut bytes = std::fs::read(files.path(0)).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(files.path(0), &bytes).unwrap();
        let error = files.read(0).err().unwrap();
        assert!(error.contains("shard-0.ckpt") && error.contains("checksum"), "{error}");
        bytes[last] ^= 1;
        std::fs::write(files.path(0), &bytes).unwrap();
        assert!(files.read(0).unwrap().unwrap().segmented);
        for old in [b"RCK3", b"RCK2"] {
            bytes[..4].copy_from_slice(old);
            std::fs::write(files.path(0), &bytes).unwrap();
            let c = files.read(0).unwrap().unwrap();
            assert_eq!((c.state.as_slice(), c.segmented), (&b"state bytes"[..], false), "read");
        }
        bytes[..4].copy_from_slice(b"RCK1");
        std::fs::write(files.path(0), &bytes).unwrap();
        let error = files.read(0).err().unwrap();
        assert!(error.contains("earlier release"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
