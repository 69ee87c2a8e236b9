//! The small tables kept beside the blocks, one handle each (cheap to clone, usable from any
//! thread): [`Subscriptions`] stored through the Admin API, [`Suspense`] (rejected events waiting
//! to be fixed), [`Closes`] (closed billing periods and their announcements) and [`Alerts`]
//! (spend alerts raised) and [`Versions`] (the content of every tariff version published). Every
//! write is durable (fsync) before it returns.

use super::{Db, SUSPENSE_PREFIX, StoreError, codec};
use crate::domain::aggregate::PeriodTotals;
use crate::domain::alert::SpendAlert;
use crate::domain::hex::hex;
use crate::domain::partial::Part;
use crate::domain::subscription::Subscription;
use crate::domain::tariff::Catalogue;
use crate::domain::tariff_file::content::KnownVersion;
use crate::domain::usage::{RejectReason, Rejected};

const SUBSCRIPTION_PREFIX: &[u8] = b"u/";
pub(super) const CLOSE_PREFIX: &[u8] = b"k/";
pub(super) const ALERT_PREFIX: &[u8] = b"a/";
const VERSION_PREFIX: &[u8] = b"t/";
pub(super) const FINAL_PREFIX: &[u8] = b"f/";
const CORRECTION_PREFIX: &[u8] = b"c/";
pub(super) const ADJUSTMENT_PREFIX: &[u8] = b"j/";
/// Set once every close has its `f/` entries (closes written by earlier releases have none).
const FINALS_WRITTEN_KEY: &[u8] = b"m/finals";

/// Subscriptions stored through the Admin API (`u/<account>\xFF<from>` for base plans, with the
/// plan id appended for add-ons, which may start at the same instant as the base subscription).
#[derive(Clone)]
pub struct Subscriptions(pub(super) Db);

fn subscription_key(account: &str, from_nanos: i64, addon: Option<&str>) -> Vec<u8> {
    let mut k = SUBSCRIPTION_PREFIX.to_vec();
    k.extend_from_slice(account.as_bytes());
    k.push(0xFF);
    // Order-preserving: flip the sign bit.
    k.extend_from_slice(&((from_nanos as u64) ^ (1 << 63)).to_be_bytes());
    if let Some(plan) = addon {
        k.extend_from_slice(plan.as_bytes());
    }
    k
}

impl Subscriptions {
    /// Writes subscriptions durably (one atomic batch, one fsync) before they are put in force.
    pub fn put(&self, list: &[Subscription], catalogue: &Catalogue) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for s in list {
            let from = s.from.timestamp_nanos_opt().unwrap_or(i64::MIN);
            let addon = catalogue.plan(&s.plan_id).filter(|p| p.addon).map(|p| p.id.as_str());
            batch.insert(
                subscription_key(&s.account_id, from, addon),
                codec::encode_subscription(s),
            );
        }
        self.0.db.apply_batch(batch)?;
        self.0.db.flush()?;
        Ok(())
    }

    /// Every stored subscription.
    pub fn all(&self) -> Result<Vec<Subscription>, StoreError> {
        let mut out = Vec::new();
        for item in self.0.db.scan_prefix(SUBSCRIPTION_PREFIX) {
            let (k, v) = item?;
            let key = || format!("u/{}", String::from_utf8_lossy(&k[2..]));
            out.push(codec::decode_subscription(&v).map_err(|e| self.0.corrupt(key(), e))?);
        }
        Ok(out)
    }
}

pub use crate::domain::usage::SuspenseId;

/// Rejected events waiting in suspense, oldest first. Entries are written by the commits that
/// acknowledge them (`Commit::suspense`); reprocessing removes them.
#[derive(Clone)]
pub struct Suspense(pub(super) Db);

impl Suspense {
    fn decode(&self, key: &[u8], value: &[u8]) -> Result<Rejected, StoreError> {
        codec::decode_suspense(value).map_err(|e| self.0.corrupt(format!("s/{}", hex(&key[2..])), e))
    }

