//! `ratingd.v1.Query`: the read side for billing backends, thin: requests in, views out. Totals
//! come from the pipeline's committed view (only durable figures), shown through the billing
//! cycle's rules (each plan's part, its projection); quotes run the rating engine without
//! recording anything (`quote`); records and explanations (`records`) and statements
//! (`statement`) are read from the blocks; balances and ledgers (`balance`) from the shards and
//! the store.

mod balance;
mod quote;
mod records;
mod statement;

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::billing::part::PartView;
use crate::billing::projection::projected;
use crate::domain::aggregate::{AccountPeriod, CurrencyTotal, MeterTotals};
use crate::domain::subscription::windows_of;
use crate::edge::ApiError;
use crate::edge::access::{check_account, principal};
use crate::pipeline::Pipeline;
use crate::security::auth::AuthError;
use crate::store::Records;
use crate::wire::InputError;
use crate::wire::convert::{
    account_charge, currency_total_to_proto, meter_to_proto, status_label, subscription_totals_to_proto,
};
use crate::wire::paging::{self, MAX_PAGE, page_size};
use crate::wire::proto::{self, query_server::Query};

pub struct QueryService {
    pipeline: Arc<Pipeline>,
    records: Records,
    /// Ledgers (ListLedger).
    balances: crate::store::Balances,
}

/// A failed call as its status; a token's scope refusal is counted and logged.
fn refuse(error: ApiError) -> Status {
    let scope = matches!(error, ApiError::Auth(AuthError::AccountOutOfScope { .. }));
    let status = Status::from(error);
    if scope {
        crate::edge::access::note("ratingd.v1.Query", &status);
    }
    status
}

/// The caller's token must cover `account` (when tokens are in use).
fn scoped<T>(request: &Request<T>, account: &str) -> Result<(), ApiError> {
    check_account(request, account)
}

/// Runs a blocking read of the blocks off the async threads.
async fn blocking<T: Send + 'static>(
    read: impl FnOnce() -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(read)
        .await
        .map_err(|e| ApiError::TaskFailed(e.to_string()))?
        .map_err(ApiError::Store)
}

impl QueryService {
    pub fn new(pipeline: Arc<Pipeline>, records: Records, balances: crate::store::Balances) -> Self {
        QueryService {
            pipeline,
            records,
            balances,
        }
    }

    fn totals(&self, account: &str, period: &str) -> Result<AccountPeriod, ApiError> {
        let committed = self.pipeline.committed();
        committed.check_damage(account)?;
        match committed.get(account, period)? {
            Some(t) => Ok(t),
            None => Err(self.retired(period).unwrap_or_else(|| ApiError::NoTotals {
                account: account.to_string(),
                period: period.to_string(),
            })),
        }
    }

    /// NOT_FOUND naming the retention, when retention removed records of the period `period`.
    fn retired(&self, period: &str) -> Option<ApiError> {
        let r = self.pipeline.committed().retired(period)?;
        Some(ApiError::Retired {
            what: format!(
                "period {period:?} (plan {:?}) is past retention: its totals and records were removed",
                r.plan
            ),
            days: self.pipeline.config().retention_days,
            removed_at: r.removed_at.to_rfc3339(),
        })
    }

    /// Every account-period of one period (damaged accounts left out), with its account; the
    /// closed plans' totals read from disk.
    fn of_period(&self, period: &str) -> Result<Vec<(Arc<str>, AccountPeriod)>, ApiError> {
        let found = self.pipeline.committed().of_period(period)?;
        match self.retired(period) {
            Some(error) if found.is_empty() => Err(error),
            _ => Ok(found),
        }
    }

    /// The projected period-end charge of an account-period of one currency: each open plan's
    /// part projected by the billing cycle's rule, each closed one as it is.
    fn projected(
        &self,
        context: &crate::pipeline::RatingContext,
        t: &AccountPeriod,
        views: &[PartView],
    ) -> rust_decimal::Decimal {
        let now = self.pipeline.clock().now();
        t.parts
            .iter()
            .zip(views)
            .map(
                |(part, view)| match (context.catalogue.plan(&part.plan), &view.bounds) {
                    (Some(plan), Some(bounds)) if !view.closed => {
                        let windows = windows_of(context.subscriptions.of(&part.account), &plan.id);
                        projected(plan, part, &windows, bounds, now)
                    }
                    _ => part.total_charge,
                },
            )
            .sum()
    }

    fn get_totals(&self, request: Request<proto::GetTotalsRequest>) -> Result<proto::Totals, ApiError> {
        scoped(&request, &request.get_ref().account_id)?;
        let req = request.into_inner();
        if req.account_id.is_empty() || req.period.is_empty() {
            return Err(InputError::Required("account_id and period").into());
        }
        let t = self.totals(&req.account_id, &req.period)?;
        let context = self.pipeline.context().load();
        let chosen = |meters: &[MeterTotals], rounding| {
            let mut chosen: Vec<proto::MeterTotals> = meters
                .iter()
                .filter(|m| req.meter.is_empty() || *m.meter == *req.meter)
                .map(|m| meter_to_proto(m, rounding))
                .collect();
            chosen.sort_by(|a, b| a.meter.cmp(&b.meter));
            chosen
        };
        let committed = self.pipeline.committed();
        let views: Vec<PartView> = t.parts.iter().map(|p| PartView::of(&context, committed, p)).collect();
        let subscriptions: Vec<proto::SubscriptionTotals> = t
            .parts
            .iter()
            .zip(&views)
            .map(|(p, v)| subscription_totals_to_proto(p, chosen(&p.meters, p.rounding), v.closed, v.covered))
            .collect();
        if !req.meter.is_empty() && subscriptions.iter().all(|s| s.meters.is_empty()) {
            return Err(ApiError::NoMeterUsage {
                meter: req.meter,
                account: req.account_id,
                period: req.period,
            });
        }
        let closed = views.iter().all(|v| v.closed);
        let by_currency = t.by_currency();
        let mut reply = proto::Totals {
            account_id: req.account_id.clone(),
            period: req.period.clone(),
            status: status_label(closed).to_string(),
            by_currency: by_currency.iter().map(currency_total_to_proto).collect(),
            subscriptions,
            ..proto::Totals::default()
        };
        // The latest plan's period gives the bounds (plans in one period label may differ in
        // time zone); the single-currency figures stay where today's readers look for them.
        if let (Some(latest), Some(view)) = (t.parts.last(), views.last()) {
            reply.plan = latest.plan.to_string();
            if let Some(b) = &view.bounds {
                reply.period_start = b.start.to_rfc3339();
                reply.period_end = b.end.to_rfc3339();
            }
            if let [one] = by_currency.as_slice() {
                reply.currency = one.currency.to_string();
                reply.total_charge = one.charge.to_string();
                reply.total_amount = one.amount.to_string();
                reply.meters = chosen(&t.merged_meters(), latest.rounding);
                reply.projected_charge = self.projected(&context, &t, &views).to_string();
            }
        }
        Ok(reply)
    }

