//! Security and limits (SPEC section 10, docs/security.md): the token and role matrix, account
//! scopes, token revocation on reload, TLS and mutual TLS, the plaintext rule, message and batch
//! limits on both ingest paths, many idle streams, keepalive reaping of a dead peer, damaged data
//! and old unkeyed data dirs.

mod common;

use std::path::Path;
use std::process::Command;

use chrono::{DateTime, Duration, Utc};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

use common::{Reference, TempDir, TestDaemon, event, reopen, safe_now, test_now, write_config};
use ratingd::client::connect::{Access, Authed};
use ratingd::security::auth::hash_hex;
use ratingd::wire::proto::{
    self, admin_client::AdminClient, charging_client::ChargingClient, ingest_client::IngestClient,
    query_client::QueryClient,
};

const AGENT: &str = "agent-token-for-tel-accounts-0001";
const READER: &str = "reader-token-for-billing-0000001";
const ADMIN: &str = "admin-token-for-operators-000001";
const EXPIRED: &str = "expired-agent-token-00000000001";
const REVOKED: &str = "to-be-revoked-agent-token-000001";
const SAAS_READER: &str = "reader-token-for-saas-only-00001";
const CHARGER: &str = "charging-token-for-tel-only-00001";

fn token_entry(name: &str, secret: &str, role: &str, extra: &str) -> String {
    format!(
        "[[tokens]]\nname = \"{name}\"\nsha256 = \"{}\"\nrole = \"{role}\"\n{extra}\n",
        hash_hex(secret)
    )
}

fn tokens(with_revoked: bool) -> String {
    let mut text = String::new();
    text += &token_entry("agent", AGENT, "ingest", "account_prefix = \"tel-\"");
    text += &token_entry("reader", READER, "read", "");
    text += &token_entry("admin", ADMIN, "admin", "");
    text += &token_entry("expired", EXPIRED, "ingest", "expires = \"2020-01-01T00:00:00Z\"");
    text += &token_entry("saas-reader", SAAS_READER, "read", "account_prefix = \"saas-\"");
    text += &token_entry("charger", CHARGER, "charging", "account_prefix = \"tel-\"");
    if with_revoked {
        text += &token_entry("revoked", REVOKED, "ingest", "");
    }
    text
}

async fn channel(target: &str, token: Option<&str>) -> Authed {
    let access = Access {
        target: target.to_string(),
        token: token.map(str::to_string),
        ..Access::default()
    };
    common::within(20, "a connection", access.authed())
        .await
        .expect("connects")
}

/// One event per account, dated just before the in-process daemon's pinned clock.
fn batch(id: u64, accounts: &[&str]) -> proto::UsageBatch {
    batch_at(id, accounts, test_now() - Duration::minutes(5))
}

fn batch_at(id: u64, accounts: &[&str], at: DateTime<Utc>) -> proto::UsageBatch {
    proto::UsageBatch {
        batch_id: id,
        events: accounts
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let meter = if a.starts_with("tel") {
                    "sms.count"
                } else {
                    "api.requests"
                };
                event(&format!("b{id}-e{i}"), a, meter, 1, 0, at, &[])
            })
            .collect(),
    }
}

/// The billing period of the events of [`batch`]: mid-November in both test plans' zones.
fn period() -> String {
    "2026-11".to_string()
}

async fn submit(target: &str, token: Option<&str>, b: proto::UsageBatch) -> Result<proto::BatchAck, tonic::Status> {
    let mut client = IngestClient::new(channel(target, token).await);
    common::within(60, "an answer to Submit", client.submit(b))
        .await
        .map(|r| r.into_inner())
}

async fn totals(target: &str, token: Option<&str>, account: &str) -> Result<proto::Totals, tonic::Status> {
    totals_in(target, token, account, &period()).await
}

async fn totals_in(
    target: &str,
    token: Option<&str>,
    account: &str,
    period: &str,
) -> Result<proto::Totals, tonic::Status> {
    let mut client = QueryClient::new(channel(target, token).await);
    let request = proto::GetTotalsRequest {
        account_id: account.into(),
        period: period.into(),
        ..Default::default()
    };
    common::within(60, "an answer to GetTotals", client.get_totals(request))
        .await
        .map(|r| r.into_inner())
}

/// Sends one batch on a new stream; the status that ends the stream (or that refused to open it).
async fn stream_refusal(target: &str, token: Option<&str>, b: proto::UsageBatch) -> Code {
    let (tx, rx) = mpsc::channel(1);
    tx.send(b).await.unwrap();
    let mut client = IngestClient::new(channel(target, token).await);
    let opened = common::within(60, "the stream to open", client.stream(ReceiverStream::new(rx))).await;
    let code = match opened {
        Err(status) => status.code(),
        Ok(acks) => common::within(20, "the stream's answer", acks.into_inner().message())
            .await
            .err()
            .map_or(Code::Ok, |s| s.code()),
    };
    drop(tx);
    code
}

