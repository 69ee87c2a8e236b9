//! Durable storage in one sled tree: group-committed blocks of rated records ([`blocks`]) and the
//! small tables kept beside them ([`tables`]: subscriptions, suspense, closes, alerts), with the
//! fingerprint key. Every stored value is encoded and checked by [`codec`]; shard checkpoints
//! ([`checkpoint`]) and the dedupe window's cold tier ([`cold`]) are files beside sled.
//!
//! Keys: every prefix is in one registry ([`keys`]), kept distinct at build time and documented
//! row by row in ARCHITECTURE.md's storage layout (a test holds the two together); numbers in
//! keys are big-endian so they sort. The records' blocks (`b/`, `x/`) are [`blocks`]; what a
//! commit writes beside them comes typed from the shards ([`Write`]) and is keyed and encoded
//! here ([`write`]): suspense (`s/`), ledger entries (`l/`, `y/`), wallet settings, top-up ids,
//! sessions and balance alerts ([`balance`]: `w/`, `n/`, `g/`, `e/`), moved claims and partial
//! parts ([`mediation`]: `h/`, `p/`). The tables the Admin API and the billing cycle write
//! directly are [`tables`] (`u/`, `k/`, `a/`, `t/`, `f/`, `c/`, `j/`, `m/finals`) and
//! [`retention`] (`r/`); damage found at start is `d/`.
//!
//! One commit is one `apply_batch` (atomic) followed by `flush` (fsync): the records, their dedupe
//! claims (the fingerprints inside the records) and the suspense entries become durable together.
//! The committer owns the [`Store`] (the only writer of blocks); readers and the services hold
//! the cloneable table handles it gives out.

pub mod balance;
pub mod blocks;
pub mod checkpoint;
pub mod codec;
pub mod cold;
pub mod compact;
pub mod keys;
pub mod mediation;
pub mod retention;
pub mod segments;
pub mod tables;
pub mod write;

use std::path::Path;

use crate::domain::keyed::HashKey;

pub use balance::Balances;
pub use blocks::{BLOCK_PART_BYTES, Commit, FlushHook, Records};
pub use mediation::{MovedClaims, PartialParts};
pub use retention::{Removal, Removed, Retention, RetiredPeriod, StoredCommit};
pub use tables::{
    Adjustments, Alerts, Claim, Closes, Corrections, Finals, Outbox, StoredAlert, StoredClose, Subscriptions, Suspense,
    SuspenseId, Versions,
};
pub use write::Write;

/// Why storage failed. A failure while committing stops ingest (see `pipeline::committer`).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error(
        "the data dir {0} was written by an earlier ratingd whose event fingerprints were not keyed \
         (it has m/seed, not m/key); its dedupe claims cannot be checked by this version: start \
         with a new data_dir, or keep running the earlier version on it"
    )]
    UnkeyedDataDir(String),
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("corrupted value in {file} at key {key}: {error}")]
    Corrupt {
        file: String,
        key: String,
        error: codec::CodecError,
    },
}

use crate::limits::SLED_CACHE_BYTES;

/// A handle on the database, usable from any thread: what every table handle holds.
#[derive(Clone)]
struct Db {
    db: sled::Db,
    dir: String,
}

impl Db {
    /// A corrupted value at `key`, named with the data dir.
    fn corrupt(&self, key: String, error: codec::CodecError) -> StoreError {
        StoreError::Corrupt {
            file: self.dir.clone(),
            key,
            error,
        }
    }
}

/// The data dir: the committer's writer of blocks, and the source of the table handles.
pub struct Store {
    db: Db,
    key: HashKey,
    next_seq: u64,
    /// A test's failpoint around each commit's fsync; `None` in production.
    flush_hook: Option<std::sync::Arc<dyn FlushHook>>,
    /// How long the last commit's fsync took (the committer's stage metric).
    last_fsync: std::time::Duration,
}

