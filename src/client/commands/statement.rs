//! `ratectl statement`: invoice-ready line items of one account and period.

use serde_json::json;

use super::by_currency_json;
use crate::client::connect::Access;
use crate::client::output::{Failure, Printed, rpc_failure};
use crate::wire::proto::{self, query_client::QueryClient};

#[derive(clap::Args)]
pub struct StatementArgs {
    #[arg(long)]
    account: String,
    #[arg(long)]
    period: String,
}

pub async fn run(args: &StatementArgs, access: &Access) -> Result<Printed, Failure> {
    let request = proto::StatementRequest {
        account_id: args.account.clone(),
        period: args.period.clone(),
    };
    let s = QueryClient::new(access.authed().await.map_err(Failure::new)?)
        .statement(request)
        .await
        .map_err(rpc_failure)?
        .into_inner();
    let lines_json = |lines: &[proto::StatementLine]| -> Vec<serde_json::Value> {
        lines
            .iter()
            .map(|l| json!({ "meter": l.meter, "description": l.description, "amount": l.amount }))
            .collect()
    };
    // With several currencies there is no single total: those keys are null, never a mixed sum.
    let single = |v: &str| if s.currency.is_empty() { json!(null) } else { json!(v) };
    let sections: Vec<serde_json::Value> = s
        .sections
        .iter()
        .map(|x| {
            json!({
                "plan": x.plan, "currency": x.currency, "from": x.from, "to": x.to, "status": x.status,
                "lines": lines_json(&x.lines), "subtotal": x.subtotal, "discount": x.discount,
                "total_charge": x.total_charge, "total_amount": x.total_amount,
            })
        })
        .collect();
    let json = json!({
        "account": s.account_id, "period": s.period, "plan": s.plan, "currency": single(&s.currency),
        "status": s.status, "lines": lines_json(&s.lines), "subtotal": single(&s.subtotal),
        "discount": single(&s.discount), "total_charge": single(&s.total_charge),
        "total_amount": single(&s.total_amount), "by_currency": by_currency_json(&s.by_currency), "sections": sections,
    });
    let mut lines = Vec::new();
    if let [one] = s.sections.as_slice() {
        lines.push(format!(
            "statement {} {} ({}, {}, {})",
            s.account_id, s.period, one.plan, one.currency, s.status
        ));
        section_rows(one, "amount due", &mut lines);
        return Ok(Printed::new(lines, json));
    }
    lines.push(format!("statement {} {} ({})", s.account_id, s.period, s.status));
    for x in &s.sections {
        lines.push(format!(
            "plan {} ({}) from {} to {}, {}",
            x.plan, x.currency, x.from, x.to, x.status
        ));
        section_rows(x, "plan amount", &mut lines);
    }
    for c in &s.by_currency {
        lines.push(row(&format!("amount due ({})", c.currency), &c.total_amount));
    }
    Ok(Printed::new(lines, json))
}

fn row(label: &str, amount: &str) -> String {
    format!("  {label:<70} {amount:>20}")
}

/// A section's lines, subtotal, discount, exact total and its amount under `amount_label`.
fn section_rows(x: &proto::StatementSection, amount_label: &str, lines: &mut Vec<String>) {
    lines.extend(x.lines.iter().map(|l| row(&l.description, &l.amount)));
    lines.push(row("subtotal", &x.subtotal));
    lines.push(row("discount", &x.discount));
    lines.push(row("total (exact)", &x.total_charge));
    lines.push(row(&format!("{amount_label} ({})", x.currency), &x.total_amount));
}
