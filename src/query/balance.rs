//! `GetBalance` and `ListLedger`: an account's balances after what is due to expire, and its
//! ledger from the store (committed entries only).

use tonic::Request;

use super::{QueryService, blocking, scoped};
use crate::edge::ApiError;
use crate::pipeline::balance::{BalanceOp, BalanceReply};
use crate::wire::InputError;
use crate::wire::balance::{entry_to_proto, wallet_to_proto};
use crate::wire::paging::{ledger_token, page_size, parse_ledger_token};
use crate::wire::proto;

impl QueryService {
    /// The wallet as its shard holds it once due reservations and credit have expired (a trip
    /// through the shard, so the answer never shows money a lapsed reservation still holds).
    pub(super) async fn get_balance(
        &self,
        request: Request<proto::GetBalanceRequest>,
    ) -> Result<proto::BalanceResponse, ApiError> {
        let account = request.get_ref().account_id.clone();
        scoped(&request, &account)?;
        if account.is_empty() {
            return Err(InputError::Required("account_id").into());
        }
        match self
            .pipeline
            .balance(BalanceOp::Get {
                account: account.clone(),
            })
            .await?
        {
            BalanceReply::Wallet { wallet, .. } => Ok(wallet_to_proto(&account, wallet.as_ref(), false)),
            other => Err(ApiError::TaskFailed(format!("unexpected balance reply {other:?}"))),
        }
    }

    pub(super) async fn list_ledger(
        &self,
        request: Request<proto::ListLedgerRequest>,
    ) -> Result<proto::ListLedgerResponse, ApiError> {
        let req = request.get_ref();
        scoped(&request, &req.account_id)?;
        if req.account_id.is_empty() {
            return Err(InputError::Required("account_id").into());
        }
        let after = if req.page_token.is_empty() {
            0
        } else {
            parse_ledger_token(&req.page_token)?
        };
        let size = page_size(req.page_size);
        let (account, balances) = (req.account_id.clone(), self.balances.clone());
        // One more than the page: whether another page follows.
        let mut entries = blocking(move || balances.ledger(&account, after, size + 1)).await?;
        let next_page_token = if entries.len() > size {
            entries.truncate(size);
            entries.last().map(|e| ledger_token(e.number)).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(proto::ListLedgerResponse {
            entries: entries.iter().map(entry_to_proto).collect(),
            next_page_token,
        })
    }
}
