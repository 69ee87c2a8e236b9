//! `ratectl charges add`: one-off charges and credits (Admin API).

use serde_json::json;

use crate::client::connect::Access;
use crate::client::output::{Failure, Printed, rpc_failure};
use crate::wire::proto::{self, admin_client::AdminClient};

#[derive(clap::Subcommand)]
pub enum ChargesCommand {
    /// Add a one-off charge (or, with a negative amount, a credit) to an account's period. Sent
    /// again with the same id and content it is a duplicate; with other content it is refused.
    Add {
        #[arg(long)]
        account: String,
        /// Unique per account.
        #[arg(long)]
        id: String,
        /// Exact decimal, at most the currency's minor unit places; negative for a credit.
        #[arg(long, allow_hyphen_values = true)]
        amount: String,
        /// ISO 4217; a subscription of the account in force at --at must bill in it.
        #[arg(long)]
        currency: String,
        /// Shown on the statement; required for a credit.
        #[arg(long, default_value = "")]
        description: String,
        /// RFC 3339; now when absent.
        #[arg(long)]
        at: Option<String>,
    },
}

pub async fn run(command: &ChargesCommand, access: &Access) -> Result<Printed, Failure> {
    let ChargesCommand::Add {
        account,
        id,
        amount,
        currency,
        description,
        at,
    } = command;
    let request = proto::AddChargeRequest {
        account_id: account.clone(),
        charge_id: id.clone(),
        amount: amount.clone(),
        currency: currency.clone(),
        description: description.clone(),
        time: at.clone().unwrap_or_default(),
    };
    let r = AdminClient::new(access.authed().await.map_err(Failure::new)?)
        .add_charge(request)
        .await
        .map_err(rpc_failure)?
        .into_inner();
    let what = if r.duplicate { "already added" } else { "added" };
    let line = format!(
        "charge {id} {what}: {amount} {currency} on {account}, period {} of plan {}",
        r.period, r.plan
    );
    let object = json!({
        "account": account, "charge_id": id, "amount": amount, "currency": currency,
        "duplicate": r.duplicate, "plan": r.plan, "period": r.period,
    });
    Ok(Printed::line(line, object))
}
