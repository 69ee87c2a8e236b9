//! `ratingd.v1.Charging`: online charging. `Authorize` grants as many units as the account's
//! balance pays at its tariff and reserves their price; `Update` reports the units used and asks
//! for more; `Terminate` rates the session's usage once, as one event through the normal path,
//! pays its charge from the balance and releases the rest (docs/charging.md). Every answer comes
//! after the commit that holds its change. Authorize goes through the door's normalization rules
//! (`Pipeline::normalized`): the session is the normalized event's, and its record keeps what
//! was sent.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::edge::ApiError;
use crate::edge::access::{check_account, principal};
use crate::edge::balance::{authorize, units};
use crate::pipeline::Pipeline;
use crate::pipeline::balance::{BalanceError, BalanceOp, BalanceReply};
use crate::store::Balances;
use crate::wire::balance::{ended_to_proto, grant_to_proto};
use crate::wire::proto::{self, charging_server::Charging};

pub struct ChargingService {
    pipeline: Arc<Pipeline>,
    /// Sessions as committed: the account of an Update or Terminate, a resent Terminate's answer.
    sessions: Balances,
}

impl ChargingService {
    pub fn new(pipeline: Arc<Pipeline>, sessions: Balances) -> ChargingService {
        ChargingService { pipeline, sessions }
    }

    /// The committed session `id`, when the caller may touch its account. A session of an
    /// account outside the caller's scope is answered as one that does not exist: the caller
    /// sent only an id, and learns nothing of who owns it.
    fn session<T>(&self, request: &Request<T>, id: &str) -> Result<crate::domain::balance::Session, ApiError> {
        let unknown = || ApiError::from(BalanceError::UnknownSession(id.to_string()));
        let session = self.sessions.session(id)?.ok_or_else(unknown)?;
        if principal(request).is_some_and(|caller| !caller.may_touch(&session.account)) {
            return Err(unknown());
        }
        Ok(session)
    }

    async fn grant(&self, op: BalanceOp) -> Result<Response<proto::GrantResponse>, Status> {
        match self.pipeline.balance(op).await.map_err(ApiError::from)? {
            BalanceReply::Granted { granted, session } => Ok(Response::new(grant_to_proto(granted, &session))),
            other => Err(unexpected(other)),
        }
    }
}

/// A reply of another kind than the operation's (not reachable: each operation has one).
fn unexpected(reply: BalanceReply) -> Status {
    ApiError::TaskFailed(format!("unexpected balance reply {reply:?}")).into()
}

#[tonic::async_trait]
impl Charging for ChargingService {
    async fn authorize(
        &self,
        request: Request<proto::AuthorizeRequest>,
    ) -> Result<Response<proto::GrantResponse>, Status> {
        check_account(&request, &request.get_ref().account_id)?;
        let scope = principal(&request).and_then(|p| p.account_prefix.clone());
        // The normalization rules of the door: the grant and the charge of one call see the
        // event its record will.
        let op = self
            .pipeline
            .normalized(authorize(request.into_inner())?, scope.as_deref())
            .map_err(ApiError::from)?;
        if let BalanceOp::Authorize {
            started: Some(started), ..
        } = &op
        {
            self.pipeline.check_session_start(*started).map_err(ApiError::from)?;
        }
        self.grant(op).await
    }

    async fn update(&self, request: Request<proto::UpdateRequest>) -> Result<Response<proto::GrantResponse>, Status> {
        let session = self.session(&request, &request.get_ref().session_id)?;
        let p = request.into_inner();
        let op = BalanceOp::Update {
            used: units("used_units", p.used_units)?,
            requested: units("requested_units", p.requested_units)?,
            session: p.session_id,
            account: session.account,
        };
        self.grant(op).await
    }

    async fn terminate(
        &self,
        request: Request<proto::TerminateRequest>,
    ) -> Result<Response<proto::TerminateResponse>, Status> {
        let session = self.session(&request, &request.get_ref().session_id)?;
        let p = request.into_inner();
        let used = units("used_units", p.used_units)?;
        if session.outcome.is_some() {
            // Idempotent by session id: the first outcome, whatever this resend says.
            return Ok(Response::new(ended_to_proto(&session)));
        }
        let event = self.pipeline.session_event(&session, used);
        let op = BalanceOp::Terminate {
            session: p.session_id,
            account: session.account,
            used,
            event,
        };
        match self.pipeline.balance(op).await.map_err(ApiError::from)? {
            BalanceReply::Terminated { session } => Ok(Response::new(ended_to_proto(&session))),
            other => Err(unexpected(other)),
        }
    }
}
