//! `ratectl`: the command-line client and tariff tool.
//!
//! Offline commands (no daemon needed): `tariffs check FILE` and `tariffs quote`. Against a
//! running daemon: `send` and `totals`. Every command takes `--json` for scripts. Exit codes:
//! 0 success, 1 a failed command, 2 bad usage.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use rust_decimal::Decimal;
use serde_json::json;

use indicatif::{ProgressBar, ProgressStyle};
use ratingd::client::connect::{Access, Authed};
use ratingd::client::send::{SendOptions, send_all};
use ratingd::client::usage_file;
use ratingd::domain::money::parse_exact;
use ratingd::domain::tariff::Catalogue;
use ratingd::domain::tariff_file::{TariffErrors, parse_catalogue};
use ratingd::rating::{Quote, RatingInput, Report, quote};
use ratingd::wire::proto::{self, admin_client::AdminClient, query_client::QueryClient};

#[derive(Parser)]
#[command(name = "ratectl", version, about = "ratingd client and tariff tool")]
struct Args {
    /// Print one JSON object instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Bearer token for ratingd (prefer the environment variable: it stays out of shell history).
    #[arg(long, global = true, env = "RATECTL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// CA certificate (PEM) that signed ratingd's certificate; turns TLS on.
    #[arg(long, global = true, env = "RATECTL_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// Client certificate and key (PEM), for a ratingd that requires them (mutual TLS).
    #[arg(long, global = true, env = "RATECTL_CLIENT_CERT")]
    client_cert: Option<PathBuf>,
    #[arg(long, global = true, env = "RATECTL_CLIENT_KEY")]
    client_key: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Tariff files: check and quote, offline.
    #[command(subcommand)]
    Tariffs(TariffsCommand),
    /// Send a usage file (JSONL, or CSV when the name ends in .csv) to ratingd.
    Send(SendArgs),
    /// Committed totals of one account and billing period.
    Totals(TotalsArgs),
    /// Subscriptions of accounts to plans (Admin API).
    #[command(subcommand)]
    Subscriptions(SubscriptionsCommand),
    /// Rated records of one account, oldest first.
    Records {
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
    },
    /// Every rated record of a period (or of one account in it) to CSV or JSONL, streamed page by
    /// page (bounded memory), for audits and ERP or data-warehouse loads.
    Export(ExportArgs),
    /// Invoice-ready line items of one account and period.
    Statement {
        #[arg(long)]
        account: String,
        #[arg(long)]
        period: String,
        #[arg(long, default_value = DEFAULT_TARGET)]
        target: String,
    },
    /// How one rated record's charge was computed.
    Explain {
        /// The account (event ids are unique per account); without it every block is searched.
        #[arg(long, default_value = "")]
        account: String,
        #[arg(long)]
        event_id: String,
        #[arg(long, default_value = DEFAULT_TARGET)]
        target: String,
    },
    /// Rejected events waiting in suspense (Admin API).
    #[command(subcommand)]
    Suspense(SuspenseCommand),
    /// Bearer tokens for the `[[tokens]]` of ratingd's config (offline).
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Read a token from standard input (so it stays out of shell history) and print its SHA-256,
    /// the value of `sha256` in the config.
    Hash,
    /// Make a new random token (256 bits, hex); print it and its SHA-256.
    New,
}

/// Shorter tokens can be guessed; `ratectl token new` makes 64 hex digits.
const MIN_TOKEN_BYTES: usize = 16;

#[derive(Subcommand)]
enum SuspenseCommand {
    /// List suspended events, oldest first.
    List {
        /// Only this reason (e.g. NO_TARIFF).
        #[arg(long)]
        reason: Option<String>,
        /// Most entries to print.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long, default_value = DEFAULT_TARGET)]
        target: String,
    },
    /// Rate suspended events again (after adding a tariff or subscription).
    Reprocess {
        #[arg(long)]
        reason: Option<String>,
        /// Entry ids from `suspense list`.
        #[arg(long = "id")]
        ids: Vec<String>,
        #[arg(long, default_value = DEFAULT_TARGET)]
        target: String,
    },
}

