//! `ratectl explain`: how one rated record's charge was computed.

use serde_json::json;

use super::records::record_json;
use crate::client::connect::Access;
use crate::client::output::{Failure, Printed, rpc_failure};
use crate::wire::proto::{self, query_client::QueryClient};

#[derive(clap::Args)]
pub struct ExplainArgs {
    /// The account (event ids are unique per account); without it every block is searched.
    #[arg(long, default_value = "")]
    account: String,
    #[arg(long)]
    event_id: String,
}

pub async fn run(args: &ExplainArgs, access: &Access) -> Result<Printed, Failure> {
    let request = proto::ExplainRecordRequest {
        account_id: args.account.clone(),
        event_id: args.event_id.clone(),
    };
    let e = QueryClient::new(access.authed().await.map_err(Failure::new)?)
        .explain_record(request)
        .await
        .map_err(rpc_failure)?
        .into_inner();
    let explanation: serde_json::Value = serde_json::from_str(&e.explanation_json).unwrap_or_default();
    let json = json!({ "record": e.record.as_ref().map(record_json), "explain": explanation });
    Ok(Printed::line(e.explanation_text, json))
}
