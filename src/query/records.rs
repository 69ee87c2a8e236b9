//! `ListRatedRecords` and `ExplainRecord`: records read back from the blocks (by account, or
//! over everything for an id without an account), a usage record's rating rebuilt from its
//! stored inputs (`rating::rerate`), an own record explained by the billing cycle, and the chain
//! of a corrected event.

use tonic::Request;

use super::{QueryService, blocking, scoped};
use crate::billing::explain::own_record;
use crate::domain::record::RatedRecord;
use crate::edge::ApiError;
use crate::rating::{Report, rerate};
use crate::wire::InputError;
use crate::wire::convert::{optional_instant, record_to_proto};
use crate::wire::paging::{self, page_size};
use crate::wire::proto;

/// The chain of a corrected event, for people: each record, and what asked for each correction.
fn chain_text(chain: &[RatedRecord]) -> String {
    use std::fmt::Write;
    let Some(first) = chain.first() else {
        return String::new();
    };
    let mut text = format!(
        "event {:?} of account {:?}: {} records\n",
        first.event_id,
        first.account_id,
        chain.len()
    );
    for (n, r) in chain.iter().enumerate() {
        let what = match &r.correction {
            None => "original".to_string(),
            Some(c) => {
                let by = if c.requested_by.is_empty() {
                    String::new()
                } else {
                    format!(" by {}", c.requested_by)
                };
                let booked = c
                    .booked
                    .as_ref()
                    .map(|b| {
                        format!(
                            ", booked into {} of plan {:?} (period {} was closed)",
                            b.period, b.plan, r.period
                        )
                    })
                    .unwrap_or_default();
                format!(
                    "{} ({} {:?}, {}{by}: {:?}{booked})",
                    c.role.as_str(),
                    c.action.as_str(),
                    c.id,
                    c.at().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    c.reason
                )
            }
        };
        let _ = writeln!(
            text,
            "  {}. {what}: plan {:?} version {}, quantity {}, charge {}",
            n + 1,
            r.plan,
            r.version,
            r.quantity.normalize(),
            r.charge
        );
    }
    text
}

/// The line of an explanation that says what normalization rules made of the event as sent.
fn as_sent_text(sent: &crate::domain::record::AsSent) -> String {
    let attributes: Vec<String> = sent.attributes.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!(
        "normalized by rules {}; as sent: account {:?}, meter {:?}, quantity {}, attributes {{{}}}",
        sent.rules.join(", "),
        sent.account_id,
        sent.meter,
        sent.quantity.normalize(),
        attributes.join(", ")
    )
}

impl QueryService {
    pub(super) async fn list_rated_records(
        &self,
        request: Request<proto::ListRatedRecordsRequest>,
    ) -> Result<proto::ListRatedRecordsResponse, ApiError> {
        scoped(&request, &request.get_ref().account_id)?;
        self.pipeline.committed().check_damage(&request.get_ref().account_id)?;
        let req = request.into_inner();
        if req.account_id.is_empty() {
            return Err(InputError::Required("account_id").into());
        }
        let from = optional_instant("from", &req.from)?.unwrap_or(i64::MIN);
        let to = optional_instant("to", &req.to)?.unwrap_or(i64::MAX);
        // Retention may have removed records before this instant: a range wholly before it is
        // NOT_FOUND naming the retention; one that begins before it says so in the answer.
        let removed = self.pipeline.committed().removed_before();
        let removed_before = removed.map(|(before, at)| (before.timestamp_nanos_opt().unwrap_or(i64::MAX), before, at));
        if let Some((before, end, at)) = removed_before
            && to <= before
        {
            return Err(ApiError::Retired {
                what: format!(
                    "records of {:?} before {} may have been removed by retention",
                    req.account_id,
                    end.to_rfc3339()
                ),
                days: self.pipeline.config().retention_days,
                removed_at: at.to_rfc3339(),
            });
        }
        let size = page_size(req.page_size);
        // The token is the position (block, index) of the last record returned.
        let after = if req.page_token.is_empty() {
            None
        } else {
            Some(paging::parse_record_token(&req.page_token)?)
        };
        let records = self.records.clone();
        let account = req.account_id.clone();
        let start = after.map_or(0, |(seq, _)| seq);
        let found = blocking(move || {
            let mut found = Vec::new();
            records
                .account_records(&account, start, |seq, index, record| {
                    if after.is_some_and(|a| (seq, index) <= a) {
                        return true;
                    }
                    if record.timestamp_unix_nanos < from || record.timestamp_unix_nanos >= to {
                        return true;
                    }
                    found.push((seq, index, record));
                    // One more than a page: whether there is a next one.
                    found.len() <= size
                })
                .map(|()| found)
        })
        .await?;
        let more = found.len() > size;
        let page = &found[..found.len().min(size)];
        let next_page_token = match (more, page.last()) {
            (true, Some((seq, index, _))) => paging::record_token((*seq, *index)),
            _ => String::new(),
        };
        Ok(proto::ListRatedRecordsResponse {
            records: page.iter().map(|(_, _, r)| record_to_proto(r)).collect(),
            next_page_token,
            removed_before: match removed_before {
                Some((before, end, _)) if from < before => end.to_rfc3339(),
                _ => String::new(),
            },
        })
    }

