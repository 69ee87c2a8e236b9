//! `ratingd.v1.Admin`: subscriptions (persisted, in force for events rated after the call), tariff
//! reload (also on SIGHUP), the list of upcoming tariff versions, and suspense: listed, and
//! reprocessed through the pipeline's door like any batch. A call that changes what is owed (a
//! subscription set, a reload) answers once the fee records it causes are committed
//! (read-your-writes: a billing backend that sets a subscription and reads the totals at once
//! sees its fee).

mod corrections;

use std::path::PathBuf;
use std::sync::Arc;

use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::billing::fees::{Accounts, Biller};
use crate::domain::mediation::{Rules, parse_rules};
use crate::domain::subscription::Subscription;
use crate::domain::tariff_file::content::{KnownVersion, edited_in_force};
use crate::domain::tariff_file::parse_catalogue;
use crate::domain::usage::RejectReason;
use crate::edge::ApiError;
use crate::pipeline::{Pipeline, RatingContext};
use crate::store::{Adjustments, Corrections, Subscriptions, Suspense, SuspenseId, Versions};
use crate::wire::InputError;
use crate::wire::convert::{
    charge_from_proto, reason_filter, subscription_from_proto, subscription_to_proto, suspended_to_proto,
};
use crate::wire::paging::{self, page_size};
use crate::wire::proto::{self, admin_server::Admin};

use crate::limits::{MAX_REPROCESS, MAX_SUBSCRIPTIONS_PER_CALL};

/// What a reprocess did: entries taken, and how each came out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reprocessed {
    pub reprocessed: u32,
    pub accepted: u32,
    pub duplicate: u32,
    pub rejected: u32,
    /// A normalization rule drops them now: they leave suspense.
    pub dropped: u32,
}

/// The tables the Admin API writes (handles from the store).
pub struct AdminTables {
    pub subscriptions: Subscriptions,
    pub suspense: Suspense,
    pub versions: Versions,
    /// Correction ids and what each was asked for.
    pub corrections: Corrections,
    /// Closed periods' corrections to announce.
    pub adjustments: Adjustments,
}

/// What a reload put in force.
#[derive(Debug, Clone, Copy)]
pub struct Reloaded {
    pub plans: usize,
    pub versions: usize,
    pub meters: usize,
    /// Normalization rules.
    pub rules: usize,
}

/// The admin operations, shared by the gRPC service and the SIGHUP handler.
pub struct AdminCore {
    pipeline: Arc<Pipeline>,
    subscriptions: Subscriptions,
    suspense: Suspense,
    versions: Versions,
    max_batch_events: usize,
    tariffs_path: PathBuf,
    /// The normalization rules file, reloaded with the tariffs (`None`: no rules).
    rules_path: Option<PathBuf>,
    /// Serializes changes: each is read-modify-replace of the whole context.
    writes: tokio::sync::Mutex<()>,
    corrections: Corrections,
    adjustments: Adjustments,
    /// Writes the fees a change causes before the call answers (shared with the closer).
    biller: Arc<Biller>,
}

impl AdminCore {
    pub fn new(
        pipeline: Arc<Pipeline>,
        biller: Arc<Biller>,
        tables: AdminTables,
        max_batch_events: usize,
        (tariffs_path, rules_path): (PathBuf, Option<PathBuf>),
    ) -> Self {
        AdminCore {
            pipeline,
            subscriptions: tables.subscriptions,
            suspense: tables.suspense,
            versions: tables.versions,
            max_batch_events,
            tariffs_path,
            rules_path,
            writes: tokio::sync::Mutex::new(()),
            corrections: tables.corrections,
            adjustments: tables.adjustments,
            biller,
        }
    }

    /// Bills the fees `accounts` owe now (in advance; what a change of subscriptions or tariffs
    /// makes due) and returns once they are committed. A fee refused is logged and left to the
    /// closer's next pass.
    async fn bill_now(&self, accounts: Accounts<'_>) -> Result<(), ApiError> {
        let billed = self.biller.bill_fees(accounts, &[]).await?;
        if billed.refused > 0 {
            warn!(
                refused = billed.refused,
                "fees of a change were not charged; the closer tries again"
            );
        }
        Ok(())
    }