#[derive(Subcommand)]
enum SubscriptionsCommand {
    /// Add a subscription, or replace the account's subscription with the same --from.
    Set {
        #[arg(long)]
        account: String,
        #[arg(long)]
        plan: String,
        /// RFC 3339.
        #[arg(long)]
        from: String,
        /// RFC 3339; open-ended when absent.
        #[arg(long)]
        to: Option<String>,
        /// Percentage off every charge of this subscription.
        #[arg(long)]
        discount: Option<String>,
        /// Spend alert when the period charge first reaches this amount (repeatable).
        #[arg(long = "alert")]
        alerts: Vec<String>,
        #[arg(long, default_value = DEFAULT_TARGET)]
        target: String,
    },
    /// The subscriptions of an account.
    Get {
        #[arg(long)]
        account: String,
        #[arg(long, default_value = DEFAULT_TARGET)]
        target: String,
    },
}

const DEFAULT_TARGET: &str = "http://127.0.0.1:50051";

#[derive(clap::Args)]
struct SendArgs {
    #[arg(long)]
    file: PathBuf,
    #[arg(long, default_value = DEFAULT_TARGET)]
    target: String,
    /// Events per batch.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Batches in flight on the stream.
    #[arg(long, default_value_t = 16)]
    in_flight: usize,
    /// Consecutive failed attempts before giving up (unacknowledged batches are resent each time).
    #[arg(long, default_value_t = 10)]
    retries: u32,
    /// Shift every timestamp by whole days so the file's last event falls on yesterday (UTC),
    /// keeping each event's time of day: replays a sample file as recent usage. The same on every
    /// send during one day, so a resend is recognized as a duplicate.
    #[arg(long)]
    rebase_days: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ExportFormat {
    Csv,
    Jsonl,
}

#[derive(clap::Args)]
struct ExportArgs {
    #[arg(long)]
    period: String,
    #[arg(long)]
    account: Option<String>,
    #[arg(long, value_enum)]
    format: ExportFormat,
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value = DEFAULT_TARGET)]
    target: String,
}

#[derive(clap::Args)]
struct TotalsArgs {
    #[arg(long)]
    account: String,
    /// Period label, e.g. 2026-11.
    #[arg(long)]
    period: String,
    /// Only this meter.
    #[arg(long)]
    meter: Option<String>,
    #[arg(long, default_value = DEFAULT_TARGET)]
    target: String,
}