    /// Entries after `after` (exclusive), oldest first, optionally of one reason.
    pub fn page(
        &self,
        after: Option<&SuspenseId>,
        reason: Option<RejectReason>,
        limit: usize,
    ) -> Result<Vec<(SuspenseId, Rejected)>, StoreError> {
        let start = match after {
            Some(id) => {
                let mut k = id.0.clone();
                k.push(0);
                k
            }
            None => SUSPENSE_PREFIX.to_vec(),
        };
        let mut out = Vec::new();
        for item in self.0.db.range(start..) {
            let (k, v) = item?;
            if !k.starts_with(SUSPENSE_PREFIX) || out.len() >= limit {
                break;
            }
            let entry = self.decode(&k, &v)?;
            if reason.is_none_or(|r| r == entry.reason) {
                out.push((SuspenseId(k.to_vec()), entry));
            }
        }
        Ok(out)
    }

    /// One entry by id.
    pub fn get(&self, id: &SuspenseId) -> Result<Option<Rejected>, StoreError> {
        if !id.0.starts_with(SUSPENSE_PREFIX) {
            return Ok(None);
        }
        match self.0.db.get(&id.0)? {
            None => Ok(None),
            Some(v) => self.decode(&id.0, &v).map(Some),
        }
    }

    /// How many entries wait (a key scan, at start-up).
    pub fn count(&self) -> usize {
        self.0.db.scan_prefix(SUSPENSE_PREFIX).keys().count()
    }

    /// Removes entries that left suspense (or were replaced by a newer entry), durably.
    pub fn remove(&self, ids: &[SuspenseId]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for id in ids {
            batch.remove(id.0.as_slice());
        }
        self.0.db.apply_batch(batch)?;
        self.0.db.flush()?;
        Ok(())
    }
}

/// A closed (plan, period) as stored: whether its announcement reached Redis, and its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredClose {
    pub plan: String,
    pub period: String,
    pub announced: bool,
    /// The announcement: one JSON object per account with the final totals (`billing::close`).
    pub entries: Vec<String>,
}

/// Closed billing periods (`k/<plan>\xFF<period>`).
#[derive(Clone)]
pub struct Closes(pub(super) Db);

pub(super) fn close_key(plan: &str, period: &str) -> Vec<u8> {
    let mut k = CLOSE_PREFIX.to_vec();
    k.extend_from_slice(plan.as_bytes());
    k.push(0xFF);
    k.extend_from_slice(period.as_bytes());
    k
}

impl Closes {
    /// Records a close durably (fsync), announced or not.
    pub fn put(&self, close: &StoredClose) -> Result<(), StoreError> {
        self.0
            .db
            .insert(close_key(&close.plan, &close.period), codec::encode_close(close))?;
        self.0.db.flush()?;
        Ok(())
    }

    /// Records a close and its final totals in one atomic batch, durably (fsync): the totals
    /// then leave memory, and queries read them from `f/`.
    pub fn put_with_finals(&self, close: &StoredClose, finals: &[PeriodTotals]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        batch.insert(close_key(&close.plan, &close.period), codec::encode_close(close));
        for t in finals {
            batch.insert(final_key(&t.period, &t.account, &t.plan), codec::encode_totals(t));
        }
        self.0.db.apply_batch(batch)?;
        self.0.db.flush()?;
        Ok(())
    }

    /// The (plan, period) of every stored close, from the keys alone.
    pub fn pairs(&self) -> Result<Vec<(String, String)>, StoreError> {
        let mut out = Vec::new();
        for k in self.0.db.scan_prefix(CLOSE_PREFIX).keys() {
            let k = k?;
            let rest = &k[CLOSE_PREFIX.len()..];
            let Some(split) = rest.iter().position(|&b| b == 0xFF) else {
                return Err(self.0.corrupt(
                    format!("k/{}", String::from_utf8_lossy(rest)),
                    codec::CodecError::Invalid("close key"),
                ));
            };
            out.push((
                String::from_utf8_lossy(&rest[..split]).into_owned(),
                String::from_utf8_lossy(&rest[split + 1..]).into_owned(),
            ));
        }
        Ok(out)
    }

