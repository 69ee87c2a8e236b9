//! Durable storage in one sled tree: group-committed blocks of rated records, suspense entries,
//! and the fingerprint key. Shard checkpoints are files beside it (see [`checkpoint`]).
//!
//! Keys (big-endian numbers so they sort):
//! - `m/key`: the data dir's 128-bit SipHash key (event fingerprints, account -> shard; see
//!   [`crate::security::keyed`]), made once per data dir;
//! - `m/next_seq`: the seq of the next commit;
//! - `b/<seq u64><part u32>`: the records of one group commit, in blocks (see [`codec`]) of about
//!   [`BLOCK_PART_BYTES`] each;
//! - `s/<seq u64><n u32>`: a suspense entry written by commit `seq`;
//! - `x/<seq u64>`: the accounts with records in block `seq` (drill-down by account);
//! - `u/<account><from>`: subscriptions stored through the Admin API;
//! - `d/<account>`: an account whose records failed their checksum at start, with the reason.
//!
//! One commit is one `apply_batch` (atomic) followed by `flush` (fsync): the records, their dedupe
//! claims (the fingerprints inside the records) and the suspense entries become durable together.

pub mod checkpoint;
pub mod codec;

use std::path::Path;

use crate::domain::hex::hex;
use crate::domain::keyed::HashKey;

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
    #[error("corrupted value in {file} at key {key}: {error}")]
    Corrupt {
        file: String,
        key: String,
        error: codec::CodecError,
    },
}

/// Data dirs from before the keyed fingerprints hold this instead of `m/key`.
const LEGACY_SEED_KEY: &[u8] = b"m/seed";
const HASH_KEY: &[u8] = b"m/key";
/// The seq the next commit gets (big-endian u64), written by every commit.
const NEXT_SEQ_KEY: &[u8] = b"m/next_seq";
const BLOCK_PREFIX: &[u8] = b"b/";
const SUSPENSE_PREFIX: &[u8] = b"s/";
const INDEX_PREFIX: &[u8] = b"x/";
const CLOSE_PREFIX: &[u8] = b"k/";
/// `d/<account>`: damage found at start (the reason); see [`Store::damaged`].
const DAMAGE_PREFIX: &[u8] = b"d/";
/// Where checkpoints were kept inside sled by earlier versions; removed at open.
const LEGACY_CHECKPOINT_PREFIXES: [&[u8]; 2] = [b"c/", b"0c/"];

pub struct Store {
    db: sled::Db,
    dir: String,
    key: HashKey,
    next_seq: u64,
    /// A test's failpoint around each commit's fsync; `None` in production.
    flush_hook: Option<std::sync::Arc<dyn FlushHook>>,
}

/// A failpoint around the fsync of every group commit, for tests that prove nothing is
/// acknowledged before its commit is durable: `before_flush` may stall (block) or fail the flush
/// (the commit then fails as if the disk had), `after_flush` runs once the real flush returned.
/// Production never installs one (`app::StartOptions::flush_hook` is `None`).
pub trait FlushHook: Send + Sync {
    fn before_flush(&self, seq: u64) -> std::io::Result<()>;
    fn after_flush(&self, _seq: u64) {}
}

/// One group commit: an optional block and the suspense entries of the same batches.
#[derive(Default)]
pub struct Commit {
    /// The commit's records as sealed blocks of about [`BLOCK_PART_BYTES`] each, stored under
    /// `b/<seq><part>`: a busy daemon's commit holds megabytes, and sled rewrites a leaf of up
    /// to 16 values whole when it splits.
    pub parts: Vec<Vec<u8>>,
    pub suspense: Vec<Vec<u8>>,
    /// The accounts with records in the block (for drill-down by account without a key per event).
    pub accounts: Vec<std::sync::Arc<str>>,
}

/// sled's own cache.
const SLED_CACHE_BYTES: u64 = 128 << 20;

/// Target size of one stored block part: of 32 KiB, 128 KiB and 1 MiB, the one with the least
/// disk per record at the same rate (BENCHMARKS.md).
pub const BLOCK_PART_BYTES: usize = 1024 * 1024;

fn key(prefix: &[u8], seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + 12);
    k.extend_from_slice(prefix);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

