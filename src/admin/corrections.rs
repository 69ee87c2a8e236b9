//! `Admin.Rerate`, `Admin.VoidEvent` and `Admin.AmendEvent`: the request checked, its id claimed
//! (an id names one correction for good), the accounts selected, then `Pipeline::correct`
//! (docs/corrections.md).

use crate::domain::correction::Change;
use crate::domain::usage::{QUANTITY_RULE, quantity_of};
use crate::edge::ApiError;
use crate::limits::{DEFAULT_MAX_ATTRIBUTE_BYTES, MAX_ACCOUNT_BYTES, MAX_ID_BYTES, MAX_REASON_BYTES};
use crate::pipeline::corrections::{CorrectionRequest, Report};
use crate::store::Claim;
use crate::wire::proto;

use super::AdminCore;

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::BadCorrection(message.into())
}

fn required(name: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.trim().is_empty() || value.len() > max {
        return Err(bad(format!("{name} is required (1..={max} bytes)")));
    }
    Ok(())
}

impl AdminCore {
    /// `Admin.Rerate`.
    pub async fn rerate(&self, req: proto::RerateRequest, caller: &str) -> Result<proto::CorrectionResponse, ApiError> {
        required("id", &req.id, MAX_ID_BYTES)?;
        required("reason", &req.reason, MAX_REASON_BYTES)?;
        required("period", &req.period, MAX_ID_BYTES)?;
        let selectors = [!req.account.is_empty(), !req.account_prefix.is_empty(), req.all];
        if selectors.iter().filter(|s| **s).count() != 1 {
            return Err(bad("give exactly one of account, account_prefix and all"));
        }
        {
            let context = self.pipeline.context().load();
            if !req.plan.is_empty() && context.catalogue.plan(&req.plan).is_none() {
                return Err(ApiError::UnknownPlan {
                    index: None,
                    plan: req.plan.clone(),
                });
            }
            if !req.meter.is_empty() && !context.catalogue.knows_meter(&req.meter) {
                return Err(bad(format!("no tariff defines meter {:?}", req.meter)));
            }
        }
        let committed = self.pipeline.committed();
        if let Some(retired) = committed.retired(&req.period) {
            return Err(ApiError::NothingToCorrect(format!(
                "the records of period {} were removed by retention on {}: they cannot be rated again",
                req.period,
                retired.removed_at.to_rfc3339()
            )));
        }
        let period = req.period.clone();
        let selected = committed.of_period(&period)?;
        let mut accounts: Vec<String> = selected
            .into_iter()
            .map(|(account, _)| account.to_string())
            .filter(|a| {
                if !req.account.is_empty() {
                    *a == req.account
                } else {
                    a.starts_with(&req.account_prefix)
                }
            })
            .collect();
        accounts.sort();
        if accounts.is_empty() {
            return Err(ApiError::NothingToCorrect(format!(
                "no account matching the selector has records in period {period:?}"
            )));
        }
        let described = format!(
            "rerate period={} account={} account_prefix={} all={} meter={} plan={} reason={}",
            req.period, req.account, req.account_prefix, req.all, req.meter, req.plan, req.reason
        );
        if !req.dry_run {
            self.claim(&req.id, &described)?;
        }
        let request = CorrectionRequest {
            change: Change::Rerate {
                meter: (!req.meter.is_empty()).then(|| req.meter.clone()),
            },
            id: req.id.clone(),
            reason: req.reason.clone(),
            requested_by: caller.to_string(),
            period: Some(period),
            plan: (!req.plan.is_empty()).then(|| req.plan.clone()),
            dry_run: req.dry_run,
        };
        let report = self.pipeline.correct(request, accounts).await?;
        if !req.dry_run {
            self.note_adjustments(&report)?;
        }
        self.log(&req.id, "rerate", &report, req.dry_run);
        Ok(correction_to_proto(&req.id, req.dry_run, &report))
    }

