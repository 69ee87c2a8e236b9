//! `ratectl tariffs check|quote` (offline: a tariff file, no daemon) and `reload|upcoming`
//! (against a running daemon).

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::json;

use crate::client::connect::Access;
use crate::client::output::{Failure, Printed, rpc_failure};
use crate::domain::money::parse_exact;
use crate::domain::tariff::Catalogue;
use crate::domain::tariff_file::{TariffError, TariffErrors, parse_catalogue};
use crate::rating::{Quote, RatingInput, Report, quote};
use crate::wire::proto::{self, admin_client::AdminClient};

#[derive(clap::Subcommand)]
pub enum TariffsCommand {
    /// Validate a tariff file; print every error with its path.
    Check { file: PathBuf },
    /// Price one event against a plan of a tariff file, without a daemon.
    Quote(QuoteArgs),
    /// Make a running daemon re-read its tariff file (as SIGHUP does).
    Reload,
    /// Tariff versions published in advance, from a running daemon.
    Upcoming,
}

#[derive(clap::Args)]
pub struct QuoteArgs {
    /// Tariff file.
    #[arg(long)]
    tariffs: PathBuf,
    #[arg(long)]
    plan: String,
    #[arg(long)]
    meter: String,
    /// Exact decimal, >= 0, at most 9 fractional digits.
    #[arg(long, allow_hyphen_values = true)]
    quantity: String,
    /// Event time, RFC 3339 (e.g. 2026-11-25T10:00:00+01:00).
    #[arg(long)]
    at: String,
    /// Event attribute, repeatable.
    #[arg(long = "attr", value_name = "KEY=VALUE")]
    attrs: Vec<String>,
    /// The account's period-to-date quantity of this meter before this event.
    #[arg(long, default_value = "0", allow_hyphen_values = true)]
    period_usage: String,
}

/// The offline commands (no runtime needed).
pub fn run_offline(command: &TariffsCommand) -> Option<Result<Printed, Failure>> {
    match command {
        TariffsCommand::Check { file } => Some(Ok(check(file))),
        TariffsCommand::Quote(q) => Some(run_quote(q)),
        TariffsCommand::Reload | TariffsCommand::Upcoming => None,
    }
}

/// The commands that talk to a daemon.
pub async fn run(command: &TariffsCommand, access: &Access) -> Result<Printed, Failure> {
    match command {
        TariffsCommand::Reload => reload(access).await,
        TariffsCommand::Upcoming => upcoming(access).await,
        TariffsCommand::Check { .. } | TariffsCommand::Quote(_) => {
            run_offline(command).unwrap_or_else(|| Err(Failure::new("not an offline command")))
        }
    }
}

async fn admin(access: &Access) -> Result<AdminClient<crate::client::connect::Authed>, Failure> {
    Ok(AdminClient::new(access.authed().await.map_err(Failure::new)?))
}

async fn reload(access: &Access) -> Result<Printed, Failure> {
    let r = admin(access)
        .await?
        .reload_tariffs(proto::ReloadTariffsRequest {})
        .await
        .map_err(rpc_failure)?
        .into_inner();
    Ok(Printed::line(
        format!(
            "tariffs reloaded: {} plans, {} versions, {} meters; {} mediation rules",
            r.plans, r.versions, r.meters, r.mediation_rules
        ),
        json!({ "plans": r.plans, "versions": r.versions, "meters": r.meters, "mediation_rules": r.mediation_rules }),
    ))
}

async fn upcoming(access: &Access) -> Result<Printed, Failure> {
    let r = admin(access)
        .await?
        .list_upcoming_versions(proto::ListUpcomingVersionsRequest {})
        .await
        .map_err(rpc_failure)?;
    let versions = r.into_inner().versions;
    let items: Vec<_> = versions
        .iter()
        .map(|v| json!({ "plan": v.plan_id, "version": v.version, "effective_from": v.effective_from }))
        .collect();
    let lines = versions
        .iter()
        .map(|v| format!("{} version {} effective {}", v.plan_id, v.version, v.effective_from))
        .collect();
    Ok(Printed::new(lines, json!({ "upcoming": items })))
}

