//! The committed totals, in slots the shards own. Each shard numbers its (account, period, plan)
//! totals itself (`shard::totals`) and sends, with each job's output, what changed: a totals whole
//! the first time it is published (or when it gained a meter), otherwise only its numbers, and the
//! slots it freed. The committer applies them after the fsync, in the shard's order: a slot is
//! written in place, without a map lookup, a string compare or an allocation. The index from
//! (account, period) to slots changes only when a totals is first published or freed.
//!
//! Locks: the index (DashMap shards), one lock per page of slots, one per shard's dirty set.
//! Readers take the index, then pages; the committer never holds a page while it waits for the
//! index, so the two cannot deadlock. A reader checks that a slot still holds its key (a slot
//! freed and reused meanwhile holds another).

use std::sync::{Arc, Mutex, RwLock};

use dashmap::DashMap;
use rust_decimal::Decimal;

use super::TotalsKey;
use crate::domain::aggregate::{AccountPeriod, PeriodTotals};
use crate::pipeline::lock;

/// Slots per page: a page is locked while one of its slots is read or written.
const PAGE: usize = 1024;

/// Where a totals sits in the view: its shard and the shard's slot number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotRef {
    pub shard: u32,
    pub slot: u32,
}

/// What one job changed in its shard's totals, in the order the committer applies it.
#[derive(Default)]
pub struct TotalsDelta {
    pub changes: Vec<TotalsChange>,
    /// The numbers of the `Values` changes' meters, in order.
    pub meters: Vec<MeterValues>,
}

impl TotalsDelta {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

/// One change of a shard's slot.
pub enum TotalsChange {
    /// The slot no longer holds a totals (its period closed); the shard may number another with it.
    Freed(u32),
    /// The slot's totals whole: its first publication, or it gained a meter.
    Whole(u32, PeriodTotals),
    /// The slot's new numbers: its total charge and its meters' numbers (`meters` of them, next
    /// in [`TotalsDelta::meters`]), in the order of its meters.
    Values {
        slot: u32,
        total_charge: Decimal,
        meters: u32,
    },
}

/// A meter's numbers in a [`TotalsChange::Values`].
#[derive(Debug, Clone, Copy)]
pub struct MeterValues {
    pub quantity: Decimal,
    pub rated_quantity: Decimal,
    pub charge: Decimal,
    pub events: u64,
}

/// What the committer learns of one applied change.
pub struct Applied<'a> {
    /// The totals' charge before the change; `None` when it is new to the view.
    pub before: Option<Decimal>,
    pub after: &'a PeriodTotals,
}

type Page = Mutex<Vec<Option<PeriodTotals>>>;

#[derive(Default)]
struct ShardSlots {
    pages: RwLock<Vec<Page>>,
    dirty: Mutex<Dirty>,
}

/// The slots changed since the Redis projection last took them: a bit per slot and their list.
#[derive(Default)]
struct Dirty {
    bits: Vec<u64>,
    list: Vec<u32>,
}

impl Dirty {
    fn mark(&mut self, slot: u32) {
        let (word, bit) = (slot as usize / 64, 1u64 << (slot % 64));
        if word >= self.bits.len() {
            self.bits.resize(word + 1, 0);
        }
        if self.bits[word] & bit == 0 {
            self.bits[word] |= bit;
            self.list.push(slot);
        }
    }

    fn take(&mut self) -> Vec<u32> {
        for &slot in &self.list {
            self.bits[slot as usize / 64] &= !(1u64 << (slot % 64));
        }
        std::mem::take(&mut self.list)
    }
}

impl ShardSlots {
    /// Runs `f` on the slot, the page grown to hold it when `grow`.
    fn with_slot<R>(&self, slot: u32, grow: bool, f: impl FnOnce(&mut Option<PeriodTotals>) -> R) -> Option<R> {
        let (page, at) = (slot as usize / PAGE, slot as usize % PAGE);
        {
            let pages = self.pages.read().unwrap_or_else(|e| e.into_inner());
            if let Some(p) = pages.get(page) {
                return Some(f(&mut lock(p)[at]));
            }
        }
        if !grow {
            return None;
        }
        let mut pages = self.pages.write().unwrap_or_else(|e| e.into_inner());
        while pages.len() <= page {
            pages.push(Mutex::new(vec![None; PAGE]));
        }
        Some(f(&mut lock(&pages[page])[at]))
    }
}

