//! Retention's side of the store: the oldest commits read back in order, and their removal with
//! everything of the same age (account index, final totals, close, alerts, old suspense entries)
//! in one atomic batch. Which commits may go is decided by `billing::retention`.
//!
//! `r/<plan>\xFF<period>` marks a period whose records retention has started to remove: its value
//! is when (i64 BE nanos) and the period's end (i64 BE nanos). Queries for such a period answer
//! NOT_FOUND naming the retention instead of an incomplete answer.

use chrono::{DateTime, Utc};

use super::tables::{close_key, final_prefix};
use super::{Db, StoreError, codec, keys};
use crate::domain::record::RatedRecord;

/// A period whose records retention removed (all or some of them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetiredPeriod {
    pub plan: String,
    pub period: String,
    /// When its first records were removed.
    pub removed_at: DateTime<Utc>,
    /// The period's end: every record of it has an earlier event time.
    pub end: DateTime<Utc>,
}

/// One commit at the front of the store: its seq and its records (all of its parts).
pub struct StoredCommit {
    pub seq: u64,
    pub records: Vec<RatedRecord>,
    /// The stored bytes of its parts (what the removal returns to sled).
    pub bytes: usize,
}

/// What one retention step removes, in one batch.
pub struct Removal {
    /// Commits whose blocks and index entries go.
    pub seqs: Vec<u64>,
    /// The (plan, period, end) of their records: marked retired, their final totals, close and
    /// alerts removed.
    pub periods: Vec<(String, String, DateTime<Utc>)>,
    /// Suspense entries received before this instant go too.
    pub suspense_before: DateTime<Utc>,
    pub now: DateTime<Utc>,
}

/// What a removal took away.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    pub block_parts: usize,
    pub finals: usize,
    pub suspense: usize,
    pub alerts: usize,
}

#[derive(Clone)]
pub struct Retention(pub(super) Db);

fn nanos(t: DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(i64::MAX)
}

impl Retention {
    /// The commits with a seq at or after `from`, oldest first, checksums verified: up to
    /// `max_commits`, and no commit begun once `max_records` records are read (a busy daemon's
    /// commit holds up to `commit_max_events` records: this bounds one step's memory).
    pub fn front(&self, from: u64, max_commits: usize, max_records: usize) -> Result<Vec<StoredCommit>, StoreError> {
        let db = &self.0;
        let mut out: Vec<StoredCommit> = Vec::new();
        let mut records = 0;
        for item in db
            .db
            .range(keys::with_seq(keys::BLOCK, from)..keys::with_seq(keys::BLOCK, u64::MAX))
        {
            let (k, v) = item?;
            let seq = keys::seq_of(&k).unwrap_or(u64::MAX);
            if out.last().is_none_or(|c| c.seq != seq) {
                if out.len() == max_commits || records >= max_records {
                    break;
                }
                out.push(StoredCommit {
                    seq,
                    records: Vec::new(),
                    bytes: 0,
                });
            }
            let corrupt = |e| db.corrupt(format!("b/{seq}"), e);
            let (_, payload) = codec::open_block(&v).map_err(corrupt)?;
            let commit = out.last_mut().expect("pushed above");
            commit.bytes += v.len();
            for record in codec::records(payload) {
                commit.records.push(record.map_err(corrupt)?);
                records += 1;
            }
        }
        Ok(out)
    }

    /// Every period retention has touched.
    pub fn retired(&self) -> Result<Vec<RetiredPeriod>, StoreError> {
        let mut out = Vec::new();
        for item in self.0.db.scan_prefix(keys::RETIRED) {
            let (k, v) = item?;
            let rest = &k[keys::RETIRED.len()..];
            let bad = || {
                self.0.corrupt(
                    format!("r/{}", String::from_utf8_lossy(rest)),
                    codec::CodecError::Invalid("retired period"),
                )
            };
            let split = rest.iter().position(|&b| b == 0xFF).ok_or_else(bad)?;
            let (at, end) = match (v.get(..8), v.get(8..16)) {
                (Some(a), Some(e)) => (
                    i64::from_be_bytes(a.try_into().map_err(|_| bad())?),
                    i64::from_be_bytes(e.try_into().map_err(|_| bad())?),
                ),
                _ => return Err(bad()),
            };
            out.push(RetiredPeriod {
                plan: String::from_utf8_lossy(&rest[..split]).into_owned(),
                period: String::from_utf8_lossy(&rest[split + 1..]).into_owned(),
                removed_at: DateTime::<Utc>::from_timestamp_nanos(at),
                end: DateTime::<Utc>::from_timestamp_nanos(end),
            });
        }
        Ok(out)
    }