    /// Every stored close.
    pub fn all(&self) -> Result<Vec<StoredClose>, StoreError> {
        let mut out = Vec::new();
        for item in self.0.db.scan_prefix(CLOSE_PREFIX) {
            let (k, v) = item?;
            let key = || format!("k/{}", String::from_utf8_lossy(&k[2..]));
            out.push(codec::decode_close(&v).map_err(|e| self.0.corrupt(key(), e))?);
        }
        Ok(out)
    }
}

/// `f/<period>\xFF<account>\xFF<plan>`: one account's final totals of a closed (plan, period).
pub(super) fn final_key(period: &str, account: &str, plan: &str) -> Vec<u8> {
    let mut k = final_prefix(period, Some(account));
    k.extend_from_slice(plan.as_bytes());
    k
}

/// The prefix of a period's final totals, or of one account's in it.
pub(super) fn final_prefix(period: &str, account: Option<&str>) -> Vec<u8> {
    let mut k = FINAL_PREFIX.to_vec();
    k.extend_from_slice(period.as_bytes());
    k.push(0xFF);
    if let Some(account) = account {
        k.extend_from_slice(account.as_bytes());
        k.push(0xFF);
    }
    k
}

/// The final totals of closed periods (`f/`), written with their close: what queries read once a
/// closed period's totals have left memory. Removed with the period's records by retention.
#[derive(Clone)]
pub struct Finals(pub(super) Db);

impl Finals {
    fn scan(&self, prefix: Vec<u8>) -> Result<Vec<PeriodTotals>, StoreError> {
        let mut out = Vec::new();
        for item in self.0.db.scan_prefix(&prefix) {
            let (k, v) = item?;
            let t = codec::decode_totals(&v)
                .map_err(|e| self.0.corrupt(format!("f/{}", String::from_utf8_lossy(&k[2..])), e))?;
            out.push(t);
        }
        Ok(out)
    }

    /// One account's final totals of a period (one per closed plan).
    pub fn of(&self, account: &str, period: &str) -> Result<Vec<PeriodTotals>, StoreError> {
        self.scan(final_prefix(period, Some(account)))
    }

    /// Every account's final totals of a period.
    pub fn of_period(&self, period: &str) -> Result<Vec<PeriodTotals>, StoreError> {
        self.scan(final_prefix(period, None))
    }

    /// The (account, period) of every final totals (a key scan: the projection's full resync).
    pub fn keys(&self) -> Result<Vec<(String, String)>, StoreError> {
        let mut out = Vec::new();
        for k in self.0.db.scan_prefix(FINAL_PREFIX).keys() {
            let k = k?;
            let mut fields = k[FINAL_PREFIX.len()..].split(|&b| b == 0xFF);
            if let (Some(period), Some(account)) = (fields.next(), fields.next()) {
                out.push((
                    String::from_utf8_lossy(account).into_owned(),
                    String::from_utf8_lossy(period).into_owned(),
                ));
            }
        }
        out.dedup();
        Ok(out)
    }

    /// True once every close has its final totals (see [`Finals::write_missing`]).
    pub fn complete(&self) -> Result<bool, StoreError> {
        Ok(self.0.db.get(FINALS_WRITTEN_KEY)?.is_some())
    }

    /// Writes the final totals of the closes an earlier release recorded without them (its
    /// recovered totals are complete: it never let a closed period leave memory), and marks the
    /// data dir done, in one batch.
    pub fn write_missing(&self, totals: &[PeriodTotals]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for t in totals {
            batch.insert(final_key(&t.period, &t.account, &t.plan), codec::encode_totals(t));
        }
        batch.insert(FINALS_WRITTEN_KEY, &[1u8][..]);
        self.0.db.apply_batch(batch)?;
        self.0.db.flush()?;
        Ok(())
    }
}

