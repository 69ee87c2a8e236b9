//! Per account and billing period totals: the aggregates a shard owns and the committed view
//! serves. Quantities and charges are exact sums; the invoice amount is rounded on demand.

use std::sync::Arc;

use rust_decimal::Decimal;

use super::money::{Currency, InvoiceRounding};

#[derive(Debug, Clone, PartialEq)]
pub struct MeterTotals {
    pub meter: Arc<str>,
    /// Sum of the accepted events' quantities as sent.
    pub quantity: Decimal,
    /// Sum of the rated quantities (after increments): the period-to-date usage of the meter.
    pub rated_quantity: Decimal,
    /// Exact sum of the records' charges.
    pub charge: Decimal,
    pub events: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PeriodTotals {
    pub account: Arc<str>,
    pub period: Arc<str>,
    pub plan: Arc<str>,
    pub currency: Currency,
    pub rounding: InvoiceRounding,
    pub total_charge: Decimal,
    pub meters: Vec<MeterTotals>,
}

impl PeriodTotals {
    pub fn new(
        account: Arc<str>,
        period: Arc<str>,
        plan: Arc<str>,
        currency: Currency,
        rounding: InvoiceRounding,
    ) -> Self {
        PeriodTotals {
            account,
            period,
            plan,
            currency,
            rounding,
            total_charge: Decimal::ZERO,
            meters: Vec::new(),
        }
    }

    /// The period-to-date rated quantity of `meter` (0 before its first event).
    pub fn usage(&self, meter: &str) -> Decimal {
        self.meters
            .iter()
            .find(|m| &*m.meter == meter)
            .map_or(Decimal::ZERO, |m| m.rated_quantity)
    }

    /// The charge and the number of records under `meter` (zeros before its first record).
    pub fn charged(&self, meter: &str) -> (Decimal, u64) {
        self.meters
            .iter()
            .find(|m| &*m.meter == meter)
            .map_or((Decimal::ZERO, 0), |m| (m.charge, m.events))
    }

    /// Adds one rated record.
    pub fn add(&mut self, meter: &str, quantity: Decimal, rated_quantity: Decimal, charge: Decimal) {
        let m = self.meter_mut(meter);
        m.quantity += quantity;
        m.rated_quantity += rated_quantity;
        m.charge += charge;
        m.events += 1;
        self.total_charge += charge;
    }

    /// Adds what a record changes: a reversal counts one event less (its amounts are negative).
    pub fn add_counted(
        &mut self,
        meter: &str,
        quantity: Decimal,
        rated_quantity: Decimal,
        charge: Decimal,
        events: i64,
    ) {
        let m = self.meter_mut(meter);
        m.quantity += quantity;
        m.rated_quantity += rated_quantity;
        m.charge += charge;
        m.events = m.events.saturating_add_signed(events);
        self.total_charge += charge;
    }

    /// The totals of `meter`, added (at zero) when absent.
    fn meter_mut(&mut self, meter: &str) -> &mut MeterTotals {
        let index = match self.meters.iter().position(|m| &*m.meter == meter) {
            Some(i) => i,
            None => {
                self.meters.push(MeterTotals {
                    meter: Arc::from(meter),
                    quantity: Decimal::ZERO,
                    rated_quantity: Decimal::ZERO,
                    charge: Decimal::ZERO,
                    events: 0,
                });
                self.meters.len() - 1
            }
        };
        &mut self.meters[index]
    }

    /// The invoice amount: the exact total rounded with the plan's rounding.
    pub fn amount(&self) -> Decimal {
        self.rounding.apply(self.total_charge)
    }
}

/// One account's totals in one billing period (by label): one part per plan that rated usage in
/// it, in the order of first use. A plan change inside the period starts a new part, so the new
/// plan's tiers and allowances count from zero; two subscriptions to the same plan in one period
/// share a part. Sums are only ever taken within one currency.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AccountPeriod {
    pub parts: Vec<PeriodTotals>,
}

/// The exact charge and invoice amount of one currency within an account's period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CurrencyTotal {
    pub currency: Currency,
    pub charge: Decimal,
    /// The sum of the parts' amounts, each rounded with its own plan's rounding.
    pub amount: Decimal,
}

impl AccountPeriod {
    pub fn part(&self, plan: &str) -> Option<&PeriodTotals> {
        self.parts.iter().find(|t| &*t.plan == plan)
    }

    /// The totals per currency, sorted by currency code.
    pub fn by_currency(&self) -> Vec<CurrencyTotal> {
        let mut sums: Vec<CurrencyTotal> = Vec::with_capacity(1);
        for t in &self.parts {
            match sums.iter_mut().find(|s| s.currency == t.currency) {
                Some(s) => {
                    s.charge += t.total_charge;
                    s.amount += t.amount();
                }
                None => sums.push(CurrencyTotal {
                    currency: t.currency,
                    charge: t.total_charge,
                    amount: t.amount(),
                }),
            }
        }
        sums.sort_by(|a, b| a.currency.as_str().cmp(b.currency.as_str()));
        sums
    }

    /// The period's one currency, or `None` when its parts are billed in several.
    pub fn single_currency(&self) -> Option<Currency> {
        let first = self.parts.first()?.currency;
        self.parts.iter().all(|t| t.currency == first).then_some(first)
    }

    /// The plan of the part used last (the subscription in force most recently).
    pub fn latest_plan(&self) -> Option<&Arc<str>> {
        self.parts.last().map(|t| &t.plan)
    }

    /// Every meter's totals summed over the parts (call only when the period has one currency:
    /// the charges are added).
    pub fn merged_meters(&self) -> Vec<MeterTotals> {
        let mut merged: Vec<MeterTotals> = Vec::new();
        for m in self.parts.iter().flat_map(|t| t.meters.iter()) {
            match merged.iter_mut().find(|x| x.meter == m.meter) {
                Some(x) => {
                    x.quantity += m.quantity;
                    x.rated_quantity += m.rated_quantity;
                    x.charge += m.charge;
                    x.events += m.events;
                }
                None => merged.push(m.clone()),
            }
        }
        merged
    }
}