    /// Rates suspended events again through the pipeline's door. An event leaves suspense when it
    /// is accepted or a duplicate; a still-rejected one was written to suspense again (with its
    /// new reason) by the same commit that acknowledged it, so its old entry is removed in both
    /// cases. A crash between the two leaves it in suspense twice, never zero times.
    pub async fn reprocess_suspense(
        &self,
        reason: Option<RejectReason>,
        ids: &[SuspenseId],
    ) -> Result<Reprocessed, ApiError> {
        let _guard = self.writes.lock().await;
        let entries = if ids.is_empty() {
            self.suspense.page(None, reason, MAX_REPROCESS)?
        } else {
            let mut found = Vec::with_capacity(ids.len());
            for id in ids {
                let entry = self
                    .suspense
                    .get(id)?
                    .ok_or_else(|| ApiError::NoSuspenseEntry(paging::suspense_id(id)))?;
                found.push((id.clone(), entry));
            }
            found
        };
        let mut done = Reprocessed::default();
        for (n, chunk) in entries.chunks(self.max_batch_events.max(1)).enumerate() {
            // Batch ids from the top of the range, far from any agent's.
            let batch_id = u64::MAX - n as u64;
            let events = chunk.iter().map(|(_, e)| e.event.clone());
            let ack = self.pipeline.intake(batch_id, events, None).await?.ack().await?;
            done.reprocessed += chunk.len() as u32;
            done.accepted += ack.accepted;
            done.duplicate += ack.duplicate;
            done.rejected += ack.rejected;
            done.dropped += ack.dropped;
            let keys: Vec<SuspenseId> = chunk.iter().map(|(k, _)| k.clone()).collect();
            self.suspense.remove(&keys)?;
            metrics::gauge!(crate::telemetry::SUSPENSE_EVENTS).decrement(keys.len() as f64);
        }
        info!(
            reprocessed = done.reprocessed,
            accepted = done.accepted,
            duplicate = done.duplicate,
            rejected = done.rejected,
            "suspense reprocessed"
        );
        Ok(done)
    }

    /// Stores subscriptions, puts them in force, and answers once the fees they make due are
    /// committed.
    pub async fn upsert_subscriptions(&self, list: Vec<Subscription>) -> Result<(), ApiError> {
        self.put_subscriptions(&list).await?;
        let mut accounts: Vec<String> = list.into_iter().map(|s| s.account_id).collect();
        accounts.sort_unstable();
        accounts.dedup();
        self.bill_now(Accounts::Only(&accounts)).await
    }

    async fn put_subscriptions(&self, list: &[Subscription]) -> Result<(), ApiError> {
        let _guard = self.writes.lock().await;
        let context = self.pipeline.context();
        let current = context.load_full();
        for (i, s) in list.iter().enumerate() {
            if current.catalogue.plan(&s.plan_id).is_none() {
                return Err(ApiError::UnknownPlan {
                    index: (list.len() > 1).then_some(i),
                    plan: s.plan_id.clone(),
                });
            }
        }
        let book = current.subscriptions.with_all(list.to_vec(), &current.catalogue)?;
        // Durable first, then in force.
        self.subscriptions.put(list, &current.catalogue)?;
        context.store(Arc::new(RatingContext {
            catalogue: current.catalogue.clone(),
            subscriptions: book,
            mediation: current.mediation.clone(),
        }));
        match list {
            [s] => info!(account = %s.account_id, plan = %s.plan_id, from = %s.from, "subscription upserted"),
            _ => info!(count = list.len(), "subscriptions upserted"),
        }
        Ok(())
    }

    /// Re-reads the tariff file and the normalization rules file; when either is refused, the
    /// old tariffs and rules both stay in force. Returns the counts of plans, versions, meters
    /// and rules, once the fees the new tariffs make due are committed.
    pub async fn reload_tariffs(&self) -> Result<Reloaded, ApiError> {
        let reloaded = self.reload().await?;
        self.bill_now(Accounts::All).await?;
        Ok(reloaded)
    }

    async fn reload(&self) -> Result<Reloaded, ApiError> {
        let _guard = self.writes.lock().await;
        // Every batch admitted under the old rules is committed before new ones are in force:
        // a resend the new rules route elsewhere finds the old claims on disk.
        let _drained = self.pipeline.drained().await?;
        let result = self.try_reload();
        let outcome = if result.is_ok() { "ok" } else { "refused" };
        metrics::counter!(crate::telemetry::TARIFF_RELOADS, "result" => outcome).increment(1);
        match &result {
            Ok(r) => {
                info!(plans = r.plans, versions = r.versions, meters = r.meters, rules = r.rules,
                    path = %self.tariffs_path.display(), "tariffs reloaded")
            }
            Err(error) => {
                warn!(%error, path = %self.tariffs_path.display(), "tariff reload refused; the previous tariffs stay in force")
            }
        }
        result
    }