#[derive(Subcommand)]
enum TariffsCommand {
    /// Validate a tariff file; print every error with its path.
    Check { file: PathBuf },
    /// Price one event against a plan of a tariff file, without a daemon.
    Quote(QuoteArgs),
    /// Make a running daemon re-read its tariff file (as SIGHUP does).
    Reload {
        #[arg(long, default_value = DEFAULT_TARGET)]
        target: String,
    },
    /// Tariff versions published in advance, from a running daemon.
    Upcoming {
        #[arg(long, default_value = DEFAULT_TARGET)]
        target: String,
    },
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
    let _ = ACCESS.set(Access {
        token: args.token.clone(),
        ca_cert: args.ca_cert.clone(),
        client_cert: args.client_cert.clone(),
        client_key: args.client_key.clone(),
    });
    let result = match args.command {
        Command::Token(TokenCommand::Hash) => token_hash(args.json),
        Command::Token(TokenCommand::New) => token_new(args.json),
        Command::Tariffs(TariffsCommand::Check { file }) => return check(&file, args.json),
        Command::Tariffs(TariffsCommand::Quote(q)) => run_quote(&q, args.json),
        Command::Send(a) => runtime().and_then(|rt| rt.block_on(send(&a, args.json))),
        Command::Totals(a) => runtime().and_then(|rt| rt.block_on(totals(&a, args.json))),
        Command::Subscriptions(c) => runtime().and_then(|rt| rt.block_on(subscriptions(c, args.json))),
        Command::Suspense(c) => runtime().and_then(|rt| rt.block_on(suspense(c, args.json))),
        Command::Records {
            account,
            from,
            to,
            limit,
            target,
        } => runtime().and_then(|rt| rt.block_on(records(&target, account, from, to, limit, args.json))),
        Command::Explain {
            account,
            event_id,
            target,
        } => runtime().and_then(|rt| rt.block_on(explain(&target, account, event_id, args.json))),
        Command::Export(a) => runtime().and_then(|rt| rt.block_on(export(&a, args.json))),
        Command::Statement {
            account,
            period,
            target,
        } => runtime().and_then(|rt| rt.block_on(statement(&target, account, period, args.json))),
        Command::Tariffs(TariffsCommand::Reload { target }) => {
            runtime().and_then(|rt| rt.block_on(reload(&target, args.json)))
        }
        Command::Tariffs(TariffsCommand::Upcoming { target }) => {
            runtime().and_then(|rt| rt.block_on(upcoming(&target, args.json)))
        }
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

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(format!("cannot start the async runtime: {e}")))
}

async fn send(args: &SendArgs, as_json: bool) -> Result<(), Failure> {
    if args.batch == 0 || args.in_flight == 0 {
        return Err(Failure::new("--batch and --in-flight must be at least 1"));
    }
    let text = std::fs::read_to_string(&args.file)
        .map_err(|e| Failure::new(format!("cannot read {}: {e}", args.file.display())))?;
    let name = args.file.to_string_lossy();
    let mut events = usage_file::parse(&name, &text).map_err(|e| Failure::new(format!("{name}: {e}")))?;
    if args.rebase_days {
        usage_file::rebase_days(&mut events, Utc::now());
    }
    let total = events.len() as u64;
    let mut batches = Vec::with_capacity(events.len() / args.batch + 1);
    let mut events = events.into_iter().peekable();
    let mut batch_id = 0u64;
    while events.peek().is_some() {
        batches.push(proto::UsageBatch {
            batch_id,
            events: events.by_ref().take(args.batch).collect(),
        });
        batch_id += 1;
    }
    // Drawn only on a terminal (indicatif hides itself otherwise).
    let progress = ProgressBar::new(total);
    progress.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} events {per_sec} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let options = SendOptions {
        target: args.target.clone(),
        access: ACCESS.get_or_init(Access::default).clone(),
        in_flight: args.in_flight,
        retries: args.retries,
        max_message_bytes: 64 << 20,
    };
    let summary = send_all(&options, batches, &progress)
        .await
        .map_err(|e| Failure::new(e.to_string()))?;
    progress.finish_and_clear();
    if as_json {
        println!("{}", serde_json::to_string(&summary).unwrap_or_default());
    } else {
        let rejected: u64 = summary.rejected.values().sum();
        println!(
            "sent {}: accepted {}, duplicate {}, rejected {rejected}",
            summary.sent, summary.accepted, summary.duplicate
        );
        for (reason, n) in &summary.rejected {
            println!("  rejected {reason}: {n}");
        }
    }
    Ok(())
}