/// A spend alert as stored: raised once per (account, period, threshold), announced once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAlert {
    pub alert: SpendAlert,
    pub announced: bool,
}

/// Spend alerts raised (`a/<account>|<period>|<threshold>`).
#[derive(Clone)]
pub struct Alerts(pub(super) Db);

impl Alerts {
    /// Records an alert durably (fsync).
    pub fn put(&self, stored: &StoredAlert) -> Result<(), StoreError> {
        let mut key = ALERT_PREFIX.to_vec();
        key.extend_from_slice(stored.alert.id().as_bytes());
        self.0.db.insert(key, codec::encode_alert(stored))?;
        self.0.db.flush()?;
        Ok(())
    }

    /// True when the alert `id` was raised (one read, when a threshold is crossed).
    pub fn contains(&self, id: &str) -> Result<bool, StoreError> {
        let mut key = ALERT_PREFIX.to_vec();
        key.extend_from_slice(id.as_bytes());
        Ok(self.0.db.contains_key(key)?)
    }

    /// Every stored alert.
    pub fn all(&self) -> Result<Vec<StoredAlert>, StoreError> {
        let mut out = Vec::new();
        for item in self.0.db.scan_prefix(ALERT_PREFIX) {
            let (k, v) = item?;
            let key = || format!("a/{}", String::from_utf8_lossy(&k[2..]));
            out.push(codec::decode_alert(&v).map_err(|e| self.0.corrupt(key(), e))?);
        }
        Ok(out)
    }
}

/// The content of every tariff version published (`t/<plan>\xFF<number: u32 BE>` -> effective
/// time as i64 BE nanos, then the content): a start or reload compares the file against it, so
/// a version in force is never edited, across restarts too.
#[derive(Clone)]
pub struct Versions(pub(super) Db);

impl Versions {
    /// Records the versions of a catalogue put in force (one atomic batch, one fsync): each
    /// replaces what was stored for its plan and number, and a stored version the catalogue no
    /// longer has is forgotten when it never took effect (published, then withdrawn in time).
    pub fn record(&self, list: &[KnownVersion], now: chrono::DateTime<chrono::Utc>) -> Result<(), StoreError> {
        let key = |plan: &str, number: u32| {
            let mut k = VERSION_PREFIX.to_vec();
            k.extend_from_slice(plan.as_bytes());
            k.push(0xFF);
            k.extend_from_slice(&number.to_be_bytes());
            k
        };
        let mut batch = sled::Batch::default();
        for old in self.all()? {
            let kept = list.iter().any(|v| v.plan == old.plan && v.number == old.number);
            if !kept && old.effective_from > now {
                batch.remove(key(&old.plan, old.number));
            }
        }
        for v in list {
            let k = key(&v.plan, v.number);
            let mut value = v
                .effective_from
                .timestamp_nanos_opt()
                .unwrap_or(i64::MIN)
                .to_be_bytes()
                .to_vec();
            value.extend_from_slice(v.content.as_bytes());
            batch.insert(k, value);
        }
        self.0.db.apply_batch(batch)?;
        self.0.db.flush()?;
        Ok(())
    }

    /// Every stored version.
    pub fn all(&self) -> Result<Vec<KnownVersion>, StoreError> {
        let mut out = Vec::new();
        for item in self.0.db.scan_prefix(VERSION_PREFIX) {
            let (k, v) = item?;
            let name = || format!("t/{}", String::from_utf8_lossy(&k[2..]));
            let rest = &k[VERSION_PREFIX.len()..];
            let (Some(split), true) = (rest.iter().rposition(|&b| b == 0xFF), v.len() >= 8) else {
                return Err(self.0.corrupt(name(), codec::CodecError::Invalid("version entry")));
            };
            let number: [u8; 4] = rest[split + 1..]
                .try_into()
                .map_err(|_| self.0.corrupt(name(), codec::CodecError::Invalid("version number")))?;
            let nanos = i64::from_be_bytes(v[..8].try_into().unwrap_or_default());
            out.push(KnownVersion {
                plan: String::from_utf8_lossy(&rest[..split]).into_owned(),
                number: u32::from_be_bytes(number),
                effective_from: chrono::DateTime::<chrono::Utc>::from_timestamp_nanos(nanos),
                content: String::from_utf8_lossy(&v[8..]).into_owned(),
            });
        }
        Ok(out)
    }
}

