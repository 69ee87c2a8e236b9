//! Id segments: the dedupe claims a shard made between two checkpoint cuts, each in a file of
//! its own beside the checkpoints (`checkpoints/shard-<k>.ids-<n>`), written once by the
//! checkpoint writer and named by every later checkpoint until a cold run holds its ids
//! (`pipeline::dedupe::journal`). A checkpoint thus writes the ids claimed since the one before,
//! not the whole window.
//!
//! File: `RIS1`, shard (u32), segment number (u64), claims (u64), xxh3 checksum of the claims
//! seeded with the number (u64), then 24 bytes a claim (fingerprint low and high halves, packed
//! value; little-endian). The checkpoint that names a segment keeps its count and checksum too,
//! so a segment file replaced by another of the same name is caught.

use std::io::{Seek, Write};
use std::path::PathBuf;

use super::checkpoint::CheckpointFiles;

const MAGIC: &[u8; 4] = b"RIS1";
const HEADER: usize = 4 + 4 + 8 + 8 + 8;
/// Claims encoded per write (about 1.5 MiB): no buffer the size of a segment.
const CLAIMS_PER_WRITE: usize = 1 << 16;

/// One claim as the dedupe window made it (`pipeline::dedupe`): the whole fingerprint and the packed
/// value (its day, 24 more fingerprint bits, 24 content bits). 24 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    pub fingerprint_low: u64,
    pub fingerprint_high: u64,
    pub value: u64,
}

/// Bytes of one claim in a segment file.
pub const CLAIM_BYTES: usize = 24;

impl Claim {
    pub fn new(fingerprint: u128, value: u64) -> Claim {
        Claim {
            fingerprint_low: fingerprint as u64,
            fingerprint_high: (fingerprint >> 64) as u64,
            value,
        }
    }

    pub fn fingerprint(&self) -> u128 {
        (u128::from(self.fingerprint_high) << 64) | u128::from(self.fingerprint_low)
    }

    pub fn day(&self) -> u16 {
        (self.value >> 48) as u16
    }

    /// Appends the claim's 24 bytes (little-endian) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.fingerprint_low.to_le_bytes());
        out.extend_from_slice(&self.fingerprint_high.to_le_bytes());
        out.extend_from_slice(&self.value.to_le_bytes());
    }

    /// Reads a claim from its 24 bytes.
    pub fn decode(bytes: &[u8; CLAIM_BYTES]) -> Claim {
        let word = |at: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(w)
        };
        Claim {
            fingerprint_low: word(0),
            fingerprint_high: word(8),
            value: word(16),
        }
    }
}

/// A written segment as a checkpoint names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentMeta {
    pub number: u64,
    pub count: u64,
    pub checksum: u64,
    /// The newest event day among its claims: the segment is redundant once a named cold run
    /// holds every day up to it.
    pub newest_day: u16,
}

impl CheckpointFiles {
    pub fn segment_path(&self, shard: usize, number: u64) -> PathBuf {
        self.dir().join(format!("shard-{shard}.ids-{number}"))
    }

