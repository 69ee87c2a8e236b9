//! `ratectl statement`: invoice-ready line items of one account and period.

use serde_json::json;

use super::DEFAULT_TARGET;
use crate::client::connect::Access;
use crate::client::output::{Failure, Printed, rpc_failure};
use crate::wire::proto::{self, query_client::QueryClient};

#[derive(clap::Args)]
pub struct StatementArgs {
    #[arg(long)]
    account: String,
    #[arg(long)]
    period: String,
    #[arg(long, default_value = DEFAULT_TARGET)]
    target: String,
}

pub async fn run(args: &StatementArgs, access: &Access) -> Result<Printed, Failure> {
    let request = proto::StatementRequest {
        account_id: args.account.clone(),
        period: args.period.clone(),
    };
    let s = QueryClient::new(access.authed(&args.target).await.map_err(Failure::new)?)
        .statement(request)
        .await
        .map_err(rpc_failure)?
        .into_inner();
    let json_lines: Vec<_> = s
        .lines
        .iter()
        .map(|l| json!({ "meter": l.meter, "description": l.description, "amount": l.amount }))
        .collect();
    let json = json!({
        "account": s.account_id, "period": s.period, "plan": s.plan, "currency": s.currency,
        "status": s.status, "lines": json_lines, "subtotal": s.subtotal, "discount": s.discount,
        "total_charge": s.total_charge, "total_amount": s.total_amount,
    });
    let mut lines = vec![format!(
        "statement {} {} ({}, {}, {})",
        s.account_id, s.period, s.plan, s.currency, s.status
    )];
    for l in &s.lines {
        lines.push(format!("  {:<70} {:>20}", l.description, l.amount));
    }
    lines.push(format!("  {:<70} {:>20}", "subtotal", s.subtotal));
    lines.push(format!("  {:<70} {:>20}", "discount", s.discount));
    lines.push(format!("  {:<70} {:>20}", "total (exact)", s.total_charge));
    lines.push(format!(
        "  {:<70} {:>20}",
        format!("amount due ({})", s.currency),
        s.total_amount
    ));
    Ok(Printed::new(lines, json))
}
