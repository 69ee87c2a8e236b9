//! Composition root: opens storage, recovers the pipeline, starts the Redis projection, binds the
//! gRPC listener, and on shutdown drains in a fixed order: stop reading new batches, acknowledge
//! what is in flight, stop the server, stop the shards (each writes a checkpoint), commit, flush
//! Redis one last time, close storage. The only module that knows every other.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic_health::ServingStatus;
use tracing::{info, warn};

use crate::admin::{AdminCore, AdminService, AdminTables};
use crate::config::Config;
use crate::domain::subscription::{SubscriptionBook, SubscriptionError};
use crate::domain::tariff_file::content::{KnownVersion, edited_in_force};
use crate::edge::guard::GuardLayer;
use crate::ingest::service::IngestService;
use crate::limits::{BALANCE_SWEEP_INTERVAL, SERVER_DRAIN};
use crate::pipeline::{Clock, EventLimits, Pipeline, PipelineConfig, RatingContext, SharedClock, SharedContext};
use crate::query::QueryService;
use crate::security::auth::TokenBook;
use crate::shutdown::{Shutdown, Stopper};
use crate::store::{
    Adjustments, Alerts, Closes, Corrections, Records, Retention, Store, StoreError, Subscriptions, Suspense, Versions,
};
use crate::wire::proto::admin_server::AdminServer;
use crate::wire::proto::charging_server::ChargingServer;
use crate::wire::proto::ingest_server::IngestServer;
use crate::wire::proto::query_server::QueryServer;

