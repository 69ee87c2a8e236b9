//! The small tables kept beside the blocks, one handle each (cheap to clone, usable from any
//! thread): [`Subscriptions`] stored through the Admin API, [`Suspense`] (rejected events waiting
//! to be fixed), [`Closes`] (closed billing periods and their announcements) and [`Alerts`]
//! (spend alerts raised) and [`Versions`] (the content of every tariff version published). Every
//! write is durable (fsync) before it returns.

use super::{Db, StoreError, codec, keys};
use crate::domain::aggregate::PeriodTotals;
use crate::domain::alert::SpendAlert;
use crate::domain::hex::hex;
use crate::domain::subscription::Subscription;
use crate::domain::tariff::Catalogue;
use crate::domain::tariff_file::content::KnownVersion;
use crate::domain::usage::{RejectReason, Rejected};

/// Subscriptions stored through the Admin API (`u/<account>\xFF<from>` for base plans, with the
/// plan id appended for add-ons, which may start at the same instant as the base subscription).
#[derive(Clone)]
pub struct Subscriptions(pub(super) Db);

fn subscription_key(account: &str, from_nanos: i64, addon: Option<&str>) -> Vec<u8> {
    let mut k = keys::SUBSCRIPTION.to_vec();
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
        for item in self.0.db.scan_prefix(keys::SUBSCRIPTION) {
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
            None => keys::SUSPENSE.to_vec(),
        };
        let mut out = Vec::new();
        for item in self.0.db.range(start..) {
            let (k, v) = item?;
            if !k.starts_with(keys::SUSPENSE) || out.len() >= limit {
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
        if !id.0.starts_with(keys::SUSPENSE) {
            return Ok(None);
        }
        match self.0.db.get(&id.0)? {
            None => Ok(None),
            Some(v) => self.decode(&id.0, &v).map(Some),
        }
    }

    /// How many entries wait (a key scan, at start-up).
    pub fn count(&self) -> usize {
        self.0.db.scan_prefix(keys::SUSPENSE).keys().count()
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
    let mut k = keys::CLOSE.to_vec();
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
        for k in self.0.db.scan_prefix(keys::CLOSE).keys() {
            let k = k?;
            let rest = &k[keys::CLOSE.len()..];
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
        for item in self.0.db.scan_prefix(keys::CLOSE) {
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
    let mut k = keys::FINAL.to_vec();
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
        for k in self.0.db.scan_prefix(keys::FINAL).keys() {
            let k = k?;
            let mut fields = k[keys::FINAL.len()..].split(|&b| b == 0xFF);
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
        Ok(self.0.db.get(keys::FINALS_WRITTEN_KEY)?.is_some())
    }

    /// Writes the final totals of the closes an earlier release recorded without them (its
    /// recovered totals are complete: it never let a closed period leave memory), and marks the
    /// data dir done, in one batch.
    pub fn write_missing(&self, totals: &[PeriodTotals]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for t in totals {
            batch.insert(final_key(&t.period, &t.account, &t.plan), codec::encode_totals(t));
        }
        batch.insert(keys::FINALS_WRITTEN_KEY, &[1u8][..]);
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
        let mut key = keys::ALERT.to_vec();
        key.extend_from_slice(stored.alert.id().as_bytes());
        self.0.db.insert(key, codec::encode_alert(stored))?;
        self.0.db.flush()?;
        Ok(())
    }

    /// True when the alert `id` was raised (one read, when a threshold is crossed).
    pub fn contains(&self, id: &str) -> Result<bool, StoreError> {
        let mut key = keys::ALERT.to_vec();
        key.extend_from_slice(id.as_bytes());
        Ok(self.0.db.contains_key(key)?)
    }

    /// Every stored alert.
    pub fn all(&self) -> Result<Vec<StoredAlert>, StoreError> {
        let mut out = Vec::new();
        for item in self.0.db.scan_prefix(keys::ALERT) {
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
            let mut k = keys::VERSION.to_vec();
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
        for item in self.0.db.scan_prefix(keys::VERSION) {
            let (k, v) = item?;
            let name = || format!("t/{}", String::from_utf8_lossy(&k[2..]));
            let rest = &k[keys::VERSION.len()..];
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
        let mut k = keys::CORRECTION.to_vec();
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
        let mut k = keys::CORRECTION.to_vec();
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
