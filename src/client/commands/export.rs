//! `ratectl export`: every rated record of a period (or of one account in it) to CSV or JSONL,
//! streamed page by page (bounded memory), for audits and ERP or data-warehouse loads.

use std::io::Write;
use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressStyle};
use rust_decimal::Decimal;
use serde_json::json;

use super::records::{counted_period, record_json};
use crate::client::connect::Access;
use crate::client::output::{Failure, Printed, rpc_failure};
use crate::wire::proto::{self, query_client::QueryClient};

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    Csv,
    Jsonl,
}

#[derive(clap::Args)]
pub struct ExportArgs {
    #[arg(long)]
    period: String,
    #[arg(long)]
    account: Option<String>,
    #[arg(long, value_enum)]
    format: ExportFormat,
    #[arg(long)]
    out: PathBuf,
}

/// One CSV field, quoted when it holds a comma, a quote or a line break.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// The CSV columns; the correction columns were appended (issue 17) and are empty for records
/// no correction wrote.
const EXPORT_COLUMNS: &str = "event_id,account,meter,quantity,timestamp,plan,version,period,rated_quantity,period_usage_before,charge,attributes,correction_role,correction_action,correction_id,correction_reason,booked_plan,booked_period";

fn export_row(r: &proto::RatedRecord, format: ExportFormat) -> String {
    match format {
        ExportFormat::Jsonl => record_json(r).to_string(),
        ExportFormat::Csv => {
            let attributes: serde_json::Map<String, serde_json::Value> = r
                .attributes
                .iter()
                .map(|a| (a.key.clone(), a.value.clone().into()))
                .collect();
            let version = r.version.to_string();
            let attributes = serde_json::Value::Object(attributes).to_string();
            let c = r.correction.clone().unwrap_or_default();
            [
                &r.event_id,
                &r.account_id,
                &r.meter,
                &r.quantity,
                &r.timestamp,
                &r.plan_id,
                &version,
                &r.period,
                &r.rated_quantity,
                &r.period_usage_before,
                &r.charge,
                &attributes,
                &c.role,
                &c.action,
                &c.id,
                &c.reason,
                &c.booked_plan,
                &c.booked_period,
            ]
            .iter()
            .map(|f| csv_field(f))
            .collect::<Vec<_>>()
            .join(",")
        }
    }
}

pub async fn run(args: &ExportArgs, access: &Access) -> Result<Printed, Failure> {
    let mut client = QueryClient::new(access.authed().await.map_err(Failure::new)?);
    let file = std::fs::File::create(&args.out)
        .map_err(|e| Failure::new(format!("cannot create {}: {e}", args.out.display())))?;
    let mut out = std::io::BufWriter::new(file);
    let write_err = |e: std::io::Error| Failure::new(format!("writing {}: {e}", args.out.display()));
    if args.format == ExportFormat::Csv {
        writeln!(out, "{EXPORT_COLUMNS}").map_err(write_err)?;
    }
    let progress = ProgressBar::new_spinner();
    progress.set_style(
        ProgressStyle::with_template("{spinner} {pos} records exported {per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let (mut records, mut charge) = (0u64, Decimal::ZERO);
    let mut account_token = String::new();
    loop {
        // One page of accounts at a time, and one page of records at a time: memory stays bounded.
        let accounts = match &args.account {
            Some(a) => vec![a.clone()],
            None => {
                let request = proto::ListAccountsRequest {
                    period: args.period.clone(),
                    page_size: 1000,
                    page_token: account_token.clone(),
                };
                let page = client.list_accounts(request).await.map_err(rpc_failure)?.into_inner();
                account_token = page.next_page_token;
                page.accounts
            }
        };
        for account in accounts {
            let mut token = String::new();
            loop {
                let request = proto::ListRatedRecordsRequest {
                    account_id: account.clone(),
                    from: String::new(),
                    to: String::new(),
                    page_size: 1000,
                    page_token: token,
                };
                let page = client
                    .list_rated_records(request)
                    .await
                    .map_err(rpc_failure)?
                    .into_inner();
                for r in page.records.iter().filter(|r| counted_period(r) == args.period) {
                    writeln!(out, "{}", export_row(r, args.format)).map_err(write_err)?;
                    records += 1;
                    charge += r.charge.parse::<Decimal>().unwrap_or_default();
                    progress.inc(1);
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
        }
        if args.account.is_some() || account_token.is_empty() {
            break;
        }
    }
    out.flush().map_err(write_err)?;
    progress.finish_and_clear();
    Ok(Printed::line(
        format!("{}: {records} records, charges summing to {charge}", args.out.display()),
        json!({ "file": args.out, "records": records, "charge": charge.to_string() }),
    ))
}