    /// Removes what `removal` names in one atomic batch, then fsyncs: either all of it is gone
    /// or none of it (a full disk fails the batch whole).
    pub fn remove(&self, removal: &Removal) -> Result<Removed, StoreError> {
        let db = &self.0.db;
        let mut batch = sled::Batch::default();
        let mut removed = Removed::default();
        for &seq in &removal.seqs {
            for k in db.scan_prefix(keys::with_seq(keys::BLOCK, seq)).keys() {
                batch.remove(k?);
                removed.block_parts += 1;
            }
            batch.remove(keys::with_seq(keys::INDEX, seq));
        }
        for (plan, period, end) in &removal.periods {
            let mut marker = keys::RETIRED.to_vec();
            marker.extend_from_slice(plan.as_bytes());
            marker.push(0xFF);
            marker.extend_from_slice(period.as_bytes());
            if db.get(&marker)?.is_none() {
                let mut value = nanos(removal.now).to_be_bytes().to_vec();
                value.extend_from_slice(&nanos(*end).to_be_bytes());
                batch.insert(marker, value);
            }
            batch.remove(close_key(plan, period));
            for item in db.scan_prefix(final_prefix(period, None)) {
                let (k, v) = item?;
                if codec::decode_totals(&v).is_ok_and(|t| *t.plan == **plan) {
                    batch.remove(k);
                    removed.finals += 1;
                }
            }
        }
        for item in db.scan_prefix(keys::ALERT) {
            let (k, v) = item?;
            let Ok(stored) = codec::decode_alert(&v) else { continue };
            let of_removed = removal
                .periods
                .iter()
                .any(|(plan, period, _)| stored.alert.plan == *plan && stored.alert.period == *period);
            if of_removed {
                batch.remove(k);
                removed.alerts += 1;
            }
        }
        // Suspense entries are keyed in commit order, which is receipt order.
        let before = nanos(removal.suspense_before);
        for item in db.scan_prefix(keys::SUSPENSE) {
            let (k, v) = item?;
            match codec::decode_suspense(&v) {
                Ok(entry) if entry.received_unix_nanos < before => {
                    batch.remove(k);
                    removed.suspense += 1;
                }
                _ => break,
            }
        }
        db.apply_batch(batch)?;
        db.flush()?;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use rust_decimal::Decimal;

    use super::*;
    use crate::domain::aggregate::PeriodTotals;
    use crate::domain::money::{InvoiceRounding, RoundingMode};
    use crate::domain::usage::{RawEvent, RejectReason, Rejected};
    use crate::store::compact::SegmentWriter;
    use crate::store::{Commit, Store, StoredClose};

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    fn record(id: &str, period: &str, when: DateTime<Utc>) -> RatedRecord {
        RatedRecord {
            content: 5,
            event_id: id.into(),
            account_id: "acme".into(),
            meter: "api.requests".into(),
            quantity: Decimal::from(3),
            timestamp_unix_nanos: nanos(when),
            attributes: Vec::new(),
            plan: "saas-pro".into(),
            version: 1,
            period: period.into(),
            period_usage_before: Decimal::ZERO,
            subscription_discount: None,
            rated_quantity: Decimal::from(3),
            charge: Decimal::new(3_000, 9),
            correction: None,
            as_sent: None,
        }
    }

    fn suspended(id: &str, received: DateTime<Utc>) -> Rejected {
        Rejected {
            event: RawEvent {
                event_id: id.into(),
                account_id: "nobody".into(),
                meter: "api.requests".into(),
                quantity: Some((1, 0)),
                timestamp_unix_nanos: nanos(received),
                attributes: Vec::new(),
            },
            reason: RejectReason::NoTariff,
            detail: String::new(),
            received_unix_nanos: nanos(received),
        }
    }

    /// One removal takes a commit's blocks and index, its period's final totals, close and
    /// alerts, and the suspense entries older than the cutoff; it marks the period retired and
    /// leaves every later commit, total and entry alone.
    #[test]
    fn a_removal_takes_a_commit_and_everything_of_its_age() {
        let dir = std::env::temp_dir().join(format!("ratingd-retention-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut store = Store::open(&dir).unwrap();
        for (seq, (id, period, when, suspense)) in [
            ("e-old", "2025-01", "2025-01-10T00:00:00Z", "s-old"),
            ("e-new", "2025-02", "2025-02-10T00:00:00Z", "s-new"),
        ]
        .into_iter()
        .enumerate()
        {
            let mut segment = SegmentWriter::default();
            segment.begin(Vec::new());
            segment.push(&record(id, period, at(when)).as_ref());
            let got = store
                .commit(Commit {
                    parts: codec::seal_segments([segment.finish().as_slice()]),
                    accounts: vec!["acme".into()],
                    writes: vec![crate::store::Write::Suspense(suspended(suspense, at(when)))],
                })
                .unwrap();
            assert_eq!(got, seq as u64);
        }
        let rounding = InvoiceRounding {
            places: 2,
            mode: RoundingMode::HalfUp,
        };
        for period in ["2025-01", "2025-02"] {
            let mut t = PeriodTotals::new(
                "acme".into(),
                period.into(),
                "saas-pro".into(),
                "EUR".parse().unwrap(),
                rounding,
            );
            t.add(
                "api.requests",
                Decimal::from(3),
                Decimal::from(3),
                Decimal::new(3_000, 9),
            );
            let close = StoredClose {
                plan: "saas-pro".into(),
                period: period.into(),
                announced: true,
                entries: Vec::new(),
            };
            store.closes().put_with_finals(&close, &[t]).unwrap();
        }
        let table = store.retention();
        let front = table.front(0, 1, usize::MAX).unwrap();
        assert_eq!(front.len(), 1);
        assert_eq!(front[0].seq, 0);
        assert_eq!(front[0].records[0].event_id, "e-old");
        let now = at("2025-06-01T00:00:00Z");
        let removed = table
            .remove(&Removal {
                seqs: vec![0],
                periods: vec![("saas-pro".into(), "2025-01".into(), at("2025-02-01T00:00:00Z"))],
                suspense_before: at("2025-02-01T00:00:00Z"),
                now,
            })
            .unwrap();
        assert_eq!(
            removed,
            Removed {
                block_parts: 1,
                finals: 1,
                suspense: 1,
                alerts: 0
            }
        );
        let left = table.front(0, 10, usize::MAX).unwrap();
        assert_eq!(
            table.front(0, 10, 1).unwrap().len(),
            1,
            "no second commit begun past the record bound"
        );
        assert_eq!(left.iter().map(|c| c.seq).collect::<Vec<_>>(), vec![1]);
        assert!(store.block_accounts(0).is_err(), "the index entry went with the block");
        assert_eq!(store.block_accounts(1).unwrap(), vec!["acme".to_string()]);
        assert!(store.finals().of("acme", "2025-01").unwrap().is_empty());
        assert_eq!(store.finals().of("acme", "2025-02").unwrap().len(), 1);
        assert_eq!(
            store.closes().pairs().unwrap(),
            vec![("saas-pro".to_string(), "2025-02".to_string())]
        );
        let waiting = store.suspense().page(None, None, 10).unwrap();
        assert_eq!(waiting.len(), 1);
        assert_eq!(waiting[0].1.event.event_id, "s-new");
        assert_eq!(
            table.retired().unwrap(),
            vec![RetiredPeriod {
                plan: "saas-pro".into(),
                period: "2025-01".into(),
                removed_at: now,
                end: at("2025-02-01T00:00:00Z"),
            }]
        );
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