impl Store {
    /// Opens (or creates) the data dir.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        // sled's page cache (1 GiB by default) would mostly hold blocks just written; reads are
        // drill-downs, which go to the page cache of the OS just as well.
        let db = sled::Config::new().path(dir).cache_capacity(SLED_CACHE_BYTES).open()?;
        let key = match db.get(HASH_KEY)? {
            Some(v) => HashKey::from_bytes(&v).ok_or_else(|| StoreError::Corrupt {
                file: dir.display().to_string(),
                key: "m/key".into(),
                error: codec::CodecError::Truncated,
            })?,
            None => {
                let holds_data =
                    db.scan_prefix(BLOCK_PREFIX).next().is_some() || db.scan_prefix(SUSPENSE_PREFIX).next().is_some();
                if holds_data && db.get(LEGACY_SEED_KEY)?.is_some() {
                    return Err(StoreError::UnkeyedDataDir(dir.display().to_string()));
                }
                let key = random_key();
                db.insert(HASH_KEY, &key.to_bytes())?;
                db.remove(LEGACY_SEED_KEY)?;
                db.flush()?;
                key
            }
        };
        // Every commit records the next seq, so one without a block (suspense only, or nothing
        // but a checkpoint) is never numbered twice; data dirs from before it have blocks only.
        let after_last_block = match db.scan_prefix(BLOCK_PREFIX).keys().next_back() {
            Some(k) => parse_seq(&k?).map_or(0, |s| s + 1),
            None => 0,
        };
        let recorded = db
            .get(NEXT_SEQ_KEY)?
            .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0);
        let next_seq = after_last_block.max(recorded);
        for prefix in LEGACY_CHECKPOINT_PREFIXES {
            for k in db.scan_prefix(prefix).keys() {
                db.remove(k?)?;
            }
        }
        Ok(Store {
            db,
            dir: dir.display().to_string(),
            key,
            next_seq,
            flush_hook: None,
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
        &self.dir
    }

    /// The sequence number the next commit will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Writes one group commit atomically and fsyncs it. Returns its sequence number.
    pub fn commit(&mut self, commit: Commit) -> Result<u64, StoreError> {
        let seq = self.next_seq;
        let mut batch = sled::Batch::default();
        if !commit.parts.is_empty() {
            for (n, part) in commit.parts.into_iter().enumerate() {
                let mut k = key(BLOCK_PREFIX, seq);
                k.extend_from_slice(&(n as u32).to_be_bytes());
                batch.insert(k, part);
            }
            let mut index = Vec::with_capacity(commit.accounts.len() * 16 + 4);
            let mut w = codec::Writer(&mut index);
            w.u32(commit.accounts.len() as u32);
            for a in &commit.accounts {
                w.str(a);
            }
            batch.insert(key(INDEX_PREFIX, seq), index);
        }
        for (n, entry) in commit.suspense.into_iter().enumerate() {
            let mut k = key(SUSPENSE_PREFIX, seq);
            k.extend_from_slice(&(n as u32).to_be_bytes());
            batch.insert(k, entry);
        }
        batch.insert(NEXT_SEQ_KEY, &(seq + 1).to_be_bytes());
        self.db.apply_batch(batch)?;
        if let Some(hook) = &self.flush_hook {
            hook.before_flush(seq).map_err(sled::Error::Io)?;
        }
        self.db.flush()?;
        if let Some(hook) = &self.flush_hook {
            hook.after_flush(seq);
        }
        self.next_seq += 1;
        Ok(seq)
    }

    /// Every stored block part with a sequence number at or after `from`, in order, as stored:
    /// `(seq, key name, bytes)`; the caller checks them (`codec::open_block`).
    pub fn blocks_from(&self, from: u64) -> impl Iterator<Item = Result<(u64, String, sled::IVec), StoreError>> + '_ {
        self.db
            .range(key(BLOCK_PREFIX, from)..key(BLOCK_PREFIX, u64::MAX))
            .map(move |item| {
                let (k, v) = item?;
                let seq = parse_seq(&k).unwrap_or(u64::MAX);
                let name = match k.get(10..14) {
                    Some(part) => format!("b/{seq}/{}", u32::from_be_bytes(part.try_into().unwrap_or_default())),
                    None => format!("b/{seq}"),
                };
                Ok((seq, name, v))
            })
    }

    /// The accounts with records in commit `seq` (its `x/` index entry).
    pub fn block_accounts(&self, seq: u64) -> Result<Vec<String>, StoreError> {
        let corrupt = |error| self.corrupt(format!("x/{seq}"), error);
        let value = self.db.get(key(INDEX_PREFIX, seq))?.ok_or_else(|| {
            corrupt(codec::CodecError::Invalid(
                "the index entry of a stored block is missing",
            ))
        })?;
        let mut r = codec::Reader::new(&value);
        let n = r.u32().map_err(corrupt)?;
        (0..n).map(|_| r.str().map_err(corrupt)).collect()
    }

    /// Accounts whose records could not be read back, with why: their totals are not served and
    /// their batches are refused until the data dir is restored (see docs/security.md).
    pub fn damaged(&self) -> Result<Vec<(String, String)>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.scan_prefix(DAMAGE_PREFIX) {
            let (k, v) = item?;
            out.push((
                String::from_utf8_lossy(&k[DAMAGE_PREFIX.len()..]).into_owned(),
                String::from_utf8_lossy(&v).into_owned(),
            ));
        }
        Ok(out)
    }

    /// Records damage found at start, durably: a later checkpoint no longer replays the damaged
    /// block, and the damage must not be forgotten with it.
    pub fn record_damage(&self, damage: &[(String, String)]) -> Result<(), StoreError> {
        if damage.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for (account, why) in damage {
            let mut k = DAMAGE_PREFIX.to_vec();
            k.extend_from_slice(account.as_bytes());
            batch.insert(k, why.as_bytes());
        }
        self.db.apply_batch(batch)?;
        self.db.flush()?;
        Ok(())
    }

    /// Where sled keeps its data, for messages.
    pub fn sled_file(&self) -> String {
        format!("{}/db", self.dir)
    }

    pub fn corrupt(&self, key: String, error: codec::CodecError) -> StoreError {
        StoreError::Corrupt {
            file: self.dir.clone(),
            key,
            error,
        }
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

fn parse_seq(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.get(2..10)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// A per-data-dir random key, from the process's randomly keyed hasher and the clock.
const SUBSCRIPTION_PREFIX: &[u8] = b"u/";

/// Settings that change through the Admin API (subscriptions), stored beside the records. A
/// handle on the same database, usable from any thread.
#[derive(Clone)]
pub struct SettingsStore {
    db: sled::Db,
    dir: String,
}

impl Store {
    pub fn settings(&self) -> SettingsStore {
        SettingsStore {
            db: self.db.clone(),
            dir: self.dir.clone(),
        }
    }
}

fn subscription_key(account: &str, from_nanos: i64) -> Vec<u8> {
    let mut k = SUBSCRIPTION_PREFIX.to_vec();
    k.extend_from_slice(account.as_bytes());
    k.push(0xFF);
    // Order-preserving: flip the sign bit.
    k.extend_from_slice(&((from_nanos as u64) ^ (1 << 63)).to_be_bytes());
    k
}

impl SettingsStore {
    /// Writes subscriptions durably (one atomic batch, one fsync) before they are put in force.
    pub fn put_subscriptions(&self, list: &[crate::domain::subscription::Subscription]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for s in list {
            let from = s.from.timestamp_nanos_opt().unwrap_or(i64::MIN);
            let mut value = Vec::with_capacity(64);
            let mut w = codec::Writer(&mut value);
            w.str(&s.account_id);
            w.str(&s.plan_id);
            w.i64(from);
            w.i64(s.to.and_then(|t| t.timestamp_nanos_opt()).unwrap_or(i64::MIN));
            match s.discount_percent {
                Some(d) => {
                    w.u8(1);
                    w.decimal(d);
                }
                None => w.u8(0),
            }
            w.u8(u8::try_from(s.alert_thresholds.len()).unwrap_or(u8::MAX));
            for t in s.alert_thresholds.iter().take(usize::from(u8::MAX)) {
                w.decimal(*t);
            }
            batch.insert(subscription_key(&s.account_id, from), value);
        }
        self.db.apply_batch(batch)?;
        self.db.flush()?;
        Ok(())
    }

    /// Every stored subscription.
    pub fn subscriptions(&self) -> Result<Vec<crate::domain::subscription::Subscription>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.scan_prefix(SUBSCRIPTION_PREFIX) {
            let (k, v) = item?;
            let corrupt = |error| StoreError::Corrupt {
                file: self.dir.clone(),
                key: format!("u/{}", String::from_utf8_lossy(&k[2..])),
                error,
            };
            let mut r = codec::Reader::new(&v);
            let account_id = r.str().map_err(corrupt)?;
            let plan_id = r.str().map_err(corrupt)?;
            let from = chrono::DateTime::from_timestamp_nanos(r.i64().map_err(corrupt)?);
            let to = r.i64().map_err(corrupt)?;
            let discount_percent = match r.u8().map_err(corrupt)? {
                0 => None,
                _ => Some(r.decimal().map_err(corrupt)?),
            };
            let count = r.u8().map_err(corrupt)?;
            let alert_thresholds = (0..count)
                .map(|_| r.decimal())
                .collect::<Result<Vec<_>, _>>()
                .map_err(corrupt)?;
            out.push(crate::domain::subscription::Subscription {
                account_id,
                plan_id,
                from,
                to: (to != i64::MIN).then(|| chrono::DateTime::from_timestamp_nanos(to)),
                discount_percent,
                alert_thresholds,
            });
        }
        Ok(out)
    }
}

impl SettingsStore {
    /// The records of `account` in blocks at or after `from_seq`, in commit order, with their
    /// position (`seq`, index in the block). Reads only the blocks whose index names the account.
    pub fn account_records(
        &self,
        account: &str,
        from_seq: u64,
        mut visit: impl FnMut(u64, u32, codec::Record) -> bool,
    ) -> Result<(), StoreError> {
        for item in self.db.range(key(INDEX_PREFIX, from_seq)..key(INDEX_PREFIX, u64::MAX)) {
            let (k, v) = item?;
            let seq = parse_seq(&k).unwrap_or(u64::MAX);
            let corrupt = |error| StoreError::Corrupt {
                file: self.dir.clone(),
                key: format!("x/{seq}"),
                error,
            };
            let mut r = codec::Reader::new(&v);
            let n = r.u32().map_err(corrupt)?;
            let mut present = false;
            for _ in 0..n {
                present |= r.str().map_err(corrupt)? == account;
            }
            if !present {
                continue;
            }
            let corrupt = |error| StoreError::Corrupt {
                file: self.dir.clone(),
                key: format!("b/{seq}"),
                error,
            };
            // The commit's parts in order; a record's index counts across them.
            let mut index = 0u32;
            for part in self.db.scan_prefix(key(BLOCK_PREFIX, seq)).values() {
                let part = part?;
                let (_, payload) = codec::open_block(&part).map_err(corrupt)?;
                for record in codec::records(payload) {
                    let record = record.map_err(corrupt)?;
                    if record.account_id == account && !visit(seq, index, record) {
                        return Ok(());
                    }
                    index += 1;
                }
            }
        }
        Ok(())
    }

    /// Every record of every block, in commit order (a full scan: for lookups without an account).
    pub fn all_records(&self, mut visit: impl FnMut(u64, u32, codec::Record) -> bool) -> Result<(), StoreError> {
        // (seq, index of the next record): the index counts across a commit's parts.
        let mut at = (u64::MAX, 0u32);
        for item in self.db.scan_prefix(BLOCK_PREFIX) {
            let (k, v) = item?;
            let seq = parse_seq(&k).unwrap_or(u64::MAX);
            if seq != at.0 {
                at = (seq, 0);
            }
            let corrupt = |error| StoreError::Corrupt {
                file: self.dir.clone(),
                key: format!("b/{seq}"),
                error,
            };
            let (_, payload) = codec::open_block(&v).map_err(corrupt)?;
            for record in codec::records(payload) {
                if !visit(seq, at.1, record.map_err(corrupt)?) {
                    return Ok(());
                }
                at.1 += 1;
            }
        }
        Ok(())
    }

    /// Suspense entries after key `after` (exclusive), oldest first, optionally of one reason.
    pub fn suspense_page(
        &self,
        after: Option<&[u8]>,
        reason: Option<u8>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, codec::SuspenseEntry)>, StoreError> {
        let start = match after {
            Some(k) => {
                let mut k = k.to_vec();
                k.push(0);
                k
            }
            None => SUSPENSE_PREFIX.to_vec(),
        };
        let mut out = Vec::new();
        for item in self.db.range(start..) {
            let (k, v) = item?;
            if !k.starts_with(SUSPENSE_PREFIX) || out.len() >= limit {
                break;
            }
            let entry = codec::decode_suspense(&v).map_err(|error| StoreError::Corrupt {
                file: self.dir.clone(),
                key: format!("s/{}", hex(&k[2..])),
                error,
            })?;
            if reason.is_none_or(|r| r == entry.reason) {
                out.push((k.to_vec(), entry));
            }
        }
        Ok(out)
    }

    /// One suspense entry by key.
    pub fn suspense_entry(&self, key: &[u8]) -> Result<Option<codec::SuspenseEntry>, StoreError> {
        if !key.starts_with(SUSPENSE_PREFIX) {
            return Ok(None);
        }
        match self.db.get(key)? {
            None => Ok(None),
            Some(v) => codec::decode_suspense(&v)
                .map(Some)
                .map_err(|error| StoreError::Corrupt {
                    file: self.dir.clone(),
                    key: format!("s/{}", hex(&key[2..])),
                    error,
                }),
        }
    }

    /// How many entries wait in suspense (a key scan, at start-up).
    pub fn suspense_count(&self) -> usize {
        self.db.scan_prefix(SUSPENSE_PREFIX).keys().count()
    }

    /// Removes suspense entries that left suspense (or were replaced by a newer entry), durably.
    pub fn remove_suspense(&self, keys: &[Vec<u8>]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for k in keys {
            batch.remove(k.as_slice());
        }
        self.db.apply_batch(batch)?;
        self.db.flush()?;
        Ok(())
    }
}

/// A closed (plan, period) as stored: whether its announcement reached Redis, and its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredClose {
    pub plan: String,
    pub period: String,
    pub announced: bool,
    /// The announcement: one JSON object per account with the final totals.
    pub entries: Vec<String>,
}

