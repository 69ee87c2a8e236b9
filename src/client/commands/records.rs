//! `ratectl records`: the rated records of one account, oldest first; and the JSON form of a
//! record that `explain` and `export` share.

use serde_json::json;

use super::DEFAULT_TARGET;
use crate::client::connect::Access;
use crate::client::output::{Failure, Printed, rpc_failure};
use crate::wire::proto::{self, query_client::QueryClient};

#[derive(clap::Args)]
pub struct RecordsArgs {
    #[arg(long)]
    account: String,
    /// Event time from (RFC 3339, inclusive).
    #[arg(long)]
    from: Option<String>,
    /// Event time to (RFC 3339, exclusive).
    #[arg(long)]
    to: Option<String>,
    /// Most records to print.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    #[arg(long, default_value = DEFAULT_TARGET)]
    target: String,
}

/// A rated record as one JSON object.
pub fn record_json(r: &proto::RatedRecord) -> serde_json::Value {
    let attributes: serde_json::Map<String, serde_json::Value> = r
        .attributes
        .iter()
        .map(|a| (a.key.clone(), a.value.clone().into()))
        .collect();
    json!({
        "event_id": r.event_id, "account": r.account_id, "meter": r.meter, "quantity": r.quantity,
        "timestamp": r.timestamp, "attributes": attributes, "plan": r.plan_id, "version": r.version,
        "period": r.period, "rated_quantity": r.rated_quantity, "charge": r.charge,
        "period_usage_before": r.period_usage_before,
    })
}

pub async fn run(args: &RecordsArgs, access: &Access) -> Result<Printed, Failure> {
    let mut client = QueryClient::new(access.authed(&args.target).await.map_err(Failure::new)?);
    let mut rows = Vec::new();
    let mut token = String::new();
    while rows.len() < args.limit {
        let request = proto::ListRatedRecordsRequest {
            account_id: args.account.clone(),
            from: args.from.clone().unwrap_or_default(),
            to: args.to.clone().unwrap_or_default(),
            page_size: (args.limit - rows.len()).min(1000) as u32,
            page_token: token,
        };
        let page = client
            .list_rated_records(request)
            .await
            .map_err(rpc_failure)?
            .into_inner();
        rows.extend(page.records);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let lines = rows
        .iter()
        .map(|r| {
            format!(
                "{} {} {} {} {} -> {} ({} v{})",
                r.timestamp, r.event_id, r.meter, r.quantity, r.period, r.charge, r.plan_id, r.version
            )
        })
        .collect();
    let json = json!({ "records": rows.iter().map(record_json).collect::<Vec<_>>() });
    Ok(Printed::new(lines, json))
}
