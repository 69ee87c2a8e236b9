//! The records' side of the store: group commits (the committer is the only writer), the blocks
//! read back at recovery, and [`Records`], the drill-down reads by account or over everything.

use std::sync::Arc;

use super::{Db, Store, StoreError, Write, codec, keys};
use crate::domain::record::RatedRecord;

pub use crate::limits::BLOCK_PART_BYTES;

/// A failpoint around the fsync of every group commit, for tests that prove nothing is
/// acknowledged before its commit is durable: `before_flush` may stall (block) or fail the flush
/// (the commit then fails as if the disk had), `after_flush` runs once the real flush returned.
/// Production never installs one (`app::StartOptions::flush_hook` is `None`).
pub trait FlushHook: Send + Sync {
    fn before_flush(&self, seq: u64) -> std::io::Result<()>;
    fn after_flush(&self, _seq: u64) {}
}

/// One group commit: its records' blocks, and everything else it writes, typed.
#[derive(Default)]
pub struct Commit {
    /// The commit's records as sealed blocks of about [`BLOCK_PART_BYTES`] each, stored under
    /// `b/<seq><part>`: a busy daemon's commit holds megabytes, and sled rewrites a leaf of up
    /// to 16 values whole when it splits.
    pub parts: Vec<Vec<u8>>,
    /// The accounts with records in the block (for drill-down by account without a key per event).
    pub accounts: Vec<Arc<str>>,
    /// Suspense entries, ledger entries, balance keys, moved claims, partial parts: keyed and
    /// encoded by the store ([`super::write`]) into the same batch as the records.
    pub writes: Vec<Write>,
}

impl Store {
    /// Writes one group commit atomically and fsyncs it. Returns its sequence number.
    pub fn commit(&mut self, commit: Commit) -> Result<u64, StoreError> {
        let seq = self.next_seq;
        let mut batch = sled::Batch::default();
        if !commit.parts.is_empty() {
            for (n, part) in commit.parts.into_iter().enumerate() {
                batch.insert(keys::with_seq_n(keys::BLOCK, seq, n as u32), part);
            }
            batch.insert(keys::with_seq(keys::INDEX, seq), codec::encode_index(&commit.accounts));
        }
        super::write::encode_into(&mut batch, seq, commit.writes);
        batch.insert(keys::NEXT_SEQ_KEY, &(seq + 1).to_be_bytes());
        self.db.db.apply_batch(batch)?;
        if let Some(hook) = &self.flush_hook {
            hook.before_flush(seq).map_err(sled::Error::Io)?;
        }
        let fsync = std::time::Instant::now();
        self.db.db.flush()?;
        self.last_fsync = fsync.elapsed();
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
            .db
            .range(keys::with_seq(keys::BLOCK, from)..keys::with_seq(keys::BLOCK, u64::MAX))
            .map(move |item| {
                let (k, v) = item?;
                let seq = keys::seq_of(&k).unwrap_or(u64::MAX);
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
        let value = self.db.db.get(keys::with_seq(keys::INDEX, seq))?.ok_or_else(|| {
            corrupt(codec::CodecError::Invalid(
                "the index entry of a stored block is missing",
            ))
        })?;
        codec::decode_index(&value).map_err(corrupt)
    }

    /// Accounts whose records could not be read back, with why: their totals are not served and
    /// their batches are refused until the data dir is restored (see docs/security.md).
    pub fn damaged(&self) -> Result<Vec<(String, String)>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.db.scan_prefix(keys::DAMAGE) {
            let (k, v) = item?;
            out.push((
                String::from_utf8_lossy(&k[keys::DAMAGE.len()..]).into_owned(),
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
            let mut k = keys::DAMAGE.to_vec();
            k.extend_from_slice(account.as_bytes());
            batch.insert(k, why.as_bytes());
        }
        self.db.db.apply_batch(batch)?;
        self.db.db.flush()?;
        Ok(())
    }
}

/// Reads rated records back from the blocks (drill-down, statements, explanations, exports).
#[derive(Clone)]
pub struct Records(pub(super) Db);

impl Records {
    /// The records of `account` in blocks at or after `from_seq`, in commit order, with their
    /// position (`seq`, index in the block). Reads only the blocks whose index names the account.
    pub fn account_records(
        &self,
        account: &str,
        from_seq: u64,
        visit: impl FnMut(u64, u32, RatedRecord) -> bool,
    ) -> Result<(), StoreError> {
        self.records_of(|a| a == account, from_seq, visit)
    }

    /// The records of the accounts `wanted` accepts, in blocks at or after `from_seq`, in commit
    /// order, in one pass (a correction of many accounts reads their blocks once).
    pub fn records_of(
        &self,
        wanted: impl Fn(&str) -> bool,
        from_seq: u64,
        mut visit: impl FnMut(u64, u32, RatedRecord) -> bool,
    ) -> Result<(), StoreError> {
        let db = &self.0;
        for item in db
            .db
            .range(keys::with_seq(keys::INDEX, from_seq)..keys::with_seq(keys::INDEX, u64::MAX))
        {
            let (k, v) = item?;
            let seq = keys::seq_of(&k).unwrap_or(u64::MAX);
            let accounts = codec::decode_index(&v).map_err(|e| db.corrupt(format!("x/{seq}"), e))?;
            if !accounts.iter().any(|a| wanted(a)) {
                continue;
            }
            // The commit's parts in order; a record's index counts across them.
            let mut index = 0u32;
            for part in db.db.scan_prefix(keys::with_seq(keys::BLOCK, seq)).values() {
                let part = part?;
                let corrupt = |e| db.corrupt(format!("b/{seq}"), e);
                let (_, payload) = codec::open_block(&part).map_err(corrupt)?;
                for record in codec::records(payload) {
                    let record = record.map_err(corrupt)?;
                    if wanted(&record.account_id) && !visit(seq, index, record) {
                        return Ok(());
                    }
                    index += 1;
                }
            }
        }
        Ok(())
    }

    /// Every record of every block, in commit order (a full scan: for lookups without an account).
    pub fn all_records(&self, mut visit: impl FnMut(u64, u32, RatedRecord) -> bool) -> Result<(), StoreError> {
        let db = &self.0;
        // (seq, index of the next record): the index counts across a commit's parts.
        let mut at = (u64::MAX, 0u32);
        for item in db.db.scan_prefix(keys::BLOCK) {
            let (k, v) = item?;
            let seq = keys::seq_of(&k).unwrap_or(u64::MAX);
            if seq != at.0 {
                at = (seq, 0);
            }
            let corrupt = |e| db.corrupt(format!("b/{seq}"), e);
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
}