fn close_key(plan: &str, period: &str) -> Vec<u8> {
    let mut k = CLOSE_PREFIX.to_vec();
    k.extend_from_slice(plan.as_bytes());
    k.push(0xFF);
    k.extend_from_slice(period.as_bytes());
    k
}

impl SettingsStore {
    /// Records a close durably (fsync), announced or not.
    pub fn put_close(&self, close: &StoredClose) -> Result<(), StoreError> {
        let mut value = Vec::new();
        let mut w = codec::Writer(&mut value);
        w.u8(u8::from(close.announced));
        w.str(&close.plan);
        w.str(&close.period);
        w.u32(close.entries.len() as u32);
        for e in &close.entries {
            w.blob(e.as_bytes());
        }
        self.db.insert(close_key(&close.plan, &close.period), value)?;
        self.db.flush()?;
        Ok(())
    }

    /// Every stored close.
    pub fn closes(&self) -> Result<Vec<StoredClose>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.scan_prefix(CLOSE_PREFIX) {
            let (k, v) = item?;
            let corrupt = |error| StoreError::Corrupt {
                file: self.dir.clone(),
                key: format!("k/{}", String::from_utf8_lossy(&k[2..])),
                error,
            };
            let mut r = codec::Reader::new(&v);
            let announced = r.u8().map_err(corrupt)? != 0;
            let plan = r.str().map_err(corrupt)?;
            let period = r.str().map_err(corrupt)?;
            let n = r.u32().map_err(corrupt)?;
            let mut entries = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let len = r.u32().map_err(corrupt)? as usize;
                let bytes = r.bytes(len).map_err(corrupt)?;
                entries
                    .push(String::from_utf8(bytes.to_vec()).map_err(|_| corrupt(codec::CodecError::Invalid("utf-8")))?);
            }
            out.push(StoredClose {
                plan,
                period,
                announced,
                entries,
            });
        }
        Ok(out)
    }
}

