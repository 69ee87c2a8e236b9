//! Balances on disk: written only by the committer, in the same batch as the records they pay
//! for (the shards encode them into their outputs), and read here.
//!
//! - `l/<seq u64 BE><n u32 BE>`: the ledger entries of commit `seq`, in order (appended at the
//!   end of the key space like blocks: a busy prepaid daemon writes thousands a commit, and keys
//!   spread over the accounts would rewrite sled leaves all over the tree);
//! - `y/<seq u64 BE>`: the accounts with ledger entries in commit `seq` (a ledger is read by
//!   account through it); the wallets themselves are rebuilt from the ledger at start;
//! - `w/<account>`: a wallet's settings (each purse's credit limit and low-balance thresholds),
//!   written when they are set;
//! - `n/<account>\xFF<top-up id>`: a top-up applied under this id (what it was, its entry);
//! - `g/<session id>`: a charging session (open, expired or terminated with its outcome);
//! - `e/<account>|<ledger entry, 20 digits>|<kind>`: a balance alert to announce on
//!   `<prefix>:alerts` (see [`super::Outbox`]), in the order of the changes that raised it.
//!
//! Every value starts with a layout byte (1); a value of another layout is refused as corrupt.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::codec::{CodecError, Reader, Writer};
use super::{Db, StoreError, keys};
use crate::domain::balance::{EntryKind, LedgerEntry, Lot, Purse, Session, SessionOutcome, Wallet};
use crate::domain::money::Currency;
use crate::domain::record::AsSent;

const LAYOUT: u8 = 1;

pub(super) fn wallet_key(account: &str) -> Vec<u8> {
    [keys::WALLET, account.as_bytes()].concat()
}

/// The key of the `n`th ledger entry of commit `seq`.
pub(super) fn ledger_key(seq: u64, n: u32) -> Vec<u8> {
    [keys::LEDGER, &seq.to_be_bytes(), &n.to_be_bytes()].concat()
}

pub(super) fn topup_key(account: &str, id: &str) -> Vec<u8> {
    [keys::TOPUP, account.as_bytes(), &[0xFF], id.as_bytes()].concat()
}

pub(super) fn session_key(id: &str) -> Vec<u8> {
    [keys::SESSION, id.as_bytes()].concat()
}

pub(super) fn balance_alert_key(id: &str) -> Vec<u8> {
    [keys::BALANCE_ALERT, id.as_bytes()].concat()
}

/// A balance alert's stored value: not announced yet, then its stream entry.
pub(super) fn encode_balance_alert(entry: &str) -> Vec<u8> {
    [&[0u8][..], entry.as_bytes()].concat()
}

fn currency(r: &mut Reader<'_>) -> Result<Currency, CodecError> {
    r.str()?.parse().map_err(|_| CodecError::Invalid("currency"))
}

fn layout(r: &mut Reader<'_>) -> Result<(), CodecError> {
    match r.u8()? {
        LAYOUT => Ok(()),
        _ => Err(CodecError::Invalid(
            "balance value of an unknown layout (written by a newer ratingd?)",
        )),
    }
}

pub fn encode_wallet(w: &Wallet) -> Vec<u8> {
    let mut value = Vec::with_capacity(64 + 128 * w.purses.len());
    let mut o = Writer(&mut value);
    o.u8(LAYOUT);
    o.str(&w.account);
    o.u64(w.next_entry);
    o.u32(w.purses.len() as u32);
    for p in &w.purses {
        o.str(p.currency.as_str());
        for d in [
            p.topped_up,
            p.adjusted,
            p.committed,
            p.expired,
            p.reserved,
            p.credit_limit,
        ] {
            o.decimal(d);
        }
        o.u32(p.low_balance.len() as u32);
        for t in &p.low_balance {
            o.decimal(*t);
        }
        o.u32(p.lots.len() as u32);
        for l in &p.lots {
            o.str(&l.id);
            o.i64(l.expires_unix_nanos);
            o.decimal(l.remaining);
        }
    }
    value
}

