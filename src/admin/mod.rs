//! `ratingd.v1.Admin`: subscriptions (persisted, in force for events rated after the call), tariff
//! reload (also on SIGHUP) and the list of upcoming tariff versions.

use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::domain::money::parse_exact;
use crate::domain::subscription::Subscription;
use crate::domain::tariff_file::parse_catalogue;
use crate::ingest::convert::{reason_from_proto, reason_to_proto};
use crate::ingest::service::IngestService;
use crate::pipeline::{RatingContext, SharedClock, SharedContext};
use crate::store::SettingsStore;
use crate::store::codec::SuspenseEntry;
use crate::wire::proto::{self, admin_server::Admin};

/// Why an admin change was refused.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    Invalid(String),
    #[error("storage: {0}")]
    Store(#[from] crate::store::StoreError),
}

/// Most subscriptions one UpsertSubscriptions call takes.
const MAX_SUBSCRIPTIONS_PER_CALL: usize = 100_000;

/// Most suspense entries one reprocess call handles.
const MAX_REPROCESS: usize = 100_000;

fn store_status(e: crate::store::StoreError) -> Status {
    Status::unavailable(e.to_string())
}

fn suspended_to_proto(e: &SuspenseEntry) -> proto::UsageEvent {
    proto::UsageEvent {
        event_id: e.event_id.clone(),
        account_id: e.account_id.clone(),
        meter: e.meter.clone(),
        quantity: Some(proto::Quantity {
            units: e.quantity_units,
            nanos: e.quantity_nanos,
        }),
        timestamp_unix_nanos: e.timestamp_unix_nanos,
        attributes: e
            .attributes
            .iter()
            .map(|(k, v)| proto::Attribute {
                key: k.clone(),
                value: v.clone(),
            })
            .collect(),
    }
}

fn reason_filter(reason: i32) -> Result<Option<u8>, Status> {
    let reason = proto::RejectReason::try_from(reason).map_err(|_| Status::invalid_argument("unknown reason"))?;
    Ok(reason_from_proto(reason).map(|r| r.code()))
}

/// The domain form of a subscription, or why it is invalid.
fn subscription_from_proto(p: proto::Subscription) -> Result<Subscription, Status> {
    if p.account_id.is_empty() || p.account_id.len() > crate::config::MAX_ACCOUNT_BYTES {
        return Err(Status::invalid_argument("account_id must be 1..=128 bytes"));
    }
    let discount = if p.discount_percent.is_empty() {
        None
    } else {
        let d =
            parse_exact(&p.discount_percent).map_err(|m| Status::invalid_argument(format!("discount_percent: {m}")))?;
        if d <= rust_decimal::Decimal::ZERO || d > rust_decimal::Decimal::ONE_HUNDRED {
            return Err(Status::invalid_argument(
                "discount_percent must be greater than 0 and at most 100",
            ));
        }
        Some(d)
    };
    let mut alert_thresholds = Vec::with_capacity(p.alert_thresholds.len());
    for text in &p.alert_thresholds {
        match parse_exact(text) {
            Ok(d) if d > rust_decimal::Decimal::ZERO => alert_thresholds.push(d),
            _ => {
                return Err(Status::invalid_argument(format!(
                    "alert_thresholds: {text:?} is not a positive decimal"
                )));
            }
        }
    }
    Ok(Subscription {
        account_id: p.account_id,
        plan_id: p.plan_id,
        from: instant("from", &p.from)?,
        to: if p.to.is_empty() {
            None
        } else {
            Some(instant("to", &p.to)?)
        },
        discount_percent: discount,
        alert_thresholds,
    })
}

fn status_of(error: AdminError) -> Status {
    match error {
        AdminError::Invalid(m) => Status::invalid_argument(m),
        AdminError::Store(e) => Status::unavailable(e.to_string()),
    }
}

