//! `ratectl subscriptions set|get`: subscriptions of accounts to plans (Admin API).

use serde_json::json;

use crate::client::connect::Access;
use crate::client::output::{Failure, Printed, rpc_failure};
use crate::wire::proto::{self, admin_client::AdminClient};

#[derive(clap::Subcommand)]
pub enum SubscriptionsCommand {
    /// Add a subscription, or replace the account's subscription with the same --from.
    Set {
        #[arg(long)]
        account: String,
        #[arg(long)]
        plan: String,
        /// RFC 3339.
        #[arg(long)]
        from: String,
        /// RFC 3339; open-ended when absent.
        #[arg(long)]
        to: Option<String>,
        /// Percentage off every charge of this subscription.
        #[arg(long)]
        discount: Option<String>,
        /// Spend alert when the period charge first reaches this amount (repeatable).
        #[arg(long = "alert")]
        alerts: Vec<String>,
        /// Pay each record from the account's balance (docs/charging.md).
        #[arg(long)]
        prepaid: bool,
    },
    /// The subscriptions of an account.
    Get {
        #[arg(long)]
        account: String,
    },
}

fn subscription_json(s: &proto::Subscription) -> serde_json::Value {
    json!({ "account": s.account_id, "plan": s.plan_id, "from": s.from, "to": s.to, "discount_percent": s.discount_percent, "prepaid": s.prepaid })
}

fn subscription_line(s: &proto::Subscription) -> String {
    let to = if s.to.is_empty() { "open-ended" } else { &s.to };
    let discount = if s.discount_percent.is_empty() {
        String::new()
    } else {
        format!(", {}% off", s.discount_percent)
    };
    format!("{} -> {} from {} to {to}{discount}", s.account_id, s.plan_id, s.from)
}

pub async fn run(command: &SubscriptionsCommand, access: &Access) -> Result<Printed, Failure> {
    match command {
        SubscriptionsCommand::Set {
            account,
            plan,
            from,
            to,
            discount,
            alerts,
            prepaid,
        } => {
            let request = proto::Subscription {
                account_id: account.clone(),
                plan_id: plan.clone(),
                from: from.clone(),
                to: to.clone().unwrap_or_default(),
                discount_percent: discount.clone().unwrap_or_default(),
                alert_thresholds: alerts.clone(),
                prepaid: *prepaid,
            };
            let s = AdminClient::new(access.authed().await.map_err(Failure::new)?)
                .upsert_subscription(request)
                .await
                .map_err(rpc_failure)?
                .into_inner();
            Ok(Printed::line(subscription_line(&s), subscription_json(&s)))
        }
        SubscriptionsCommand::Get { account } => {
            let request = proto::GetSubscriptionsRequest {
                account_id: account.clone(),
            };
            let list = AdminClient::new(access.authed().await.map_err(Failure::new)?)
                .get_subscriptions(request)
                .await
                .map_err(rpc_failure)?
                .into_inner();
            let items: Vec<_> = list.subscriptions.iter().map(subscription_json).collect();
            let lines = list.subscriptions.iter().map(subscription_line).collect();
            Ok(Printed::new(lines, json!({ "subscriptions": items })))
        }
    }
}
