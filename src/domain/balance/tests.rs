//! Wallets, purses and their ledger: by hand and against a model (proptest).

use super::*;
use proptest::prelude::*;

fn eur() -> Currency {
    "EUR".parse().unwrap()
}

fn at(s: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
}

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

#[test]
fn a_reserved_session_commits_its_charge_and_releases_the_rest() {
    let mut w = Wallet::new("acc");
    let mut ledger = vec![w.top_up(eur(), d("10"), "t1", None, at(0)).unwrap()];
    ledger.push(w.reserve(eur(), d("3.5"), "s1", at(1)).unwrap());
    assert_eq!(w.purse(eur()).unwrap().available(), d("6.5"));
    ledger.push(w.release(eur(), d("3.5"), "s1", at(2), String::new()).unwrap());
    let (e, overdraft) = w.commit(eur(), d("2.25"), "s1", at(2), String::new()).unwrap();
    ledger.push(e);
    assert_eq!(overdraft, Decimal::ZERO);
    let purse = w.purse(eur()).unwrap();
    assert_eq!(purse.available(), d("7.75"));
    assert_eq!(purse.reserved, Decimal::ZERO);
    assert_eq!(ledger.iter().map(|e| e.number).collect::<Vec<_>>(), [1, 2, 3, 4]);
    purse.check(&ledger.iter().collect::<Vec<_>>()).unwrap();
}

#[test]
fn expiring_credit_is_spent_first_and_its_rest_expires() {
    let mut w = Wallet::new("acc");
    w.top_up(eur(), d("5"), "forever", None, at(0)).unwrap();
    w.top_up(eur(), d("4"), "promo", Some(at(100)), at(0)).unwrap();
    w.commit(eur(), d("3"), "e1", at(10), String::new()).unwrap();
    assert_eq!(w.purse(eur()).unwrap().lots[0].remaining, d("1"));
    assert!(w.expire_lots(at(99)).unwrap().is_empty());
    let expired = w.expire_lots(at(100)).unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!((expired[0].kind, expired[0].amount), (EntryKind::Expiry, d("1")));
    assert_eq!(w.purse(eur()).unwrap().available(), d("5"));
}

#[test]
fn a_commit_past_the_credit_limit_is_its_overdraft() {
    let mut w = Wallet::new("acc");
    w.purse_mut(eur()).credit_limit = d("2");
    w.top_up(eur(), d("1"), "t", None, at(0)).unwrap();
    let (e, overdraft) = w.commit(eur(), d("4.5"), "e", at(1), String::new()).unwrap();
    assert_eq!(overdraft, d("1.5"));
    assert!(e.detail.contains("overdraft 1.5"), "{}", e.detail);
    assert_eq!(w.purse(eur()).unwrap().available(), d("-3.5"));
}

#[test]
fn low_balance_and_exhaustion_alerts_fire_when_crossed() {
    let mut w = Wallet::new("acc");
    w.purse_mut(eur()).low_balance = vec![d("5"), d("2")];
    w.top_up(eur(), d("10"), "t", None, at(0)).unwrap();
    let before = w.purse(eur()).unwrap().available();
    let (e, _) = w.commit(eur(), d("6"), "e1", at(1), String::new()).unwrap();
    let after = w.purse(eur()).unwrap().available();
    let alerts = alerts_of_change("acc", w.purse(eur()).unwrap(), (before, after), e.number, at(1));
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].kind, BalanceAlertKind::LowBalance(d("5")));
    assert_eq!(alerts[0].id(), "acc|balance:EUR|low_balance:5|2");
    let before = w.purse(eur()).unwrap().available();
    let (e, _) = w.commit(eur(), d("4"), "e2", at(2), String::new()).unwrap();
    let after = w.purse(eur()).unwrap().available();
    let kinds: Vec<_> = alerts_of_change("acc", w.purse(eur()).unwrap(), (before, after), e.number, at(2))
        .into_iter()
        .map(|a| a.kind)
        .collect();
    assert_eq!(
        kinds,
        [BalanceAlertKind::LowBalance(d("2")), BalanceAlertKind::Exhausted]
    );
}

#[test]
fn a_ledger_that_misses_an_entry_fails_the_check() {
    let mut w = Wallet::new("acc");
    let a = w.top_up(eur(), d("10"), "t1", None, at(0)).unwrap();
    let b = w.reserve(eur(), d("1"), "s", at(1)).unwrap();
    let purse = w.purse(eur()).unwrap();
    purse.check(&[&a, &b]).unwrap();
    let error = purse.check(&[&a]).unwrap_err();
    assert!(error.contains("open reservations"), "{error}");
}

