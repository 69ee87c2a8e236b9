//! Checkpoint copies of a shard's state: at the cut, the dedupe claims since the last cut (a
//! segment, taken whole without a copy) and the totals, copied a little at a time between jobs;
//! and their encoding (the checkpoint file's payload).

use std::sync::Arc;

use super::ShardState;
use crate::domain::aggregate::PeriodTotals;
use crate::pipeline::RatingContext;
use crate::pipeline::dedupe::{DedupeWindow, IdSegment, Retire};
use crate::store::codec::{self, CodecError, Reader, Writer};
use crate::store::segments::SegmentMeta;

/// A checkpoint copy of a shard's state, taken a little at a time between jobs so no job waits
/// for all of it: the totals exactly as they were when the copy began (an account's totals are
/// copied before a job first changes them, or by the sweep). The dedupe window's part is the
/// segment of claims sealed at the cut: the ids of earlier segments are on disk already.
pub(super) struct StateCopy {
    segment: IdSegment,
    retire: Vec<Retire>,
    totals: Vec<PeriodTotals>,
    /// Accounts whose totals are not copied yet.
    uncopied: ahash::AHashSet<Arc<str>>,
    /// The accounts the sweep still has to visit.
    sweep: Vec<Arc<str>>,
}

pub(super) use crate::limits::COPY_ACCOUNTS_PER_STEP;

impl ShardState {
    /// Starts a checkpoint copy of the state as it is now (see [`StateCopy`]).
    pub(super) fn begin_copy(&mut self) {
        let sweep: Vec<Arc<str>> = self.accounts.keys().cloned().collect();
        let (segment, retire) = self.dedupe.seal();
        self.copying = Some(StateCopy {
            segment,
            retire,
            totals: Vec::with_capacity(sweep.len() + sweep.len() / 4),
            uncopied: sweep.iter().cloned().collect(),
            sweep,
        });
    }

    /// Before a job changes `account`'s totals: copies them if a copy is being taken and they
    /// are not in it yet.
    pub(super) fn copy_before_change(&mut self, account: &str) {
        if let Some(copy) = &mut self.copying
            && copy.uncopied.remove(account)
            && let Some(list) = self.accounts.get(account)
        {
            copy.totals
                .extend(list.iter().filter_map(|&slot| self.totals.get(slot)).cloned());
        }
    }

    /// Takes the copy further; returns it once complete.
    pub(super) fn copy_step(&mut self, accounts: usize) -> Option<ShardSnapshot> {
        let copy = self.copying.as_mut()?;
        for _ in 0..accounts {
            let Some(account) = copy.sweep.pop() else { break };
            if copy.uncopied.remove(&account)
                && let Some(list) = self.accounts.get(&account)
            {
                copy.totals
                    .extend(list.iter().filter_map(|&slot| self.totals.get(slot)).cloned());
            }
        }
        if !copy.sweep.is_empty() {
            return None;
        }
        let copy = self.copying.take()?;
        Some(ShardSnapshot {
            segment: copy.segment,
            retire: copy.retire,
            totals: copy.totals,
        })
    }

    /// Completes the copy being taken, if any, at once.
    pub(super) fn finish_copy(&mut self) -> Option<ShardSnapshot> {
        self.copy_step(usize::MAX)
    }

    /// Reads the state of an `RCK3`/`RCK2` checkpoint (the window in the state itself).
    pub fn decode(bytes: &[u8], ctx: &RatingContext) -> Result<ShardState, CodecError> {
        let mut r = Reader::new(bytes);
        let mut state = ShardState {
            dedupe: DedupeWindow::decode(&mut r)?,
            ..ShardState::default()
        };
        state.decode_totals(&mut r, ctx)?;
        Ok(state)
    }

    /// Reads the state of an `RCK4` checkpoint, written by [`encode_state`]: the totals, and the
    /// segments that hold the window's ids (read by the caller).
    pub fn decode_segmented(bytes: &[u8], ctx: &RatingContext) -> Result<(ShardState, Vec<SegmentMeta>), CodecError> {
        let mut r = Reader::new(bytes);
        let mut segments = Vec::new();
        for _ in 0..r.u64()? {
            segments.push(SegmentMeta {
                number: r.u64()?,
                count: r.u64()?,
                checksum: r.u64()?,
                newest_day: r.u16()?,
            });
        }
        let mut state = ShardState::default();
        state.decode_totals(&mut r, ctx)?;
        Ok((state, segments))
    }

    /// The totals part of a checkpoint's state (the end of it).
    fn decode_totals(&mut self, r: &mut Reader<'_>, ctx: &RatingContext) -> Result<(), CodecError> {
        for _ in 0..r.u64()? {
            let account: Arc<str> = Arc::from(r.str()?);
            let period: Arc<str> = Arc::from(r.str()?);
            let plan_id = r.str()?;
            let plan = ctx
                .catalogue
                .plan(&plan_id)
                .ok_or(CodecError::Invalid("plan missing from the catalogue"))?;
            let mut totals = PeriodTotals::new(
                account.clone(),
                period,
                Arc::from(plan_id.as_str()),
                plan.currency,
                plan.rounding,
            );
            codec::decode_meters(r, &mut totals)?;
            self.insert_totals(totals);
        }
        if !r.is_empty() {
            return Err(CodecError::Invalid("trailing bytes"));
        }
        Ok(())
    }
}