    fn try_reload(&self) -> Result<Reloaded, ApiError> {
        let rules = match &self.rules_path {
            None => Rules::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| ApiError::RulesFileUnreadable {
                    path: path.display().to_string(),
                    error: e.to_string(),
                })?;
                parse_rules(&text).map_err(ApiError::RulesFile)?
            }
        };
        let text = std::fs::read_to_string(&self.tariffs_path).map_err(|e| ApiError::TariffFileUnreadable {
            path: self.tariffs_path.display().to_string(),
            error: e.to_string(),
        })?;
        let catalogue = parse_catalogue(&text).map_err(ApiError::TariffFile)?;
        let context = self.pipeline.context();
        let current = context.load_full();
        let missing: Vec<String> = current
            .subscriptions
            .all()
            .map(|s| s.plan_id.as_str())
            .chain(current.subscriptions.default_plan())
            .filter(|p| catalogue.plan(p).is_none())
            .map(str::to_string)
            .collect();
        if !missing.is_empty() {
            return Err(ApiError::PlansInUseMissing(missing));
        }
        if let Some((account, a, b, clash)) = current.subscriptions.first_clash(&catalogue) {
            let error = clash.error(None, &a);
            return Err(ApiError::SubscriptionsClash(format!(
                "account {account:?}, subscription to {:?} from {}: {error}",
                b.plan_id,
                b.from.to_rfc3339()
            )));
        }
        // Versions in force stay as they are: the ones stored at earlier starts and reloads, and
        // the ones of the catalogue being replaced (some took effect since it was loaded).
        let now = self.pipeline.clock().now();
        let mut known = self.versions.all()?;
        known.extend(KnownVersion::of(&current.catalogue));
        let edits = edited_in_force(&known, &catalogue, now);
        if !edits.is_empty() {
            return Err(ApiError::VersionsEdited(edits));
        }
        self.versions.record(&KnownVersion::of(&catalogue), now)?;
        let counts = Reloaded {
            plans: catalogue.plans().len(),
            versions: catalogue.plans().iter().map(|p| p.versions.len()).sum(),
            meters: catalogue.meters().count(),
            rules: rules.len(),
        };
        context.store(Arc::new(RatingContext {
            catalogue,
            subscriptions: current.subscriptions.clone(),
            mediation: Arc::new(rules),
        }));
        Ok(counts)
    }

    /// Adds a one-off charge or credit: checked, then taken in like an event and answered once
    /// its record is durable (or found a duplicate).
    pub async fn add_charge(&self, req: proto::AddChargeRequest) -> Result<proto::AddChargeResponse, ApiError> {
        let now = self.pipeline.clock().now();
        let charge = charge_from_proto(req, now)?;
        let config = self.pipeline.config();
        let oldest = now - chrono::Duration::days(i64::from(config.dedupe_window_days));
        let newest = now + chrono::Duration::seconds(i64::from(config.future_skew_seconds));
        if charge.at < oldest || charge.at > newest {
            return Err(ApiError::from(InputError::BadCharge(format!(
                "time must be within the dedupe window ({} days) and the clock skew ({} s) of now",
                config.dedupe_window_days, config.future_skew_seconds
            ))));
        }
        let (plan, period) = {
            let context = self.pipeline.context().load();
            let currency = charge.currency.as_str();
            let plan = context
                .subscriptions
                .plan_in_currency(&charge.account_id, charge.at, currency, &context.catalogue)
                .and_then(|p| context.catalogue.plan(p))
                .ok_or_else(|| {
                    ApiError::ChargeNotBillable(format!(
                        "no subscription of account {:?} in force at {} bills in {currency} ({})",
                        charge.account_id,
                        charge.at.to_rfc3339(),
                        context.subscriptions.no_plan_detail(&charge.account_id, charge.at)
                    ))
                })?;
            let period = plan.period.period_of(plan.time_zone, charge.at);
            let grace = chrono::Duration::seconds(config.close_grace_seconds);
            if period.end + grace <= now || self.pipeline.committed().is_closed(&plan.id, &period.label) {
                return Err(ApiError::ChargeNotBillable(format!(
                    "billing period {} of plan {:?} is closed: a charge for it goes into an open period",
                    period.label, plan.id
                )));
            }
            (plan.id.clone(), period.label)
        };
        let ack = self.pipeline.intake_charge(0, &charge).await?.ack().await?;
        match ack.results.first() {
            None => Ok(proto::AddChargeResponse {
                duplicate: false,
                plan,
                period,
            }),
            Some(r) if r.rejected.is_none() => Ok(proto::AddChargeResponse {
                duplicate: true,
                plan,
                period,
            }),
            Some(r) if r.rejected == Some(RejectReason::Conflict) => Err(ApiError::ChargeConflict {
                account: charge.account_id,
                charge_id: charge.charge_id,
            }),
            Some(r) => Err(ApiError::ChargeNotBillable(r.detail.clone())),
        }
    }

    fn list_suspense(&self, req: proto::ListSuspenseRequest) -> Result<proto::ListSuspenseResponse, ApiError> {
        let reason = reason_filter(req.reason)?;
        let after = if req.page_token.is_empty() {
            None
        } else {
            Some(paging::parse_suspense_token(&req.page_token)?)
        };
        let size = page_size(req.page_size);
        let mut page = self.suspense.page(after.as_ref(), reason, size + 1)?;
        let more = page.len() > size;
        page.truncate(size);
        let next_page_token = match page.last() {
            Some((id, _)) if more => paging::suspense_id(id),
            _ => String::new(),
        };
        let events = page
            .iter()
            .map(|(id, e)| suspended_to_proto(paging::suspense_id(id), e))
            .collect();
        Ok(proto::ListSuspenseResponse {
            events,
            next_page_token,
        })
    }

    fn upcoming(&self) -> proto::UpcomingVersions {
        let context = self.pipeline.context().load();
        let now = self.pipeline.clock().now();
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
        proto::UpcomingVersions { versions }
    }
}

