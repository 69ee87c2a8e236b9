//! What a commit writes besides its records, as typed values: the shards say what (a suspense
//! entry, a ledger entry, a session, a part held, ...), and only the store knows how it is keyed
//! and encoded. The committer hands them to [`super::Store::commit`], which encodes each into the
//! commit's one sled batch: the keys come from the registry ([`super::keys`]), the values from
//! the codecs ([`super::codec`], [`super::balance`], [`super::mediation`]).

use std::sync::Arc;

use super::balance::{StoredTopUp, encode_balance_alert, encode_entry, encode_session, encode_topup, encode_wallet};
use super::keys::{self, with_seq, with_seq_n};
use super::mediation::{encode_part, moved_key, part_key};
use crate::domain::balance::{LedgerEntry, Session, Wallet};
use crate::domain::partial::Part;
use crate::domain::usage::Rejected;

/// One write of a commit.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// A rejected event into suspense: `s/<seq><n>`, numbered in commit order.
    Suspense(Rejected),
    /// A ledger entry: `l/<seq><n>` in commit order, its account (the wallet's key, shared) in
    /// `y/<seq>`.
    Ledger { account: Arc<str>, entry: LedgerEntry },
    /// A wallet's settings (credit limits, low-balance thresholds): `w/<account>`.
    WalletSettings(Wallet),
    /// A top-up applied under its id: `n/<account>\xFF<id>`.
    TopUp {
        account: String,
        id: String,
        top_up: StoredTopUp,
    },
    /// A charging session as it stands: `g/<id>`.
    Session(Session),
    /// A balance alert to announce on `<prefix>:alerts`: `e/<order key>`, its stream entry.
    BalanceAlert { order: String, entry: String },
    /// The dedupe claim of an event whose account rules changed: `h/<day><fingerprint>`.
    MovedClaim { day: u16, fingerprint: u128, content: u64 },
    /// A part of a partial session held until it merges: `p/<account>\xFF<session>\xFF<seq>`.
    PartHeld {
        account: Arc<str>,
        session: String,
        part: Part,
    },
    /// A part of a session merged by this commit, removed.
    PartMerged {
        account: Arc<str>,
        session: String,
        seq: u32,
    },
}

impl Write {
    /// True for a suspense entry (the committer counts them for the suspense gauge).
    pub fn is_suspense(&self) -> bool {
        matches!(self, Write::Suspense(_))
    }
}

/// Puts `writes` into the batch of commit `seq`, numbering suspense and ledger entries in their
/// order; the ledger's account index goes in too.
pub(super) fn encode_into(batch: &mut sled::Batch, seq: u64, writes: Vec<Write>) {
    let (mut suspense, mut ledger) = (0u32, 0u32);
    let mut ledger_accounts: Vec<Arc<str>> = Vec::new();
    for write in writes {
        match write {
            Write::Suspense(rejected) => {
                batch.insert(
                    with_seq_n(keys::SUSPENSE, seq, suspense),
                    super::codec::encode_suspense(&rejected),
                );
                suspense += 1;
            }
            Write::Ledger { account, entry } => {
                batch.insert(with_seq_n(keys::LEDGER, seq, ledger), encode_entry(&entry));
                ledger += 1;
                ledger_accounts.push(account);
            }
            Write::WalletSettings(wallet) => {
                batch.insert(super::balance::wallet_key(&wallet.account), encode_wallet(&wallet));
            }
            Write::TopUp { account, id, top_up } => {
                batch.insert(super::balance::topup_key(&account, &id), encode_topup(&top_up));
            }
            Write::Session(session) => {
                batch.insert(super::balance::session_key(&session.id), encode_session(&session));
            }
            Write::BalanceAlert { order, entry } => {
                batch.insert(super::balance::balance_alert_key(&order), encode_balance_alert(&entry));
            }
            Write::MovedClaim {
                day,
                fingerprint,
                content,
            } => {
                batch.insert(moved_key(day, fingerprint), content.to_le_bytes().to_vec());
            }
            Write::PartHeld { account, session, part } => {
                batch.insert(part_key(&account, &session, part.seq), encode_part(&part));
            }
            Write::PartMerged { account, session, seq } => {
                batch.remove(part_key(&account, &session, seq));
            }
        }
    }
    if !ledger_accounts.is_empty() {
        ledger_accounts.sort_unstable();
        ledger_accounts.dedup();
        batch.insert(
            with_seq(keys::LEDGER_INDEX, seq),
            super::codec::encode_index(&ledger_accounts),
        );
    }
}

#[cfg(test)]
mod tests {
    use rust_decimal::Decimal;