pub fn decode_wallet(bytes: &[u8]) -> Result<Wallet, CodecError> {
    let mut r = Reader::new(bytes);
    layout(&mut r)?;
    let account = r.str()?;
    let next_entry = r.u64()?;
    let n = r.u32()?;
    let mut purses = Vec::new();
    for _ in 0..n {
        let mut p = Purse::new(currency(&mut r)?);
        p.topped_up = r.decimal()?;
        p.adjusted = r.decimal()?;
        p.committed = r.decimal()?;
        p.expired = r.decimal()?;
        p.reserved = r.decimal()?;
        p.credit_limit = r.decimal()?;
        for _ in 0..r.u32()? {
            p.low_balance.push(r.decimal()?);
        }
        for _ in 0..r.u32()? {
            p.lots.push(Lot {
                id: r.str()?,
                expires_unix_nanos: r.i64()?,
                remaining: r.decimal()?,
            });
        }
        purses.push(p);
    }
    Ok(Wallet {
        account,
        next_entry,
        purses,
    })
}

pub fn encode_entry(e: &LedgerEntry) -> Vec<u8> {
    let mut value = Vec::with_capacity(128);
    let mut o = Writer(&mut value);
    o.u8(LAYOUT);
    o.str(&e.account);
    o.u64(e.number);
    o.u8(e.kind.code());
    o.str(e.currency.as_str());
    o.decimal(e.amount);
    o.str(&e.id);
    o.i64(e.at_unix_nanos);
    o.decimal(e.available_after);
    o.decimal(e.reserved_after);
    o.str(&e.detail);
    o.i64(e.expires_unix_nanos.unwrap_or(i64::MIN));
    value
}

pub fn decode_entry(bytes: &[u8]) -> Result<LedgerEntry, CodecError> {
    let mut r = Reader::new(bytes);
    layout(&mut r)?;
    Ok(LedgerEntry {
        account: r.str()?,
        number: r.u64()?,
        kind: EntryKind::from_code(r.u8()?).ok_or(CodecError::Invalid("ledger entry kind"))?,
        currency: currency(&mut r)?,
        amount: r.decimal()?,
        id: r.str()?,
        at_unix_nanos: r.i64()?,
        available_after: r.decimal()?,
        reserved_after: r.decimal()?,
        detail: r.str()?,
        expires_unix_nanos: Some(r.i64()?).filter(|e| *e != i64::MIN),
    })
}

/// A top-up applied: what a resend under its id must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTopUp {
    pub currency: Currency,
    pub amount: Decimal,
    pub expires: Option<DateTime<Utc>>,
    /// Its ledger entry.
    pub entry: u64,
}

pub fn encode_topup(t: &StoredTopUp) -> Vec<u8> {
    let mut value = Vec::with_capacity(48);
    let mut o = Writer(&mut value);
    o.u8(LAYOUT);
    o.str(t.currency.as_str());
    o.decimal(t.amount);
    o.i64(t.expires.and_then(|e| e.timestamp_nanos_opt()).unwrap_or(i64::MIN));
    o.u64(t.entry);
    value
}

pub fn decode_topup(bytes: &[u8]) -> Result<StoredTopUp, CodecError> {
    let mut r = Reader::new(bytes);
    layout(&mut r)?;
    let currency = currency(&mut r)?;
    let amount = r.decimal()?;
    let expires = r.i64()?;
    Ok(StoredTopUp {
        currency,
        amount,
        expires: (expires != i64::MIN).then(|| DateTime::from_timestamp_nanos(expires)),
        entry: r.u64()?,
    })
}

pub fn encode_session(s: &Session) -> Vec<u8> {
    let mut value = Vec::with_capacity(160);
    let mut o = Writer(&mut value);
    o.u8(LAYOUT);
    o.str(&s.id);
    o.str(&s.account);
    o.str(&s.meter);
    o.pairs(&s.attributes);
    o.str(s.currency.as_str());
    o.i64(s.started_unix_nanos);
    o.decimal(s.granted);
    o.decimal(s.used);
    o.decimal(s.reserved);
    o.i64(s.expires_unix_nanos);
    match &s.outcome {
        None => o.u8(0),
        Some(out) => {
            o.u8(1);
            for d in [out.used, out.charge, out.overdraft, out.beyond_grant, out.released] {
                o.decimal(d);
            }
            match &out.rejected {
                None => o.u8(0),
                Some((reason, detail)) => {
                    o.u8(1);
                    o.str(reason);
                    o.str(detail);
                }
            }
            o.i64(out.at_unix_nanos);
        }
    }
    // Added after the first layout: what the caller sent, when normalization rules changed
    // it. Written only then, so a session without it reads as before.
    if let Some(sent) = &s.as_sent {
        o.u8(1);
        o.str(&sent.account_id);
        o.str(&sent.meter);
        o.pairs(&sent.attributes);
        o.u32(sent.rules.len() as u32);
        for rule in &sent.rules {
            o.str(rule);
        }
    }
    value
}

