//! `ratectl suspense list|reprocess`: rejected events waiting in suspense (Admin API).

use serde_json::json;

use crate::client::connect::Access;
use crate::client::output::{Failure, Printed, rpc_failure};
use crate::wire::proto::{self, admin_client::AdminClient};

#[derive(clap::Subcommand)]
pub enum SuspenseCommand {
    /// List suspended events, oldest first.
    List {
        /// Only this reason (e.g. NO_TARIFF).
        #[arg(long)]
        reason: Option<String>,
        /// Most entries to print.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Rate suspended events again (after adding a tariff or subscription).
    Reprocess {
        #[arg(long)]
        reason: Option<String>,
        /// Entry ids from `suspense list`.
        #[arg(long = "id")]
        ids: Vec<String>,
    },
}

fn reason_arg(reason: Option<&str>) -> Result<i32, Failure> {
    let Some(name) = reason else { return Ok(0) };
    let full = format!("REJECT_REASON_{}", name.to_ascii_uppercase());
    proto::RejectReason::from_str_name(&full)
        .map(|r| r as i32)
        .ok_or_else(|| Failure::new(format!("--reason: unknown reason {name:?}")))
}

fn reason_name(code: i32) -> String {
    proto::RejectReason::try_from(code)
        .map(|r| r.as_str_name().trim_start_matches("REJECT_REASON_").to_string())
        .unwrap_or_else(|_| code.to_string())
}

pub async fn run(command: &SuspenseCommand, access: &Access) -> Result<Printed, Failure> {
    match command {
        SuspenseCommand::List { reason, limit } => {
            let reason = reason_arg(reason.as_deref())?;
            let mut client = AdminClient::new(access.authed().await.map_err(Failure::new)?);
            let mut rows = Vec::new();
            let mut token = String::new();
            while rows.len() < *limit {
                let page_size = (limit - rows.len()).min(1000) as u32;
                let request = proto::ListSuspenseRequest {
                    reason,
                    page_size,
                    page_token: token,
                };
                let page = client.list_suspense(request).await.map_err(rpc_failure)?.into_inner();
                rows.extend(page.events);
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
            let items: Vec<_> = rows
                .iter()
                .map(|e| {
                    let ev = e.event.clone().unwrap_or_default();
                    json!({
                        "id": e.id, "reason": reason_name(e.reason), "detail": e.detail, "received_at": e.received_at,
                        "event_id": ev.event_id, "account": ev.account_id, "meter": ev.meter,
                    })
                })
                .collect();
            let lines = rows
                .iter()
                .map(|e| {
                    let ev = e.event.clone().unwrap_or_default();
                    format!(
                        "{} {} {} {}/{}: {}",
                        e.id,
                        reason_name(e.reason),
                        e.received_at,
                        ev.account_id,
                        ev.event_id,
                        e.detail
                    )
                })
                .collect();
            Ok(Printed::new(lines, json!({ "suspense": items })))
        }
        SuspenseCommand::Reprocess { reason, ids } => {
            let request = proto::ReprocessSuspenseRequest {
                reason: reason_arg(reason.as_deref())?,
                ids: ids.clone(),
            };
            let r = AdminClient::new(access.authed().await.map_err(Failure::new)?)
                .reprocess_suspense(request)
                .await
                .map_err(rpc_failure)?
                .into_inner();
            // Events a normalization rule drops now leave suspense too (docs/mediation.md).
            let dropped = if r.dropped > 0 {
                format!(", dropped by rules {}", r.dropped)
            } else {
                String::new()
            };
            Ok(Printed::line(
                format!(
                    "reprocessed {}: accepted {}, duplicate {}, still rejected {}{dropped}",
                    r.reprocessed, r.accepted, r.duplicate, r.rejected
                ),
                json!({ "reprocessed": r.reprocessed, "accepted": r.accepted, "duplicate": r.duplicate, "rejected": r.rejected, "dropped": r.dropped }),
            ))
        }
    }
}
