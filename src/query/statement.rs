//! `Statement`: the account's records that count in the period read back, the billing cycle's
//! sections built from them ([`crate::billing::statement`]), and their proto form.

use rust_decimal::Decimal;
use tonic::Request;

use super::{QueryService, blocking, scoped};
use crate::billing::accrual::accrues;
use crate::billing::statement::{Line, Section, sections};
use crate::domain::aggregate::AccountPeriod;
use crate::edge::ApiError;
use crate::wire::convert::{currency_total_to_proto, status_label};
use crate::wire::proto;

impl QueryService {
    pub(super) async fn statement(
        &self,
        request: Request<proto::StatementRequest>,
    ) -> Result<proto::Statement, ApiError> {
        scoped(&request, &request.get_ref().account_id)?;
        let req = request.into_inner();
        let totals = match self.totals(&req.account_id, &req.period) {
            Ok(t) => t,
            // Nothing charged yet, but a subscription with fees or a minimum covers the period:
            // the statement shows what accrues.
            Err(ApiError::NoTotals { .. })
                if accrues(&self.pipeline.context().load(), &req.account_id, &req.period) =>
            {
                AccountPeriod::default()
            }
            Err(e) => return Err(e),
        };
        let records = self.records.clone();
        let (account, period) = (req.account_id.clone(), req.period.clone());
        let records = blocking(move || {
            let mut found = Vec::new();
            records
                .account_records(&account, 0, |_, _, r| {
                    // What counts in the period: its records, and corrections of closed
                    // periods booked into it.
                    if r.booked().1 == period {
                        found.push(r);
                    }
                    true
                })
                .map(|()| found)
        })
        .await?;
        let context = self.pipeline.context().load();
        let sections = sections(
            &context,
            self.pipeline.committed(),
            &req.account_id,
            &req.period,
            &totals,
            &records,
        )?;
        Ok(to_proto(req.account_id, req.period, &totals, sections))
    }
}

/// The proto form of the statement of (account, period): one section per plan, sums per
/// currency; the top-level figures only when the period has one currency.
pub fn to_proto(account: String, period: String, totals: &AccountPeriod, sections: Vec<Section>) -> proto::Statement {
    let by_currency = totals.by_currency();
    let several = sections.len() > 1;
    let closed = sections.iter().all(|s| s.closed);
    let mut lines = Vec::new();
    let mut reply_sections = Vec::with_capacity(sections.len());
    let (mut subtotal, mut discount, mut total) = (Decimal::ZERO, Decimal::ZERO, Decimal::ZERO);
    for section in sections {
        let t = &section.totals;
        let s = section.statement;
        let (from, to) = section
            .covered
            .map(|(a, b)| (a.to_rfc3339(), b.to_rfc3339()))
            .unwrap_or_default();
        let own: Vec<proto::StatementLine> = s.lines.into_iter().map(line_to_proto).collect();
        if several {
            lines.push(proto::StatementLine {
                meter: String::new(),
                description: format!("plan {} ({}) from {from} to {to}", t.plan, t.currency),
                amount: String::new(),
            });
        }
        lines.extend(own.iter().cloned());
        subtotal += s.subtotal;
        discount += s.discount;
        total += s.total;
        reply_sections.push(proto::StatementSection {
            plan: t.plan.to_string(),
            currency: t.currency.to_string(),
            from,
            to,
            status: status_label(section.closed).to_string(),
            lines: own,
            subtotal: s.subtotal.to_string(),
            discount: s.discount.to_string(),
            total_charge: s.total.to_string(),
            total_amount: t.rounding.apply(s.total).to_string(),
        });
    }
    let mut reply = proto::Statement {
        account_id: account,
        period,
        status: status_label(closed).to_string(),
        lines,
        by_currency: by_currency.iter().map(currency_total_to_proto).collect(),
        sections: reply_sections,
        ..proto::Statement::default()
    };
    if let ([one], Some(plan)) = (by_currency.as_slice(), totals.latest_plan()) {
        reply.plan = plan.to_string();
        reply.currency = one.currency.to_string();
        reply.subtotal = subtotal.to_string();
        reply.discount = discount.to_string();
        reply.total_charge = total.to_string();
        reply.total_amount = one.amount.to_string();
    }
    reply
}

fn line_to_proto(l: Line) -> proto::StatementLine {
    proto::StatementLine {
        meter: l.meter,
        description: l.description,
        amount: l.amount.map(|a| a.to_string()).unwrap_or_default(),
    }
}
