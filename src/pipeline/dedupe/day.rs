//! The hot ids of one event day: 64 maps by key bits 32..38, each slot the fingerprint's low 64
//! bits -> its packed value, and an overflow for ids whose low 64 bits collide.

use std::collections::HashMap;

use super::{Build, TABLES, same_id, table};

/// The hot ids of one event day.
pub struct DayTable {
    pub(super) day: u16,
    pub(super) main: Vec<HashMap<u64, u64, Build>>,
    pub(super) overflow: HashMap<u128, u64, Build>,
}

impl DayTable {
    pub(super) fn new(day: u16) -> DayTable {
        DayTable {
            day,
            main: (0..TABLES).map(|_| HashMap::default()).collect(),
            overflow: HashMap::default(),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.main.iter().map(HashMap::len).sum::<usize>() + self.overflow.len()
    }

    pub(super) fn get(&self, fingerprint: u128) -> Option<u64> {
        let key = fingerprint as u64;
        match self.main[table(key)].get(&key) {
            Some(&v) if same_id(v, fingerprint) => Some(v),
            // The overflow outlives its main slot when that one is replaced.
            _ if self.overflow.is_empty() => None,
            _ => self.overflow.get(&fingerprint).copied(),
        }
    }

    pub(super) fn insert(&mut self, fingerprint: u128, v: u64) {
        let key = fingerprint as u64;
        match self.main[table(key)].get_mut(&key) {
            Some(stored) if !same_id(*stored, fingerprint) => {
                self.overflow.insert(fingerprint, v);
            }
            Some(stored) => *stored = v,
            None => {
                self.main[table(key)].insert(key, v);
            }
        }
    }

    pub(super) fn heap_bytes(&self) -> usize {
        self.main.iter().map(HashMap::capacity).sum::<usize>() * 17 + self.overflow.capacity() * 33
    }

    /// Every slot as (low 64 bits of the fingerprint, value), for a cold run.
    pub(super) fn entries(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let main = self.main.iter().flat_map(|t| t.iter().map(|(k, v)| (*k, *v)));
        main.chain(self.overflow.iter().map(|(k, v)| (*k as u64, *v)))
    }
}