/// The services whose health is reported ("" is the server as a whole).
const SERVICES: [&str; 5] = [
    "",
    "ratingd.v1.Ingest",
    "ratingd.v1.Query",
    "ratingd.v1.Admin",
    "ratingd.v1.Charging",
];

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("server reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("pipeline: {0}")]
    Pipeline(#[from] crate::pipeline::StartError),
    #[error("cannot listen on {addr}: {error}")]
    Bind { addr: SocketAddr, error: std::io::Error },
    #[error("gRPC server: {0}")]
    Server(#[from] tonic::transport::Error),
    #[error("stored subscriptions conflict with the configured ones: {0}")]
    Subscriptions(#[from] SubscriptionError),
    #[error(transparent)]
    Spool(#[from] crate::spool::SpoolError),
    #[error("a start-up task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error(
        "the tariff file edits versions in force (a version in force is never edited: add a version with a later \
         effective_from, or restore the file):\n{0}"
    )]
    VersionsEdited(String),
}

/// A running daemon.
pub struct Running {
    pub addr: SocketAddr,
    /// The pipeline's time source (tests move it to reach a period's close).
    pub clock: SharedClock,
    pub admin: Arc<AdminCore>,
    /// The committed view (tests look at what stays in memory).
    pub committed: crate::pipeline::CommittedView,
    pub recovered_records: usize,
    /// The bearer tokens in force; [`Running::reload_tokens`] replaces them.
    tokens: Arc<ArcSwap<TokenBook>>,
    stopper: Stopper,
    task: JoinHandle<Result<(), AppError>>,
}

impl Running {
    /// Starts the graceful shutdown (idempotent).
    pub fn shutdown(&self) {
        self.stopper.stop();
    }

    /// Re-reads `[[tokens]]` from the configuration file (SIGHUP): added tokens work and removed
    /// or expired ones are refused from the next request on. A file that does not validate
    /// changes nothing. Other settings need a restart.
    pub fn reload_tokens(&self, path: &std::path::Path) -> Result<usize, crate::config::ConfigErrors> {
        match Config::load(path) {
            Ok(config) => {
                let n = config.tokens.len();
                self.tokens.store(Arc::new(TokenBook::new(config.tokens)));
                info!(tokens = n, config = %path.display(), "tokens reloaded");
                Ok(n)
            }
            Err(errors) => {
                warn!(config = %path.display(), %errors, "token reload refused; the tokens in force are kept");
                Err(errors)
            }
        }
    }

    /// Waits until the daemon has drained and stopped.
    pub async fn wait(self) -> Result<(), AppError> {
        self.task.await?
    }
}

/// What a test may give a daemon besides its configuration; `StartOptions::default()` is
/// production.
#[derive(Default, Clone)]
pub struct StartOptions {
    /// The pipeline's clock; `None` is the system clock.
    pub clock: Option<SharedClock>,
    /// A failpoint around every commit's fsync (`store::FlushHook`).
    pub flush_hook: Option<Arc<dyn crate::store::FlushHook>>,
}

/// Builds everything downstream first, then binds and serves.
pub async fn start(config: &Config) -> Result<Running, AppError> {
    start_with(config, StartOptions::default()).await
}

/// The table handles the services and the projection read and write.
struct Tables {
    records: Records,
    suspense: Suspense,
    subscriptions: Subscriptions,
    closes: Closes,
    alerts: Alerts,
    versions: Versions,
    retention: Retention,
    corrections: Corrections,
    adjustments: Adjustments,
    balances: crate::store::Balances,
    balance_alerts: crate::store::Outbox,
}

/// Opens the data dir, puts the stored subscriptions in force over the configured ones, and
/// recovers and starts the pipeline (blocking: run off the async threads).
fn open(config: &Config, clock: SharedClock, options: StartOptions) -> Result<(Pipeline, Tables), AppError> {
    let store = Store::open(&config.data_dir)?.with_flush_hook(options.flush_hook);
    let tables = Tables {
        records: store.records(),
        suspense: store.suspense(),
        subscriptions: store.subscriptions(),
        closes: store.closes(),
        alerts: store.alerts(),
        versions: store.versions(),
        retention: store.retention(),
        corrections: store.corrections(),
        adjustments: store.adjustments(),
        balances: store.balances(),
        balance_alerts: store.balance_alerts(),
    };
    // The file must not edit a version in force since an earlier start or reload.
    let edits = edited_in_force(&tables.versions.all()?, &config.catalogue, clock.now());
    if !edits.is_empty() {
        return Err(AppError::VersionsEdited(edits.join("\n")));
    }
    tables
        .versions
        .record(&KnownVersion::of(&config.catalogue), clock.now())?;
    // Seeds from the config, then what the Admin API stored (it wins for the same account and
    // from). One pass: the book is cloned once, not once per subscription.
    let seeds = SubscriptionBook::new(&config.subscriptions, config.default_plan.clone());
    let subscriptions = seeds.with_all(tables.subscriptions.all()?, &config.catalogue)?;
    let context: SharedContext = Arc::new(ArcSwap::from_pointee(RatingContext {
        catalogue: config.catalogue.clone(),
        subscriptions,
        mediation: Arc::new(config.mediation_rules.clone()),
    }));
    let pipeline_config = PipelineConfig {
        shards: config.shards,
        max_inflight_batches: config.limits.max_inflight_batches,
        commit_max_events: config.commit_max_events,
        dedupe_window_days: config.dedupe_window_days,
        future_skew_seconds: config.future_skew_seconds,
        event_limits: EventLimits {
            max_id_bytes: config.limits.max_id_bytes,
            max_attributes: config.limits.max_attributes,
            max_attribute_bytes: config.limits.max_attribute_bytes,
        },
        checkpoint_every_records: config.checkpoint_every_records,
        close_grace_seconds: i64::from(config.period_close_grace_hours) * 3600,
        retention_days: config.retention_days,
        dedupe_hot_hours: config.dedupe_hot_hours,
        reservation_ttl_seconds: config.reservation_ttl_seconds,
        partial: config.partial_limits,
    };
    let plan_alerts: crate::pipeline::PlanAlerts = Arc::new(config.plan_alerts.iter().cloned().collect());
    let pipeline = Pipeline::start(store, context, clock, plan_alerts, pipeline_config)?;
    Ok((pipeline, tables))
}

/// [`start`] with a test's clock or failpoint.
pub async fn start_with(config: &Config, options: StartOptions) -> Result<Running, AppError> {
    let started = Instant::now();
    crate::telemetry::install(config.metrics_listen);
    let clock: SharedClock = options.clock.clone().unwrap_or_else(|| Arc::new(Clock::default()));
    let (pipeline, tables) = {
        let (config, clock) = (config.clone(), clock.clone());
        tokio::task::spawn_blocking(move || open(&config, clock, options)).await??
    };
    let pipeline = Arc::new(pipeline);
    let committed = pipeline.committed().clone();
    if !committed.damaged.is_empty() {
        tracing::error!(
            accounts = committed.damaged.len(),
            "the data dir records accounts whose stored records failed their check: their totals are not \
             served and their batches are refused (DATA_LOSS) until it is restored (docs/security.md)"
        );
    }
    let mut recovered_records = 0usize;
    committed
        .totals
        .for_each(|t| recovered_records += t.meters.iter().map(|m| m.events as usize).sum::<usize>());
    let listener = TcpListener::bind(config.listen).await.map_err(|error| AppError::Bind {
        addr: config.listen,
        error,
    })?;
    let addr = listener.local_addr().map_err(|error| AppError::Bind {
        addr: config.listen,
        error,
    })?;
    let (stopper, shutdown) = Stopper::new();
    let ingest = Arc::new(IngestService::new(
        pipeline.clone(),
        config.limits.max_batch_events,
        config.limits.max_inflight_per_stream,
        shutdown.clone(),
    ));
    let admin_tables = AdminTables {
        subscriptions: tables.subscriptions.clone(),
        suspense: tables.suspense.clone(),
        versions: tables.versions.clone(),
        corrections: tables.corrections.clone(),
        adjustments: tables.adjustments.clone(),
    };
    let biller = Arc::new(crate::billing::fees::Biller::new(pipeline.clone()));
    let admin = Arc::new(AdminCore::new(
        pipeline.clone(),
        biller.clone(),
        admin_tables,
        config.limits.max_batch_events,
        (config.tariffs_path.clone(), config.mediation_rules_path.clone()),
    ));
    let max_message = config.limits.max_message_bytes;
    // Health: SERVING from here on (recovery is done before the port is bound), NOT_SERVING as
    // soon as the drain starts. Reflection lists every service for grpcurl-like tools.
    let (health, health_service) = tonic_health::server::health_reporter();
    for name in SERVICES {
        health.set_service_status(name, ServingStatus::Serving).await;
    }
    // Both reflection versions: v1, and v1alpha for the clients that only speak it (grpcurl before
    // 1.8.8, Python's grpcio-reflection, several GUI clients).
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::wire::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let (reflection_v1, reflection_v1alpha) = (reflection().build_v1()?, reflection().build_v1alpha()?);
    let limits = config.limits;
    let tokens = Arc::new(ArcSwap::from_pointee(TokenBook::new(config.tokens.clone())));
    let mut builder = tonic::transport::Server::builder()
        .max_concurrent_streams(Some(limits.max_concurrent_streams))
        .http2_keepalive_interval(
            (limits.keepalive_interval_seconds > 0).then(|| Duration::from_secs(limits.keepalive_interval_seconds)),
        )
        .http2_keepalive_timeout(Some(Duration::from_secs(limits.keepalive_timeout_seconds.max(1))));
    if let Some(tls) = &config.tls {
        builder = builder.tls_config(tls.server_config())?;
    }
    let server = builder
        .layer(GuardLayer::new(
            tokens.clone(),
            Duration::from_secs(limits.request_timeout_seconds),
        ))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(IngestServer::new(ingest).max_decoding_message_size(max_message))
        .add_service(
            QueryServer::new(QueryService::new(
                pipeline.clone(),
                tables.records.clone(),
                tables.balances.clone(),
            ))
            .max_decoding_message_size(max_message),
        )
        .add_service(
            ChargingServer::new(crate::charging::ChargingService::new(
                pipeline.clone(),
                tables.balances.clone(),
            ))
            .max_decoding_message_size(max_message),
        )
        .add_service(AdminServer::new(AdminService(admin.clone())).max_decoding_message_size(max_message));
    info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %config.path.display(),
        %addr,
        tls = config.tls.is_some(),
        mutual_tls = config.tls.as_ref().is_some_and(|t| t.client_ca.is_some()),
        tokens = config.tokens.len(),
        shards = config.shards,
        data_dir = %config.data_dir.display(),
        recovered_records,
        recovery_ms = started.elapsed().as_millis() as u64,
        "ratingd serving"
    );
    // The projection stops after the pipeline has drained, so its last flush holds every commit.
    let (export_stopper, export_shutdown) = Stopper::new();
    let pipeline_committed = committed.clone();
    // Closes recorded before: in force again, and announced if they were not yet.
    crate::billing::close::restore(&pipeline, &tables.closes)?;
    metrics::gauge!(crate::telemetry::SUSPENSE_EVENTS).set(tables.suspense.count() as f64);
    metrics::gauge!(crate::telemetry::AGGREGATES).set(committed.totals.len() as f64);
    let exporter = tokio::spawn(crate::export::run(
        config.redis.clone(),
        committed.clone(),
        tables.closes.clone(),
        tables.alerts.clone(),
        tables.adjustments.clone(),
        tables.balance_alerts.clone(),
        export_shutdown,
    ));
    let sweeper = tokio::spawn(sweep_balances(pipeline.clone(), shutdown.clone()));
    // The spool stops taking files when the drain starts; a file half sent is read again later.
    let spool = match &config.spool {
        Some(settings) => {
            let spool = crate::spool::Spool::new(settings.clone())?;
            Some(tokio::spawn(spool.run(pipeline.clone(), shutdown.clone())))
        }
        None => None,
    };
    let closer = tokio::spawn(crate::billing::close::run(
        biller.clone(),
        tables.closes.clone(),
        chrono::Duration::hours(i64::from(config.period_close_grace_hours)),
        std::time::Duration::from_millis(config.redis.flush_interval_ms),
        crate::billing::retention::Sweeper::new(
            tables.retention.clone(),
            config.retention_days,
            config.retention_export_dir.clone(),
        ),
        shutdown.clone(),
    ));
    let mut stop = shutdown.clone();
    let mut stopping = shutdown;
    let task = tokio::spawn(async move {
        let signal = async move {
            stop.started().await;
            for name in SERVICES {
                health.set_service_status(name, ServingStatus::NotServing).await;
            }
        };
        let serving = server.serve_with_incoming_shutdown(
            // No Nagle delay: acks are small and latency-bound.
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            signal,
        );
        // Our own streams end promptly once the drain starts; a client that keeps a stream open
        // (a health Watch, say) must not hold the daemon: after a bounded wait its connection is
        // closed and the pipeline drain goes on.
        let deadline = async move {
            stopping.started().await;
            tokio::time::sleep(SERVER_DRAIN).await;
        };
        let served = tokio::select! {
            served = serving => served,
            () = deadline => {
                warn!(seconds = SERVER_DRAIN.as_secs(), "connections still open after the drain window; closing them");
                Ok(())
            }
        };
        info!("server stopped; draining the pipeline");
        let p = pipeline.clone();
        tokio::task::spawn_blocking(move || p.shutdown()).await?;
        closer.await?;
        sweeper.await?;
        if let Some(spool) = spool {
            spool.await?;
        }
        export_stopper.stop();
        exporter.await?;
        info!("ratingd stopped");
        served.map_err(AppError::from)
    });
    Ok(Running {
        addr,
        clock,
        admin,
        committed: pipeline_committed,
        recovered_records,
        tokens,
        stopper,
        task,
    })
}

/// Releases lapsed reservations and expires credit every [`BALANCE_SWEEP_INTERVAL`] until the
/// daemon stops; also removes the claims of moved events whose day left the dedupe window.
async fn sweep_balances(pipeline: Arc<Pipeline>, mut shutdown: Shutdown) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(BALANCE_SWEEP_INTERVAL) => {}
            () = shutdown.started() => return,
        }
        if shutdown.is_started() {
            return;
        }
        if let Err(error) = pipeline.sweep_balances().await {
            warn!(%error, "balance sweep not done; retried in a second");
        }
        let pruning = pipeline.clone();
        match tokio::task::spawn_blocking(move || pruning.prune_moved_claims()).await {
            Ok(Ok(0)) | Err(_) => {}
            Ok(Ok(removed)) => info!(removed, "claims of moved events left the dedupe window"),
            Ok(Err(error)) => warn!(%error, "claims of moved events not pruned; retried in a second"),
        }
    }
}