async fn totals(args: &TotalsArgs, as_json: bool) -> Result<(), Failure> {
    let mut client = query_client(&args.target).await?;
    let request = proto::GetTotalsRequest {
        account_id: args.account.clone(),
        period: args.period.clone(),
        meter: args.meter.clone().unwrap_or_default(),
    };
    let t = client.get_totals(request).await.map_err(rpc_failure)?.into_inner();
    if as_json {
        let meters: serde_json::Map<String, serde_json::Value> = t
            .meters
            .iter()
            .map(|m| {
                let v = json!({
                    "quantity": m.quantity, "rated_quantity": m.rated_quantity, "charge": m.charge,
                    "amount": m.amount, "events": m.events,
                });
                (m.meter.clone(), v)
            })
            .collect();
        let object = json!({
            "account": t.account_id, "period": t.period, "currency": t.currency, "plan": t.plan,
            "total_charge": t.total_charge, "total_amount": t.total_amount, "meters": meters,
            "status": t.status, "projected_charge": t.projected_charge,
            "period_start": t.period_start, "period_end": t.period_end,
        });
        println!("{object}");
    } else {
        println!(
            "account {} period {} plan {} ({})",
            t.account_id, t.period, t.plan, t.currency
        );
        for m in &t.meters {
            println!(
                "  {:<20} quantity {:>16}  events {:>8}  charge {}",
                m.meter, m.quantity, m.events, m.charge
            );
        }
        println!(
            "total charge {}  invoice amount {} {}",
            t.total_charge, t.total_amount, t.currency
        );
        println!(
            "status {}, projected period-end charge {}",
            t.status, t.projected_charge
        );
    }
    Ok(())
}

fn token_hash(as_json: bool) -> Result<(), Failure> {
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
        .map_err(|e| Failure::new(format!("cannot read the token from standard input: {e}")))?;
    // One trailing line end (from echo or a file) is not part of the token.
    let token = text.strip_suffix('\n').unwrap_or(&text);
    let token = token.strip_suffix('\r').unwrap_or(token);
    if token.len() < MIN_TOKEN_BYTES || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Failure::new(format!(
            "a token must be at least {MIN_TOKEN_BYTES} characters without spaces (`ratectl token new` makes one)"
        )));
    }
    let hash = ratingd::security::auth::hash_hex(token);
    if as_json {
        println!("{}", json!({ "sha256": hash }));
    } else {
        println!("{hash}");
    }
    Ok(())
}

fn token_new(as_json: bool) -> Result<(), Failure> {
    let token = ratingd::domain::hex::hex(&ratingd::security::random_bytes::<32>());
    let hash = ratingd::security::auth::hash_hex(&token);
    if as_json {
        println!("{}", json!({ "token": token, "sha256": hash }));
    } else {
        println!("token:  {token}\nsha256: {hash}");
    }
    Ok(())
}

/// Token and TLS trust from the global options, set once at start.
static ACCESS: std::sync::OnceLock<Access> = std::sync::OnceLock::new();

async fn channel(target: &str) -> Result<Authed, Failure> {
    ACCESS
        .get_or_init(Access::default)
        .authed(target)
        .await
        .map_err(Failure::new)
}

async fn admin(target: &str) -> Result<AdminClient<Authed>, Failure> {
    Ok(AdminClient::new(channel(target).await?))
}

fn rpc_failure(s: tonic::Status) -> Failure {
    Failure::new(format!("{:?}: {}", s.code(), s.message()))
}

fn subscription_json(s: &proto::Subscription) -> serde_json::Value {
    json!({ "account": s.account_id, "plan": s.plan_id, "from": s.from, "to": s.to, "discount_percent": s.discount_percent })
}

fn print_subscription(s: &proto::Subscription) {
    let to = if s.to.is_empty() { "open-ended" } else { &s.to };
    let discount = if s.discount_percent.is_empty() {
        String::new()
    } else {
        format!(", {}% off", s.discount_percent)
    };
    println!("{} -> {} from {} to {to}{discount}", s.account_id, s.plan_id, s.from);
}

