//! gRPC health (`grpc.health.v1`) and server reflection, as standard tools use them.

mod common;

use common::*;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_serving_and_reflection_lists_every_service() {
    let dir = TempDir::new("health");
    let d = TestDaemon::start(&write_config(&dir.0, "")).await;
    let channel = tonic::transport::Endpoint::from_shared(d.target.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel.clone());
    for service in ["", "ratingd.v1.Ingest", "ratingd.v1.Query", "ratingd.v1.Admin"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest { service: "nope".into() })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let response = within(20, "the service list", responses.message())
        .await
        .unwrap()
        .unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("no service list")
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "ratingd.v1.Admin",
            "ratingd.v1.Charging",
            "ratingd.v1.Ingest",
            "ratingd.v1.Query"
        ]
    );

    // The older reflection protocol too (grpcurl before 1.8.8, Python's grpcio-reflection).
    {
        use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient as AlphaClient;
        use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest as AlphaRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse as AlphaResponse;
        let mut alpha = AlphaClient::new(common::channel(&d.target).await);
        let request = tonic_reflection::pb::v1alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(AlphaRequest::ListServices(String::new())),
        };
        let mut responses = alpha
            .server_reflection_info(tokio_stream::iter(vec![request]))
            .await
            .expect("v1alpha reflection is served")
            .into_inner();
        let response = within(20, "the v1alpha service list", responses.message())
            .await
            .unwrap()
            .unwrap();
        let Some(AlphaResponse::ListServicesResponse(list)) = response.message_response else {
            panic!("no v1alpha service list")
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        assert!(names.iter().any(|n| n == "ratingd.v1.Query"), "{names:?}");
        // And it describes a method's types, as a generic client needs.
        let request = tonic_reflection::pb::v1alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(AlphaRequest::FileContainingSymbol("ratingd.v1.Query".into())),
        };
        let mut responses = alpha
            .server_reflection_info(tokio_stream::iter(vec![request]))
            .await
            .unwrap()
            .into_inner();
        let response = within(20, "a v1alpha file descriptor", responses.message())
            .await
            .unwrap()
            .unwrap();
        assert!(
            matches!(
                response.message_response,
                Some(AlphaResponse::FileDescriptorResponse(_))
            ),
            "{response:?}"
        );
    }

    // While draining, the server reports NOT_SERVING on the connections it still has.
    let mut watch = health
        .watch(HealthCheckRequest { service: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        within(20, "the first health status", watch.message())
            .await
            .unwrap()
            .unwrap()
            .status,
        ServingStatus::Serving as i32
    );
    let running = d.running.as_ref().unwrap();
    running.shutdown();
    let next = within(20, "the status after the drain starts", watch.message()).await;
    let drained = match next {
        Ok(Some(r)) => r.status == ServingStatus::NotServing as i32,
        // The stream may also simply end when the server closes it.
        Ok(None) | Err(_) => true,
    };
    assert!(drained);
    // The Watch stream stays open on purpose: the daemon must stop anyway (after its drain window).
    d.stop().await;
    drop(watch);
}

/// `--log-format json`: one JSON object per line, the start-up line carrying version, config,
/// address, shards, data dir, recovered records and recovery time.
#[test]
fn json_logs_carry_the_start_up_facts() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = TempDir::new("jsonlog");
    let config = write_config(&dir.0, "");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ratingd"))
        .args(["--config", config.to_str().unwrap(), "--log-format", "json"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The lines are read on a thread and handed over one by one, so the wait for the start-up
    // line is bounded (60 s) even if ratingd hangs without closing its standard error.
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines() {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut start = None;
    while start.is_none() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            let _ = child.kill();
            panic!("no \"ratingd serving\" line within 60 s (or standard error closed)");
        };
        let line = line.unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if v["fields"]["message"] == "ratingd serving" {
            start = Some(v);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let v = start.expect("a start-up line");
    let f = &v["fields"];
    assert_eq!(v["level"], "INFO");
    assert_eq!(f["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(f["shards"], 2);
    assert_eq!(f["recovered_records"], 0);
    for key in ["config", "addr", "data_dir", "recovery_ms"] {
        assert!(!f[key].is_null(), "{key} missing: {v}");
    }
}
