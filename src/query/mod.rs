//! `ratingd.v1.Query`: the read side for billing backends, served from the committed view
//! (totals become visible only once durable).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::ingest::proto::{self, query_server::Query};
use crate::pipeline::CommittedView;

pub struct QueryService {
    committed: CommittedView,
}

impl QueryService {
    pub fn new(committed: CommittedView) -> Self {
        QueryService { committed }
    }
}

#[tonic::async_trait]
impl Query for QueryService {
    async fn get_totals(&self, request: Request<proto::GetTotalsRequest>) -> Result<Response<proto::Totals>, Status> {
        let req = request.into_inner();
        if req.account_id.is_empty() || req.period.is_empty() {
            return Err(Status::invalid_argument("account_id and period are required"));
        }
        let key: (Arc<str>, Arc<str>) = (Arc::from(req.account_id.as_str()), Arc::from(req.period.as_str()));
        let Some(t) = self.committed.totals.get(&key).map(|t| t.clone()) else {
            return Err(Status::not_found(format!(
                "no usage for account {:?} in period {:?}",
                req.account_id, req.period
            )));
        };
        let mut meters: Vec<proto::MeterTotals> = t
            .meters
            .iter()
            .map(|m| proto::MeterTotals {
                meter: m.meter.to_string(),
                quantity: m.quantity.normalize().to_string(),
                rated_quantity: m.rated_quantity.normalize().to_string(),
                charge: m.charge.to_string(),
                events: m.events,
            })
            .collect();
        meters.sort_by(|a, b| a.meter.cmp(&b.meter));
        Ok(Response::new(proto::Totals {
            account_id: t.account.to_string(),
            period: t.period.to_string(),
            currency: t.currency.to_string(),
            plan: t.plan.to_string(),
            total_charge: t.total_charge.to_string(),
            total_amount: t.amount().to_string(),
            meters,
        }))
    }
}