async fn suspense(target: &str) -> usize {
    AdminClient::new(channel(target, Some(ADMIN)).await)
        .list_suspense(proto::ListSuspenseRequest {
            page_size: 100,
            ..Default::default()
        })
        .await
        .expect("admin lists suspense")
        .into_inner()
        .events
        .len()
}

#[tokio::test]
async fn the_auth_matrix_refuses_without_writing_anything() {
    let dir = TempDir::new("auth-matrix");
    let config = write_config(&dir.0, &tokens(true));
    let d = TestDaemon::start(&config).await;
    let t = d.target.clone();
    let code = |r: Result<proto::BatchAck, tonic::Status>| r.map(|_| Code::Ok).unwrap_or_else(|s| s.code());

    // Ingest: no token, a wrong one, an expired one, a read token, and a batch half outside the
    // agent's scope are all refused whole.
    assert_eq!(
        code(submit(&t, None, batch(1, &["tel-1"])).await),
        Code::Unauthenticated
    );
    assert_eq!(
        code(submit(&t, Some("not-a-configured-token-000000"), batch(2, &["tel-1"])).await),
        Code::Unauthenticated
    );
    assert_eq!(
        code(submit(&t, Some(EXPIRED), batch(3, &["tel-1"])).await),
        Code::Unauthenticated
    );
    assert_eq!(
        code(submit(&t, Some(READER), batch(4, &["tel-1"])).await),
        Code::PermissionDenied
    );
    let scoped = submit(&t, Some(AGENT), batch(5, &["tel-1", "saas-1"]))
        .await
        .unwrap_err();
    assert_eq!(scoped.code(), Code::PermissionDenied);
    assert!(
        scoped.message().contains("saas-1") && scoped.message().contains("event 1"),
        "{scoped:?}"
    );
    // The streaming path checks the same way.
    assert_eq!(
        stream_refusal(&t, None, batch(6, &["tel-1"])).await,
        Code::Unauthenticated
    );
    assert_eq!(
        stream_refusal(&t, Some(AGENT), batch(7, &["saas-2"])).await,
        Code::PermissionDenied
    );

    // Nothing of the refused batches was written: no totals, no suspense.
    for account in ["tel-1", "saas-1", "saas-2"] {
        assert_eq!(
            totals(&t, Some(ADMIN), account).await.unwrap_err().code(),
            Code::NotFound
        );
    }
    assert_eq!(suspense(&t).await, 0);

    // What each role may do.
    let ack = submit(&t, Some(AGENT), batch(8, &["tel-1", "tel-2"])).await.unwrap();
    assert_eq!(ack.accepted, 2);
    assert_eq!(
        submit(&t, Some(ADMIN), batch(9, &["saas-1"])).await.unwrap().accepted,
        1
    );
    assert_eq!(totals(&t, Some(READER), "tel-1").await.unwrap().account_id, "tel-1");
    assert_eq!(
        totals(&t, Some(AGENT), "tel-1").await.unwrap_err().code(),
        Code::PermissionDenied
    );
    assert_eq!(
        totals(&t, None, "tel-1").await.unwrap_err().code(),
        Code::Unauthenticated
    );
    // A scoped reader sees its own accounts only.
    assert_eq!(
        totals(&t, Some(SAAS_READER), "saas-1").await.unwrap().account_id,
        "saas-1"
    );
    assert_eq!(
        totals(&t, Some(SAAS_READER), "tel-1").await.unwrap_err().code(),
        Code::PermissionDenied
    );
    let listed = QueryClient::new(channel(&t, Some(SAAS_READER)).await)
        .list_accounts(proto::ListAccountsRequest {
            period: period(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .accounts;
    assert_eq!(listed, vec!["saas-1".to_string()]);
    // Admin needs the admin role.
    for token in [AGENT, READER] {
        let denied = AdminClient::new(channel(&t, Some(token)).await)
            .list_suspense(proto::ListSuspenseRequest::default())
            .await
            .unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied);
    }
    // Charging needs the charging role (or admin), within the token's accounts; the charging
    // role reads nothing else.
    let authorize = |account: &str| proto::AuthorizeRequest {
        session_id: format!("sec-{account}"),
        account_id: account.into(),
        meter: "voice.seconds".into(),
        requested_units: Some(proto::Quantity { units: 60, nanos: 0 }),
        ..Default::default()
    };
    for (token, account, want) in [
        (None, "tel-1", Code::Unauthenticated),
        (Some(AGENT), "tel-1", Code::PermissionDenied),
        (Some(READER), "tel-1", Code::PermissionDenied),
        (Some(CHARGER), "saas-1", Code::PermissionDenied),
        // Past the guard: tel-1 has no balance.
        (Some(CHARGER), "tel-1", Code::NotFound),
        (Some(ADMIN), "tel-1", Code::NotFound),
    ] {
        let got = ChargingClient::new(channel(&t, token).await)
            .authorize(authorize(account))
            .await
            .unwrap_err();
        assert_eq!(got.code(), want, "{token:?} {account}: {got:?}");
    }
    assert_eq!(
        totals(&t, Some(CHARGER), "tel-1").await.unwrap_err().code(),
        Code::PermissionDenied
    );
    // Health needs no token (load balancers probe it).
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel(&t, None).await);
    health
        .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
        .await
        .expect("health answers without a token");

    // Revocation: the token works until the config without it is reloaded.
    assert_eq!(
        submit(&t, Some(REVOKED), batch(10, &["tel-3"])).await.unwrap().accepted,
        1
    );
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(&tokens(true), &tokens(false));
    std::fs::write(&config, text).unwrap();
    let running = d.running.as_ref().unwrap();
    assert_eq!(running.reload_tokens(&config).expect("reload"), 6);
    assert_eq!(
        code(submit(&t, Some(REVOKED), batch(11, &["tel-4"])).await),
        Code::Unauthenticated
    );
    assert_eq!(
        totals(&t, Some(ADMIN), "tel-4").await.unwrap_err().code(),
        Code::NotFound
    );
    // A reload of a file that does not validate keeps the tokens in force.
    std::fs::write(&config, "listen = 12").unwrap();
    assert!(running.reload_tokens(&config).is_err());
    assert_eq!(
        submit(&t, Some(AGENT), batch(12, &["tel-5"])).await.unwrap().accepted,
        1
    );
    d.stop().await;
}

#[test]
fn configs_that_would_expose_ratingd_are_refused() {
    let dir = TempDir::new("exposed");
    let load = |extra: &str| {
        let path = write_config(&dir.0, extra);
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("127.0.0.1:0", "0.0.0.0:0");
        std::fs::write(&path, text).unwrap();
        ratingd::config::Config::load(&path).map_err(|e| e.to_string())
    };
    let plain = load("").unwrap_err();
    assert!(plain.contains("allow_plaintext_non_loopback"), "{plain}");
    assert!(plain.contains("allow_unauthenticated_non_loopback"), "{plain}");
    let with_token = load(&format!("allow_plaintext_non_loopback = true\n{}", tokens(false)));
    assert!(with_token.is_ok(), "{with_token:?}");
    assert!(load("allow_plaintext_non_loopback = true\nallow_unauthenticated_non_loopback = true\n").is_ok());
    // TLS answers the plaintext rule; client certificates, like tokens, the unauthenticated one.
    let pki = dir.0.join("pki");
    certificates(&pki);
    let tls = |ca: bool| {
        let p = |name: &str| pki.join(name).display().to_string();
        let mut text = format!("[tls]\ncert = {:?}\nkey = {:?}\n", p("server.pem"), p("server.key"));
        if ca {
            text += &format!("client_ca = {:?}\n", p("ca.pem"));
        }
        load(&text)
    };
    assert!(tls(true).is_ok(), "{:?}", tls(true).err());
    let server_only = tls(false).unwrap_err();
    assert!(
        server_only.contains("allow_unauthenticated_non_loopback") && !server_only.contains("allow_plaintext"),
        "{server_only}"
    );
    // Token entries are checked whole.
    let bad = load(
        "allow_plaintext_non_loopback = true\n\
         [[tokens]]\nname = \"a\"\nsha256 = \"abc\"\nrole = \"root\"\n\
         [[tokens]]\nname = \"a\"\nsha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\nrole = \"admin\"\naccount_prefix = \"x\"\n",
    )
    .unwrap_err();
    for expected in [
        "tokens[0].sha256",
        "tokens[0].role",
        "tokens[1].name",
        "tokens[1].account_prefix",
    ] {
        assert!(bad.contains(expected), "{expected} in {bad}");
    }
    // [tls] files that are missing or not PEM are named.
    let tls = load("[tls]\ncert = \"/nonexistent/server.pem\"\nkey = \"Cargo.toml\"\n").unwrap_err();
    assert!(tls.contains("tls.cert: cannot read /nonexistent/server.pem"), "{tls}");
    assert!(tls.contains("tls.key:") && tls.contains("not a PEM file"), "{tls}");
}

/// The output of `openssl s_client` against `addr` with the test CA and, optionally, a client
/// certificate. With `until_closed` (`-ign_eof`) it reads until the server closes: TLS 1.3 sends
/// the refusal of a client certificate after the handshake.
fn s_client(addr: &str, pki: &Path, client: Option<&str>, until_closed: bool) -> String {
    let mut command = Command::new("openssl");
    command.args(["s_client", "-connect", addr]);
    if until_closed {
        command.arg("-ign_eof");
    }
    command.arg("-CAfile").arg(pki.join("ca.pem"));
    if let Some(name) = client {
        command
            .arg("-cert")
            .arg(pki.join(format!("{name}.pem")))
            .arg("-key")
            .arg(pki.join(format!("{name}.key")));
    }
    let out = common::output_within(&mut command, 30);
    String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
}

/// What a TLS port answers to the HTTP/2 preface in plaintext, until it closes (bounded: 10 s).
fn plaintext_answer(addr: &str) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut socket = std::net::TcpStream::connect(addr).unwrap();
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    socket.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    socket.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).unwrap();
    let mut answer = Vec::new();
    match socket.read_to_end(&mut answer) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the TLS port neither answered nor closed within 10 s: {e}"),
    }
    answer
}