pub struct AdminService(pub Arc<AdminCore>);

#[tonic::async_trait]
impl Admin for AdminService {
    async fn list_suspense(
        &self,
        request: Request<proto::ListSuspenseRequest>,
    ) -> Result<Response<proto::ListSuspenseResponse>, Status> {
        Ok(Response::new(self.0.list_suspense(request.into_inner())?))
    }

    async fn reprocess_suspense(
        &self,
        request: Request<proto::ReprocessSuspenseRequest>,
    ) -> Result<Response<proto::ReprocessSuspenseResponse>, Status> {
        let req = request.into_inner();
        let reason = reason_filter(req.reason)?;
        if reason.is_none() && req.ids.is_empty() {
            return Err(ApiError::ReprocessNeedsSelection.into());
        }
        let ids = req
            .ids
            .iter()
            .map(|id| paging::parse_suspense_id(id))
            .collect::<Result<Vec<_>, _>>()?;
        let done = self.0.reprocess_suspense(reason, &ids).await?;
        Ok(Response::new(proto::ReprocessSuspenseResponse {
            reprocessed: done.reprocessed,
            accepted: done.accepted,
            duplicate: done.duplicate,
            rejected: done.rejected,
            dropped: done.dropped,
        }))
    }

    async fn upsert_subscription(
        &self,
        request: Request<proto::Subscription>,
    ) -> Result<Response<proto::Subscription>, Status> {
        let s = subscription_from_proto(request.into_inner(), None)?;
        self.0.upsert_subscriptions(vec![s.clone()]).await?;
        Ok(Response::new(subscription_to_proto(&s)))
    }

    async fn upsert_subscriptions(
        &self,
        request: Request<proto::Subscriptions>,
    ) -> Result<Response<proto::UpsertSubscriptionsResponse>, Status> {
        let list = request.into_inner().subscriptions;
        if list.len() > MAX_SUBSCRIPTIONS_PER_CALL {
            return Err(ApiError::TooManySubscriptions {
                given: list.len(),
                limit: MAX_SUBSCRIPTIONS_PER_CALL,
            }
            .into());
        }
        let list = list
            .into_iter()
            .enumerate()
            .map(|(i, p)| subscription_from_proto(p, Some(i)))
            .collect::<Result<Vec<_>, _>>()?;
        let upserted = list.len() as u32;
        self.0.upsert_subscriptions(list).await?;
        Ok(Response::new(proto::UpsertSubscriptionsResponse { upserted }))
    }

