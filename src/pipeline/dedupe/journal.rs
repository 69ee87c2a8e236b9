//! The claims a shard made since its last checkpoint cut, in claim order: sealed at the next cut
//! into an id segment (a file of its own, written once), so a checkpoint writes only the ids
//! claimed since the one before instead of copying the whole window.
//!
//! A segment stays part of every later checkpoint until each id in it is durable in a named cold
//! run (or too old for the window): a spill that froze its tables after the segment was sealed,
//! with a cutoff above the segment's newest day, retires it ([`Retire`]).

use crate::limits::JOURNAL_RESERVE_CLAIMS;
pub use crate::store::segments::{CLAIM_BYTES, Claim};

/// The claims since the last cut, sealed at the next one.
#[derive(Default)]
pub struct Journal {
    claims: Vec<Claim>,
    newest_day: u16,
    /// The number the next sealed segment gets (segment numbers only grow, per shard).
    next_number: u64,
}

impl Journal {
    pub fn push(&mut self, fingerprint: u128, value: u64) {
        let claim = Claim::new(fingerprint, value);
        self.newest_day = self.newest_day.max(claim.day());
        self.claims.push(claim);
    }

    pub fn len(&self) -> usize {
        self.claims.len()
    }

    /// Segments numbered below this are sealed.
    pub fn next_number(&self) -> u64 {
        self.next_number
    }

    /// Numbers the next segment from `next` on (recovery: above every segment file on disk).
    pub fn number_from(&mut self, next: u64) {
        self.next_number = self.next_number.max(next);
    }

    /// Takes the claims since the last cut as a numbered segment; the journal starts empty.
    pub fn seal(&mut self) -> IdSegment {
        let number = self.next_number;
        self.next_number += 1;
        // The next cut comes after about as many claims: sized once, so the journal does not
        // double (and copy) tens of megabytes in the middle of a job. Capped: the first cut after
        // a start also holds every claim the replay made.
        let expected = (self.claims.len() + self.claims.len() / 4).min(JOURNAL_RESERVE_CLAIMS);
        IdSegment {
            number,
            newest_day: std::mem::take(&mut self.newest_day),
            claims: std::mem::replace(&mut self.claims, Vec::with_capacity(expected)),
        }
    }
}

/// The claims of one cut, on their way to a segment file.
pub struct IdSegment {
    pub number: u64,
    /// The newest event day among the claims (0 when there are none).
    pub newest_day: u16,
    pub claims: Vec<Claim>,
}

/// What a named spill run makes redundant: every segment sealed before the spill froze its
/// tables (numbered below `sealed_before`) whose ids are all of days before `days_before`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retire {
    pub sealed_before: u64,
    pub days_before: u16,
}

impl Retire {
    /// True when a segment with this number and newest day is redundant.
    pub fn covers(&self, number: u64, newest_day: u16) -> bool {
        number < self.sealed_before && newest_day < self.days_before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealing_numbers_the_segments_and_empties_the_journal() {
        let mut j = Journal::default();
        j.number_from(5);
        j.push(1, 10u64 << 48);
        j.push(2, 12u64 << 48);
        let s = j.seal();
        assert_eq!((s.number, s.newest_day, s.claims.len()), (5, 12, 2));
        assert_eq!(j.len(), 0);
        let s = j.seal();
        assert_eq!((s.number, s.newest_day, s.claims.len()), (6, 0, 0));
        let retire = Retire {
            sealed_before: 6,
            days_before: 13,
        };
        assert!(retire.covers(5, 12));
        assert!(!retire.covers(6, 0), "sealed after the freeze");
        assert!(!retire.covers(5, 13), "holds a day the run does not");
    }
}
