//! What accrues in an open period and is not charged yet: fees in arrears (charged when the
//! period closes) and the minimum commitment's true-up. A statement shows them as lines without
//! an amount, in their plan's section (a section of its own when the plan has no usage).

use std::sync::Arc;

use rust_decimal::Decimal;

use super::fees::toward_minimum;
use super::proration::{fees_due, minimum_due};
use super::statement::{Line, Section, Statement};
use crate::domain::aggregate::PeriodTotals;
use crate::domain::subscription::windows_of;
use crate::domain::tariff::Billing;
use crate::pipeline::{Committed, RatingContext};

/// True when a subscription of `account` to a plan with fees or a minimum covers part of its
/// period labelled `label`: its statement has something to show before anything is charged.
pub fn accrues(context: &RatingContext, account: &str, label: &str) -> bool {
    context.subscriptions.of(account).iter().any(|s| {
        context.catalogue.plan(&s.plan_id).is_some_and(|p| {
            p.bills_without_usage()
                && p.period
                    .period_labelled(p.time_zone, label)
                    .is_some_and(|b| s.from < b.end && s.to.is_none_or(|to| to > b.start))
        })
    })
}

/// Adds to `sections` the lines of what accrues in the open periods labelled `label` of
/// `account`'s plans.
pub fn add_accruing(
    context: &RatingContext,
    committed: &Committed,
    account: &str,
    label: &str,
    sections: &mut Vec<Section>,
) {
    for plan in context.catalogue.plans() {
        let windows = windows_of(context.subscriptions.of(account), &plan.id);
        let Some(period) = plan.period.period_labelled(plan.time_zone, label) else {
            continue;
        };
        if windows.is_empty() || committed.is_closed(&plan.id, label) {
            continue;
        }
        let line = |description: String| Line {
            meter: String::new(),
            description,
            amount: None,
        };
        let mut accruing: Vec<Line> = fees_due(plan, &windows, &period)
            .into_iter()
            .filter(|f| f.billing == Billing::InArrears)
            .map(|f| {
                line(format!(
                    "fee {} (in arrears, accruing; charged when the period closes): {} = {}",
                    f.name,
                    f.proration(),
                    f.due
                ))
            })
            .collect();
        if let Some(minimum) = minimum_due(plan, &windows, &period) {
            let part = sections.iter().find(|s| *s.totals.plan == *plan.id).map(|s| &s.totals);
            let subtotal = part.map_or(Decimal::ZERO, toward_minimum);
            let true_up = (minimum.due - subtotal).max(Decimal::ZERO);
            accruing.push(line(format!(
                "minimum commitment {} = {}; subtotal so far {subtotal}: true-up at the close {true_up} unless more is \
                 charged",
                minimum.proration(),
                minimum.due
            )));
        }
        if accruing.is_empty() {
            continue;
        }
        match sections.iter_mut().find(|s| *s.totals.plan == *plan.id) {
            Some(section) => section.statement.lines.extend(accruing),
            None => sections.push(Section {
                totals: PeriodTotals::new(
                    Arc::from(account),
                    Arc::from(label),
                    Arc::from(plan.id.as_str()),
                    plan.currency,
                    plan.rounding,
                ),
                closed: false,
                covered: Some(
                    context
                        .subscriptions
                        .coverage(account, &plan.id, period.start, period.end),
                ),
                statement: Statement {
                    lines: accruing,
                    subtotal: Decimal::ZERO,
                    discount: Decimal::ZERO,
                    total: Decimal::ZERO,
                },
            }),
        }
    }
}
