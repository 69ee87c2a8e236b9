//! `ratectl totals`: the committed totals of one account and billing period.

use serde_json::json;

use super::by_currency_json;
use crate::client::connect::Access;
use crate::client::output::{Failure, Printed, rpc_failure};
use crate::domain::origin::{Origin, fee_name};
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
}

pub async fn run(args: &TotalsArgs, access: &Access) -> Result<Printed, Failure> {
    let mut client = QueryClient::new(access.authed().await.map_err(Failure::new)?);
    let request = proto::GetTotalsRequest {
        account_id: args.account.clone(),
        period: args.period.clone(),
        meter: args.meter.clone().unwrap_or_default(),
    };
    let t = client.get_totals(request).await.map_err(rpc_failure)?.into_inner();
    let meters_json = |meters: &[proto::MeterTotals]| -> serde_json::Map<String, serde_json::Value> {
        meters
            .iter()
            .map(|m| {
                let v = json!({
                    "quantity": m.quantity, "rated_quantity": m.rated_quantity, "charge": m.charge,
                    "amount": m.amount, "events": m.events,
                });
                (m.meter.clone(), v)
            })
            .collect()
    };
    // With several currencies there is no single total: those keys are null, never a mixed sum.
    let single = |v: &str| if t.currency.is_empty() { json!(null) } else { json!(v) };
    let subscriptions: Vec<serde_json::Value> = t
        .subscriptions
        .iter()
        .map(|s| {
            // Usage meters, recurring fees (`@fee:<name>`) and one-off charges (`@charge`) apart.
            let (own, usage): (Vec<proto::MeterTotals>, Vec<proto::MeterTotals>) = s
                .meters
                .iter()
                .cloned()
                .partition(|m| Origin::of_meter(&m.meter).is_own());
            let fees: Vec<serde_json::Value> = own
                .iter()
                .filter_map(|m| {
                    let name = fee_name(&m.meter)?;
                    Some(json!({ "name": name, "charge": m.charge, "records": m.events }))
                })
                .collect();
            let charges = own
                .iter()
                .find(|m| Origin::of_meter(&m.meter) == Origin::Charge)
                .map_or_else(
                    || json!({ "total_charge": "0", "count": 0 }),
                    |m| json!({ "total_charge": m.charge, "count": m.events }),
                );
            json!({
                "plan": s.plan, "currency": s.currency, "from": s.from, "to": s.to, "status": s.status,
                "total_charge": s.total_charge, "total_amount": s.total_amount,
                "meters": meters_json(&usage), "fees": fees, "charges": charges,
            })
        })
        .collect();
    let object = json!({
        "account": t.account_id, "period": t.period, "currency": single(&t.currency), "plan": t.plan,
        "total_charge": single(&t.total_charge), "total_amount": single(&t.total_amount),
        "meters": meters_json(&t.meters), "status": t.status,
        "projected_charge": single(&t.projected_charge),
        "period_start": t.period_start, "period_end": t.period_end,
        "by_currency": by_currency_json(&t.by_currency), "subscriptions": subscriptions,
    });
    let meter_line = |m: &proto::MeterTotals| {
        format!(
            "  {:<20} quantity {:>16}  events {:>8}  charge {}",
            m.meter, m.quantity, m.events, m.charge
        )
    };
    let mut lines = Vec::new();
    if let [one] = t.subscriptions.as_slice() {
        lines.push(format!(
            "account {} period {} plan {} ({})",
            t.account_id, t.period, one.plan, one.currency
        ));
        lines.extend(t.meters.iter().map(meter_line));
    } else {
        lines.push(format!("account {} period {}", t.account_id, t.period));
        for s in &t.subscriptions {
            lines.push(format!(
                "plan {} ({}) from {} to {}, {}",
                s.plan, s.currency, s.from, s.to, s.status
            ));
            lines.extend(s.meters.iter().map(meter_line));
            lines.push(format!(
                "  plan total charge {}  amount {} {}",
                s.total_charge, s.total_amount, s.currency
            ));
        }
    }
    for c in &t.by_currency {
        lines.push(format!(
            "total charge {}  invoice amount {} {}",
            c.total_charge, c.total_amount, c.currency
        ));
    }
    if t.currency.is_empty() {
        lines.push(format!("status {} (no projection across currencies)", t.status));
    } else {
        lines.push(format!(
            "status {}, projected period-end charge {}",
            t.status, t.projected_charge
        ));
    }
    Ok(Printed::new(lines, object))
}