    /// Writes a segment durably (a temporary file, fsync, rename, fsync of the directory),
    /// encoding it a slice at a time: the claims are written behind a blank header and hashed as
    /// they go, then the header is written in place.
    pub fn write_segment(
        &self,
        shard: usize,
        number: u64,
        newest_day: u16,
        claims: &[Claim],
    ) -> std::io::Result<SegmentMeta> {
        std::fs::create_dir_all(self.dir())?;
        let path = self.segment_path(shard, number);
        let tmp = path.with_extension(format!("ids-{number}.tmp"));
        let mut file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp)?);
        file.write_all(&[0; HEADER])?;
        let mut hasher = xxhash_rust::xxh3::Xxh3::with_seed(number);
        let mut chunk = Vec::with_capacity(CLAIMS_PER_WRITE.min(claims.len()) * CLAIM_BYTES);
        for part in claims.chunks(CLAIMS_PER_WRITE) {
            chunk.clear();
            part.iter().for_each(|c| c.encode(&mut chunk));
            hasher.update(&chunk);
            file.write_all(&chunk)?;
        }
        let checksum = hasher.digest();
        let mut file = file.into_inner().map_err(|e| e.into_error())?;
        let mut header = Vec::with_capacity(HEADER);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&(shard as u32).to_le_bytes());
        header.extend_from_slice(&number.to_le_bytes());
        header.extend_from_slice(&(claims.len() as u64).to_le_bytes());
        header.extend_from_slice(&checksum.to_le_bytes());
        file.seek(std::io::SeekFrom::Start(0))?;
        file.write_all(&header)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(self.dir())?.sync_all()?;
        Ok(SegmentMeta {
            number,
            count: claims.len() as u64,
            checksum,
            newest_day,
        })
    }

    /// Reads a segment a checkpoint names, checked against its header and the checkpoint's
    /// count and checksum; `Err` (with the file and what is wrong) when it cannot be trusted.
    pub fn read_segment(&self, shard: usize, meta: &SegmentMeta) -> Result<Vec<Claim>, String> {
        let path = self.segment_path(shard, meta.number);
        let bad = |what: &str| Err(format!("{}: {what}", path.display()));
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        if bytes.len() < HEADER || &bytes[..4] != MAGIC {
            return bad("not an id segment (bad magic or truncated header)");
        }
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or_default());
        let (number, count, checksum) = (u64_at(8), u64_at(16), u64_at(24));
        if (number, count, checksum) != (meta.number, meta.count, meta.checksum) {
            return bad("not the segment its checkpoint names (number, count or checksum differ)");
        }
        let body = &bytes[HEADER..];
        if body.len() as u64 != count * CLAIM_BYTES as u64 {
            return bad("truncated");
        }
        if xxhash_rust::xxh3::xxh3_64_with_seed(body, number) != checksum {
            return bad("checksum mismatch");
        }
        Ok(body
            .chunks_exact(CLAIM_BYTES)
            .map(|c| Claim::decode(c.try_into().unwrap_or(&[0; CLAIM_BYTES])))
            .collect())
    }

    /// The numbers of the shard's segment files on disk.
    pub fn segment_numbers(&self, shard: usize) -> Vec<u64> {
        self.segment_files(shard).into_iter().filter_map(|(_, n)| n).collect()
    }

    /// Deletes the shard's segment files (and leftover temporary ones) that `keep` does not name:
    /// called once a checkpoint naming `keep` is durable.
    pub fn remove_segments_except(&self, shard: usize, keep: &[u64]) {
        for (path, number) in self.segment_files(shard) {
            if !number.is_some_and(|n| keep.contains(&n)) {
                let _ = std::fs::remove_file(path);
            }
        }
    }

    /// The shard's segment files with their numbers (`None` for a leftover temporary file).
    fn segment_files(&self, shard: usize) -> Vec<(PathBuf, Option<u64>)> {
        let prefix = format!("shard-{shard}.ids-");
        let Ok(entries) = std::fs::read_dir(self.dir()) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name();
                let rest = name.to_str()?.strip_prefix(&prefix)?;
                Some((e.path(), rest.parse::<u64>().ok()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_round_trips_through_its_bytes() {
        let claim = Claim::new((7u128 << 64) | 42, (123u64 << 48) | 99);
        let mut bytes = Vec::new();
        claim.encode(&mut bytes);
        assert_eq!(bytes.len(), CLAIM_BYTES);
        let back = Claim::decode(bytes.as_slice().try_into().unwrap());
        assert_eq!(back, claim);
        assert_eq!(back.fingerprint(), (7u128 << 64) | 42);
        assert_eq!(back.day(), 123);
    }

    #[test]
    fn a_segment_round_trips_and_damage_is_caught() {
        let dir = std::env::temp_dir().join(format!("ratingd-segments-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let files = CheckpointFiles::new(&dir);
        let claims: Vec<Claim> = (0..100_000u64)
            .map(|n| {
                Claim::new(
                    u128::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835),
                    (n % 7) << 48 | n,
                )
            })
            .collect();
        let meta = files.write_segment(1, 7, 6, &claims).unwrap();
        assert_eq!((meta.number, meta.count, meta.newest_day), (7, 100_000, 6));
        assert_eq!(files.read_segment(1, &meta).unwrap(), claims);
        let other = files.write_segment(1, 8, 0, &[]).unwrap();
        assert!(files.read_segment(1, &other).unwrap().is_empty());
        let mut numbers = files.segment_numbers(1);
        numbers.sort_unstable();
        assert_eq!(numbers, vec![7, 8]);
        // A flipped byte in the body, then a segment of the same name with other claims.
        let path = files.segment_path(1, 7);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let error = files.read_segment(1, &meta).unwrap_err();
        assert!(error.contains("shard-1.ids-7") && error.contains("checksum"), "{error}");
        files.write_segment(1, 7, 6, &claims[1..]).unwrap();
        let error = files.read_segment(1, &meta).unwrap_err();
        assert!(error.contains("not the segment"), "{error}");
        files.remove_segments_except(1, &[8]);
        assert_eq!(files.segment_numbers(1), vec![8]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
