//! The fields of the projection's hashes (docs/redis.md): an aggregate's and a balance's.

use std::fmt::Write as _;

use crate::domain::aggregate::{AccountPeriod, PeriodTotals};
use crate::domain::balance::at_record_scale;

/// The fields of a balance hash: per currency its available, reserved and credit limit, and the
/// epoch they were read at.
pub fn balance_fields(
    view: &crate::domain::balance::BalanceView,
    epoch: u64,
    updated_at: &str,
) -> Vec<(String, String)> {
    let mut f = vec![
        ("epoch".to_string(), epoch.to_string()),
        ("updated_at".to_string(), updated_at.to_string()),
    ];
    for (currency, available, reserved, credit_limit) in &view.purses {
        f.push((format!("{currency}:available"), at_record_scale(*available).to_string()));
        f.push((format!("{currency}:reserved"), at_record_scale(*reserved).to_string()));
        f.push((
            format!("{currency}:credit_limit"),
            at_record_scale(*credit_limit).to_string(),
        ));
    }
    f
}

/// The layout version of the aggregate hashes (docs/redis.md), written in their `layout` field.
pub const LAYOUT: u32 = 2;

/// The fields of an aggregate hash (layout 2), and the layout-1 fields that do not hold for it:
/// a period billed in several currencies has no single currency, plan or total, so those fields
/// are removed rather than left stale. A period under one plan (nearly every one) is written as
/// in layout 1 plus `layout`: the per-currency and per-plan fields appear with a second plan.
/// `closed` tells whether one plan's period is closed.
pub fn fields(
    period: &AccountPeriod,
    closed: impl Fn(&PeriodTotals) -> bool,
    epoch: u64,
    updated_at: &str,
) -> (Vec<(String, String)>, Vec<String>) {
    let status = |closed: bool| if closed { "closed" } else { "open" };
    let mut f = vec![
        ("layout".to_string(), LAYOUT.to_string()),
        (
            "status".to_string(),
            status(period.parts.iter().all(&closed)).to_string(),
        ),
        ("epoch".to_string(), epoch.to_string()),
        ("updated_at".to_string(), updated_at.to_string()),
    ];
    if let [t] = period.parts.as_slice() {
        f.extend([
            ("currency".to_string(), t.currency.to_string()),
            ("plan".to_string(), t.plan.to_string()),
            ("total:charge".to_string(), t.total_charge.to_string()),
            ("total:amount".to_string(), t.amount().to_string()),
        ]);
        for m in &t.meters {
            f.push((format!("{}:quantity", m.meter), m.quantity.normalize().to_string()));
            f.push((format!("{}:charge", m.meter), m.charge.to_string()));
            f.push((format!("{}:events", m.meter), m.events.to_string()));
        }
        return (f, Vec::new());
    }
    let currencies = period.by_currency();
    let list = |items: &mut dyn Iterator<Item = &str>| items.collect::<Vec<_>>().join(",");
    f.push((
        "currencies".to_string(),
        list(&mut currencies.iter().map(|c| c.currency.as_str())),
    ));
    f.push(("plans".to_string(), list(&mut period.parts.iter().map(|t| &*t.plan))));
    let mut gone = Vec::new();
    match (&currencies[..], period.latest_plan()) {
        ([one], Some(plan)) => f.extend([
            ("currency".to_string(), one.currency.to_string()),
            ("plan".to_string(), plan.to_string()),
            ("total:charge".to_string(), one.charge.to_string()),
            ("total:amount".to_string(), one.amount.to_string()),
        ]),
        _ => gone.extend(["currency", "plan", "total:charge", "total:amount"].map(String::from)),
    }
    for c in &currencies {
        f.push((format!("total:{}:charge", c.currency), c.charge.to_string()));
        f.push((format!("total:{}:amount", c.currency), c.amount.to_string()));
    }
    for t in &period.parts {
        f.push((format!("plan:{}:currency", t.plan), t.currency.to_string()));
        f.push((format!("plan:{}:status", t.plan), status(closed(t)).to_string()));
        f.push((format!("plan:{}:charge", t.plan), t.total_charge.to_string()));
        f.push((format!("plan:{}:amount", t.plan), t.amount().to_string()));
        for m in &t.meters {
            f.push((format!("plan:{}:{}:charge", t.plan, m.meter), m.charge.to_string()));
        }
    }
    let single = currencies.len() == 1;
    for m in &period.merged_meters() {
        f.push((format!("{}:quantity", m.meter), m.quantity.normalize().to_string()));
        f.push((format!("{}:events", m.meter), m.events.to_string()));
        if single {
            f.push((format!("{}:charge", m.meter), m.charge.to_string()));
        } else {
            gone.push(format!("{}:charge", m.meter));
        }
    }
    (f, gone)
}