/// The admin operations, shared by the gRPC service and the SIGHUP handler.
pub struct AdminCore {
    context: SharedContext,
    settings: SettingsStore,
    ingest: Arc<IngestService>,
    max_batch_events: usize,
    tariffs_path: PathBuf,
    /// The pipeline's clock ("upcoming" is relative to the same now as rating).
    clock: SharedClock,
    /// Serializes changes: each is read-modify-replace of the whole context.
    writes: tokio::sync::Mutex<()>,
}

impl AdminCore {
    pub fn new(
        context: SharedContext,
        settings: SettingsStore,
        ingest: Arc<IngestService>,
        max_batch_events: usize,
        tariffs_path: PathBuf,
        clock: SharedClock,
    ) -> Self {
        AdminCore {
            context,
            settings,
            ingest,
            max_batch_events,
            tariffs_path,
            clock,
            writes: tokio::sync::Mutex::new(()),
        }
    }

    /// Rates suspended events again through the ingest path. An event leaves suspense when it is
    /// accepted or a duplicate; a still-rejected one was written to suspense again (with its new
    /// reason) by the same commit that acknowledged it, so its old entry is removed in both cases.
    /// A crash between the two leaves it in suspense twice, never zero times.
    pub async fn reprocess_suspense(&self, reason: Option<u8>, ids: &[Vec<u8>]) -> Result<[u32; 4], Status> {
        let _guard = self.writes.lock().await;
        let entries = if ids.is_empty() {
            self.settings
                .suspense_page(None, reason, MAX_REPROCESS)
                .map_err(store_status)?
        } else {
            let mut found = Vec::with_capacity(ids.len());
            for id in ids {
                let entry = self.settings.suspense_entry(id).map_err(store_status)?;
                let entry = entry
                    .ok_or_else(|| Status::not_found(format!("no suspense entry {}", crate::domain::hex::hex(id))))?;
                found.push((id.clone(), entry));
            }
            found
        };
        let mut counts = [0u32; 4];
        for (n, chunk) in entries.chunks(self.max_batch_events.max(1)).enumerate() {
            let events = chunk.iter().map(|(_, e)| suspended_to_proto(e)).collect();
            // Batch ids from the top of the range, far from any agent's.
            let batch = proto::UsageBatch {
                batch_id: u64::MAX - n as u64,
                events,
            };
            let pending = self.ingest.admit(batch, None).await?;
            let ack = match pending.await {
                Ok(Ok(ack)) => ack,
                Ok(Err(e)) => return Err(crate::ingest::service::status_of(e)),
                Err(_) => return Err(Status::unavailable("ratingd is shutting down")),
            };
            counts[0] += chunk.len() as u32;
            counts[1] += ack.accepted;
            counts[2] += ack.duplicate;
            counts[3] += ack.rejected;
            let keys: Vec<Vec<u8>> = chunk.iter().map(|(k, _)| k.clone()).collect();
            self.settings.remove_suspense(&keys).map_err(store_status)?;
            metrics::gauge!(crate::telemetry::SUSPENSE_EVENTS).decrement(keys.len() as f64);
        }
        info!(
            reprocessed = counts[0],
            accepted = counts[1],
            duplicate = counts[2],
            rejected = counts[3],
            "suspense reprocessed"
        );
        Ok(counts)
    }

    pub async fn upsert_subscriptions(&self, list: Vec<Subscription>) -> Result<(), AdminError> {
        let _guard = self.writes.lock().await;
        let current = self.context.load_full();
        for (i, s) in list.iter().enumerate() {
            if current.catalogue.plan(&s.plan_id).is_none() {
                let at = if list.len() > 1 {
                    format!("subscription {i}: ")
                } else {
                    String::new()
                };
                return Err(AdminError::Invalid(format!("{at}unknown plan {:?}", s.plan_id)));
            }
        }
        let book = current
            .subscriptions
            .with_all(list.clone())
            .map_err(AdminError::Invalid)?;
        // Durable first, then in force.
        self.settings.put_subscriptions(&list)?;
        self.context.store(Arc::new(RatingContext {
            catalogue: current.catalogue.clone(),
            subscriptions: book,
        }));
        match list.as_slice() {
            [s] => info!(account = %s.account_id, plan = %s.plan_id, from = %s.from, "subscription upserted"),
            _ => info!(count = list.len(), "subscriptions upserted"),
        }
        Ok(())
    }