/// The committed totals: the shards' slots and the index of (account, period) to them.
#[derive(Default)]
pub struct TotalsTable {
    /// Per (account, period): its plans' slots, in the order of first publication.
    index: DashMap<TotalsKey, Vec<SlotRef>, ahash::RandomState>,
    shards: Vec<ShardSlots>,
}

impl TotalsTable {
    pub fn new(shards: usize) -> TotalsTable {
        TotalsTable {
            index: DashMap::default(),
            shards: (0..shards).map(|_| ShardSlots::default()).collect(),
        }
    }

    /// The number of (account, period) keys with totals in memory.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// True when (account, period) has totals in memory.
    pub fn contains_key(&self, key: &TotalsKey) -> bool {
        self.index.contains_key(key)
    }

    /// Every (account, period) key with totals in memory.
    pub fn keys(&self) -> Vec<TotalsKey> {
        self.index.iter().map(|e| e.key().clone()).collect()
    }

    /// Runs `f` on every totals in memory (a page locked at a time).
    pub fn for_each(&self, mut f: impl FnMut(&PeriodTotals)) {
        for slots in &self.shards {
            let pages = slots.pages.read().unwrap_or_else(|e| e.into_inner());
            for page in pages.iter() {
                lock(page).iter().flatten().for_each(&mut f);
            }
        }
    }

    /// The totals of one (account, period), its parts in the order of first publication.
    pub fn get(&self, key: &TotalsKey) -> Option<AccountPeriod> {
        let refs = self.index.get(key)?;
        let parts = self.read_parts(key, &refs);
        drop(refs);
        (!parts.is_empty()).then_some(AccountPeriod { parts })
    }

    /// Every key of `period` with its totals.
    pub fn of_period(&self, period: &str) -> Vec<(TotalsKey, AccountPeriod)> {
        self.index
            .iter()
            .filter(|e| &*e.key().1 == period)
            .filter_map(|e| {
                let parts = self.read_parts(e.key(), e.value());
                (!parts.is_empty()).then(|| (e.key().clone(), AccountPeriod { parts }))
            })
            .collect()
    }

    /// Runs `f` on the totals of (account, period) without a copy when it has exactly one part
    /// (nearly every key); `None` otherwise. The part's page stays locked while `f` runs.
    pub fn with_single<R>(&self, key: &TotalsKey, f: impl FnOnce(&PeriodTotals) -> R) -> Option<R> {
        let refs = self.index.get(key)?;
        let [at] = refs.as_slice() else {
            return None;
        };
        let shard = self.shards.get(at.shard as usize)?;
        shard
            .with_slot(at.slot, false, |s| {
                s.as_ref().filter(|t| t.account == key.0 && t.period == key.1).map(f)
            })
            .flatten()
    }

    fn read_parts(&self, key: &TotalsKey, refs: &[SlotRef]) -> Vec<PeriodTotals> {
        refs.iter()
            .filter_map(|r| {
                let shard = self.shards.get(r.shard as usize)?;
                shard
                    .with_slot(r.slot, false, |s| {
                        s.as_ref().filter(|t| t.account == key.0 && t.period == key.1).cloned()
                    })
                    .flatten()
            })
            .collect()
    }

    /// Installs a totals at start (recovery), as if published.
    pub fn install(&self, shard: usize, slot: u32, totals: PeriodTotals) {
        self.apply_whole(shard, slot, totals, |_| {});
    }