pub fn decode_session(bytes: &[u8]) -> Result<Session, CodecError> {
    let mut r = Reader::new(bytes);
    layout(&mut r)?;
    let mut s = Session {
        id: r.str()?,
        account: r.str()?,
        meter: r.str()?,
        attributes: r.pairs()?,
        currency: currency(&mut r)?,
        started_unix_nanos: r.i64()?,
        granted: r.decimal()?,
        used: r.decimal()?,
        reserved: r.decimal()?,
        expires_unix_nanos: r.i64()?,
        outcome: None,
        as_sent: None,
    };
    if r.u8()? == 1 {
        let mut out = SessionOutcome {
            used: r.decimal()?,
            charge: r.decimal()?,
            overdraft: r.decimal()?,
            beyond_grant: r.decimal()?,
            released: r.decimal()?,
            rejected: None,
            at_unix_nanos: 0,
        };
        if r.u8()? == 1 {
            out.rejected = Some((r.str()?, r.str()?));
        }
        out.at_unix_nanos = r.i64()?;
        s.outcome = Some(out);
    }
    if !r.is_empty() && r.u8()? == 1 {
        let account_id = r.str()?;
        let meter = r.str()?;
        let attributes = r.pairs()?;
        let rules = (0..r.u32()?).map(|_| r.str()).collect::<Result<Vec<_>, _>>()?;
        // The units are the session's own: a rule that scales them is refused at Authorize.
        s.as_sent = Some(Box::new(AsSent {
            account_id,
            meter,
            quantity: s.used,
            attributes,
            rules,
        }));
    }
    if !r.is_empty() {
        return Err(CodecError::Invalid("trailing bytes"));
    }
    Ok(s)
}

/// Reads balances, ledgers and sessions (the Query API, the shards, the start's check).
#[derive(Clone)]
pub struct Balances(pub(super) Db);

impl Balances {
    fn corrupt(&self, key: &[u8], error: CodecError) -> StoreError {
        self.0.corrupt(String::from_utf8_lossy(key).into_owned(), error)
    }

    /// The top-up applied under `id` to `account`, if any.
    pub fn topup(&self, account: &str, id: &str) -> Result<Option<StoredTopUp>, StoreError> {
        let key = topup_key(account, id);
        match self.0.db.get(&key)? {
            None => Ok(None),
            Some(v) => decode_topup(&v).map(Some).map_err(|e| self.corrupt(&key, e)),
        }
    }

    /// Every wallet's settings (credit limits, low-balance thresholds), by account.
    pub fn settings(&self) -> Result<Vec<Wallet>, StoreError> {
        self.0
            .db
            .scan_prefix(keys::WALLET)
            .map(|item| {
                let (k, v) = item?;
                decode_wallet(&v).map_err(|e| self.corrupt(&k, e))
            })
            .collect()
    }

    /// Sessions that hold a reservation (recovery: they expire on the shard's clock).
    pub fn reserved_sessions(&self) -> Result<Vec<Session>, StoreError> {
        let mut out = Vec::new();
        for item in self.0.db.scan_prefix(keys::SESSION) {
            let (k, v) = item?;
            let s = decode_session(&v).map_err(|e| self.corrupt(&k, e))?;
            if s.outcome.is_none() && s.reserved > Decimal::ZERO {
                out.push(s);
            }
        }
        Ok(out)
    }

    pub fn session(&self, id: &str) -> Result<Option<Session>, StoreError> {
        let key = session_key(id);
        match self.0.db.get(&key)? {
            None => Ok(None),
            Some(v) => decode_session(&v).map(Some).map_err(|e| self.corrupt(&key, e)),
        }
    }