    /// Re-reads the tariff file; the old tariffs stay in force when the new file is refused.
    pub async fn reload_tariffs(&self) -> Result<(usize, usize, usize), AdminError> {
        let _guard = self.writes.lock().await;
        let result = self.try_reload();
        let outcome = if result.is_ok() { "ok" } else { "refused" };
        metrics::counter!(crate::telemetry::TARIFF_RELOADS, "result" => outcome).increment(1);
        match &result {
            Ok((plans, versions, meters)) => {
                info!(plans, versions, meters, path = %self.tariffs_path.display(), "tariffs reloaded")
            }
            Err(error) => {
                warn!(%error, path = %self.tariffs_path.display(), "tariff reload refused; the previous tariffs stay in force")
            }
        }
        result
    }

    fn try_reload(&self) -> Result<(usize, usize, usize), AdminError> {
        let text = std::fs::read_to_string(&self.tariffs_path)
            .map_err(|e| AdminError::Invalid(format!("cannot read {}: {e}", self.tariffs_path.display())))?;
        let catalogue = parse_catalogue(&text).map_err(|e| AdminError::Invalid(e.to_string().replace('\n', "; ")))?;
        let current = self.context.load_full();
        let missing: Vec<String> = current
            .subscriptions
            .all()
            .map(|s| s.plan_id.as_str())
            .chain(current.subscriptions.default_plan())
            .filter(|p| catalogue.plan(p).is_none())
            .map(str::to_string)
            .collect();
        if !missing.is_empty() {
            return Err(AdminError::Invalid(format!(
                "plans in use are missing from the new file: {}",
                missing.join(", ")
            )));
        }
        let counts = (
            catalogue.plans().len(),
            catalogue.plans().iter().map(|p| p.versions.len()).sum(),
            catalogue.meters().count(),
        );
        self.context.store(Arc::new(RatingContext {
            catalogue,
            subscriptions: current.subscriptions.clone(),
        }));
        Ok(counts)
    }
}

pub struct AdminService(pub Arc<AdminCore>);

fn instant(field: &str, text: &str) -> Result<DateTime<Utc>, Status> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| Status::invalid_argument(format!("{field}: {text:?} is not an RFC 3339 date-time")))
}

