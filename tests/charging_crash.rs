//! Crash test of balances (docs/charging.md): the built binary is killed with SIGKILL at random
//! moments while four clients top up, run charging sessions (authorize, terminate) and send
//! prepaid usage, all at once. After each restart every top-up ever sent is sent again (same id)
//! and every session ever authorized is terminated again. At the end, for every account: the
//! balance equals its ledger's sum (and the start's own check passed, or the account would be
//! refused), every top-up id is in the ledger once, every rated record was paid by exactly one
//! ledger commit under its event id and every commit pays a record, and nothing stays reserved.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use common::*;
use ratingd::wire::proto::{
    self, admin_client::AdminClient, charging_client::ChargingClient, query_client::QueryClient,
};
use rust_decimal::Decimal;

const KILLS: usize = 8;
const CLIENTS: usize = 4;
const ACCOUNTS: [&str; 4] = ["k-0", "k-1", "k-2", "k-3"];

/// What the clients sent (whether or not it was answered): every id is sent again after a
/// restart until it is answered.
#[derive(Default, Clone)]
struct Sent {
    top_ups: BTreeMap<String, &'static str>,
    sessions: BTreeMap<String, &'static str>,
    /// Answered operations, over every client, since the daemon's start.
    answered: usize,
}

fn config(dir: &TempDir) -> std::path::PathBuf {
    let tariffs = format!(
        "{}{}",
        include_str!("../config/tariffs.toml"),
        include_str!("data/prepaid-plans.toml")
    );
    let subs: String = ACCOUNTS
        .iter()
        .map(|a| format!("[[subscriptions]]\naccount = \"{a}\"\nplan = \"pre-eur\"\nfrom = \"2020-01-01T00:00:00Z\"\nprepaid = true\n"))
        .collect();
    write_config_with_tariffs(&dir.0, &format!("reservation_ttl_seconds = 1\n{subs}"), &tariffs).0
}

fn q(units: i64) -> Option<proto::Quantity> {
    Some(proto::Quantity { units, nanos: 0 })
}

fn top_up(account: &str, id: &str) -> proto::TopUpRequest {
    proto::TopUpRequest {
        account_id: account.into(),
        amount: "1.00".into(),
        currency: "EUR".into(),
        id: id.into(),
        expires_at: String::new(),
    }
}

fn terminate(session: &str) -> proto::TerminateRequest {
    proto::TerminateRequest {
        session_id: session.into(),
        used_units: q(70),
    }
}

/// One client: round after round, a top-up, a session (authorize, terminate) and a prepaid
/// call, until the daemon goes away.
async fn client(target: String, n: usize, round: Arc<Mutex<usize>>, sent: Arc<Mutex<Sent>>) {
    let channel = channel(&target).await;
    let mut admin = AdminClient::new(channel.clone());
    let mut charging = ChargingClient::new(channel.clone());
    let mut ingest = proto::ingest_client::IngestClient::new(channel);
    loop {
        let r = {
            let mut round = round.lock().unwrap();
            *round += 1;
            *round
        };
        let account = ACCOUNTS[(r + n) % ACCOUNTS.len()];
        let id = format!("t-{r}");
        sent.lock().unwrap().top_ups.insert(id.clone(), account);
        if admin.top_up(top_up(account, &id)).await.is_err() {
            return;
        }
        sent.lock().unwrap().answered += 1;
        let session = format!("s-{r}");
        sent.lock().unwrap().sessions.insert(session.clone(), account);
        let ask = proto::AuthorizeRequest {
            session_id: session.clone(),
            account_id: account.into(),
            meter: "pre.voice".into(),
            requested_units: q(90),
            ..Default::default()
        };
        match charging.authorize(ask).await {
            Ok(_) => {}
            // Denied (the balance is spent): not a failure of the daemon.
            Err(s) if s.code() == tonic::Code::FailedPrecondition => {}
            Err(_) => return,
        }
        match charging.terminate(terminate(&session)).await {
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::NotFound => {}
            Err(_) => return,
        }
        let call = event(&format!("e-{r}"), account, "pre.voice", 60, 0, safe_now(), &[]);
        let batch = proto::UsageBatch {
            batch_id: r as u64,
            events: vec![call],
        };
        if ingest.submit(batch).await.is_err() {
            return;
        }
        sent.lock().unwrap().answered += 1;
    }
}

