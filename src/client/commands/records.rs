//! `ratectl records`: the rated records of one account, oldest first; and the JSON form of a
//! record that `explain` and `export` share.

use serde_json::json;

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
}

/// A rated record as one JSON object.
pub fn record_json(r: &proto::RatedRecord) -> serde_json::Value {
    let attributes: serde_json::Map<String, serde_json::Value> = r
        .attributes
        .iter()
        .map(|a| (a.key.clone(), a.value.clone().into()))
        .collect();
    let mut line = json!({
        "event_id": r.event_id, "account": r.account_id, "meter": r.meter, "quantity": r.quantity,
        "timestamp": r.timestamp, "attributes": attributes, "plan": r.plan_id, "version": r.version,
        "period": r.period, "rated_quantity": r.rated_quantity, "charge": r.charge,
        "period_usage_before": r.period_usage_before,
    });
    if let Some(s) = &r.as_sent {
        let attributes: serde_json::Map<String, serde_json::Value> = s
            .attributes
            .iter()
            .map(|a| (a.key.clone(), a.value.clone().into()))
            .collect();
        line["as_sent"] = json!({
            "account": s.account_id, "meter": s.meter, "quantity": s.quantity,
            "attributes": attributes, "rules": s.rules,
        });
    }
    if let Some(c) = &r.correction {
        let optional = |s: &str| (!s.is_empty()).then(|| s.to_string());
        line["correction"] = json!({
            "role": c.role, "action": c.action, "id": c.id, "reason": c.reason,
            "requested_by": c.requested_by, "at": c.at,
            "booked_plan": optional(&c.booked_plan), "booked_period": optional(&c.booked_period),
        });
    }
    line
}

/// The period a record counts in: its own, or for a closed period's correction the open one it
/// was booked into.
pub fn counted_period(r: &proto::RatedRecord) -> &str {
    match &r.correction {
        Some(c) if !c.booked_period.is_empty() => &c.booked_period,
        _ => &r.period,
    }
}

pub async fn run(args: &RecordsArgs, access: &Access) -> Result<Printed, Failure> {
    let mut client = QueryClient::new(access.authed().await.map_err(Failure::new)?);
    let mut rows = Vec::new();
    let mut token = String::new();
    let mut removed_before = String::new();
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
        removed_before = page.removed_before;
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut lines: Vec<String> = rows
        .iter()
        .map(|r| {
            let correction = r.correction.as_ref().map_or_else(String::new, |c| {
                let booked = if c.booked_period.is_empty() {
                    String::new()
                } else {
                    format!(", booked into {}", c.booked_period)
                };
                format!(" [{} by {} {}{booked}]", c.role, c.action, c.id)
            });
            format!(
                "{} {} {} {} {} -> {} ({} v{}){correction}",
                r.timestamp, r.event_id, r.meter, r.quantity, r.period, r.charge, r.plan_id, r.version
            )
        })
        .collect();
    let mut json = json!({ "records": rows.iter().map(record_json).collect::<Vec<_>>() });
    if !removed_before.is_empty() {
        lines.push(format!(
            "(retention removed records of periods that ended before {removed_before}; some may be missing here)"
        ));
        json["removed_before"] = removed_before.into();
    }
    Ok(Printed::new(lines, json))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::record::RatedRecord;

    /// The retention export writes `RatedRecord::export_json`: the same object, field for field,
    /// as `ratectl export --format jsonl` makes of the Query API's record.
    #[test]
    fn the_retention_export_writes_the_fields_of_ratectl_export() {
        let record = RatedRecord {
            content: 1,
            event_id: "e-1".into(),
            account_id: "acme".into(),
            meter: "voice.minutes".into(),
            quantity: "90.500".parse().unwrap(),
            timestamp_unix_nanos: 1_764_000_000_123_000_000,
            attributes: vec![("band".into(), "peak".into()), ("to".into(), "+4930".into())],
            plan: "telecom-standard".into(),
            version: 3,
            period: "2025-11".into(),
            period_usage_before: "120.0".parse().unwrap(),
            subscription_discount: None,
            rated_quantity: "91".parse().unwrap(),
            charge: "1.234567890".parse().unwrap(),
            correction: None,
            as_sent: None,
        };
        let via_api = record_json(&crate::wire::convert::record_to_proto(&record));
        assert_eq!(record.export_json(), via_api);
        assert_eq!(via_api["quantity"], "90.5");
        // A correction record too, with and without a booking.
        use crate::domain::correction::{Action, Booking, Correction, Role};
        for booked in [
            None,
            Some(Booking {
                plan: "telecom-standard".into(),
                period: "2025-12".into(),
            }),
        ] {
            let corrected = RatedRecord {
                charge: "-1.234567890".parse().unwrap(),
                correction: Some(Correction {
                    role: Role::Reversal,
                    action: Action::Void,
                    id: "void:acme:e-1".into(),
                    reason: "test call".into(),
                    requested_by: "ops".into(),
                    at_unix_nanos: 1_765_000_000_000_000_000,
                    booked,
                }),
                ..record.clone()
            };
            let via_api = record_json(&crate::wire::convert::record_to_proto(&corrected));
            assert_eq!(corrected.export_json(), via_api);
        }
        // A record whose event normalization rules changed: the event as sent, and the rules.
        let normalized = RatedRecord {
            as_sent: Some(Box::new(crate::domain::record::AsSent {
                account_id: "sim-262011234567890".into(),
                meter: "voice.ms".into(),
                quantity: "90500".parse().unwrap(),
                attributes: vec![("to".into(), "030 1234567".into())],
                rules: vec!["sim-to-account".into(), "ms-to-seconds".into()],
            })),
            ..record.clone()
        };
        let via_api = record_json(&crate::wire::convert::record_to_proto(&normalized));
        assert_eq!(normalized.export_json(), via_api);
        assert_eq!(via_api["as_sent"]["rules"][1], "ms-to-seconds");
    }
}