/// A call that never reached ratingd's services: the status was made by the client from a
/// transport failure (a refused handshake, a closed connection, a TLS alert read as HTTP/2), not
/// sent by the server, so never a status such as UNAUTHENTICATED from them.
fn assert_refused_by_transport(status: &tonic::Status, case: &str) {
    use std::error::Error;
    let from_transport = status
        .source()
        .is_some_and(|e| e.downcast_ref::<tonic::transport::Error>().is_some());
    assert!(from_transport, "{case}: a transport error, not {status:?}");
}

fn certificates(dir: &Path) {
    let out = common::output_within(
        Command::new("bash")
            .arg(common::repo().join("tests/tls/gen-certs.sh"))
            .arg(dir),
        120,
    );
    assert!(
        out.status.success(),
        "tests/tls/gen-certs.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A daemon serving TLS with the test PKI (client certificates required when `mutual`), a 1 s
/// handshake timeout and `tokens`; with the PKI's directory and the https:// target.
async fn tls_daemon(dir: &TempDir, mutual: bool, tokens: &str) -> (TestDaemon, std::path::PathBuf, String) {
    let pki = dir.0.join("pki");
    certificates(&pki);
    let p = |name: &str| pki.join(name).display().to_string();
    let client_ca = if mutual {
        format!("client_ca = {:?}\n", p("ca.pem"))
    } else {
        String::new()
    };
    let extra = format!(
        "[limits]\ntls_handshake_timeout_seconds = 1\n[tls]\ncert = {:?}\nkey = {:?}\n{client_ca}{tokens}",
        p("server.pem"),
        p("server.key"),
    );
    let d = TestDaemon::start(&write_config(&dir.0, &extra)).await;
    let target = d.target.replace("http://", "https://");
    (d, pki, target)
}

// Multi-threaded: the in-process daemon answers ratectl while this test waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_accepts_the_configured_ca_only() {
    let dir = TempDir::new("mtls");
    let tokens = token_entry("agent", AGENT, "ingest", "") + &token_entry("admin", ADMIN, "admin", "");
    let (d, pki, target) = tls_daemon(&dir, true, &tokens).await;
    let p = |name: &str| pki.join(name).display().to_string();
    let access = |client: Option<&str>| Access {
        target: target.clone(),
        token: Some(AGENT.into()),
        ca_cert: Some(pki.join("ca.pem")),
        client_cert: client.map(|c| pki.join(format!("{c}.pem"))),
        client_key: client.map(|c| pki.join(format!("{c}.key"))),
    };
    // A trusted client certificate and a token: accepted.
    let ok = IngestClient::new(access(Some("client")).authed().await.unwrap())
        .submit(batch(1, &["tel-1"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.accepted, 1);
    // A certificate from another CA, or none at all: the handshake itself is refused, with the
    // TLS alert that says why (read with openssl's own client, an independent TLS stack).
    let addr = d.target.trim_start_matches("http://").to_string();
    for (client, alert) in [
        (Some("rogue-client"), "alert unknown ca"),
        (None, "alert certificate required"),
    ] {
        let text = s_client(&addr, &pki, client, true);
        assert!(text.contains(alert), "{client:?}: expected {alert:?} in {text}");
    }
    // Plaintext to the TLS port: answered with a TLS alert record or a close, never HTTP/2.
    let answer = tokio::task::spawn_blocking(move || plaintext_answer(&addr))
        .await
        .unwrap();
    assert!(
        answer.is_empty() || answer[0] == 0x15,
        "a TLS alert (0x15) or nothing, not {:02x?}",
        &answer[..answer.len().min(16)]
    );
    // Through the gRPC client the same three get a transport error, promptly (the channel never
    // reaches ratingd's services, so never a gRPC status from them such as UNAUTHENTICATED).
    let plaintext = Access {
        target: d.target.clone(),
        token: Some(AGENT.into()),
        ..Access::default()
    };
    for (n, access) in [access(Some("rogue-client")), access(None), plaintext]
        .into_iter()
        .enumerate()
    {
        let channel = access.authed().await.expect("the channel connects lazily");
        let mut client = IngestClient::new(channel);
        let call = client.submit(batch(2 + n as u64, &["tel-2"]));
        let status = common::within(10, "a refused TLS call to fail", call)
            .await
            .expect_err("no call gets through");
        assert_refused_by_transport(&status, &format!("case {n}"));
    }
    let admin = Access {
        token: Some(ADMIN.into()),
        ..access(Some("client"))
    };
    let mut query = QueryClient::new(admin.authed().await.unwrap());
    let none = query
        .get_totals(proto::GetTotalsRequest {
            account_id: "tel-2".into(),
            period: period(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(none.code(), Code::NotFound);
    // ratectl over TLS with a client certificate and the token from the environment.
    let mut ratectl = Command::new(env!("CARGO_BIN_EXE_ratectl"));
    ratectl
        .args([
            "--ca-cert",
            &p("ca.pem"),
            "--client-cert",
            &p("client.pem"),
            "--client-key",
            &p("client.key"),
        ])
        .args([
            "totals",
            "--target",
            &target,
            "--account",
            "tel-1",
            "--period",
            &period(),
        ]);
    let mut run = |token: &str| {
        let out = common::output_within(ratectl.env("RATECTL_TOKEN", token), 60);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    // The agent token has the ingest role: the TLS handshake and the token pass, the role does not.
    let (code, text) = run(AGENT);
    assert!(code == Some(1) && text.contains("PermissionDenied"), "{text}");
    let (code, text) = run(ADMIN);
    assert!(code == Some(0) && text.contains("tel-1"), "{text}");
    d.stop().await;
}

#[tokio::test]
async fn messages_over_the_limits_are_resource_exhausted_on_both_paths_and_others_go_on() {
    let dir = TempDir::new("limits");
    let config = write_config(
        &dir.0,
        "[limits]\nmax_message_bytes = 4096\nmax_batch_events = 20\nmax_id_bytes = 40\n",
    );
    let d = TestDaemon::start(&config).await;
    let t = d.target.clone();
    // A stream that keeps working throughout.
    let (keep_tx, rx) = mpsc::channel(4);
    let mut keep = d
        .ingest()
        .await
        .stream(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    keep_tx.send(batch(1, &["tel-1"])).await.unwrap();
    assert_eq!(
        common::within(20, "an ack", keep.message())
            .await
            .unwrap()
            .unwrap()
            .accepted,
        1
    );

    // Over the message size: ~60 KiB of attributes.
    let mut big = batch(2, &["tel-2"; 10]);
    for e in &mut big.events {
        e.attributes = (0..12)
            .map(|i| proto::Attribute {
                key: format!("k{i}"),
                value: "v".repeat(500),
            })
            .collect();
    }
    let unary = submit(&t, None, big.clone()).await.unwrap_err();
    assert_eq!(unary.code(), Code::ResourceExhausted, "{unary:?}");
    assert_eq!(stream_refusal(&t, None, big).await, Code::ResourceExhausted);

    // Over the events per batch.
    let many: Vec<String> = (0..21).map(|i| format!("tel-{}", i % 8)).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    assert_eq!(
        submit(&t, None, batch(3, &many)).await.unwrap_err().code(),
        Code::ResourceExhausted
    );
    assert_eq!(stream_refusal(&t, None, batch(4, &many)).await, Code::ResourceExhausted);

    // An id over max_id_bytes is a per-event rejection with its reason (into suspense).
    let mut long = batch(5, &["tel-3", "tel-3"]);
    long.events[1].event_id = "x".repeat(41);
    let ack = submit(&t, None, long).await.unwrap();
    assert_eq!((ack.accepted, ack.rejected), (1, 1));
    assert!(
        ack.results[0].detail.contains("event_id must be 1..=40 bytes"),
        "{ack:?}"
    );

    // The first stream is still served, and nothing of the refused batches was written.
    keep_tx.send(batch(6, &["tel-1"])).await.unwrap();
    assert_eq!(
        common::within(20, "an ack", keep.message())
            .await
            .unwrap()
            .unwrap()
            .accepted,
        1
    );
    assert!(d.totals("tel-2", &period()).await.is_none());
    assert_eq!(d.totals("tel-1", &period()).await.unwrap().meters[0].events, 2);
    drop(keep_tx);
    d.stop().await;
}

#[tokio::test]
async fn a_thousand_idle_streams_do_not_exhaust_the_server() {
    let dir = TempDir::new("idle-streams");
    let d = TestDaemon::start(&write_config(&dir.0, "")).await;
    // 4 connections of 250 streams each (the default is 256 streams per connection).
    let mut idle = Vec::new();
    for _ in 0..4 {
        let client = d.ingest().await;
        for _ in 0..250 {
            let (tx, rx) = mpsc::channel::<proto::UsageBatch>(1);
            let acks = client
                .clone()
                .stream(ReceiverStream::new(rx))
                .await
                .unwrap()
                .into_inner();
            idle.push((tx, acks));
        }
    }
    assert_eq!(idle.len(), 1000);
    // A new caller is served, and so is any of the idle streams when it speaks.
    let ack = submit(&d.target, None, batch(1, &["tel-1"])).await.unwrap();
    assert_eq!(ack.accepted, 1);
    let (tx, acks) = &mut idle[777];
    tx.send(batch(2, &["tel-2"])).await.unwrap();
    assert_eq!(
        common::within(20, "an ack", acks.message())
            .await
            .unwrap()
            .unwrap()
            .accepted,
        1
    );
    drop(idle);
    d.stop().await;
}

/// Starts the binary with its log in `dir/<name>.log`; returns the process and a reader of the log.
fn spawn_logged(config: &Path, dir: &Path, name: &str) -> (common::DaemonProcess, impl Fn() -> String) {
    let path = dir.join(format!("{name}.log"));
    let file = std::fs::File::create(&path).unwrap();
    let daemon = common::DaemonProcess::spawn_with_stderr(config, file);
    (daemon, move || std::fs::read_to_string(&path).unwrap())
}

/// Flips a bit of each file's last byte (inside what its checksum covers).
fn flip_last_byte(paths: &[std::path::PathBuf]) {
    for path in paths {
        let mut bytes = std::fs::read(path).unwrap();
        let at = bytes.len() - 1;
        bytes[at] ^= 0x40;
        std::fs::write(path, bytes).unwrap();
    }
}

// Multi-threaded: the child processes are waited for with blocking calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_the_data_dir_is_reported_and_the_affected_totals_refused() {
    let dir = TempDir::new("flipped-byte");
    let config = write_config(&dir.0, "");
    let data = dir.0.join("data");
    // The binary runs on the real clock: events from safe_now(), in one open period.
    let at = safe_now();
    let batch = |id: u64, accounts: &[&str]| batch_at(id, accounts, at);
    let label = Reference::shipped().plan("telecom-standard").period_of(at);
    let totals = |target: String, account: &'static str| {
        let label = label.clone();
        async move { totals_in(&target, None, account, &label).await }
    };
    // Two commits, one account each; kill -9 leaves both after the last checkpoint (none).
    let d = common::DaemonProcess::spawn(&config);
    assert_eq!(
        submit(&d.target, None, batch(1, &["tel-1", "tel-1"]))
            .await
            .unwrap()
            .accepted,
        2
    );
    assert_eq!(submit(&d.target, None, batch(2, &["tel-2"])).await.unwrap().accepted, 1);
    d.kill9();

    // Flip one byte inside the payload of the block that holds tel-1.
    let seq = {
        let db = sled::open(&data).unwrap();
        let seq = db
            .scan_prefix(b"x/")
            .map(Result::unwrap)
            .find(|(_, v)| {
                let mut r = ratingd::store::codec::Reader::new(v);
                let n = r.u32().unwrap();
                (0..n).any(|_| r.str().unwrap() == "tel-1")
            })
            .map(|(k, _)| u64::from_be_bytes(k[2..10].try_into().unwrap()))
            .expect("tel-1 is indexed");
        let mut k = b"b/".to_vec();
        k.extend_from_slice(&seq.to_be_bytes());
        k.extend_from_slice(&0u32.to_be_bytes());
        let mut block = db.get(&k).unwrap().expect("the block").to_vec();
        let at = block.len() - 20;
        block[at] ^= 0x01;
        db.insert(k, block).unwrap();
        db.flush().unwrap();
        seq
    };

    // At start: the file and key are named, the damaged account is refused, the other served.
    let (d, log) = spawn_logged(&config, &dir.0, "after-flip");
    let key = format!("b/{seq}/0");
    let file = format!("{}/db", data.display());
    let text = log();
    assert!(
        text.contains(&key) && text.contains(&file),
        "log names {key} in {file}: {text}"
    );
    let refused = totals(d.target.clone(), "tel-1").await.unwrap_err();
    assert_eq!(refused.code(), Code::DataLoss, "{refused:?}");
    assert!(refused.message().contains(&key), "{refused:?}");
    assert_eq!(totals(d.target.clone(), "tel-2").await.unwrap().meters[0].events, 1);
    let batch_refused = submit(&d.target, None, batch(3, &["tel-2", "tel-1"]))
        .await
        .unwrap_err();
    assert_eq!(batch_refused.code(), Code::DataLoss);
    assert_eq!(submit(&d.target, None, batch(4, &["tel-2"])).await.unwrap().accepted, 1);
    // A graceful stop writes checkpoints past the damaged block: the damage is still known after.
    d.terminate();
    let (d, _) = spawn_logged(&config, &dir.0, "after-checkpoint");
    assert_eq!(
        totals(d.target.clone(), "tel-1").await.unwrap_err().code(),
        Code::DataLoss
    );
    assert_eq!(totals(d.target.clone(), "tel-2").await.unwrap().meters[0].events, 2);
    d.terminate();

    // A flipped byte in a checkpoint: named with its file, and the shard is rebuilt from the blocks.
    let checkpoints: Vec<_> = std::fs::read_dir(data.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "ckpt"))
        .collect();
    assert!(!checkpoints.is_empty());
    flip_last_byte(&checkpoints);
    let (d, log) = spawn_logged(&config, &dir.0, "after-checkpoint-flip");
    let text = log();
    for path in &checkpoints {
        assert!(
            text.contains(&path.display().to_string()),
            "log names {}: {text}",
            path.display()
        );
    }
    assert_eq!(totals(d.target.clone(), "tel-2").await.unwrap().meters[0].events, 2);
    assert_eq!(
        totals(d.target.clone(), "tel-1").await.unwrap_err().code(),
        Code::DataLoss
    );
    // A flipped byte in an id segment a checkpoint names (the claims the window holds in memory):
    // named with its file, the shard rebuilt from the blocks, and a resend is still a duplicate.
    d.terminate();
    let segments: Vec<_> = std::fs::read_dir(data.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().contains(".ids-"))
        .collect();
    assert!(
        !segments.is_empty(),
        "a graceful stop writes the claims since the last checkpoint"
    );
    flip_last_byte(&segments);
    let (d, log) = spawn_logged(&config, &dir.0, "after-segment-flip");
    let text = log();
    for path in &segments {
        assert!(
            text.contains(&path.display().to_string()) && text.contains("checksum"),
            "log names {}: {text}",
            path.display()
        );
    }
    let resent = submit(&d.target, None, batch(4, &["tel-2"])).await.unwrap();
    assert_eq!((resent.accepted, resent.duplicate), (0, 1), "{resent:?}");
    assert_eq!(totals(d.target.clone(), "tel-2").await.unwrap().meters[0].events, 2);
    d.kill9();
}

#[test]
fn a_data_dir_with_unkeyed_fingerprints_is_refused_only_when_it_holds_data() {
    let dir = TempDir::new("unkeyed");
    let (empty, full) = (dir.0.join("empty"), dir.0.join("full"));
    for (path, with_block) in [(&empty, false), (&full, true)] {
        let db = sled::open(path).unwrap();
        db.insert(b"m/seed", &7u64.to_le_bytes()).unwrap();
        if with_block {
            db.insert(b"b/\0\0\0\0\0\0\0\0\0\0\0\0", b"RTB1".to_vec()).unwrap();
        }
        db.flush().unwrap();
    }
    let store = ratingd::store::Store::open(&empty).expect("an empty old data dir gets a key");
    let key = store.key();
    drop(store);
    assert_eq!(reopen(&empty).key(), key, "the key is kept");
    let refused = ratingd::store::Store::open(&full).err().expect("refused").to_string();
    assert!(
        refused.contains("m/seed") && refused.contains("new data_dir"),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_answering_pings_is_disconnected() {
    use std::io::{Read, Write};
    let dir = TempDir::new("keepalive");
    let config = write_config(
        &dir.0,
        "[limits]\nkeepalive_interval_seconds = 1\nkeepalive_timeout_seconds = 1\n",
    );
    let d = TestDaemon::start(&config).await;
    let addr = d.target.trim_start_matches("http://").to_string();
    // A "dead" agent: the HTTP/2 preface and an empty SETTINGS frame, then it reads but never
    // answers anything (no SETTINGS or PING acknowledgements).
    let closed = tokio::task::spawn_blocking(move || {
        let mut socket = std::net::TcpStream::connect(addr).unwrap();
        socket.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
        socket.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).unwrap();
        // A bound on the wait, not a synchronisation: without keepalive this read never ends.
        socket
            .set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        let mut buf = [0u8; 1024];
        loop {
            match socket.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(()),
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(
        closed,
        Ok(()),
        "the server closes the connection of a peer that stopped answering"
    );
    d.stop().await;
}

// Multi-threaded: the child process is signalled and waited for with blocking calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_to_the_binary_reloads_the_tokens() {
    const NEW: &str = "token-added-by-the-reload-000001";
    let dir = TempDir::new("sighup-tokens");
    let config = write_config(&dir.0, &tokens(true));
    let (mut d, log) = spawn_logged(&config, &dir.0, "sighup");
    // The binary runs on the real clock: events from safe_now().
    let at = safe_now();
    let t = d.target.clone();
    let code = |r: Result<proto::BatchAck, tonic::Status>| r.map(|_| Code::Ok).unwrap_or_else(|s| s.code());
    assert_eq!(
        code(submit(&t, Some(REVOKED), batch_at(1, &["tel-1"], at)).await),
        Code::Ok
    );
    assert_eq!(
        code(submit(&t, Some(NEW), batch_at(2, &["tel-1"], at)).await),
        Code::Unauthenticated
    );

    // One token removed and one added in the file, then SIGHUP.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(&tokens(true), &(tokens(false) + &token_entry("new", NEW, "ingest", "")));
    std::fs::write(&config, text).unwrap();
    d.signal("HUP");
    common::wait_until(20, "the removed token to be refused after SIGHUP", || {
        let t = t.clone();
        async move { code(submit(&t, Some(REVOKED), batch_at(3, &["tel-2"], at)).await) == Code::Unauthenticated }
    })
    .await;
    assert_eq!(code(submit(&t, Some(NEW), batch_at(4, &["tel-2"], at)).await), Code::Ok);
    assert_eq!(
        code(submit(&t, Some(AGENT), batch_at(5, &["tel-2"], at)).await),
        Code::Ok
    );

    // A file that does not validate, then SIGHUP: refused (said in the log), the tokens in force stay.
    std::fs::write(&config, "listen = 12").unwrap();
    d.signal("HUP");
    common::wait_until(20, "the refusal in the log", || {
        let refused = log().contains("token reload refused");
        async move { refused }
    })
    .await;
    assert_eq!(code(submit(&t, Some(NEW), batch_at(6, &["tel-3"], at)).await), Code::Ok);
    assert_eq!(
        code(submit(&t, Some(REVOKED), batch_at(7, &["tel-3"], at)).await),
        Code::Unauthenticated
    );
    d.signal("TERM");
    assert_eq!(d.wait_exit(), Some(0));
}

// Multi-threaded: the in-process daemon answers ratectl while this test waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_only_tls_is_served_and_used_by_ratectl() {
    let dir = TempDir::new("server-tls");
    let tokens = token_entry("agent", AGENT, "ingest", "") + &token_entry("reader", READER, "read", "");
    let (d, pki, target) = tls_daemon(&dir, false, &tokens).await;
    let p = |name: &str| pki.join(name).display().to_string();
    // A client that trusts the CA, with no certificate of its own: served.
    let access = Access {
        target: target.clone(),
        token: Some(AGENT.into()),
        ca_cert: Some(pki.join("ca.pem")),
        ..Access::default()
    };
    let ack = IngestClient::new(access.authed().await.unwrap())
        .submit(batch(1, &["tel-1", "tel-1"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ack.accepted, 2);
    // openssl's client completes the handshake without a certificate and verifies the server's.
    let addr = d.target.trim_start_matches("http://").to_string();
    let text = s_client(&addr, &pki, None, false);
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
    assert!(!text.contains("alert"), "{text}");
    // Plaintext to the TLS port gets nowhere.
    let plaintext = Access {
        target: d.target.clone(),
        token: Some(AGENT.into()),
        ..Access::default()
    };
    let mut client = IngestClient::new(plaintext.authed().await.unwrap());
    let refused = common::within(10, "a plaintext call to fail", client.submit(batch(2, &["tel-1"])))
        .await
        .unwrap_err();
    assert_refused_by_transport(&refused, "plaintext");
    // ratectl over TLS: with the CA it reads the totals; without it, it says what is missing.
    let ratectl = |args: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ratectl"));
        command.env("RATECTL_TOKEN", READER).args(args).args([
            "totals",
            "--target",
            &target,
            "--account",
            "tel-1",
            "--period",
            &period(),
            "--json",
        ]);
        common::output_within(&mut command, 60)
    };
    let out = ratectl(&["--ca-cert", &p("ca.pem")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let totals: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(totals["account"], "tel-1");
    // Two SMS on telecom-standard, both inside the 100 free ones.
    assert_eq!(totals["total_charge"], "0.000000000");
    let out = ratectl(&[]);
    assert_eq!(out.status.code(), Some(1));
    let refusal: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        refusal["error"].as_str().unwrap().contains("needs --ca-cert"),
        "{refusal}"
    );
    d.stop().await;
}