    /// Applies one job's changes of `shard`'s slots; `each` sees every changed totals, with its
    /// charge before. Marks them dirty for the Redis projection. `each` runs with the slot's page
    /// locked: it must not read the view's totals (the alerts check reads only the store).
    pub fn apply(&self, shard: usize, delta: &mut TotalsDelta, mut each: impl FnMut(Applied<'_>)) {
        let Some(slots) = self.shards.get(shard) else {
            return;
        };
        let mut next = 0usize;
        // Held for the whole job's changes (the projection takes it only to swap the list out).
        let mut dirty = lock(&slots.dirty);
        for change in delta.changes.drain(..) {
            match change {
                TotalsChange::Freed(slot) => self.free(shard, slot),
                TotalsChange::Whole(slot, totals) => {
                    self.apply_whole(shard, slot, totals, &mut each);
                    dirty.mark(slot);
                }
                TotalsChange::Values {
                    slot,
                    total_charge,
                    meters: n,
                } => {
                    let end = (next + n as usize).min(delta.meters.len());
                    let values = &delta.meters[next..end];
                    next = end;
                    slots.with_slot(slot, false, |s| {
                        // A slot whose period a close dropped meanwhile: nothing to update.
                        let Some(t) = s.as_mut().filter(|t| t.meters.len() == values.len()) else {
                            return;
                        };
                        let before = t.total_charge;
                        t.total_charge = total_charge;
                        for (m, v) in t.meters.iter_mut().zip(values.iter()) {
                            m.quantity = v.quantity;
                            m.rated_quantity = v.rated_quantity;
                            m.charge = v.charge;
                            m.events = v.events;
                        }
                        each(Applied {
                            before: Some(before),
                            after: t,
                        });
                    });
                    dirty.mark(slot);
                }
            }
        }
        delta.meters.clear();
    }

    /// Puts a totals whole in its slot, runs `each` on it (with its charge before: `None` when
    /// the slot held another totals or none), and indexes it when it is new there.
    fn apply_whole(&self, shard: usize, slot: u32, totals: PeriodTotals, each: impl FnOnce(Applied<'_>)) {
        let Some(slots) = self.shards.get(shard) else {
            return;
        };
        let key: TotalsKey = (totals.account.clone(), totals.period.clone());
        let before = slots
            .with_slot(slot, true, |s| {
                let before = s
                    .as_ref()
                    .filter(|t| t.account == totals.account && t.period == totals.period && t.plan == totals.plan)
                    .map(|t| t.total_charge);
                let after = s.insert(totals);
                each(Applied { before, after });
                before
            })
            .flatten();
        if before.is_none() {
            let at = SlotRef {
                shard: shard as u32,
                slot,
            };
            let mut refs = self.index.entry(key).or_default();
            if !refs.contains(&at) {
                refs.push(at);
            }
        }
    }

    /// Empties a slot the shard freed and takes it out of the index.
    fn free(&self, shard: usize, slot: u32) {
        let Some(slots) = self.shards.get(shard) else {
            return;
        };
        let Some(Some(gone)) = slots.with_slot(slot, false, Option::take) else {
            return;
        };
        self.unindex(
            &(gone.account, gone.period),
            SlotRef {
                shard: shard as u32,
                slot,
            },
        );
    }

    fn unindex(&self, key: &TotalsKey, at: SlotRef) {
        if let Some(mut refs) = self.index.get_mut(key) {
            refs.retain(|r| *r != at);
        }
        self.index.remove_if(key, |_, refs| refs.is_empty());
    }

    /// Drops the totals of a closed (plan, period) of `accounts` (their final totals are on disk).
    pub fn forget(&self, plan: &Arc<str>, period: &Arc<str>, accounts: Vec<Arc<str>>) {
        for account in accounts {
            let key = (account, period.clone());
            let refs = match self.index.get(&key) {
                Some(refs) => refs.clone(),
                None => continue,
            };
            for at in refs {
                let Some(slots) = self.shards.get(at.shard as usize) else {
                    continue;
                };
                let dropped = slots
                    .with_slot(at.slot, false, |s| {
                        let closed = s
                            .as_ref()
                            .is_some_and(|t| t.account == key.0 && t.period == key.1 && t.plan == *plan);
                        if closed {
                            *s = None;
                        }
                        closed
                    })
                    .unwrap_or(false);
                if dropped {
                    self.unindex(&key, at);
                }
            }
        }
    }

    /// Takes the keys of the slots changed since the last call.
    pub fn take_dirty(&self, into: &mut ahash::AHashSet<TotalsKey>) {
        for slots in &self.shards {
            let taken = lock(&slots.dirty).take();
            for slot in taken {
                let key = slots
                    .with_slot(slot, false, |s| {
                        s.as_ref().map(|t| (t.account.clone(), t.period.clone()))
                    })
                    .flatten();
                if let Some(key) = key {
                    into.insert(key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::money::{InvoiceRounding, RoundingMode};

    fn totals(account: &str, period: &str, plan: &str, charge: i64, meters: &[&str]) -> PeriodTotals {
        let mut t = PeriodTotals::new(
            account.into(),
            period.into(),
            plan.into(),
            "EUR".parse().unwrap(),
            InvoiceRounding {
                places: 2,
                mode: RoundingMode::HalfUp,
            },
        );
        for m in meters {
            t.add(m, Decimal::ONE, Decimal::ONE, Decimal::new(charge, 2));
        }
        t
    }

    fn key(account: &str, period: &str) -> TotalsKey {
        (account.into(), period.into())
    }

    fn values(slot: u32, t: &PeriodTotals, delta: &mut TotalsDelta) {
        delta.changes.push(TotalsChange::Values {
            slot,
            total_charge: t.total_charge,
            meters: t.meters.len() as u32,
        });
        delta.meters.extend(t.meters.iter().map(|m| MeterValues {
            quantity: m.quantity,
            rated_quantity: m.rated_quantity,
            charge: m.charge,
            events: m.events,
        }));
    }

    #[test]
    fn values_update_a_published_slot_in_place_and_mark_its_key() {
        let table = TotalsTable::new(2);
        let mut delta = TotalsDelta::default();
        delta
            .changes
            .push(TotalsChange::Whole(5, totals("a", "2026-12", "basic", 100, &["calls"])));
        let mut seen = Vec::new();
        table.apply(1, &mut delta, |a| seen.push((a.before, a.after.total_charge)));
        assert_eq!(seen, vec![(None, Decimal::new(100, 2))]);
        let mut later = totals("a", "2026-12", "basic", 100, &["calls"]);
        later.add("calls", Decimal::TWO, Decimal::TWO, Decimal::new(50, 2));
        values(5, &later, &mut delta);
        seen.clear();
        table.apply(1, &mut delta, |a| seen.push((a.before, a.after.total_charge)));
        assert_eq!(seen, vec![(Some(Decimal::new(100, 2)), Decimal::new(150, 2))]);
        assert_eq!(table.get(&key("a", "2026-12")).unwrap().parts, vec![later]);
        let mut dirty = ahash::AHashSet::new();
        table.take_dirty(&mut dirty);
        assert_eq!(dirty.into_iter().collect::<Vec<_>>(), vec![key("a", "2026-12")]);
        let mut again = ahash::AHashSet::new();
        table.take_dirty(&mut again);
        assert!(again.is_empty(), "taken once");
    }

    #[test]
    fn a_freed_slot_leaves_the_index_and_serves_its_next_key() {
        let table = TotalsTable::new(1);
        let mut delta = TotalsDelta::default();
        delta
            .changes
            .push(TotalsChange::Whole(0, totals("a", "2026-11", "basic", 1, &["calls"])));
        delta
            .changes
            .push(TotalsChange::Whole(1, totals("a", "2026-11", "pro", 2, &["calls"])));
        table.apply(0, &mut delta, |_| {});
        assert_eq!(table.get(&key("a", "2026-11")).unwrap().parts.len(), 2);
        delta.changes.push(TotalsChange::Freed(0));
        delta
            .changes
            .push(TotalsChange::Whole(0, totals("b", "2026-12", "basic", 3, &["sms"])));
        let mut new = 0;
        table.apply(0, &mut delta, |a| new += usize::from(a.before.is_none()));
        assert_eq!(new, 1);
        let left = table.get(&key("a", "2026-11")).unwrap();
        assert_eq!(left.parts.len(), 1);
        assert_eq!(&*left.parts[0].plan, "pro");
        assert_eq!(
            table.get(&key("b", "2026-12")).unwrap().parts[0].total_charge,
            Decimal::new(3, 2)
        );
        assert_eq!(table.len(), 2);
    }

    #[test]
    fn a_close_drops_its_plans_totals_and_later_values_for_them_change_nothing() {
        let table = TotalsTable::new(1);
        let mut delta = TotalsDelta::default();
        let closed = totals("a", "2026-11", "basic", 1, &["calls"]);
        delta.changes.push(TotalsChange::Whole(0, closed.clone()));
        delta
            .changes
            .push(TotalsChange::Whole(1, totals("a", "2026-11", "pro", 2, &["calls"])));
        table.apply(0, &mut delta, |_| {});
        table.forget(&"basic".into(), &"2026-11".into(), vec!["a".into()]);
        let left = table.get(&key("a", "2026-11")).unwrap();
        assert_eq!(left.parts.len(), 1);
        values(0, &closed, &mut delta);
        let mut seen = 0;
        table.apply(0, &mut delta, |_| seen += 1);
        assert_eq!(seen, 0);
        assert!(delta.meters.is_empty(), "the meters of every change are consumed");
        table.forget(&"pro".into(), &"2026-11".into(), vec!["a".into()]);
        assert!(table.get(&key("a", "2026-11")).is_none());
        assert!(table.is_empty());
    }
}