    fn list_accounts(
        &self,
        request: Request<proto::ListAccountsRequest>,
    ) -> Result<proto::ListAccountsResponse, ApiError> {
        let caller = principal(&request).cloned();
        let req = request.into_inner();
        let after = if req.page_token.is_empty() {
            None
        } else {
            Some(paging::parse_account_token(&req.page_token)?)
        };
        let size = page_size(req.page_size);
        let mut accounts: Vec<String> = self
            .of_period(&req.period)?
            .into_iter()
            .map(|(account, _)| account.to_string())
            .filter(|a| after.as_ref().is_none_or(|after| a > after))
            .filter(|a| caller.as_ref().is_none_or(|c| c.may_touch(a)))
            .collect();
        accounts.sort();
        let more = accounts.len() > size;
        accounts.truncate(size);
        let next_page_token = match accounts.last() {
            Some(last) if more => paging::account_token(last),
            _ => String::new(),
        };
        Ok(proto::ListAccountsResponse {
            accounts,
            next_page_token,
        })
    }

    fn top_accounts(
        &self,
        request: Request<proto::TopAccountsRequest>,
    ) -> Result<proto::TopAccountsResponse, ApiError> {
        let caller = principal(&request).cloned();
        let req = request.into_inner();
        if req.n == 0 || req.n as usize > MAX_PAGE {
            return Err(ApiError::BadTopN { max: MAX_PAGE });
        }
        // One row per account and currency: charges in different currencies do not compare.
        let mut rows: Vec<(Arc<str>, CurrencyTotal)> = self
            .of_period(&req.period)?
            .into_iter()
            .filter(|(account, _)| caller.as_ref().is_none_or(|c| c.may_touch(account)))
            .flat_map(|(account, t)| t.by_currency().into_iter().map(move |c| (account.clone(), c)))
            .filter(|(_, c)| req.currency.is_empty() || c.currency.as_str() == req.currency)
            .collect();
        rows.sort_by(|a, b| b.1.charge.cmp(&a.1.charge).then_with(|| a.0.cmp(&b.0)));
        rows.truncate(req.n as usize);
        Ok(proto::TopAccountsResponse {
            accounts: rows.iter().map(|(a, c)| account_charge(a, c)).collect(),
        })
    }
}

/// A method's answer: its reply, or its error through `refuse`.
fn answer<T>(result: Result<T, ApiError>) -> Result<Response<T>, Status> {
    result.map(Response::new).map_err(refuse)
}

/// Every method answers through `refuse`: one mapping to a status, scope refusals counted.
#[tonic::async_trait]
impl Query for QueryService {
    async fn get_balance(
        &self,
        request: Request<proto::GetBalanceRequest>,
    ) -> Result<Response<proto::BalanceResponse>, Status> {
        answer(QueryService::get_balance(self, request).await)
    }

    async fn list_ledger(
        &self,
        request: Request<proto::ListLedgerRequest>,
    ) -> Result<Response<proto::ListLedgerResponse>, Status> {
        answer(QueryService::list_ledger(self, request).await)
    }

    async fn list_rated_records(
        &self,
        request: Request<proto::ListRatedRecordsRequest>,
    ) -> Result<Response<proto::ListRatedRecordsResponse>, Status> {
        answer(QueryService::list_rated_records(self, request).await)
    }

    async fn statement(&self, request: Request<proto::StatementRequest>) -> Result<Response<proto::Statement>, Status> {
        answer(QueryService::statement(self, request).await)
    }

    async fn explain_record(
        &self,
        request: Request<proto::ExplainRecordRequest>,
    ) -> Result<Response<proto::ExplainRecordResponse>, Status> {
        answer(QueryService::explain_record(self, request).await)
    }

    async fn get_totals(&self, request: Request<proto::GetTotalsRequest>) -> Result<Response<proto::Totals>, Status> {
        answer(QueryService::get_totals(self, request))
    }

    async fn list_accounts(
        &self,
        request: Request<proto::ListAccountsRequest>,
    ) -> Result<Response<proto::ListAccountsResponse>, Status> {
        answer(QueryService::list_accounts(self, request))
    }

    async fn top_accounts(
        &self,
        request: Request<proto::TopAccountsRequest>,
    ) -> Result<Response<proto::TopAccountsResponse>, Status> {
        answer(QueryService::top_accounts(self, request))
    }

    async fn quote(&self, request: Request<proto::QuoteRequest>) -> Result<Response<proto::QuoteResponse>, Status> {
        answer(QueryService::quote(self, request))
    }
}
