//! `ratectl totals`: the committed totals of one account and billing period.

use serde_json::json;

use super::DEFAULT_TARGET;
use crate::client::connect::Access;
use crate::client::output::{Failure, Printed, rpc_failure};
use crate::wire::proto::{self, query_client::QueryClient};

#[derive(clap::Args)]
pub struct TotalsArgs {
    #[arg(long)]
    account: String,
    /// Period label, e.g. 2026-11.
    #[arg(long)]
    period: String,
    /// Only this meter.
    #[arg(long)]
    meter: Option<String>,
    #[arg(long, default_value = DEFAULT_TARGET)]
    target: String,
}

pub async fn run(args: &TotalsArgs, access: &Access) -> Result<Printed, Failure> {
    let mut client = QueryClient::new(access.authed(&args.target).await.map_err(Failure::new)?);
    let request = proto::GetTotalsRequest {
        account_id: args.account.clone(),
        period: args.period.clone(),
        meter: args.meter.clone().unwrap_or_default(),
    };
    let t = client.get_totals(request).await.map_err(rpc_failure)?.into_inner();
    let meters: serde_json::Map<String, serde_json::Value> = t
        .meters
        .iter()
        .map(|m| {
            let v = json!({
                "quantity": m.quantity, "rated_quantity": m.rated_quantity, "charge": m.charge,
                "amount": m.amount, "events": m.events,
            });
            (m.meter.clone(), v)
        })
        .collect();
    let object = json!({
        "account": t.account_id, "period": t.period, "currency": t.currency, "plan": t.plan,
        "total_charge": t.total_charge, "total_amount": t.total_amount, "meters": meters,
        "status": t.status, "projected_charge": t.projected_charge,
        "period_start": t.period_start, "period_end": t.period_end,
    });
    let mut lines = vec![format!(
        "account {} period {} plan {} ({})",
        t.account_id, t.period, t.plan, t.currency
    )];
    for m in &t.meters {
        lines.push(format!(
            "  {:<20} quantity {:>16}  events {:>8}  charge {}",
            m.meter, m.quantity, m.events, m.charge
        ));
    }
    lines.push(format!(
        "total charge {}  invoice amount {} {}",
        t.total_charge, t.total_amount, t.currency
    ));
    lines.push(format!(
        "status {}, projected period-end charge {}",
        t.status, t.projected_charge
    ));
    Ok(Printed::new(lines, object))
}