impl Store {
    /// Opens (or creates) the data dir.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        // sled's page cache (1 GiB by default) would mostly hold blocks just written; reads are
        // drill-downs, which go to the page cache of the OS just as well.
        let db = sled::Config::new().path(dir).cache_capacity(SLED_CACHE_BYTES).open()?;
        let key = match db.get(keys::HASH_KEY)? {
            Some(v) => HashKey::from_bytes(&v).ok_or_else(|| StoreError::Corrupt {
                file: dir.display().to_string(),
                key: "m/key".into(),
                error: codec::CodecError::Truncated,
            })?,
            None => {
                let holds_data =
                    db.scan_prefix(keys::BLOCK).next().is_some() || db.scan_prefix(keys::SUSPENSE).next().is_some();
                if holds_data && db.get(keys::LEGACY_SEED_KEY)?.is_some() {
                    return Err(StoreError::UnkeyedDataDir(dir.display().to_string()));
                }
                let key = random_key();
                db.insert(keys::HASH_KEY, &key.to_bytes())?;
                db.remove(keys::LEGACY_SEED_KEY)?;
                db.flush()?;
                key
            }
        };
        // Every commit records the next seq, so one without a block (suspense only, or nothing
        // but a checkpoint) is never numbered twice; data dirs from before it have blocks only.
        let after_last_block = match db.scan_prefix(keys::BLOCK).keys().next_back() {
            Some(k) => keys::seq_of(&k?).map_or(0, |s| s + 1),
            None => 0,
        };
        let recorded = db
            .get(keys::NEXT_SEQ_KEY)?
            .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0);
        let next_seq = after_last_block.max(recorded);
        for k in db.scan_prefix(keys::LEGACY_CHECKPOINT).keys() {
            db.remove(k?)?;
        }
        for item in db.scan_prefix(keys::CORRECTION) {
            let (k, v) = item?;
            if k.len() == keys::CORRECTION.len() + 4 && std::str::from_utf8(&v).is_err() {
                db.remove(k)?;
            }
        }
        Ok(Store {
            db: Db {
                db,
                dir: dir.display().to_string(),
            },
            key,
            next_seq,
            flush_hook: None,
            last_fsync: std::time::Duration::ZERO,
        })
    }

    /// Installs a test's failpoint around every commit's fsync (see [`FlushHook`]).
    pub fn with_flush_hook(mut self, hook: Option<std::sync::Arc<dyn FlushHook>>) -> Store {
        self.flush_hook = hook;
        self
    }

    /// The hash key of the event fingerprints and account shards, fixed for the life of the data dir.
    pub fn key(&self) -> HashKey {
        self.key
    }

    pub fn dir(&self) -> &str {
        &self.db.dir
    }

    /// Where sled keeps its data, for messages.
    pub fn sled_file(&self) -> String {
        format!("{}/db", self.db.dir)
    }

    /// How long the fsync of the last commit took.
    pub fn last_fsync(&self) -> std::time::Duration {
        self.last_fsync
    }

    /// The sequence number the next commit will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    pub fn corrupt(&self, key: String, error: codec::CodecError) -> StoreError {
        self.db.corrupt(key, error)
    }

    /// Reads rated records back from the blocks.
    pub fn records(&self) -> Records {
        Records(self.db.clone())
    }

    pub fn suspense(&self) -> Suspense {
        Suspense(self.db.clone())
    }

    pub fn subscriptions(&self) -> Subscriptions {
        Subscriptions(self.db.clone())
    }

    pub fn closes(&self) -> Closes {
        Closes(self.db.clone())
    }

    pub fn alerts(&self) -> Alerts {
        Alerts(self.db.clone())
    }

    pub fn versions(&self) -> Versions {
        Versions(self.db.clone())
    }

    pub fn finals(&self) -> Finals {
        Finals(self.db.clone())
    }

    pub fn retention(&self) -> Retention {
        Retention(self.db.clone())
    }

    pub fn corrections(&self) -> Corrections {
        Corrections(self.db.clone())
    }

    pub fn adjustments(&self) -> Adjustments {
        Outbox {
            db: self.db.clone(),
            prefix: keys::ADJUSTMENT,
            keep_announced: true,
        }
    }

    /// Balance alerts to announce on `<prefix>:alerts` (`e/`).
    pub fn balance_alerts(&self) -> Outbox {
        Outbox {
            db: self.db.clone(),
            prefix: keys::BALANCE_ALERT,
            keep_announced: false,
        }
    }

    /// Wallets, ledgers and charging sessions.
    pub fn balances(&self) -> Balances {
        Balances(self.db.clone())
    }

    pub fn moved_claims(&self) -> MovedClaims {
        MovedClaims(self.db.clone())
    }

    pub fn partial_parts(&self) -> PartialParts {
        PartialParts(self.db.clone())
    }
}

/// A new hash key from the operating system's random source.
fn random_key() -> HashKey {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    // Invariant: the OS random source (getrandom) does not fail on Linux once booted.
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the OS random source works");
    HashKey::from_bytes(&bytes).expect("16 bytes")
}

#[cfg(test)]
mod tests {
    #[test]
    fn correction_ids_survive_a_restart_beside_legacy_checkpoints() {
        let dir = std::env::temp_dir().join(format!("ratingd-legacy-c-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let store = super::Store::open(&dir).unwrap();
            // A 4-byte id: the key length of a legacy `c/<shard u32>` checkpoint.
            assert_eq!(store.corrections().claim("fix1", "void e1").unwrap(), super::Claim::New);
            store.db.db.insert(b"c/\0\0\0\x01", &[0xff, 0x00, 0x80][..]).unwrap();
            store.db.db.flush().unwrap();
        }
        let store = super::Store::open(&dir).unwrap();
        assert_eq!(
            store.corrections().claim("fix1", "void e2").unwrap(),
            super::Claim::Taken("void e1".into())
        );
        assert!(
            store.db.db.get(b"c/\0\0\0\x01").unwrap().is_none(),
            "the legacy checkpoint is removed"
        );
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn every_data_dir_gets_its_own_random_key() {
        assert_ne!(super::random_key(), super::random_key());
    }
}