async fn subscriptions(command: SubscriptionsCommand, as_json: bool) -> Result<(), Failure> {
    match command {
        SubscriptionsCommand::Set {
            account,
            plan,
            from,
            to,
            discount,
            alerts,
            target,
        } => {
            let request = proto::Subscription {
                account_id: account,
                plan_id: plan,
                from,
                to: to.unwrap_or_default(),
                discount_percent: discount.unwrap_or_default(),
                alert_thresholds: alerts,
            };
            let s = admin(&target)
                .await?
                .upsert_subscription(request)
                .await
                .map_err(rpc_failure)?
                .into_inner();
            if as_json {
                println!("{}", subscription_json(&s))
            } else {
                print_subscription(&s)
            }
        }
        SubscriptionsCommand::Get { account, target } => {
            let request = proto::GetSubscriptionsRequest { account_id: account };
            let list = admin(&target)
                .await?
                .get_subscriptions(request)
                .await
                .map_err(rpc_failure)?
                .into_inner();
            if as_json {
                let items: Vec<_> = list.subscriptions.iter().map(subscription_json).collect();
                println!("{}", json!({ "subscriptions": items }));
            } else {
                list.subscriptions.iter().for_each(print_subscription);
            }
        }
    }
    Ok(())
}

async fn query_client(target: &str) -> Result<QueryClient<Authed>, Failure> {
    Ok(QueryClient::new(channel(target).await?))
}

fn record_json(r: &proto::RatedRecord) -> serde_json::Value {
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

async fn records(
    target: &str,
    account: String,
    from: Option<String>,
    to: Option<String>,
    limit: usize,
    as_json: bool,
) -> Result<(), Failure> {
    let mut client = query_client(target).await?;
    let mut rows = Vec::new();
    let mut token = String::new();
    while rows.len() < limit {
        let request = proto::ListRatedRecordsRequest {
            account_id: account.clone(),
            from: from.clone().unwrap_or_default(),
            to: to.clone().unwrap_or_default(),
            page_size: (limit - rows.len()).min(1000) as u32,
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
    if as_json {
        println!(
            "{}",
            json!({ "records": rows.iter().map(record_json).collect::<Vec<_>>() })
        );
    } else {
        for r in &rows {
            println!(
                "{} {} {} {} {} -> {} ({} v{})",
                r.timestamp, r.event_id, r.meter, r.quantity, r.period, r.charge, r.plan_id, r.version
            );
        }
    }
    Ok(())
}

async fn statement(target: &str, account: String, period: String, as_json: bool) -> Result<(), Failure> {
    let request = proto::StatementRequest {
        account_id: account,
        period,
    };
    let s = query_client(target)
        .await?
        .statement(request)
        .await
        .map_err(rpc_failure)?
        .into_inner();
    if as_json {
        let lines: Vec<_> = s
            .lines
            .iter()
            .map(|l| json!({ "meter": l.meter, "description": l.description, "amount": l.amount }))
            .collect();
        println!(
            "{}",
            json!({
                "account": s.account_id, "period": s.period, "plan": s.plan, "currency": s.currency,
                "status": s.status, "lines": lines, "subtotal": s.subtotal, "discount": s.discount,
                "total_charge": s.total_charge, "total_amount": s.total_amount,
            })
        );
    } else {
        println!(
            "statement {} {} ({}, {}, {})",
            s.account_id, s.period, s.plan, s.currency, s.status
        );
        for l in &s.lines {
            println!("  {:<70} {:>20}", l.description, l.amount);
        }
        println!("  {:<70} {:>20}", "subtotal", s.subtotal);
        println!("  {:<70} {:>20}", "discount", s.discount);
        println!("  {:<70} {:>20}", "total (exact)", s.total_charge);
        println!(
            "  {:<70} {:>20}",
            format!("amount due ({})", s.currency),
            s.total_amount
        );
    }
    Ok(())
}

/// One CSV field, quoted when it holds a comma, a quote or a line break.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

const EXPORT_COLUMNS: &str = "event_id,account,meter,quantity,timestamp,plan,version,period,rated_quantity,period_usage_before,charge,attributes";

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
            ]
            .iter()
            .map(|f| csv_field(f))
            .collect::<Vec<_>>()
            .join(",")
        }
    }
}

