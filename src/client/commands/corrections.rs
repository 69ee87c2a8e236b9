//! `ratectl rerate`, `ratectl void` and `ratectl amend`: corrections (Admin API,
//! docs/corrections.md). Each prints the records changed and the difference per currency.

use serde_json::json;

use crate::client::connect::Access;
use crate::client::output::{Failure, Printed, rpc_failure};
use crate::wire::proto::{self, admin_client::AdminClient};

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("selector").required(true).args(["account", "account_prefix", "all"])))]
pub struct RerateArgs {
    /// The billing period label (e.g. 2026-11).
    #[arg(long)]
    pub period: String,
    /// One account.
    #[arg(long)]
    pub account: Option<String>,
    /// Every account starting with this prefix.
    #[arg(long)]
    pub account_prefix: Option<String>,
    /// Every account with records in the period.
    #[arg(long)]
    pub all: bool,
    /// Only this meter's records.
    #[arg(long)]
    pub meter: Option<String>,
    /// Only this plan's records.
    #[arg(long)]
    pub plan: Option<String>,
    /// Why (kept with every record the re-rate writes).
    #[arg(long)]
    pub reason: String,
    /// Idempotency id: run again with the same id to finish an interrupted re-rate. Default:
    /// derived from the period, the selector and the reason.
    #[arg(long)]
    pub id: Option<String>,
    /// Price the re-rate and print the difference; write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(clap::Args)]
pub struct VoidArgs {
    #[arg(long)]
    pub account: String,
    #[arg(long)]
    pub event_id: String,
    #[arg(long)]
    pub reason: String,
    /// Idempotency id (default: one per account and event).
    #[arg(long)]
    pub id: Option<String>,
}

#[derive(clap::Args)]
pub struct AmendArgs {
    #[arg(long)]
    pub account: String,
    #[arg(long)]
    pub event_id: String,
    /// The new quantity (exact decimal, at most 9 places).
    #[arg(long, allow_hyphen_values = true)]
    pub quantity: Option<String>,
    /// An attribute to set, KEY=VALUE (repeatable); the event's other attributes are kept.
    #[arg(long = "attr", value_name = "KEY=VALUE")]
    pub attrs: Vec<String>,
    #[arg(long)]
    pub reason: String,
    /// Idempotency id (default: derived from the event and the amendment).
    #[arg(long)]
    pub id: Option<String>,
}

pub async fn rerate(a: &RerateArgs, access: &Access) -> Result<Printed, Failure> {
    let selector = match (&a.account, &a.account_prefix) {
        (Some(account), _) => format!("account={account}"),
        (_, Some(prefix)) => format!("prefix={prefix}"),
        _ => "all".to_string(),
    };
    let id = a.id.clone().unwrap_or_else(|| {
        let digest = ring::digest::digest(&ring::digest::SHA256, a.reason.as_bytes());
        format!(
            "rerate:{}:{selector}:{}:{}:{}",
            a.period,
            a.meter.as_deref().unwrap_or(""),
            a.plan.as_deref().unwrap_or(""),
            crate::domain::hex::hex(&digest.as_ref()[..8])
        )
    });
    let request = proto::RerateRequest {
        id,
        period: a.period.clone(),
        account: a.account.clone().unwrap_or_default(),
        account_prefix: a.account_prefix.clone().unwrap_or_default(),
        all: a.all,
        meter: a.meter.clone().unwrap_or_default(),
        plan: a.plan.clone().unwrap_or_default(),
        reason: a.reason.clone(),
        dry_run: a.dry_run,
    };
    let r = AdminClient::new(access.authed().await.map_err(Failure::new)?)
        .rerate(request)
        .await
        .map_err(rpc_failure)?
        .into_inner();
    Ok(printed(&r))
}

pub async fn void(a: &VoidArgs, access: &Access) -> Result<Printed, Failure> {
    let request = proto::VoidEventRequest {
        account_id: a.account.clone(),
        event_id: a.event_id.clone(),
        reason: a.reason.clone(),
        id: a.id.clone().unwrap_or_default(),
    };
    let r = AdminClient::new(access.authed().await.map_err(Failure::new)?)
        .void_event(request)
        .await
        .map_err(rpc_failure)?
        .into_inner();
    Ok(printed(&r))
}

pub async fn amend(a: &AmendArgs, access: &Access) -> Result<Printed, Failure> {
    let quantity = match &a.quantity {
        None => None,
        Some(text) => Some(quantity(text).map_err(Failure::new)?),
    };
    let attributes: Vec<proto::Attribute> = super::attribute_args(&a.attrs)?
        .into_iter()
        .map(|(key, value)| proto::Attribute { key, value })
        .collect();
    let request = proto::AmendEventRequest {
        account_id: a.account.clone(),
        event_id: a.event_id.clone(),
        quantity,
        attributes,
        reason: a.reason.clone(),
        id: a.id.clone().unwrap_or_default(),
    };
    let r = AdminClient::new(access.authed().await.map_err(Failure::new)?)
        .amend_event(request)
        .await
        .map_err(rpc_failure)?
        .into_inner();
    Ok(printed(&r))
}

/// A decimal quantity as whole units and nanos (the usage files' conversion), never negative.
fn quantity(text: &str) -> Result<proto::Quantity, String> {
    let q = crate::client::usage_file::quantity(text).map_err(|e| format!("--quantity: {e}"))?;
    if q.units < 0 || q.nanos < 0 {
        return Err(format!("--quantity {text:?}: must be >= 0"));
    }
    Ok(q)
}

/// What a correction did, for people and for scripts.
fn printed(r: &proto::CorrectionResponse) -> Printed {
    let verb = if r.dry_run { "would change" } else { "changed" };
    let mut lines = vec![format!(
        "correction {}: {verb} {} records in {} account periods",
        r.id,
        r.records_changed,
        r.outcomes.len()
    )];
    for d in &r.differences {
        lines.push(format!("  difference {} {}", d.difference, d.currency));
    }
    for o in &r.outcomes {
        let booked = if o.booked_period.is_empty() {
            String::new()
        } else {
            format!(" (closed: booked into {} of {})", o.booked_period, o.booked_plan)
        };
        let again = if o.already_applied { " (already applied)" } else { "" };
        lines.push(format!(
            "  {} {} {}: {} {}{booked}{again}",
            o.account_id, o.period, o.plan, o.difference, o.currency
        ));
    }
    for f in &r.refused {
        lines.push(format!("  refused {}: {}", f.account_id, f.reason));
    }
    let differences: serde_json::Map<String, serde_json::Value> = r
        .differences
        .iter()
        .map(|d| (d.currency.clone(), json!(d.difference)))
        .collect();
    let outcomes: Vec<serde_json::Value> = r
        .outcomes
        .iter()
        .map(|o| {
            json!({
                "account": o.account_id, "plan": o.plan, "period": o.period, "currency": o.currency,
                "difference": o.difference, "booked_plan": o.booked_plan, "booked_period": o.booked_period,
                "already_applied": o.already_applied, "records": o.records.len(),
            })
        })
        .collect();
    let refused: Vec<serde_json::Value> = r
        .refused
        .iter()
        .map(|f| json!({ "account": f.account_id, "reason": f.reason }))
        .collect();
    let object = json!({
        "id": r.id, "dry_run": r.dry_run, "records_changed": r.records_changed,
        "differences": differences, "outcomes": outcomes, "refused": refused,
    });
    Printed::new(lines, object)
}
