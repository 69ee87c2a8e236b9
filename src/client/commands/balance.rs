//! `ratectl balance`: prepaid top-ups, credit limits, balances and ledgers (docs/charging.md).

use serde_json::{Map, Value, json};

use crate::client::connect::Access;
use crate::client::output::{Failure, Printed, rpc_failure};
use crate::wire::proto::{self, admin_client::AdminClient, query_client::QueryClient};

#[derive(clap::Subcommand)]
pub enum BalanceCommand {
    /// Add prepaid credit, once per (account, id): sent again with the same content it changes
    /// nothing; with other content it is refused.
    Topup {
        #[arg(long)]
        account: String,
        /// Exact decimal > 0, at most the currency's minor unit places.
        #[arg(long)]
        amount: String,
        /// ISO 4217; a plan of the account in force now must bill in it.
        #[arg(long)]
        currency: String,
        #[arg(long)]
        id: String,
        /// RFC 3339: what is left of this credit then expires.
        #[arg(long)]
        expires: Option<String>,
    },
    /// Set a purse's credit limit (how far below zero it may go) and low-balance alerts.
    Limits {
        #[arg(long)]
        account: String,
        #[arg(long)]
        currency: String,
        #[arg(long)]
        credit_limit: Option<String>,
        /// A low-balance alert threshold (repeatable); give --low-balance none to clear them.
        #[arg(long = "low-balance")]
        low_balance: Vec<String>,
    },
    /// An account's balances per currency: available and reserved.
    Get {
        #[arg(long)]
        account: String,
    },
    /// An account's ledger, oldest entry first.
    Ledger {
        #[arg(long)]
        account: String,
        /// At most this many entries (all when absent).
        #[arg(long)]
        limit: Option<usize>,
    },
}

fn balance_json(r: &proto::BalanceResponse) -> Value {
    let mut balances = Map::new();
    for b in &r.balances {
        balances.insert(
            b.currency.clone(),
            json!({
                "available": b.available, "reserved": b.reserved, "credit_limit": b.credit_limit,
                "topped_up": b.topped_up, "adjusted": b.adjusted, "committed": b.committed,
                "expired": b.expired, "low_balance_thresholds": b.low_balance_thresholds,
            }),
        );
    }
    json!({ "account": r.account_id, "balances": balances, "already_applied": r.already_applied })
}

fn balance_lines(r: &proto::BalanceResponse) -> Vec<String> {
    if r.balances.is_empty() {
        return vec![format!("account {} has no balance", r.account_id)];
    }
    r.balances
        .iter()
        .map(|b| {
            format!(
                "{} {}: available {} reserved {} credit limit {}",
                r.account_id, b.currency, b.available, b.reserved, b.credit_limit
            )
        })
        .collect()
}

fn printed(r: &proto::BalanceResponse, note: Option<&str>) -> Printed {
    let mut lines = balance_lines(r);
    if let Some(note) = note {
        lines.insert(0, note.to_string());
    }
    Printed::new(lines, balance_json(r))
}

pub async fn run(command: &BalanceCommand, access: &Access) -> Result<Printed, Failure> {
    match command {
        BalanceCommand::Topup {
            account,
            amount,
            currency,
            id,
            expires,
        } => {
            let request = proto::TopUpRequest {
                account_id: account.clone(),
                amount: amount.clone(),
                currency: currency.clone(),
                id: id.clone(),
                expires_at: expires.clone().unwrap_or_default(),
            };
            let r = AdminClient::new(access.authed().await.map_err(Failure::new)?)
                .top_up(request)
                .await
                .map_err(rpc_failure)?
                .into_inner();
            let what = if r.already_applied {
                "already applied"
            } else {
                "applied"
            };
            Ok(printed(&r, Some(&format!("top-up {id} {what}: {amount} {currency}"))))
        }
        BalanceCommand::Limits {
            account,
            currency,
            credit_limit,
            low_balance,
        } => {
            let clear = low_balance.iter().any(|t| t == "none");
            let request = proto::SetBalanceLimitsRequest {
                account_id: account.clone(),
                currency: currency.clone(),
                credit_limit: credit_limit.clone().unwrap_or_default(),
                low_balance_thresholds: if clear { Vec::new() } else { low_balance.clone() },
                set_low_balance_thresholds: clear || !low_balance.is_empty(),
            };
            let r = AdminClient::new(access.authed().await.map_err(Failure::new)?)
                .set_balance_limits(request)
                .await
                .map_err(rpc_failure)?
                .into_inner();
            Ok(printed(&r, None))
        }
        BalanceCommand::Get { account } => {
            let request = proto::GetBalanceRequest {
                account_id: account.clone(),
            };
            let r = QueryClient::new(access.authed().await.map_err(Failure::new)?)
                .get_balance(request)
                .await
                .map_err(rpc_failure)?
                .into_inner();
            Ok(printed(&r, None))
        }
        BalanceCommand::Ledger { account, limit } => {
            let mut client = QueryClient::new(access.authed().await.map_err(Failure::new)?);
            let mut entries = Vec::new();
            let mut token = String::new();
            loop {
                let request = proto::ListLedgerRequest {
                    account_id: account.clone(),
                    page_size: 1000,
                    page_token: token,
                };
                let page = client.list_ledger(request).await.map_err(rpc_failure)?.into_inner();
                entries.extend(page.entries);
                token = page.next_page_token;
                if token.is_empty() || limit.is_some_and(|l| entries.len() >= l) {
                    break;
                }
            }
            if let Some(limit) = limit {
                entries.truncate(*limit);
            }
            let lines = entries
                .iter()
                .map(|e| {
                    format!(
                        "{:>6} {} {:<11} {:>14} {} {:<24} available {} reserved {} {}",
                        e.number,
                        e.at,
                        e.kind,
                        e.amount,
                        e.currency,
                        e.id,
                        e.available_after,
                        e.reserved_after,
                        e.detail
                    )
                })
                .collect();
            let json_entries: Vec<Value> = entries
                .iter()
                .map(|e| {
                    json!({
                        "number": e.number, "kind": e.kind, "currency": e.currency, "amount": e.amount,
                        "id": e.id, "at": e.at, "available_after": e.available_after,
                        "reserved_after": e.reserved_after, "detail": e.detail,
                    })
                })
                .collect();
            Ok(Printed::new(
                lines,
                json!({ "account": account, "entries": json_entries }),
            ))
        }
    }
}