/// A shard's state as of one point in its queue, on its way to a checkpoint: the claims since
/// the last cut, the segments now redundant, and the totals.
pub struct ShardSnapshot {
    pub segment: IdSegment,
    pub retire: Vec<Retire>,
    pub totals: Vec<PeriodTotals>,
}

/// Serializes an `RCK4` state: the segments that hold the window's ids, then the totals.
pub fn encode_state(segments: &[SegmentMeta], totals: &[PeriodTotals]) -> Vec<u8> {
    let mut out = Vec::with_capacity(segments.len() * 26 + totals.len() * 128 + 16);
    let mut w = Writer(&mut out);
    w.u64(segments.len() as u64);
    for s in segments {
        w.u64(s.number);
        w.u64(s.count);
        w.u64(s.checksum);
        w.u16(s.newest_day);
    }
    w.u64(totals.len() as u64);
    for t in totals {
        w.str(&t.account);
        w.str(&t.period);
        w.str(&t.plan);
        codec::encode_meters(&mut w, &t.meters);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    use crate::domain::subscription::SubscriptionBook;
    use crate::domain::usage::UsageEvent;
    use crate::pipeline::dedupe::Seen;
    use crate::pipeline::{Admitted, BatchTicket, ShardJob, ValidEvent};

    fn context() -> RatingContext {
        let catalogue =
            crate::domain::tariff_file::parse_catalogue(include_str!("../../../config/tariffs.toml")).unwrap();
        RatingContext {
            catalogue,
            subscriptions: SubscriptionBook::new(&[], Some("saas-pro".into())),
            mediation: Default::default(),
        }
    }

    fn job(from: u64, count: u64, accounts: u64) -> ShardJob {
        let permits = Arc::new(tokio::sync::Semaphore::new(1));
        let (ticket, _rx) = BatchTicket::new(from, 1, Admitted::new(permits.try_acquire_owned().unwrap()));
        let at = Utc::now() - chrono::Duration::hours(1);
        let events = (from..from + count)
            .map(|n| {
                let account = format!("a-{}", n % accounts);
                let id = format!("e-{n}");
                ValidEvent {
                    index: (n - from) as u32,
                    fingerprint: crate::domain::keyed::HashKey::new(7, 7).fingerprint(&account, &id),
                    content: n,
                    event: UsageEvent {
                        event_id: id,
                        account_id: account,
                        meter: "api.requests".into(),
                        quantity: rust_decimal::Decimal::from(1 + n % 7),
                        timestamp: at,
                        attributes: Vec::new(),
                        origin: crate::domain::origin::Origin::Usage,
                    },
                    as_sent: None,
                    part: None,
                }
            })
            .collect();
        ShardJob {
            ticket,
            queued_at: std::time::Instant::now(),
            received_at: Utc::now(),
            events,
            rejected: Vec::new(),
        }
    }

    fn sorted(mut totals: Vec<PeriodTotals>) -> Vec<(String, String, String, u64)> {
        totals.sort_by(|a, b| a.account.cmp(&b.account));
        totals
            .iter()
            .map(|t| {
                let events = t.meters.iter().map(|m| m.events).sum();
                (
                    t.account.to_string(),
                    t.period.to_string(),
                    t.total_charge.to_string(),
                    events,
                )
            })
            .collect()
    }

    /// A copy taken a step at a time while jobs keep changing totals holds the totals exactly as
    /// they were when it began, and exactly the ids claimed before it began (since the last cut).
    #[test]
    fn a_copy_taken_between_jobs_is_the_state_at_its_start() {
        let ctx = context();
        let mut state = ShardState::default();
        state.process(&ctx, job(0, 30_000, 9_000));
        let at_start = sorted(state.all_totals().collect());
        state.begin_copy();
        let mut copy = None;
        let mut next = 30_000;
        while copy.is_none() {
            // Jobs touch old accounts (copied before they change) and new ones (not in the copy).
            state.process(&ctx, job(next, 1_000, 12_000));
            next += 1_000;
            copy = state.copy_step(500);
        }
        assert!(next > 31_000, "the copy took several steps");
        let copy = copy.unwrap();
        assert_eq!(sorted(copy.totals), at_start);
        assert_eq!(
            copy.segment.claims.len(),
            30_000,
            "the claims before the cut, no others"
        );
        let mut window = DedupeWindow::default();
        window.load_segment(&copy.segment.claims);
        let fingerprint = |n: u64| {
            crate::domain::keyed::HashKey::new(7, 7).fingerprint(&format!("a-{}", n % 9_000), &format!("e-{n}"))
        };
        for n in 0..30_000u64 {
            assert_eq!(
                window.check(fingerprint(n), n).expect("readable"),
                Seen::Duplicate,
                "id {n} claimed before the copy began"
            );
        }
        // The claims after the cut wait for the next one.
        assert_eq!(state.dedupe.journal_len() as u64, next - 30_000);
        let (later, _) = state.dedupe.seal();
        assert_eq!(later.number, copy.segment.number + 1);
    }
}
