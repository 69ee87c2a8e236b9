//! How one plan's part of an account-period stands: the bounds of the plan's period with that
//! label, whether it is closed, and the span of it the account's subscriptions to the plan cover.
//! Totals, statements and projections show each part through it.

use chrono::{DateTime, Utc};

use crate::domain::aggregate::PeriodTotals;
use crate::domain::period::Period;
use crate::pipeline::{Committed, RatingContext};

/// How one plan's part of an account-period is shown.
pub struct PartView {
    pub closed: bool,
    /// The plan's period with this label, while the plan is in the catalogue.
    pub bounds: Option<Period>,
    /// The span of the period the account's subscriptions to the plan cover.
    pub covered: Option<(DateTime<Utc>, DateTime<Utc>)>,
}

impl PartView {
    pub fn of(context: &RatingContext, committed: &Committed, part: &PeriodTotals) -> PartView {
        let bounds = context
            .catalogue
            .plan(&part.plan)
            .and_then(|p| p.period.period_labelled(p.time_zone, &part.period));
        let covered = bounds.as_ref().map(|b| {
            context
                .subscriptions
                .coverage(&part.account, &part.plan, b.start, b.end)
        });
        PartView {
            closed: committed.is_closed(&part.plan, &part.period),
            bounds,
            covered,
        }
    }
}
