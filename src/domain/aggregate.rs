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

    /// Adds one rated record.
    pub fn add(&mut self, meter: &str, quantity: Decimal, rated_quantity: Decimal, charge: Decimal) {
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
        let m = &mut self.meters[index];
        m.quantity += quantity;
        m.rated_quantity += rated_quantity;
        m.charge += charge;
        m.events += 1;
        self.total_charge += charge;
    }

    /// The invoice amount: the exact total rounded with the plan's rounding.
    pub fn amount(&self) -> Decimal {
        self.rounding.apply(self.total_charge)
    }
}