/// The corrections asked for by id (`c/<id>` -> what was asked, as the Admin API describes it):
/// the same id asked again with another selector or reason is refused, so an id names one
/// correction for good.
#[derive(Clone)]
pub struct Corrections(pub(super) Db);

/// What [`Corrections::claim`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The id was free: it holds this request now.
    New,
    /// The id held this same request: go on (a resend finishes what is left).
    Same,
    /// The id holds another request (as described then).
    Taken(String),
}

impl Corrections {
    /// Stores `request` under `id` unless the id holds another one (durable before it returns).
    pub fn claim(&self, id: &str, request: &str) -> Result<Claim, StoreError> {
        let mut k = CORRECTION_PREFIX.to_vec();
        k.extend_from_slice(id.as_bytes());
        match self
            .0
            .db
            .compare_and_swap(&k, None as Option<&[u8]>, Some(request.as_bytes()))?
        {
            Ok(()) => {
                self.0.db.flush()?;
                Ok(Claim::New)
            }
            Err(found) => {
                let earlier = found
                    .current
                    .map(|v| String::from_utf8_lossy(&v).into_owned())
                    .unwrap_or_default();
                Ok(if earlier == request {
                    Claim::Same
                } else {
                    Claim::Taken(earlier)
                })
            }
        }
    }
}

impl Corrections {
    /// Frees `id` when it holds `request` (a correction refused before it wrote anything).
    pub fn release(&self, id: &str, request: &str) -> Result<(), StoreError> {
        let mut k = CORRECTION_PREFIX.to_vec();
        k.extend_from_slice(id.as_bytes());
        // Ok or a mismatch alike: only this request's own claim is removed.
        let _ = self
            .0
            .db
            .compare_and_swap(&k, Some(request.as_bytes()), None as Option<&[u8]>)?;
        self.0.db.flush()?;
        Ok(())
    }
}

/// Entries to announce on a Redis stream, kept until they were (`<prefix><id>` -> announced
/// (one byte), then the entry as JSON): closed periods' corrections (`j/`, on
/// `<prefix>:adjustments`) and balance alerts (`e/`, written by the committer with the change that
/// raised them, on `<prefix>:alerts`).
#[derive(Clone)]
pub struct Outbox {
    pub(super) db: Db,
    pub(super) prefix: &'static [u8],
    /// Kept once announced (an adjustment's id stays claimed); else removed, so the outbox holds
    /// only what is still to announce (a balance alert is unique by its ledger entry already).
    pub(super) keep_announced: bool,
}

/// Corrections of closed periods to announce on `<prefix>:adjustments`.
pub type Adjustments = Outbox;

impl Outbox {
    fn key(&self, id: &str) -> Vec<u8> {
        let mut k = self.prefix.to_vec();
        k.extend_from_slice(id.as_bytes());
        k
    }

    /// Stores the entry of `id` unless it is stored already (announced or not), and fsyncs.
    /// True when it was new.
    pub fn add(&self, id: &str, entry: &str) -> Result<bool, StoreError> {
        let mut value = vec![0u8];
        value.extend_from_slice(entry.as_bytes());
        let added = self
            .db
            .db
            .compare_and_swap(self.key(id), None as Option<&[u8]>, Some(value))?
            .is_ok();
        self.db.db.flush()?;
        Ok(added)
    }