fn to_proto(s: &Subscription) -> proto::Subscription {
    proto::Subscription {
        account_id: s.account_id.clone(),
        plan_id: s.plan_id.clone(),
        from: s.from.to_rfc3339(),
        to: s.to.map(|t| t.to_rfc3339()).unwrap_or_default(),
        discount_percent: s.discount_percent.map(|d| d.to_string()).unwrap_or_default(),
        alert_thresholds: s.alert_thresholds.iter().map(ToString::to_string).collect(),
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn list_suspense(
        &self,
        request: Request<proto::ListSuspenseRequest>,
    ) -> Result<Response<proto::ListSuspenseResponse>, Status> {
        let req = request.into_inner();
        let reason = reason_filter(req.reason)?;
        let after = if req.page_token.is_empty() {
            None
        } else {
            Some(
                crate::domain::hex::unhex(&req.page_token)
                    .ok_or_else(|| Status::invalid_argument("malformed page_token"))?,
            )
        };
        let size = crate::query::page_size(req.page_size);
        let mut page = self
            .0
            .settings
            .suspense_page(after.as_deref(), reason, size + 1)
            .map_err(store_status)?;
        let more = page.len() > size;
        page.truncate(size);
        let next_page_token = if more {
            page.last().map(|(k, _)| crate::domain::hex::hex(k)).unwrap_or_default()
        } else {
            String::new()
        };
        let events = page
            .iter()
            .map(|(k, e)| proto::SuspendedEvent {
                id: crate::domain::hex::hex(k),
                event: Some(suspended_to_proto(e)),
                reason: crate::domain::usage::RejectReason::from_code(e.reason)
                    .map_or(0, |r| reason_to_proto(r) as i32),
                detail: e.detail.clone(),
                received_at: DateTime::<Utc>::from_timestamp_nanos(e.received_unix_nanos).to_rfc3339(),
            })
            .collect();
        Ok(Response::new(proto::ListSuspenseResponse {
            events,
            next_page_token,
        }))
    }

    async fn reprocess_suspense(
        &self,
        request: Request<proto::ReprocessSuspenseRequest>,
    ) -> Result<Response<proto::ReprocessSuspenseResponse>, Status> {
        let req = request.into_inner();
        let reason = reason_filter(req.reason)?;
        if reason.is_none() && req.ids.is_empty() {
            return Err(Status::invalid_argument("give a reason or ids"));
        }
        let ids = req
            .ids
            .iter()
            .map(|id| {
                crate::domain::hex::unhex(id).ok_or_else(|| Status::invalid_argument(format!("malformed id {id:?}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let [reprocessed, accepted, duplicate, rejected] = self.0.reprocess_suspense(reason, &ids).await?;
        Ok(Response::new(proto::ReprocessSuspenseResponse {
            reprocessed,
            accepted,
            duplicate,
            rejected,
        }))
    }

    async fn upsert_subscription(
        &self,
        request: Request<proto::Subscription>,
    ) -> Result<Response<proto::Subscription>, Status> {
        let s = subscription_from_proto(request.into_inner())?;
        self.0.upsert_subscriptions(vec![s.clone()]).await.map_err(status_of)?;
        Ok(Response::new(to_proto(&s)))
    }

    async fn upsert_subscriptions(
        &self,
        request: Request<proto::Subscriptions>,
    ) -> Result<Response<proto::UpsertSubscriptionsResponse>, Status> {
        let list = request.into_inner().subscriptions;
        if list.len() > MAX_SUBSCRIPTIONS_PER_CALL {
            return Err(Status::invalid_argument(format!(
                "{} subscriptions in one call; the limit is {MAX_SUBSCRIPTIONS_PER_CALL}",
                list.len()
            )));
        }
        let list = list
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                subscription_from_proto(p)
                    .map_err(|e| Status::invalid_argument(format!("subscription {i}: {}", e.message())))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let upserted = list.len() as u32;
        self.0.upsert_subscriptions(list).await.map_err(status_of)?;
        Ok(Response::new(proto::UpsertSubscriptionsResponse { upserted }))
    }

    async fn get_subscriptions(
        &self,
        request: Request<proto::GetSubscriptionsRequest>,
    ) -> Result<Response<proto::Subscriptions>, Status> {
        let account = request.into_inner().account_id;
        let context = self.0.context.load();
        let subscriptions: Vec<proto::Subscription> = context.subscriptions.of(&account).iter().map(to_proto).collect();
        if subscriptions.is_empty() {
            return Err(Status::not_found(format!("account {account:?} has no subscription")));
        }
        Ok(Response::new(proto::Subscriptions { subscriptions }))
    }

    async fn reload_tariffs(
        &self,
        _: Request<proto::ReloadTariffsRequest>,
    ) -> Result<Response<proto::ReloadTariffsResponse>, Status> {
        let (plans, versions, meters) = self.0.reload_tariffs().await.map_err(status_of)?;
        Ok(Response::new(proto::ReloadTariffsResponse {
            plans: plans as u32,
            versions: versions as u32,
            meters: meters as u32,
        }))
    }

    async fn list_upcoming_versions(
        &self,
        _: Request<proto::ListUpcomingVersionsRequest>,
    ) -> Result<Response<proto::UpcomingVersions>, Status> {
        let context = self.0.context.load();
        let now = self.0.clock.now();
        let versions = context
            .catalogue
            .plans()
            .iter()
            .flat_map(|p| p.upcoming(now).map(move |v| (p, v)))
            .map(|(p, v)| proto::UpcomingVersion {
                plan_id: p.id.clone(),
                version: v.number,
                effective_from: v.effective_from.to_rfc3339(),
            })
            .collect();
        Ok(Response::new(proto::UpcomingVersions { versions }))
    }
}
