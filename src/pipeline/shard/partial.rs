//! The shard's partial sessions (docs/mediation.md, "Partial records"): each part of one of its
//! accounts' sessions is held (its `p/` entry in the output, so it is durable when acknowledged),
//! and the session is merged and rated as one event once complete, or at its timeout from the
//! parts it has (marked incomplete). A part of a session already merged, a part that contradicts
//! one held, and a part beyond the session's bounds go to suspense.

use std::sync::Arc;

use ahash::AHashMap;

use super::ShardState;
use super::rate::{Touched, duplicate, reject, suspense_of};
use crate::domain::partial::{Added, OpenSession, Part, PartTag, PartialLimits};
use crate::domain::usage::RejectReason;
use crate::pipeline::dedupe::Seen;
use crate::pipeline::{RatingContext, ShardOutput, ValidEvent};
use crate::store::Write;

/// What the door adds to a part: its tag, and the fingerprint of its session's merged event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartIn {
    pub tag: PartTag,
    pub merged_fingerprint: u128,
}

/// One open session and the fingerprint its merged event will claim.
struct Held {
    session: OpenSession,
    merged_fingerprint: u128,
}

/// The open sessions of the shard's accounts, by (account, session), and what happened to
/// sessions since the shard loop last counted (metrics are counted per job, not per part).
#[derive(Default)]
pub struct Partials {
    sessions: AHashMap<(Arc<str>, String), Held>,
    pub(super) limits: PartialLimits,
    merged: u64,
    timed_out: u64,
}

impl Partials {
    /// Sessions open now, and the sessions merged complete and timed out since the last call.
    pub(super) fn take_counts(&mut self) -> (usize, u64, u64) {
        (
            self.sessions.len(),
            std::mem::take(&mut self.merged),
            std::mem::take(&mut self.timed_out),
        )
    }
}

impl ShardState {
    /// Installs a session read at start, with the fingerprints of its parts' ids (claimed in the
    /// window again: a resend of a held part is a DUPLICATE).
    pub fn load_partial(&mut self, session: OpenSession, merged_fingerprint: u128, part_fingerprints: &[u128]) {
        for (part, fingerprint) in session.parts.values().zip(part_fingerprints) {
            self.dedupe
                .insert(*fingerprint, super::day_of(part.timestamp_unix_nanos), part.content);
        }
        let key = (Arc::from(session.account.as_str()), session.session.clone());
        self.partials.sessions.insert(
            key,
            Held {
                session,
                merged_fingerprint,
            },
        );
    }

    /// Takes one part: held, a duplicate, or refused into suspense; merged and rated when it
    /// completes its session.
    pub(super) fn take_part(
        &mut self,
        ctx: &RatingContext,
        mut e: ValidEvent,
        out: &mut ShardOutput,
        touched: &mut Touched,
    ) {
        let Some(part_in) = e.part.take() else {
            return;
        };
        let PartIn {
            tag,
            merged_fingerprint,
        } = *part_in;
        let now = self.received_at;
        let refuse = |out: &mut ShardOutput, reason, detail: String| {
            reject(out, e.index, suspense_of(&e, reason, detail, now));
        };
        // The part's own id first: a resend of a part already taken (before or after its
        // session merged) is a DUPLICATE while its id is in the window.
        match self.dedupe.check(e.fingerprint, e.content) {
            Ok(Seen::New) => {}
            Ok(Seen::Duplicate) => return duplicate(out, e.index),
            Ok(Seen::Conflict) => {
                let detail = format!(
                    "event_id {:?} was received before with other content (part {} of session {:?})",
                    e.event.event_id, tag.seq, tag.session
                );
                return refuse(out, RejectReason::Conflict, detail);
            }
            Err(damage) => {
                self.cold_damage = Some(damage);
                return;
            }
        }
        match self.dedupe.check(merged_fingerprint, 0) {
            Ok(Seen::New) => {}
            Ok(_) => {
                let detail = format!(
                    "session {:?} was merged and rated already (event {:?}): part {} came after the merge",
                    tag.session,
                    tag.merged_id(),
                    tag.seq
                );
                return refuse(out, RejectReason::Conflict, detail);
            }
            Err(damage) => {
                self.cold_damage = Some(damage);
                return;
            }
        }
        let account = e.event.account_id.as_str();
        let part = Part::of(&e.event, &tag, e.content, now.timestamp_nanos_opt().unwrap_or(0));
        let key = (Arc::from(account), tag.session.clone());
        let held = self.partials.sessions.entry(key.clone()).or_insert_with(|| Held {
            session: OpenSession::new(account, &tag.session),
            merged_fingerprint,
        });
        match held.session.add(part.clone(), &self.partials.limits) {
            Added::Held => {
                out.writes.push(Write::PartHeld {
                    account: key.0.clone(),
                    session: tag.session.clone(),
                    part: part.clone(),
                });
                out.held += 1;
                self.dedupe
                    .insert(e.fingerprint, super::day_of(part.timestamp_unix_nanos), e.content);
            }
            Added::Duplicate => duplicate(out, e.index),
            Added::Conflict(detail) => refuse(out, RejectReason::Conflict, detail),
            Added::OverLimit(detail) => refuse(out, RejectReason::InvalidField, detail),
        }
        let (empty, complete) = (held.session.parts.is_empty(), held.session.complete());
        if empty {
            self.partials.sessions.remove(&key);
        } else if complete {
            self.merge(ctx, &key, e.index, out, touched);
            self.partials.merged += 1;
        }
    }

    /// Merges the sessions whose latest part is older than the timeout, from the parts they have
    /// (the balance sweep calls it every second).
    pub(super) fn time_out_partials(&mut self, ctx: &RatingContext, out: &mut ShardOutput, touched: &mut Touched) {
        let timeout = i64::from(self.partials.limits.timeout_seconds) * 1_000_000_000;
        let now = self.job_now.timestamp_nanos_opt().unwrap_or(0);
        let due: Vec<(Arc<str>, String)> = self
            .partials
            .sessions
            .iter()
            .filter(|(_, h)| now.saturating_sub(h.session.last_received_nanos()) >= timeout)
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            self.merge(ctx, &key, 0, out, touched);
            self.partials.timed_out += 1;
        }
    }

    /// Rates a session as its merged event and removes its parts, in the same output. The
    /// merged event's outcome is not a received event's: a refusal goes to suspense with the
    /// merged event, and no answer of the batch that completed it changes.
    fn merge(
        &mut self,
        ctx: &RatingContext,
        key: &(Arc<str>, String),
        index: u32,
        out: &mut ShardOutput,
        touched: &mut Touched,
    ) {
        let Some(held) = self.partials.sessions.remove(key) else {
            return;
        };
        let Some(event) = held.session.merged() else {
            return;
        };
        for seq in held.session.parts.keys() {
            out.writes.push(Write::PartMerged {
                account: key.0.clone(),
                session: key.1.clone(),
                seq: *seq,
            });
        }
        let merged = ValidEvent {
            index,
            fingerprint: held.merged_fingerprint,
            content: held.session.merged_content(),
            event,
            as_sent: None,
            part: None,
        };
        let (results, duplicate, records) = (out.results.len(), out.duplicate, out.record_count);
        self.rate_one(ctx, merged, out, touched);
        out.results.truncate(results);
        out.duplicate = duplicate;
        out.merged += out.record_count - records;
    }
}
