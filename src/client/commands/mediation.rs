//! `ratectl mediation check|try` (offline: a normalization rules file, no daemon): every error of
//! a rules file with its path, and what the rules make of one event (docs/mediation.md).

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::client::output::{Failure, Printed};
use crate::domain::mediation::{Outcome, RuleErrors, Rules, parse_rules};
use crate::domain::money::parse_exact;
use crate::domain::usage::{RawEvent, units_and_nanos};

#[derive(clap::Subcommand)]
pub enum MediationCommand {
    /// Validate a normalization rules file; print every error with its path.
    Check { file: PathBuf },
    /// Apply a rules file to one event, without a daemon: the event the rules make of it, and
    /// which rules fired (or the rule that drops or refuses it).
    Try(TryArgs),
}

#[derive(clap::Args)]
pub struct TryArgs {
    /// Normalization rules file.
    #[arg(long)]
    rules: PathBuf,
    #[arg(long)]
    account: String,
    #[arg(long)]
    meter: String,
    /// Exact decimal, >= 0, at most 9 fractional digits.
    #[arg(long, default_value = "1")]
    quantity: String,
    /// Event attribute, repeatable.
    #[arg(long = "attr", value_name = "KEY=VALUE")]
    attrs: Vec<String>,
}

/// Every command here is offline.
pub fn run(command: &MediationCommand) -> Result<Printed, Failure> {
    match command {
        MediationCommand::Check { file } => Ok(check(file)),
        MediationCommand::Try(args) => try_rules(args),
    }
}

fn load(file: &Path) -> Result<Rules, RuleErrors> {
    let text =
        std::fs::read_to_string(file).map_err(|e| RuleErrors(vec![format!("cannot read {}: {e}", file.display())]))?;
    parse_rules(&text)
}

fn check(file: &Path) -> Printed {
    match load(file) {
        Ok(rules) => Printed::line(
            format!("{}: valid: {} rules", file.display(), rules.len()),
            json!({ "valid": true, "file": file, "rules": rules.names().map(|n| n.to_string()).collect::<Vec<_>>() }),
        ),
        Err(errors) => {
            let mut lines = vec![format!("{}: {} error(s)", file.display(), errors.0.len())];
            lines.extend(errors.0.iter().cloned());
            Printed {
                ok: false,
                ..Printed::new(lines, json!({ "valid": false, "file": file, "errors": errors.0 }))
            }
        }
    }
}

fn try_rules(args: &TryArgs) -> Result<Printed, Failure> {
    let rules = load(&args.rules).map_err(|e| Failure::new(format!("{}: {e}", args.rules.display())))?;
    let quantity = parse_exact(&args.quantity).map_err(|m| Failure::new(format!("--quantity: {m}")))?;
    let attributes = super::attribute_args(&args.attrs)?;
    let sent = RawEvent {
        event_id: "try".into(),
        account_id: args.account.clone(),
        meter: args.meter.clone(),
        quantity: Some(units_and_nanos(quantity)),
        timestamp_unix_nanos: 0,
        attributes,
    };
    Ok(match rules.apply(&sent) {
        Outcome::Unchanged => Printed::line(
            "unchanged: no rule changes this event",
            json!({ "outcome": "unchanged" }),
        ),
        Outcome::Normalized { event, rules } => {
            let rules: Vec<String> = rules.iter().map(|r| r.to_string()).collect();
            let quantity = event
                .quantity
                .and_then(|(u, n)| crate::domain::usage::quantity_of(u, n))
                .map(|q| q.normalize().to_string())
                .unwrap_or_default();
            let attributes: Vec<String> = event.attributes.iter().map(|(k, v)| format!("{k}={v}")).collect();
            Printed::new(
                vec![
                    format!("normalized by rules {}", rules.join(", ")),
                    format!("  account {}", event.account_id),
                    format!("  meter {}", event.meter),
                    format!("  quantity {quantity}"),
                    format!("  attributes {}", attributes.join(" ")),
                ],
                json!({
                    "outcome": "normalized", "rules": rules, "account": event.account_id,
                    "meter": event.meter, "quantity": quantity,
                    "attributes": event.attributes.iter().map(|(k, v)| (k.clone(), v.clone().into())).collect::<serde_json::Map<String, serde_json::Value>>(),
                }),
            )
        }
        Outcome::Dropped { rule } => Printed::line(
            format!("dropped by rule {rule}"),
            json!({ "outcome": "dropped", "rule": &*rule }),
        ),
        Outcome::Refused { rule, detail } => Printed {
            ok: false,
            ..Printed::line(
                format!("refused (INVALID_FIELD) by rule {rule}: {detail}"),
                json!({ "outcome": "refused", "rule": &*rule, "detail": detail }),
            )
        },
    })
}