/// Sends every top-up again and ends every session again: each must be answered now.
async fn resend(target: &str, sent: &Sent) {
    let mut admin = AdminClient::new(channel(target).await);
    for (id, account) in &sent.top_ups {
        within(20, "a resent top-up", admin.top_up(top_up(account, id)))
            .await
            .unwrap_or_else(|s| panic!("top-up {id}: {s}"));
    }
    let mut charging = ChargingClient::new(channel(target).await);
    for session in sent.sessions.keys() {
        match within(20, "a resent end", charging.terminate(terminate(session))).await {
            Ok(_) => {}
            // Its Authorize was never committed (killed before), or was denied.
            Err(s) if s.code() == tonic::Code::NotFound => {}
            Err(s) => panic!("terminate {session}: {s}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_sessions_and_top_ups_loses_and_doubles_nothing() {
    let dir = TempDir::new("chg-crash");
    let path = config(&dir);
    let sent = Arc::new(Mutex::new(Sent::default()));
    let round = Arc::new(Mutex::new(0));
    let mut rng: u64 = 0x5EED_0018;
    for _ in 0..KILLS {
        let daemon = DaemonProcess::spawn(&path);
        let so_far = sent.lock().unwrap().clone();
        resend(&daemon.target, &so_far).await;
        sent.lock().unwrap().answered = 0;
        let clients: Vec<_> = (0..CLIENTS)
            .map(|n| tokio::spawn(client(daemon.target.clone(), n, round.clone(), sent.clone())))
            .collect();
        // Kill after a random number of answers: other operations of the other clients are
        // then in flight, some committed and not answered, some not committed.
        rng = rng
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let stop_after = 4 + (rng >> 33) as usize % 40;
        wait_until(60, "answers before the kill", || {
            let sent = sent.clone();
            async move { sent.lock().unwrap().answered >= stop_after }
        })
        .await;
        daemon.kill9();
        for c in clients {
            let _ = c.await;
        }
    }
    let daemon = DaemonProcess::spawn(&path);
    let sent = std::mem::take(&mut *sent.lock().unwrap());
    resend(&daemon.target, &sent).await;
    assert!(sent.top_ups.len() > KILLS, "top-ups were sent: {}", sent.top_ups.len());

    let mut query = QueryClient::new(channel(&daemon.target).await);
    for account in ACCOUNTS {
        // Reservations of sessions whose end was never answered lapse after the 1 s TTL.
        let balance = wait_for_no_reservation(&mut query, account).await;
        let ledger = ledger_of(&daemon.target, account).await;
        let mut sum = Decimal::ZERO;
        let mut topped: BTreeSet<String> = BTreeSet::new();
        let mut paid: BTreeMap<String, Decimal> = BTreeMap::new();
        for e in &ledger {
            let amount: Decimal = e.amount.parse().unwrap();
            match e.kind.as_str() {
                "topup" => {
                    assert!(topped.insert(e.id.clone()), "top-up {} applied twice", e.id);
                    sum += amount;
                }
                "commit" => {
                    assert!(paid.insert(e.id.clone(), amount).is_none(), "{} paid twice", e.id);
                    sum -= amount;
                }
                "reservation" => sum -= amount,
                "release" => sum += amount,
                other => panic!("unexpected ledger entry {other}"),
            }
        }
        assert_eq!(balance, sum, "{account}: the balance is its ledger's sum");
        let expected: BTreeSet<String> = sent
            .top_ups
            .iter()
            .filter(|(_, a)| **a == account)
            .map(|(id, _)| id.clone())
            .collect();
        assert_eq!(topped, expected, "{account}: every top-up sent is applied once");
        // Every record is paid once under its event id, and every payment has its record.
        let records = records_of(&daemon.target, account).await;
        assert_eq!(
            records.keys().collect::<Vec<_>>(),
            paid.keys().collect::<Vec<_>>(),
            "{account}: records and payments"
        );
        for (id, charge) in &records {
            assert_eq!(paid[id], *charge, "{account}: {id} paid its charge");
        }
    }
    daemon.terminate();
}

/// The account's available balance once nothing is reserved.
async fn wait_for_no_reservation(query: &mut QueryClient<tonic::transport::Channel>, account: &str) -> Decimal {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let r = query
            .get_balance(proto::GetBalanceRequest {
                account_id: account.into(),
            })
            .await
            .unwrap_or_else(|s| panic!("{account}: {s}"))
            .into_inner();
        let eur = &r.balances[0];
        if eur.reserved.parse::<Decimal>().unwrap().is_zero() {
            return eur.available.parse().unwrap();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{account}: still reserved {}",
            eur.reserved
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Every rated record of the account: event id -> charge.
async fn records_of(target: &str, account: &str) -> BTreeMap<String, Decimal> {
    let mut out = BTreeMap::new();
    for r in records_from(target, account, None).await {
        assert!(
            out.insert(r.event_id.clone(), r.charge.parse().unwrap()).is_none(),
            "one record per id"
        );
    }
    out
}
