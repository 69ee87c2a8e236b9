//! `ratectl`: the command-line client and tariff tool. Argument parsing and dispatch only: each
//! command lives in `ratingd::client::commands`, what it prints in `ratingd::client::output`.
//!
//! Offline commands (no daemon needed): `tariffs check FILE`, `tariffs quote` and `token`.
//! Against a running daemon: everything else. Every command takes `--json` for scripts. Exit
//! codes: 0 success, 1 a failed command, 2 bad usage.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use ratingd::client::commands::balance::BalanceCommand;
use ratingd::client::commands::charges::ChargesCommand;
use ratingd::client::commands::corrections::{AmendArgs, RerateArgs, VoidArgs};
use ratingd::client::commands::explain::ExplainArgs;
use ratingd::client::commands::export::ExportArgs;
use ratingd::client::commands::mediation::MediationCommand;
use ratingd::client::commands::records::RecordsArgs;
use ratingd::client::commands::send::SendArgs;
use ratingd::client::commands::statement::StatementArgs;
use ratingd::client::commands::subscriptions::SubscriptionsCommand;
use ratingd::client::commands::suspense::SuspenseCommand;
use ratingd::client::commands::tariffs::TariffsCommand;
use ratingd::client::commands::token::TokenCommand;
use ratingd::client::commands::totals::TotalsArgs;
use ratingd::client::commands::{self, runtime};
use ratingd::client::connect::Access;
use ratingd::client::output::{Failure, Output, Printed};

#[derive(Parser)]
#[command(name = "ratectl", version, about = "ratingd client and tariff tool")]
struct Args {
    /// Where ratingd listens: http://host:port, or https:// for TLS (before or after the command).
    #[arg(long, global = true, env = "RATECTL_TARGET", default_value = commands::DEFAULT_TARGET)]
    target: String,
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
    /// Normalization rules files: check, and try on one event, offline.
    #[command(subcommand)]
    Mediation(MediationCommand),
    /// Send a usage file (JSONL, or CSV when the name ends in .csv) to ratingd.
    Send(SendArgs),
    /// Committed totals of one account and billing period.
    Totals(TotalsArgs),
    /// Subscriptions of accounts to plans (Admin API).
    #[command(subcommand)]
    Subscriptions(SubscriptionsCommand),
    /// One-off charges and credits (Admin API).
    #[command(subcommand)]
    Charges(ChargesCommand),
    /// Prepaid balances: top-ups, credit limits, balances and ledgers.
    #[command(subcommand)]
    Balance(BalanceCommand),
    /// Rate a period's records again under the tariff versions now in force (Admin API): a
    /// reversal and a replacement of each changed record, one commit per account and period.
    Rerate(RerateArgs),
    /// Take one event back: a reversal of its record (Admin API). Its id stays claimed.
    Void(VoidArgs),
    /// Rate one event again with a new quantity and/or attributes, at its own time (Admin API).
    Amend(AmendArgs),
    /// Rated records of one account, oldest first.
    Records(RecordsArgs),
    /// Every rated record of a period (or of one account in it) to CSV or JSONL, streamed page by
    /// page (bounded memory), for audits and ERP or data-warehouse loads.
    Export(ExportArgs),
    /// Invoice-ready line items of one account and period.
    Statement(StatementArgs),
    /// How one rated record's charge was computed.
    Explain(ExplainArgs),
    /// Rejected events waiting in suspense (Admin API).
    #[command(subcommand)]
    Suspense(SuspenseCommand),
    /// Bearer tokens for the `[[tokens]]` of ratingd's config (offline).
    #[command(subcommand)]
    Token(TokenCommand),
}

/// Runs one command that talks to ratingd, on a runtime of its own.
fn online(command: impl std::future::Future<Output = Result<Printed, Failure>>) -> Result<Printed, Failure> {
    runtime()?.block_on(command)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let access = Access {
        target: args.target.clone(),
        token: args.token.clone(),
        ca_cert: args.ca_cert.clone(),
        client_cert: args.client_cert.clone(),
        client_key: args.client_key.clone(),
    };
    let a = &access;
    let result = match &args.command {
        Command::Token(c) => commands::token::run(c),
        Command::Mediation(c) => commands::mediation::run(c),
        Command::Tariffs(c) => match commands::tariffs::run_offline(c) {
            Some(result) => result,
            None => online(commands::tariffs::run(c, a)),
        },
        Command::Send(args) => online(commands::send::run(args, a)),
        Command::Totals(args) => online(commands::totals::run(args, a)),
        Command::Subscriptions(c) => online(commands::subscriptions::run(c, a)),
        Command::Charges(c) => online(commands::charges::run(c, a)),
        Command::Balance(c) => online(commands::balance::run(c, a)),
        Command::Rerate(args) => online(commands::corrections::rerate(args, a)),
        Command::Void(args) => online(commands::corrections::void(args, a)),
        Command::Amend(args) => online(commands::corrections::amend(args, a)),
        Command::Records(args) => online(commands::records::run(args, a)),
        Command::Export(args) => online(commands::export::run(args, a)),
        Command::Statement(args) => online(commands::statement::run(args, a)),
        Command::Explain(args) => online(commands::explain::run(args, a)),
        Command::Suspense(c) => online(commands::suspense::run(c, a)),
    };
    Output { json: args.json }.finish(result)
}
