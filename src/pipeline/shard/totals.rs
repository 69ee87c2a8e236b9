//! A shard's totals in numbered slots: one slot per (account, period, plan), numbered by the
//! shard and the same number in the committed view (`committed::table`). A job's output says what
//! changed by slot: a totals whole the first time the view gets it (or once it gained a meter),
//! otherwise only its numbers; no totals is cloned per job. A slot whose period closed is freed,
//! told to the view, and reused only after that.

use std::sync::Arc;

use crate::domain::aggregate::PeriodTotals;
use crate::pipeline::committed::{MeterValues, TotalsChange, TotalsDelta, TotalsTable};

/// An (account, period, plan) of the open periods' index.
pub(super) type OpenKey = (Arc<str>, Arc<str>, Arc<str>);

/// `published` of a slot the view does not hold.
const UNPUBLISHED: u16 = u16::MAX;

#[derive(Default)]
pub(super) struct Slots {
    slots: Vec<Option<PeriodTotals>>,
    /// Per slot: how many meters the view's copy has ([`UNPUBLISHED`]: none).
    published: Vec<u16>,
    /// Slots free for reuse: the view knows they are free.
    free: Vec<u32>,
    /// Slots freed since the last output: told to the view with it, reused after.
    freed: Vec<u32>,
    /// Per slot: set while it is in the output being built (each slot is sent once a job).
    marked: Vec<bool>,
}

impl Slots {
    /// Puts a new totals in a slot; its number.
    pub(super) fn insert(&mut self, totals: PeriodTotals) -> u32 {
        match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some(totals);
                slot
            }
            None => {
                self.slots.push(Some(totals));
                self.published.push(UNPUBLISHED);
                self.marked.push(false);
                (self.slots.len() - 1) as u32
            }
        }
    }

    pub(super) fn get(&self, slot: u32) -> Option<&PeriodTotals> {
        self.slots.get(slot as usize).and_then(Option::as_ref)
    }

    /// The totals in `slot`; the slot is one of the shard's accounts' (not freed).
    pub(super) fn get_mut(&mut self, slot: u32) -> &mut PeriodTotals {
        // Invariant: callers hold slots from an account's list, and freed slots leave the list.
        self.slots[slot as usize].as_mut().expect("a slot in use")
    }

    /// Frees a slot (its period closed).
    pub(super) fn remove(&mut self, slot: u32) {
        if let Some(s) = self.slots.get_mut(slot as usize)
            && s.take().is_some()
        {
            self.published[slot as usize] = UNPUBLISHED;
            self.freed.push(slot);
        }
    }

    /// Every totals held.
    pub(super) fn iter(&self) -> impl Iterator<Item = (u32, &PeriodTotals)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|t| (i as u32, t)))
    }

    /// Hands every totals to the view at start, as published, and each one's (account, period,
    /// plan) to `keys`; slots freed before are free.
    pub(super) fn install(&mut self, shard: usize, table: &TotalsTable, keys: &mut Vec<OpenKey>) {
        for (slot, totals) in self.slots.iter().enumerate() {
            if let Some(t) = totals {
                keys.push((t.account.clone(), t.period.clone(), t.plan.clone()));
                table.install(shard, slot as u32, t.clone());
                self.published[slot] = u16::try_from(t.meters.len()).unwrap_or(UNPUBLISHED);
            }
        }
        self.free.append(&mut self.freed);
    }

    /// What a job changed, for its output: the slots freed since the last output, then each
    /// touched slot once, whole when the view does not have all its meters, else its numbers;
    /// and the accounts of the touched slots (those its records are of).
    pub(super) fn delta(&mut self, touched: &[u32], out: &mut TotalsDelta, accounts: &mut Vec<Arc<str>>) {
        for &slot in &self.freed {
            out.changes.push(TotalsChange::Freed(slot));
        }
        self.free.append(&mut self.freed);
        for &slot in touched {
            let i = slot as usize;
            if self.marked[i] {
                continue;
            }
            let Some(t) = self.slots[i].as_ref() else {
                continue;
            };
            self.marked[i] = true;
            accounts.push(t.account.clone());
            // A totals with more meters than u16 counts is sent whole each time.
            let meters = u16::try_from(t.meters.len()).unwrap_or(UNPUBLISHED);
            if self.published[i] != meters || meters == UNPUBLISHED {
                out.changes.push(TotalsChange::Whole(slot, t.clone()));
                self.published[i] = meters;
                continue;
            }
            out.changes.push(TotalsChange::Values {
                slot,
                total_charge: t.total_charge,
                meters: u32::from(meters),
            });
            out.meters.extend(t.meters.iter().map(|m| MeterValues {
                quantity: m.quantity,
                rated_quantity: m.rated_quantity,
                charge: m.charge,
                events: m.events,
            }));
        }
        for &slot in touched {
            self.marked[slot as usize] = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use rust_decimal::Decimal;

    use super::*;
    use crate::domain::money::{InvoiceRounding, RoundingMode};

    fn totals(account: &str) -> PeriodTotals {
        PeriodTotals::new(
            account.into(),
            "2026-12".into(),
            "basic".into(),
            "EUR".parse().unwrap(),
            InvoiceRounding {
                places: 2,
                mode: RoundingMode::HalfUp,
            },
        )
    }

    fn kinds(delta: &TotalsDelta) -> Vec<String> {
        delta
            .changes
            .iter()
            .map(|c| match c {
                TotalsChange::Freed(s) => format!("freed {s}"),
                TotalsChange::Whole(s, _) => format!("whole {s}"),
                TotalsChange::Values { slot, meters, .. } => format!("values {slot} ({meters} meters)"),
            })
            .collect()
    }

    #[test]
    fn a_totals_goes_whole_once_then_by_numbers_until_it_gains_a_meter() {
        let mut slots = Slots::default();
        let a = slots.insert(totals("a"));
        slots.get_mut(a).add("calls", Decimal::ONE, Decimal::ONE, Decimal::ONE);
        let (mut delta, mut accounts) = (TotalsDelta::default(), Vec::new());
        slots.delta(&[a, a], &mut delta, &mut accounts);
        assert_eq!(kinds(&delta), ["whole 0"]);
        assert_eq!(accounts.len(), 1, "a slot touched twice is sent once");
        let mut delta = TotalsDelta::default();
        slots.get_mut(a).add("calls", Decimal::ONE, Decimal::ONE, Decimal::ONE);
        slots.delta(&[a], &mut delta, &mut accounts);
        assert_eq!(kinds(&delta), ["values 0 (1 meters)"]);
        assert_eq!(delta.meters[0].events, 2);
        let mut delta = TotalsDelta::default();
        slots.get_mut(a).add("sms", Decimal::ONE, Decimal::ONE, Decimal::ONE);
        slots.delta(&[a], &mut delta, &mut accounts);
        assert_eq!(kinds(&delta), ["whole 0"]);
    }

    #[test]
    fn a_freed_slot_is_told_to_the_view_before_it_is_reused() {
        let mut slots = Slots::default();
        let a = slots.insert(totals("a"));
        let b = slots.insert(totals("b"));
        slots.remove(a);
        let c = slots.insert(totals("c"));
        assert_ne!(c, a, "not reused before the view knows it is free");
        let (mut delta, mut accounts) = (TotalsDelta::default(), Vec::new());
        slots.delta(&[b], &mut delta, &mut accounts);
        assert_eq!(kinds(&delta), ["freed 0", "whole 1"]);
        let d = slots.insert(totals("d"));
        assert_eq!(d, a, "reused once told");
        assert_eq!(slots.iter().count(), 3);
    }
}