    /// The entries not announced yet: (id, entry).
    pub fn pending(&self) -> Result<Vec<(String, String)>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.db.scan_prefix(self.prefix) {
            let (k, v) = item?;
            let id = String::from_utf8_lossy(&k[self.prefix.len()..]).into_owned();
            match v.split_first() {
                Some((0, entry)) => out.push((id, String::from_utf8_lossy(entry).into_owned())),
                Some((1, _)) => {}
                _ => {
                    let key = format!("{}{id}", String::from_utf8_lossy(self.prefix));
                    return Err(self.db.corrupt(key, codec::CodecError::Invalid("announcement entry")));
                }
            }
        }
        Ok(out)
    }

    /// Records the entry `id` as announced (or removes it, see [`Outbox::keep_announced`]).
    pub fn announced(&self, id: &str) -> Result<(), StoreError> {
        if !self.keep_announced {
            self.db.db.remove(self.key(id))?;
            self.db.db.flush()?;
            return Ok(());
        }
        if let Some(v) = self.db.db.get(self.key(id))? {
            let mut v = v.to_vec();
            v[0] = 1;
            self.db.db.insert(self.key(id), v)?;
            self.db.db.flush()?;
        }
        Ok(())
    }
}

/// The dedupe claims of events whose account normalization rules changed (docs/mediation.md):
/// `h/<day u16><fingerprint u128>` (big-endian: ordered by the event's day) -> the content hash
/// (u64). The window of the shard that rated such an event holds its claim too, but after a
/// change of rules (a SIM moved to another account in a lookup table) a resend is routed to the
/// shard of its new account, whose window never saw it: this table answers there. Written by the
/// committer in the commit of the record; days older than the dedupe window are removed (such
/// events are TOO_OLD at the door).
#[derive(Clone)]
pub struct MovedClaims(pub(super) Db);

const MOVED_PREFIX: &[u8] = b"h/";

impl MovedClaims {
    /// The key and value of one claim (the shard puts them in its output).
    pub fn entry(day: u16, fingerprint: u128, content: u64) -> (Vec<u8>, Vec<u8>) {
        (moved_key(day, fingerprint), content.to_le_bytes().to_vec())
    }

    /// The content hash claimed for an event, if any.
    pub fn get(&self, day: u16, fingerprint: u128) -> Result<Option<u64>, StoreError> {
        let Some(value) = self.0.db.get(moved_key(day, fingerprint))? else {
            return Ok(None);
        };
        let bytes: [u8; 8] = value.as_ref().try_into().map_err(|_| {
            self.0
                .corrupt(format!("h/ day {day}"), codec::CodecError::Invalid("claim length"))
        })?;
        Ok(Some(u64::from_le_bytes(bytes)))
    }

    /// Removes the claims of days before `day` (one batch, fsynced); returns how many.
    pub fn remove_before(&self, day: u16) -> Result<usize, StoreError> {
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for key in self.0.db.range(MOVED_PREFIX.to_vec()..moved_key(day, 0)).keys() {
            batch.remove(key?);
            n += 1;
        }
        if n > 0 {
            self.0.db.apply_batch(batch)?;
            self.0.db.flush()?;
        }
        Ok(n)
    }
}

