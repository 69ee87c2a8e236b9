//! `ratectl`: the command-line client and tariff tool.
//!
//! Offline commands (no daemon needed): `tariffs check FILE` and `tariffs quote`. Every command
//! takes `--json` for scripts. Exit codes: 0 success, 1 a failed check or quote, 2 bad usage.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use rust_decimal::Decimal;
use serde_json::json;

use ratingd::domain::money::parse_exact;
use ratingd::domain::tariff::Catalogue;
use ratingd::domain::tariff_file::{TariffErrors, parse_catalogue};
use ratingd::rating::{Quote, RatingInput, Report, quote};

#[derive(Parser)]
#[command(name = "ratectl", version, about = "ratingd client and tariff tool")]
struct Args {
    /// Print one JSON object instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Tariff files: check and quote, offline.
    #[command(subcommand)]
    Tariffs(TariffsCommand),
}

#[derive(Subcommand)]
enum TariffsCommand {
    /// Validate a tariff file; print every error with its path.
    Check { file: PathBuf },
    /// Price one event against a plan of a tariff file, without a daemon.
    Quote(QuoteArgs),
}

#[derive(clap::Args)]
struct QuoteArgs {
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

/// A failure to report: one line of text, or a JSON error object.
struct Failure {
    message: String,
    reason: Option<&'static str>,
}

impl Failure {
    fn new(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            reason: None,
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.command {
        Command::Tariffs(TariffsCommand::Check { file }) => return check(&file, args.json),
        Command::Tariffs(TariffsCommand::Quote(q)) => run_quote(&q, args.json),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            if args.json {
                let mut object = json!({ "error": failure.message });
                if let Some(reason) = failure.reason {
                    object["reason"] = json!(reason);
                }
                println!("{object}");
            } else {
                eprintln!("ratectl: {}", failure.message);
            }
            ExitCode::from(1)
        }
    }
}

fn load(file: &Path) -> Result<Catalogue, TariffErrors> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        TariffErrors(vec![ratingd::domain::tariff_file::TariffError {
            path: String::new(),
            message: format!("cannot read {}: {e}", file.display()),
        }])
    })?;
    parse_catalogue(&text)
}

fn check(file: &Path, as_json: bool) -> ExitCode {
    match load(file) {
        Ok(catalogue) => {
            let plans = catalogue.plans().len();
            let versions: usize = catalogue.plans().iter().map(|p| p.versions.len()).sum();
            let meters = catalogue.meters().count();
            if as_json {
                println!(
                    "{}",
                    json!({ "valid": true, "file": file, "plans": plans, "versions": versions, "meters": meters })
                );
            } else {
                println!(
                    "{}: valid: {plans} plans, {versions} versions, {meters} meters",
                    file.display()
                );
            }
            ExitCode::SUCCESS
        }
        Err(errors) => {
            if as_json {
                let list: Vec<_> = errors
                    .0
                    .iter()
                    .map(|e| json!({ "path": e.path, "message": e.message }))
                    .collect();
                println!("{}", json!({ "valid": false, "file": file, "errors": list }));
            } else {
                eprintln!("{}: {} error(s)", file.display(), errors.0.len());
                for error in &errors.0 {
                    eprintln!("{error}");
                }
            }
            ExitCode::from(1)
        }
    }
}

fn run_quote(args: &QuoteArgs, as_json: bool) -> Result<(), Failure> {
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
    let attributes = args
        .attrs
        .iter()
        .map(|a| match a.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(Failure::new(format!("--attr: {a:?} is not KEY=VALUE"))),
        })
        .collect::<Result<Vec<_>, _>>()?;
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
    print_quote(&priced, &args.meter, &attributes, as_json);
    Ok(())
}

fn print_quote(q: &Quote<'_>, meter: &str, attributes: &[(String, String)], as_json: bool) {
    let report = Report::new(q.plan, meter, attributes, &q.rated.explanation);
    if as_json {
        let object = json!({
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
        println!("{object}");
    } else {
        println!(
            "period    {} [{}, {})",
            q.period.label,
            q.period.start.to_rfc3339(),
            q.period.end.to_rfc3339()
        );
        println!("{report}");
    }
}