    /// `Admin.VoidEvent`.
    pub async fn void_event(
        &self,
        req: proto::VoidEventRequest,
        caller: &str,
    ) -> Result<proto::CorrectionResponse, ApiError> {
        required("account_id", &req.account_id, MAX_ACCOUNT_BYTES)?;
        required("event_id", &req.event_id, MAX_ID_BYTES)?;
        required("reason", &req.reason, MAX_REASON_BYTES)?;
        let id = if req.id.is_empty() {
            format!("void:{}:{}", req.account_id, req.event_id)
        } else {
            req.id.clone()
        };
        let described = format!(
            "void account={} event_id={} reason={}",
            req.account_id, req.event_id, req.reason
        );
        let change = Change::Void {
            event_id: req.event_id.clone(),
        };
        self.one_event(id, described, change, req.account_id, req.reason, caller)
            .await
    }

    /// `Admin.AmendEvent`.
    pub async fn amend_event(
        &self,
        req: proto::AmendEventRequest,
        caller: &str,
    ) -> Result<proto::CorrectionResponse, ApiError> {
        required("account_id", &req.account_id, MAX_ACCOUNT_BYTES)?;
        required("event_id", &req.event_id, MAX_ID_BYTES)?;
        required("reason", &req.reason, MAX_REASON_BYTES)?;
        let quantity = match req.quantity {
            None => None,
            Some(q) => Some(quantity_of(q.units, q.nanos).ok_or_else(|| bad(QUANTITY_RULE))?),
        };
        let mut attributes = Vec::with_capacity(req.attributes.len());
        for a in &req.attributes {
            if a.key.is_empty()
                || a.key.len() > DEFAULT_MAX_ATTRIBUTE_BYTES
                || a.value.len() > DEFAULT_MAX_ATTRIBUTE_BYTES
            {
                return Err(bad(format!(
                    "attribute keys must be 1..={0} bytes and values at most {0}",
                    DEFAULT_MAX_ATTRIBUTE_BYTES
                )));
            }
            if attributes.iter().any(|(k, _): &(String, String)| *k == a.key) {
                return Err(bad(format!("attribute {:?} given twice", a.key)));
            }
            attributes.push((a.key.clone(), a.value.clone()));
        }
        if quantity.is_none() && attributes.is_empty() {
            return Err(bad("give a new quantity, attributes, or both"));
        }
        // `<quantity>` and/or `:<key>=<value>,...`: what the amendment sets.
        let mut amendment = quantity.map(|q| q.to_string()).unwrap_or_default();
        if !attributes.is_empty() {
            let set: Vec<String> = attributes.iter().map(|(k, v)| format!("{k}={v}")).collect();
            amendment.push(':');
            amendment.push_str(&set.join(","));
        }
        let id = if req.id.is_empty() {
            format!("amend:{}:{}:{amendment}", req.account_id, req.event_id)
        } else {
            req.id.clone()
        };
        let described = format!(
            "amend account={} event_id={} amendment={amendment} reason={}",
            req.account_id, req.event_id, req.reason
        );
        let change = Change::Amend {
            event_id: req.event_id.clone(),
            quantity,
            attributes: (!attributes.is_empty()).then_some(attributes),
        };
        self.one_event(id, described, change, req.account_id, req.reason, caller)
            .await
    }

    /// A void or amend of one account's event: refused whole when its correction is.
    async fn one_event(
        &self,
        id: String,
        described: String,
        change: Change,
        account: String,
        reason: String,
        caller: &str,
    ) -> Result<proto::CorrectionResponse, ApiError> {
        let action = change.action().as_str();
        let new = self.claim(&id, &described)?;
        let request = CorrectionRequest {
            change,
            id: id.clone(),
            reason,
            requested_by: caller.to_string(),
            period: None,
            plan: None,
            dry_run: false,
        };
        let mut report = self.pipeline.correct(request, vec![account]).await?;
        if let Some((_, error)) = report.refused.pop() {
            // Nothing was written: the id is free again for a corrected request.
            if new {
                self.corrections.release(&id, &described)?;
            }
            return Err(error.into());
        }
        self.note_adjustments(&report)?;
        self.log(&id, action, &report, false);
        Ok(correction_to_proto(&id, false, &report))
    }