async fn export(args: &ExportArgs, as_json: bool) -> Result<(), Failure> {
    use std::io::Write;
    let mut client = query_client(&args.target).await?;
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
                for r in page.records.iter().filter(|r| r.period == args.period) {
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
    if as_json {
        println!(
            "{}",
            json!({ "file": args.out, "records": records, "charge": charge.to_string() })
        );
    } else {
        println!("{}: {records} records, charges summing to {charge}", args.out.display());
    }
    Ok(())
}

async fn explain(target: &str, account: String, event_id: String, as_json: bool) -> Result<(), Failure> {
    let request = proto::ExplainRecordRequest {
        account_id: account,
        event_id,
    };
    let e = query_client(target)
        .await?
        .explain_record(request)
        .await
        .map_err(rpc_failure)?
        .into_inner();
    if as_json {
        let explanation: serde_json::Value = serde_json::from_str(&e.explanation_json).unwrap_or_default();
        println!(
            "{}",
            json!({ "record": e.record.as_ref().map(record_json), "explain": explanation })
        );
    } else {
        println!("{}", e.explanation_text);
    }
    Ok(())
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

async fn suspense(command: SuspenseCommand, as_json: bool) -> Result<(), Failure> {
    match command {
        SuspenseCommand::List { reason, limit, target } => {
            let reason = reason_arg(reason.as_deref())?;
            let mut client = admin(&target).await?;
            let mut rows = Vec::new();
            let mut token = String::new();
            while rows.len() < limit {
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
            if as_json {
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
                println!("{}", json!({ "suspense": items }));
            } else {
                for e in &rows {
                    let ev = e.event.clone().unwrap_or_default();
                    println!(
                        "{} {} {} {}/{}: {}",
                        e.id,
                        reason_name(e.reason),
                        e.received_at,
                        ev.account_id,
                        ev.event_id,
                        e.detail
                    );
                }
            }
        }
        SuspenseCommand::Reprocess { reason, ids, target } => {
            let request = proto::ReprocessSuspenseRequest {
                reason: reason_arg(reason.as_deref())?,
                ids,
            };
            let r = admin(&target)
                .await?
                .reprocess_suspense(request)
                .await
                .map_err(rpc_failure)?
                .into_inner();
            if as_json {
                println!(
                    "{}",
                    json!({ "reprocessed": r.reprocessed, "accepted": r.accepted, "duplicate": r.duplicate, "rejected": r.rejected })
                );
            } else {
                println!(
                    "reprocessed {}: accepted {}, duplicate {}, still rejected {}",
                    r.reprocessed, r.accepted, r.duplicate, r.rejected
                );
            }
        }
    }
    Ok(())
}

async fn reload(target: &str, as_json: bool) -> Result<(), Failure> {
    let r = admin(target)
        .await?
        .reload_tariffs(proto::ReloadTariffsRequest {})
        .await
        .map_err(rpc_failure)?
        .into_inner();
    if as_json {
        println!(
            "{}",
            json!({ "plans": r.plans, "versions": r.versions, "meters": r.meters })
        );
    } else {
        println!(
            "tariffs reloaded: {} plans, {} versions, {} meters",
            r.plans, r.versions, r.meters
        );
    }
    Ok(())
}

async fn upcoming(target: &str, as_json: bool) -> Result<(), Failure> {
    let r = admin(target)
        .await?
        .list_upcoming_versions(proto::ListUpcomingVersionsRequest {})
        .await
        .map_err(rpc_failure)?;
    let versions = r.into_inner().versions;
    if as_json {
        let items: Vec<_> = versions
            .iter()
            .map(|v| json!({ "plan": v.plan_id, "version": v.version, "effective_from": v.effective_from }))
            .collect();
        println!("{}", json!({ "upcoming": items }));
    } else {
        for v in &versions {
            println!("{} version {} effective {}", v.plan_id, v.version, v.effective_from);
        }
    }
    Ok(())
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