    use super::*;
    use crate::domain::balance::{EntryKind, Wallet};
    use crate::domain::usage::{RawEvent, RejectReason};
    use crate::store::{Commit, Store};

    /// Every kind of write a shard hands the committer is keyed and encoded by the store and
    /// reads back as it was written, through the readers the rest of ratingd uses.
    #[test]
    fn every_write_reads_back_through_its_table() {
        let dir = std::env::temp_dir().join(format!("ratingd-writes-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut store = Store::open(&dir).unwrap();
        let usd: crate::domain::money::Currency = "USD".parse().unwrap();
        let rejected = Rejected {
            event: RawEvent {
                event_id: "e1".into(),
                account_id: "acme".into(),
                meter: "api.requests".into(),
                quantity: Some((1, 0)),
                timestamp_unix_nanos: 7,
                attributes: Vec::new(),
            },
            reason: RejectReason::NoTariff,
            detail: "no plan".into(),
            received_unix_nanos: 9,
        };
        let entry = LedgerEntry {
            account: "acme".into(),
            number: 1,
            kind: EntryKind::TopUp,
            currency: usd,
            amount: Decimal::from(10),
            id: "t1".into(),
            at_unix_nanos: 5,
            available_after: Decimal::from(10),
            reserved_after: Decimal::ZERO,
            detail: String::new(),
            expires_unix_nanos: None,
        };
        let session = Session {
            id: "s1".into(),
            account: "acme".into(),
            meter: "voice.seconds".into(),
            attributes: vec![("destination".into(), "+44".into())],
            currency: usd,
            started_unix_nanos: 3,
            granted: Decimal::from(60),
            used: Decimal::ZERO,
            reserved: Decimal::from(2),
            expires_unix_nanos: 4,
            outcome: None,
            as_sent: Some(Box::new(crate::domain::record::AsSent {
                account_id: "sim-262011234567890".into(),
                meter: "voice.seconds".into(),
                quantity: Decimal::ZERO,
                attributes: vec![("destination".into(), "044".into())],
                rules: vec!["sim-to-account".into(), "national".into()],
            })),
        };
        let top_up = StoredTopUp {
            currency: usd,
            amount: Decimal::from(10),
            expires: None,
            entry: 1,
        };
        let part = Part {
            seq: 2,
            last: true,
            event_id: "p2".into(),
            meter: "voice.seconds".into(),
            quantity: Decimal::from(30),
            timestamp_unix_nanos: 11,
            attributes: Vec::new(),
            content: 13,
            received_unix_nanos: 17,
        };
        let mut wallet = Wallet::new("acme");
        wallet.purse_mut(usd).credit_limit = Decimal::from(5);
        let writes = vec![
            Write::Suspense(rejected.clone()),
            Write::Ledger {
                account: "acme".into(),
                entry: entry.clone(),
            },
            Write::WalletSettings(wallet),
            Write::TopUp {
                account: "acme".into(),
                id: "t1".into(),
                top_up: top_up.clone(),
            },
            Write::Session(session.clone()),
            Write::BalanceAlert {
                order: "acme|00000000000000000001|low".into(),
                entry: "{}".into(),
            },
            Write::MovedClaim {
                day: 20_000,
                fingerprint: 42,
                content: 99,
            },
            Write::PartHeld {
                account: "acme".into(),
                session: "call".into(),
                part: part.clone(),
            },
        ];
        store
            .commit(Commit {
                writes,
                ..Commit::default()
            })
            .unwrap();
        let page = store.suspense().page(None, None, 10).unwrap();
        assert_eq!(page.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>(), vec![rejected]);
        let balances = store.balances();
        assert_eq!(balances.ledger("acme", 0, 10).unwrap(), vec![entry]);
        assert_eq!(balances.session("s1").unwrap(), Some(session));
        assert_eq!(balances.topup("acme", "t1").unwrap(), Some(top_up));
        let settings = balances.settings().unwrap();
        assert_eq!(settings[0].purse(usd).unwrap().credit_limit, Decimal::from(5));
        assert_eq!(store.balance_alerts().pending().unwrap().len(), 1);
        assert_eq!(store.moved_claims().get(20_000, 42).unwrap(), Some(99));
        let parts = store.partial_parts().all().unwrap();
        assert_eq!(parts, vec![("acme".to_string(), "call".to_string(), part)]);
        // A merge removes the part in its own commit.
        let merged = Write::PartMerged {
            account: "acme".into(),
            session: "call".into(),
            seq: 2,
        };
        store
            .commit(Commit {
                writes: vec![merged],
                ..Commit::default()
            })
            .unwrap();
        assert!(store.partial_parts().all().unwrap().is_empty());
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
