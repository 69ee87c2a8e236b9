//! Balances and charging sessions out: wallets, ledger entries, grants and ended sessions in
//! their proto form. (Requests are checked into pipeline operations at the service edge,
//! `edge::balance`.)

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::convert::reason_to_proto;
use super::proto;
use crate::domain::balance::{LedgerEntry, Session, Wallet, at_record_scale};
use crate::domain::usage::RejectReason;

/// A balance figure, with the 9 places of record charges.
fn text(d: Decimal) -> String {
    at_record_scale(d).to_string()
}

fn rfc3339(nanos: i64) -> String {
    DateTime::<Utc>::from_timestamp_nanos(nanos).to_rfc3339()
}

pub fn wallet_to_proto(account: &str, wallet: Option<&Wallet>, already_applied: bool) -> proto::BalanceResponse {
    let balances = wallet
        .map(|w| {
            w.purses
                .iter()
                .map(|p| proto::CurrencyBalance {
                    currency: p.currency.to_string(),
                    available: text(p.available()),
                    reserved: text(p.reserved),
                    credit_limit: text(p.credit_limit),
                    topped_up: text(p.topped_up),
                    adjusted: text(p.adjusted),
                    committed: text(p.committed),
                    expired: text(p.expired),
                    low_balance_thresholds: p.low_balance.iter().map(|t| t.normalize().to_string()).collect(),
                })
                .collect()
        })
        .unwrap_or_default();
    proto::BalanceResponse {
        account_id: account.to_string(),
        balances,
        already_applied,
    }
}

pub fn entry_to_proto(e: &LedgerEntry) -> proto::LedgerEntry {
    proto::LedgerEntry {
        number: e.number,
        kind: e.kind.as_str().to_string(),
        currency: e.currency.to_string(),
        // As entered for a top-up, with 9 places for what rating computed.
        amount: e.amount.to_string(),
        id: e.id.clone(),
        at: rfc3339(e.at_unix_nanos),
        available_after: text(e.available_after),
        reserved_after: text(e.reserved_after),
        detail: e.detail.clone(),
    }
}

pub fn grant_to_proto(granted: Decimal, s: &Session) -> proto::GrantResponse {
    proto::GrantResponse {
        session_id: s.id.clone(),
        granted_units: granted.normalize().to_string(),
        total_granted_units: s.granted.normalize().to_string(),
        reserved: text(s.reserved),
        currency: s.currency.to_string(),
        expires_at: rfc3339(s.expires_unix_nanos),
        started_at: rfc3339(s.started_unix_nanos),
    }
}

pub fn ended_to_proto(s: &Session) -> proto::TerminateResponse {
    let Some(o) = &s.outcome else {
        return proto::TerminateResponse {
            session_id: s.id.clone(),
            ..Default::default()
        };
    };
    let rejected = o.rejected.as_ref().and_then(|(reason, _)| {
        RejectReason::ALL
            .iter()
            .find(|r| r.as_str() == reason)
            .map(|r| reason_to_proto(*r) as i32)
    });
    proto::TerminateResponse {
        session_id: s.id.clone(),
        used_units: o.used.normalize().to_string(),
        charge: text(o.charge),
        currency: s.currency.to_string(),
        released: text(o.released),
        overdraft: text(o.overdraft),
        beyond_grant_units: o.beyond_grant.normalize().to_string(),
        rejected: rejected.unwrap_or(0),
        rejected_detail: o
            .rejected
            .as_ref()
            .map(|(r, d)| format!("{r}: {d}"))
            .unwrap_or_default(),
        terminated_at: rfc3339(o.at_unix_nanos),
    }
}