    async fn get_subscriptions(
        &self,
        request: Request<proto::GetSubscriptionsRequest>,
    ) -> Result<Response<proto::Subscriptions>, Status> {
        let account = request.into_inner().account_id;
        let context = self.0.pipeline.context().load();
        let subscriptions: Vec<proto::Subscription> = context
            .subscriptions
            .of(&account)
            .iter()
            .map(subscription_to_proto)
            .collect();
        if subscriptions.is_empty() {
            return Err(ApiError::NoSubscription(account).into());
        }
        Ok(Response::new(proto::Subscriptions { subscriptions }))
    }

    async fn add_charge(
        &self,
        request: Request<proto::AddChargeRequest>,
    ) -> Result<Response<proto::AddChargeResponse>, Status> {
        Ok(Response::new(self.0.add_charge(request.into_inner()).await?))
    }

    async fn reload_tariffs(
        &self,
        _: Request<proto::ReloadTariffsRequest>,
    ) -> Result<Response<proto::ReloadTariffsResponse>, Status> {
        let r = self.0.reload_tariffs().await?;
        Ok(Response::new(proto::ReloadTariffsResponse {
            plans: r.plans as u32,
            versions: r.versions as u32,
            meters: r.meters as u32,
            mediation_rules: r.rules as u32,
        }))
    }

    async fn rerate(
        &self,
        request: Request<proto::RerateRequest>,
    ) -> Result<Response<proto::CorrectionResponse>, Status> {
        let caller = caller_name(&request);
        Ok(Response::new(self.0.rerate(request.into_inner(), &caller).await?))
    }

    async fn void_event(
        &self,
        request: Request<proto::VoidEventRequest>,
    ) -> Result<Response<proto::CorrectionResponse>, Status> {
        let caller = caller_name(&request);
        Ok(Response::new(self.0.void_event(request.into_inner(), &caller).await?))
    }

    async fn amend_event(
        &self,
        request: Request<proto::AmendEventRequest>,
    ) -> Result<Response<proto::CorrectionResponse>, Status> {
        let caller = caller_name(&request);
        Ok(Response::new(self.0.amend_event(request.into_inner(), &caller).await?))
    }

    async fn top_up(&self, request: Request<proto::TopUpRequest>) -> Result<Response<proto::BalanceResponse>, Status> {
        let op = crate::edge::balance::top_up(request.into_inner())?;
        Ok(Response::new(self.0.balance(op).await?))
    }

    async fn set_balance_limits(
        &self,
        request: Request<proto::SetBalanceLimitsRequest>,
    ) -> Result<Response<proto::BalanceResponse>, Status> {
        let op = crate::edge::balance::limits(request.into_inner())?;
        Ok(Response::new(self.0.balance(op).await?))
    }

    async fn list_upcoming_versions(
        &self,
        _: Request<proto::ListUpcomingVersionsRequest>,
    ) -> Result<Response<proto::UpcomingVersions>, Status> {
        Ok(Response::new(self.0.upcoming()))
    }
}

impl AdminCore {
    /// A top-up or a change of a purse's limits, answered with the wallet once it is durable.
    async fn balance(&self, op: crate::pipeline::balance::BalanceOp) -> Result<proto::BalanceResponse, ApiError> {
        use crate::pipeline::balance::{BalanceOp, BalanceReply};
        let account = match &op {
            BalanceOp::TopUp { account, .. } | BalanceOp::Configure { account, .. } => account.clone(),
            _ => String::new(),
        };
        match self.pipeline.balance(op).await? {
            BalanceReply::Wallet {
                wallet,
                already_applied,
            } => Ok(crate::wire::balance::wallet_to_proto(
                &account,
                wallet.as_ref(),
                already_applied,
            )),
            other => Err(ApiError::TaskFailed(format!("unexpected balance reply {other:?}"))),
        }
    }
}

/// The name of the caller's token (kept with each correction); empty without tokens.
fn caller_name<T>(request: &Request<T>) -> String {
    crate::edge::access::principal(request).map_or_else(String::new, |p| p.name.to_string())
}