    /// The account's ledger entries numbered after `after`, at most `limit`, in order: the
    /// commits whose `y/` index names the account, read in commit order.
    pub fn ledger(&self, account: &str, after: u64, limit: usize) -> Result<Vec<LedgerEntry>, StoreError> {
        let mut out = Vec::new();
        for item in self.0.db.scan_prefix(keys::LEDGER_INDEX) {
            let (k, v) = item?;
            let accounts = super::codec::decode_index(&v).map_err(|e| self.corrupt(&k, e))?;
            if !accounts.iter().any(|a| a == account) {
                continue;
            }
            let Some(seq) = keys::seq_of(&k) else { continue };
            for item in self.0.db.range(ledger_key(seq, 0)..ledger_key(seq + 1, 0)) {
                let (k, v) = item?;
                let e = decode_entry(&v).map_err(|e| self.corrupt(&k, e))?;
                if e.account == account && e.number > after {
                    out.push(e);
                    if out.len() >= limit {
                        return Ok(out);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Every ledger entry in commit order (each account's in its entry order): the start
    /// rebuilds the wallets from them.
    pub fn all_entries(&self) -> impl Iterator<Item = Result<LedgerEntry, StoreError>> + '_ {
        self.0.db.scan_prefix(keys::LEDGER).map(move |item| {
            let (k, v) = item?;
            decode_entry(&v).map_err(|e| self.corrupt(&k, e))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_balance_value_round_trips() {
        let eur: Currency = "EUR".parse().unwrap();
        let at = DateTime::from_timestamp(1_800_000_000, 5).unwrap();
        let mut w = Wallet::new("acc");
        let topped = w.top_up(eur, "12.5".parse().unwrap(), "t1", Some(at), at).unwrap();
        w.purse_mut(eur).credit_limit = "3".parse().unwrap();
        w.purse_mut(eur).low_balance = vec!["1".parse().unwrap()];
        assert_eq!(decode_wallet(&encode_wallet(&w)).unwrap(), w);
        assert_eq!(decode_entry(&encode_entry(&topped)).unwrap(), topped);
        let t = StoredTopUp {
            currency: eur,
            amount: "12.5".parse().unwrap(),
            expires: Some(at),
            entry: 1,
        };
        assert_eq!(decode_topup(&encode_topup(&t)).unwrap(), t);
        let mut s = Session {
            id: "s1".into(),
            account: "acc".into(),
            meter: "voice".into(),
            attributes: vec![("destination".into(), "+49".into())],
            currency: eur,
            started_unix_nanos: 7,
            granted: "187".parse().unwrap(),
            used: "60".parse().unwrap(),
            reserved: "0.287".parse().unwrap(),
            expires_unix_nanos: 9,
            outcome: None,
            as_sent: None,
        };
        assert_eq!(decode_session(&encode_session(&s)).unwrap(), s);
        // A session the rules normalized keeps what was sent (its units are the session's).
        let before = encode_session(&s);
        let mut normalized = s.clone();
        normalized.as_sent = Some(Box::new(crate::domain::record::AsSent {
            account_id: "sim-1".into(),
            meter: "voice".into(),
            quantity: normalized.used,
            attributes: vec![("destination".into(), "049".into())],
            rules: vec!["national-to-e164".into()],
        }));
        let bytes = encode_session(&normalized);
        assert_eq!(decode_session(&bytes).unwrap(), normalized);
        assert!(bytes.starts_with(&before), "what was sent only adds to the value");
        s.outcome = Some(SessionOutcome {
            used: "200".parse().unwrap(),
            charge: "0.3".parse().unwrap(),
            overdraft: "0.013".parse().unwrap(),
            beyond_grant: "13".parse().unwrap(),
            released: "0.287".parse().unwrap(),
            rejected: Some(("PERIOD_CLOSED".into(), "closed".into())),
            at_unix_nanos: 11,
        });
        assert_eq!(decode_session(&encode_session(&s)).unwrap(), s);
        let mut bad = encode_wallet(&w);
        bad[0] = 2;
        assert!(decode_wallet(&bad).is_err());
        assert!(decode_session(&encode_session(&s)[..20]).is_err());
        let mut trailing = encode_session(&s);
        trailing.extend_from_slice(&[0, 7]);
        assert!(decode_session(&trailing).is_err(), "bytes past the value are refused");
    }
}