#[test]
fn a_wallet_replayed_from_its_ledger_is_the_same_and_a_changed_entry_is_found() {
    let mut w = Wallet::new("acc");
    let mut ledger = vec![w.top_up(eur(), d("10"), "t1", Some(at(50)), at(0)).unwrap()];
    ledger.push(w.reserve(eur(), d("2"), "s", at(1)).unwrap());
    ledger.push(w.commit(eur(), d("1.5"), "e", at(2), String::new()).unwrap().0);
    ledger.push(w.release(eur(), d("2"), "s", at(3), String::new()).unwrap());
    ledger.extend(w.expire_lots(at(60)).unwrap());
    let mut again = Wallet::new("acc");
    for e in &ledger {
        again.replay(e).unwrap();
    }
    assert_eq!(again, w);
    let mut changed = ledger.clone();
    changed[2].amount = d("1");
    let mut again = Wallet::new("acc");
    let error = changed.iter().try_for_each(|e| again.replay(e)).unwrap_err();
    assert!(error.starts_with("entry 3 (commit 1 EUR) says it left"), "{error}");
    let mut again = Wallet::new("acc");
    let error = ledger[1..].iter().try_for_each(|e| again.replay(e)).unwrap_err();
    assert!(error.contains("entry 2 where entry 1 was due"), "{error}");
}

#[derive(Debug, Clone)]
enum Op {
    TopUp(u32, Option<i64>),
    Reserve(u32),
    Release(u32),
    Commit(u32),
    Adjust(i32),
    Expire(i64),
    Limit(u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1u32..10_000, proptest::option::of(0i64..1000)).prop_map(|(a, e)| Op::TopUp(a, e)),
        (0u32..5_000).prop_map(Op::Reserve),
        (0u32..5_000).prop_map(Op::Release),
        (0u32..5_000).prop_map(Op::Commit),
        (-5_000i32..5_000).prop_map(Op::Adjust),
        (0i64..1000).prop_map(Op::Expire),
        (0u32..5_000).prop_map(Op::Limit),
    ]
}

proptest! {
    /// Whatever happens to a wallet, each purse equals the sum of its ledger.
    #[test]
    fn the_balance_always_equals_the_ledgers_sum(ops in proptest::collection::vec(op(), 1..60)) {
        let mut w = Wallet::new("acc");
        w.purse_mut(eur());
        let mut ledger = Vec::new();
        let cents = |n: i64| Decimal::new(n, 2);
        for (i, op) in ops.into_iter().enumerate() {
            let id = format!("op{i}");
            let now = at(i as i64);
            match op {
                Op::TopUp(a, e) => ledger.push(w.top_up(eur(), cents(a.into()), &id, e.map(at), now).unwrap()),
                Op::Reserve(a) => ledger.push(w.reserve(eur(), cents(a.into()), &id, now).unwrap()),
                Op::Release(a) => {
                    let held = w.purse(eur()).map_or(Decimal::ZERO, |p| p.reserved);
                    let amount = cents(a.into()).min(held);
                    ledger.push(w.release(eur(), amount, &id, now, String::new()).unwrap());
                }
                Op::Commit(a) => ledger.push(w.commit(eur(), cents(a.into()), &id, now, String::new()).unwrap().0),
                Op::Adjust(a) => ledger.push(w.adjust(eur(), cents(a.into()), &id, now, String::new()).unwrap()),
                Op::Expire(t) => ledger.extend(w.expire_lots(at(t)).unwrap()),
                Op::Limit(l) => w.purse_mut(eur()).credit_limit = cents(l.into()),
            }
            let purse = w.purse(eur()).unwrap();
            prop_assert!(purse.check(&ledger.iter().collect::<Vec<_>>()).is_ok());
            prop_assert!(purse.lots.iter().all(|l| l.remaining > Decimal::ZERO));
            prop_assert!(purse.reserved >= Decimal::ZERO);
        }
        let numbers: Vec<u64> = ledger.iter().map(|e| e.number).collect();
        prop_assert_eq!(numbers, (1..=ledger.len() as u64).collect::<Vec<_>>());
        // The ledger alone rebuilds the wallet (what the start does), credit limit aside.
        let mut again = Wallet::new("acc");
        again.purse_mut(eur()).credit_limit = w.purse(eur()).unwrap().credit_limit;
        for e in &ledger {
            let replayed = again.replay(e);
            prop_assert!(replayed.is_ok(), "{:?}", replayed);
        }
        prop_assert_eq!(again, w);
    }
}