    /// Claims `id` for the request `described`: the same id with another request is refused.
    /// True when the id was free.
    fn claim(&self, id: &str, described: &str) -> Result<bool, ApiError> {
        match self.corrections.claim(id, described)? {
            Claim::New => Ok(true),
            Claim::Same => Ok(false),
            Claim::Taken(earlier) => Err(ApiError::CorrectionIdTaken {
                id: id.to_string(),
                earlier,
            }),
        }
    }

    /// Stores the announcement of every correction of a closed period (durable before the
    /// answer; a resend of the correction stores what a crash lost), for `<prefix>:adjustments`.
    fn note_adjustments(&self, report: &Report) -> Result<(), ApiError> {
        let mut added = false;
        for o in &report.outcomes {
            let (Some(booked), Some(c)) = (&o.booked, o.records.first().and_then(|r| r.correction.as_ref())) else {
                continue;
            };
            let id = format!("{}|{}|{}|{}", c.id, o.account, o.period, o.plan);
            let entry = serde_json::json!({
                "adjustment_id": id, "correction_id": c.id, "action": c.action.as_str(),
                "account": o.account, "corrected_plan": o.plan, "corrected_period": o.period,
                "booked_plan": booked.plan, "booked_period": booked.period, "currency": o.currency.to_string(),
                "amount": o.difference.to_string(), "records": o.records.len(), "reason": c.reason,
                "requested_by": c.requested_by, "at": c.at().to_rfc3339(),
            });
            added |= self.adjustments.add(&id, &entry.to_string())?;
        }
        if added {
            self.pipeline
                .committed()
                .adjustments_pending
                .store(true, std::sync::atomic::Ordering::Release);
        }
        Ok(())
    }

    /// Logs a correction and counts the records it wrote.
    fn log(&self, id: &str, action: &'static str, report: &Report, dry_run: bool) {
        let records: usize = report.outcomes.iter().map(|o| o.records.len()).sum();
        if !dry_run {
            let written: usize = report
                .outcomes
                .iter()
                .filter(|o| !o.already_applied)
                .map(|o| o.records.len())
                .sum();
            metrics::counter!(crate::telemetry::CORRECTION_RECORDS, "action" => action).increment(written as u64);
        }
        tracing::info!(
            id,
            action,
            dry_run,
            accounts = report.outcomes.len(),
            records,
            refused = report.refused.len(),
            "correction"
        );
    }
}

/// A correction's answer: every outcome with its records, the refusals, and the difference per
/// currency (never summed across currencies).
fn correction_to_proto(id: &str, dry_run: bool, report: &Report) -> proto::CorrectionResponse {
    let mut differences: Vec<(crate::domain::money::Currency, rust_decimal::Decimal)> = Vec::new();
    for o in &report.outcomes {
        match differences.iter_mut().find(|(c, _)| *c == o.currency) {
            Some((_, d)) => *d += o.difference,
            None => differences.push((o.currency, o.difference)),
        }
    }
    differences.sort_by_key(|(c, _)| c.to_string());
    proto::CorrectionResponse {
        id: id.to_string(),
        dry_run,
        records_changed: report
            .outcomes
            .iter()
            .flat_map(|o| &o.records)
            .filter(|r| r.is_reversal())
            .count() as u32,
        differences: differences
            .into_iter()
            .map(|(currency, d)| proto::CurrencyDifference {
                currency: currency.to_string(),
                difference: d.to_string(),
            })
            .collect(),
        outcomes: report
            .outcomes
            .iter()
            .map(|o| proto::CorrectionOutcome {
                account_id: o.account.clone(),
                plan: o.plan.clone(),
                period: o.period.clone(),
                currency: o.currency.to_string(),
                difference: o.difference.to_string(),
                booked_plan: o.booked.as_ref().map(|b| b.plan.clone()).unwrap_or_default(),
                booked_period: o.booked.as_ref().map(|b| b.period.clone()).unwrap_or_default(),
                already_applied: o.already_applied,
                records: o.records.iter().map(crate::wire::convert::record_to_proto).collect(),
            })
            .collect(),
        refused: report
            .refused
            .iter()
            .map(|(account, why)| proto::CorrectionRefusal {
                account_id: account.clone(),
                reason: why.to_string(),
            })
            .collect(),
    }
}