fn load(file: &Path) -> Result<Catalogue, TariffErrors> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        TariffErrors(vec![TariffError {
            path: String::new(),
            message: format!("cannot read {}: {e}", file.display()),
        }])
    })?;
    parse_catalogue(&text)
}

/// A valid file is a result; an invalid one too (exit 1, every error listed), not a failure.
fn check(file: &Path) -> Printed {
    match load(file) {
        Ok(catalogue) => {
            let plans = catalogue.plans().len();
            let versions: usize = catalogue.plans().iter().map(|p| p.versions.len()).sum();
            let meters = catalogue.meters().count();
            Printed::line(
                format!(
                    "{}: valid: {plans} plans, {versions} versions, {meters} meters",
                    file.display()
                ),
                json!({ "valid": true, "file": file, "plans": plans, "versions": versions, "meters": meters }),
            )
        }
        Err(errors) => {
            let list: Vec<_> = errors
                .0
                .iter()
                .map(|e| json!({ "path": e.path, "message": e.message }))
                .collect();
            let mut lines = vec![format!("{}: {} error(s)", file.display(), errors.0.len())];
            lines.extend(errors.0.iter().map(ToString::to_string));
            Printed {
                ok: false,
                ..Printed::new(lines, json!({ "valid": false, "file": file, "errors": list }))
            }
        }
    }
}

fn run_quote(args: &QuoteArgs) -> Result<Printed, Failure> {
    let catalogue = load(&args.tariffs).map_err(|e| {
        Failure::new(
            format!("{}: {}", args.tariffs.display(), e.0.len())
                + " error(s) in the tariff file; run `ratectl tariffs check`",
        )
    })?;
    let quantity = parse_exact(&args.quantity).map_err(|m| Failure::new(format!("--quantity: {m}")))?;
    if quantity < Decimal::ZERO {
        return Err(Failure::new("--quantity: must be >= 0"));
    }
    let period_usage = parse_exact(&args.period_usage).map_err(|m| Failure::new(format!("--period-usage: {m}")))?;
    if period_usage < Decimal::ZERO {
        return Err(Failure::new("--period-usage: must be >= 0"));
    }
    let at = DateTime::parse_from_rfc3339(&args.at)
        .map_err(|e| Failure::new(format!("--at: {:?} is not an RFC 3339 date-time ({e})", args.at)))?
        .with_timezone(&Utc);
    let attributes = super::attribute_args(&args.attrs)?;
    let input = RatingInput {
        meter: &args.meter,
        quantity,
        at,
        attributes: &attributes,
        period_usage,
        subscription_discount: None,
    };
    let priced = quote(&catalogue, &args.plan, &input).map_err(|e| Failure {
        message: e.to_string(),
        reason: Some(e.reason().as_str()),
    })?;
    Ok(quoted(&priced, &args.meter, &attributes))
}

fn quoted(q: &Quote<'_>, meter: &str, attributes: &[(String, String)]) -> Printed {
    let report = Report::new(q.plan, meter, attributes, &q.rated.explanation);
    let json = json!({
        "charge": q.rated.charge.to_string(),
        "currency": q.plan.currency.to_string(),
        "plan": q.plan.id,
        "version": q.rated.explanation.version,
        "period": q.period.label,
        "period_start": q.period.start,
        "period_end": q.period.end,
        "rated_quantity": q.rated.rated_quantity.to_string(),
        "explain": report,
    });
    let lines = vec![
        format!(
            "period    {} [{}, {})",
            q.period.label,
            q.period.start.to_rfc3339(),
            q.period.end.to_rfc3339()
        ),
        report.to_string(),
    ];
    Printed::new(lines, json)
}