    pub(super) async fn explain_record(
        &self,
        request: Request<proto::ExplainRecordRequest>,
    ) -> Result<proto::ExplainRecordResponse, ApiError> {
        // A scoped token names the account: a search over every account is not within its scope.
        scoped(&request, &request.get_ref().account_id)?;
        let req = request.into_inner();
        if req.event_id.is_empty() {
            return Err(InputError::Required("event_id").into());
        }
        let records = self.records.clone();
        let (account, event_id) = (req.account_id.clone(), req.event_id.clone());
        let found = blocking(move || {
            let mut found: Vec<RatedRecord> = Vec::new();
            let mut visit = |_, _, record: RatedRecord| {
                if record.event_id == event_id {
                    found.push(record);
                }
                // With an account, every record of the event (its chain of corrections); without,
                // stop once a second account uses the id.
                !account.is_empty() || !found.iter().any(|r| r.account_id != found[0].account_id)
            };
            let scanned = if account.is_empty() {
                records.all_records(&mut visit)
            } else {
                records.account_records(&account, 0, &mut visit)
            };
            scanned.map(|()| found)
        })
        .await?;
        if let Some(second) = found.iter().find(|r| r.account_id != found[0].account_id) {
            return Err(ApiError::AmbiguousEventId {
                event_id: req.event_id,
                first: found[0].account_id.clone(),
                second: second.account_id.clone(),
            });
        }
        // The record in force is the chain's last: a correction writes its reversal before its
        // replacement, so the last is the replacement, the original, or (voided) the reversal.
        let chain = found;
        let record = chain.last().cloned().ok_or_else(|| {
            let missing = ApiError::NoRecord {
                event_id: req.event_id.clone(),
                account: req.account_id.clone(),
            };
            match self.pipeline.committed().removed_before() {
                Some((before, at)) => ApiError::Retired {
                    what: format!(
                        "{missing}; records of periods that ended before {} may have been removed by retention",
                        before.to_rfc3339()
                    ),
                    days: self.pipeline.config().retention_days,
                    removed_at: at.to_rfc3339(),
                },
                None => missing,
            }
        })?;
        self.pipeline.committed().check_damage(&record.account_id)?;
        let mut answer = if let Some(own) = own_record(&record) {
            proto::ExplainRecordResponse {
                record: Some(record_to_proto(&record)),
                explanation_json: own.json.to_string(),
                explanation_text: own.text,
                chain: Vec::new(),
            }
        } else {
            let context = self.pipeline.context().load();
            let plan = context
                .catalogue
                .plan(&record.plan)
                .ok_or_else(|| ApiError::PlanGone(record.plan.clone()))?;
            let rated = rerate(plan, &record)?;
            let report = Report::new(plan, &record.meter, &record.attributes, &rated.explanation);
            proto::ExplainRecordResponse {
                record: Some(record_to_proto(&record)),
                explanation_json: serde_json::to_string(&report).unwrap_or_default(),
                explanation_text: report.to_string(),
                chain: Vec::new(),
            }
        };
        if let Some(sent) = &record.as_sent {
            answer.explanation_text = format!("{}\n{}", as_sent_text(sent), answer.explanation_text);
        }
        if chain.len() > 1 {
            answer.explanation_text = format!("{}\n{}", chain_text(&chain), answer.explanation_text);
        }
        answer.chain = chain.iter().map(record_to_proto).collect();
        Ok(answer)
    }
}