const ALERT_PREFIX: &[u8] = b"a/";

/// A spend alert as stored: raised once per (account, period, threshold), announced to Redis once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAlert {
    /// `<account>|<period>|<threshold>`.
    pub id: String,
    pub announced: bool,
    /// The stream entry, as a JSON object.
    pub entry: String,
}

impl SettingsStore {
    /// Records an alert durably (fsync).
    pub fn put_alert(&self, alert: &StoredAlert) -> Result<(), StoreError> {
        let mut key = ALERT_PREFIX.to_vec();
        key.extend_from_slice(alert.id.as_bytes());
        let mut value = vec![u8::from(alert.announced)];
        value.extend_from_slice(alert.entry.as_bytes());
        self.db.insert(key, value)?;
        self.db.flush()?;
        Ok(())
    }

    /// Every stored alert.
    pub fn alerts(&self) -> Result<Vec<StoredAlert>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.scan_prefix(ALERT_PREFIX) {
            let (k, v) = item?;
            let id = String::from_utf8_lossy(&k[2..]).into_owned();
            let corrupt = |error| StoreError::Corrupt {
                file: self.dir.clone(),
                key: format!("a/{id}"),
                error,
            };
            let (flag, entry) = v.split_first().ok_or_else(|| corrupt(codec::CodecError::Truncated))?;
            let entry = String::from_utf8(entry.to_vec()).map_err(|_| corrupt(codec::CodecError::Invalid("utf-8")))?;
            out.push(StoredAlert {
                id,
                announced: *flag != 0,
                entry,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_data_dir_gets_its_own_random_key() {
        assert_ne!(super::random_key(), super::random_key());
    }
}