fn moved_key(day: u16, fingerprint: u128) -> Vec<u8> {
    let mut k = Vec::with_capacity(MOVED_PREFIX.len() + 2 + 16);
    k.extend_from_slice(MOVED_PREFIX);
    k.extend_from_slice(&day.to_be_bytes());
    k.extend_from_slice(&fingerprint.to_be_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Claims are found by day and fingerprint; the removal of old days keeps the later ones.
    #[test]
    fn moved_claims_are_kept_by_day_and_old_days_removed() {
        let dir = std::env::temp_dir().join(format!("ratingd-moved-claims-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut store = crate::store::Store::open(&dir).unwrap();
        let claims = store.moved_claims();
        let writes = vec![
            MovedClaims::entry(20_400, u128::MAX, 7),
            MovedClaims::entry(20_409, 1, 8),
            MovedClaims::entry(20_410, 1, 9),
        ];
        store
            .commit(crate::store::Commit {
                writes,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(claims.get(20_400, u128::MAX).unwrap(), Some(7));
        assert_eq!(claims.get(20_409, 1).unwrap(), Some(8));
        assert_eq!(claims.get(20_409, 2).unwrap(), None);
        assert_eq!(claims.remove_before(20_410).unwrap(), 2);
        assert_eq!(claims.get(20_409, 1).unwrap(), None);
        assert_eq!(claims.get(20_410, 1).unwrap(), Some(9));
        assert_eq!(claims.remove_before(20_410).unwrap(), 0);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The parts of partial sessions not merged yet (docs/mediation.md, "Partial records"):
/// `p/<account>\xFF<session>\xFF<seq: u32 BE>` -> the part. Written in the commit that
/// acknowledges the part; removed in the commit of the merged record. Read whole at start.
#[derive(Clone)]
pub struct PartialParts(pub(super) Db);

const PARTIAL_PREFIX: &[u8] = b"p/";

impl PartialParts {
    pub fn key(account: &str, session: &str, seq: u32) -> Vec<u8> {
        let mut k = Vec::with_capacity(PARTIAL_PREFIX.len() + account.len() + session.len() + 6);
        k.extend_from_slice(PARTIAL_PREFIX);
        k.extend_from_slice(account.as_bytes());
        k.push(0xFF);
        k.extend_from_slice(session.as_bytes());
        k.push(0xFF);
        k.extend_from_slice(&seq.to_be_bytes());
        k
    }

    /// The key and value of one part (the shard puts them in its output).
    pub fn entry(account: &str, session: &str, part: &Part) -> (Vec<u8>, Vec<u8>) {
        let mut v = Vec::with_capacity(96);
        let mut w = codec::Writer(&mut v);
        w.u8(u8::from(part.last));
        w.str(&part.event_id);
        w.str(&part.meter);
        w.decimal(part.quantity);
        w.i64(part.timestamp_unix_nanos);
        w.pairs(&part.attributes);
        w.u64(part.content);
        w.i64(part.received_unix_nanos);
        (PartialParts::key(account, session, part.seq), v)
    }

    /// Every part held, as (account, session, part).
    pub fn all(&self) -> Result<Vec<(String, String, Part)>, StoreError> {
        let mut out = Vec::new();
        for item in self.0.db.scan_prefix(PARTIAL_PREFIX) {
            let (k, v) = item?;
            let name = format!("p/ {}", String::from_utf8_lossy(&k[PARTIAL_PREFIX.len()..]));
            let decoded = decode_part(&k[PARTIAL_PREFIX.len()..], &v).map_err(|e| self.0.corrupt(name, e))?;
            out.push(decoded);
        }
        Ok(out)
    }
}

fn decode_part(key: &[u8], value: &[u8]) -> Result<(String, String, Part), codec::CodecError> {
    let bad = codec::CodecError::Invalid("partial part key");
    let (rest, seq) = key
        .split_at_checked(key.len().checked_sub(4).ok_or(bad.clone())?)
        .ok_or(bad.clone())?;
    let rest = rest.strip_suffix(&[0xFF]).ok_or(bad.clone())?;
    let cut = rest.iter().position(|b| *b == 0xFF).ok_or(bad.clone())?;
    let utf8 = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| codec::CodecError::Invalid("utf-8"));
    let (account, session) = (utf8(&rest[..cut])?, utf8(&rest[cut + 1..])?);
    let mut r = codec::Reader::new(value);
    let part = Part {
        seq: u32::from_be_bytes(seq.try_into().map_err(|_| bad)?),
        last: r.u8()? != 0,
        event_id: r.str()?,
        meter: r.str()?,
        quantity: r.decimal()?,
        timestamp_unix_nanos: r.i64()?,
        attributes: r.pairs()?,
        content: r.u64()?,
        received_unix_nanos: r.i64()?,
    };
    if !r.is_empty() {
        return Err(codec::CodecError::Invalid("trailing bytes"));
    }
    Ok((account, session, part))
}