/// Appends to `pipe` the `HMSET` (as `hset_multiple` sends) of an aggregate under one plan that is open (nearly every one):
/// the fields and values of [`fields`], in its order, written straight into the command (a
/// scratch string for the numbers, no `String` per field).
pub(super) fn hset_single(
    pipe: &mut redis::Pipeline,
    hash: &str,
    t: &PeriodTotals,
    epoch: u64,
    updated_at: &str,
    scratch: &mut String,
) {
    pipe.cmd("HMSET").arg(hash);
    pipe.arg("layout");
    arg_shown(pipe, scratch, &LAYOUT);
    pipe.arg("status").arg("open").arg("epoch");
    arg_shown(pipe, scratch, &epoch);
    pipe.arg("updated_at")
        .arg(updated_at)
        .arg("currency")
        .arg(t.currency.as_str());
    pipe.arg("plan").arg(&*t.plan).arg("total:charge");
    arg_shown(pipe, scratch, &t.total_charge);
    pipe.arg("total:amount");
    arg_shown(pipe, scratch, &t.amount());
    for m in &t.meters {
        for (suffix, value) in [
            ("quantity", &m.quantity.normalize() as &dyn std::fmt::Display),
            ("charge", &m.charge),
            ("events", &m.events),
        ] {
            scratch.clear();
            let _ = write!(scratch, "{}:{suffix}", m.meter);
            pipe.arg(scratch.as_str());
            arg_shown(pipe, scratch, value);
        }
    }
    pipe.ignore();
}

/// Appends `value` as shown to the pipeline's last command, formatted in `scratch`.
fn arg_shown(pipe: &mut redis::Pipeline, scratch: &mut String, value: &dyn std::fmt::Display) {
    scratch.clear();
    let _ = write!(scratch, "{value}");
    pipe.arg(scratch.as_str());
}

#[cfg(test)]
mod tests {
    use rust_decimal::Decimal;

    use super::*;
    use crate::domain::money::{InvoiceRounding, RoundingMode};

    /// The direct writer sends byte for byte what the general one sends for an open single-plan
    /// aggregate.
    #[test]
    fn the_single_plan_writer_sends_the_fields_of_the_general_one() {
        let mut t = PeriodTotals::new(
            "acme".into(),
            "2026-12".into(),
            "basic".into(),
            "EUR".parse().unwrap(),
            InvoiceRounding {
                places: 2,
                mode: RoundingMode::HalfUp,
            },
        );
        t.add(
            "calls",
            Decimal::new(1500, 3),
            Decimal::TWO,
            Decimal::new(123_456_789, 9),
        );
        t.add("sms", Decimal::ONE, Decimal::ONE, Decimal::new(5, 2));
        let period = AccountPeriod { parts: vec![t.clone()] };
        let (values, gone) = fields(&period, |_| false, 42, "2026-12-08T01:00:00+00:00");
        assert!(gone.is_empty());
        let mut general = redis::pipe();
        general.hset_multiple("h", &values).ignore();
        let mut direct = redis::pipe();
        hset_single(
            &mut direct,
            "h",
            &t,
            42,
            "2026-12-08T01:00:00+00:00",
            &mut String::new(),
        );
        assert_eq!(
            String::from_utf8_lossy(&direct.get_packed_pipeline()),
            String::from_utf8_lossy(&general.get_packed_pipeline())
        );
    }
}
