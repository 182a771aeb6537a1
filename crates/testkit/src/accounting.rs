//! Request accounting: how many requests each (verb, resource) pair received, with watch and
//! follow-log stream opens counted, so tests and the benchmark can assert on API load.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

use crate::faults::Verb;

/// A snapshot of request counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct RequestCounts(BTreeMap<String, u64>);

impl RequestCounts {
    /// Requests with `verb` on `resource` (`jobs`, `pods/log`, `selfsubjectaccessreviews`).
    pub fn get(&self, verb: Verb, resource: &str) -> u64 {
        self.0
            .get(&format!("{} {resource}", verb.as_str()))
            .copied()
            .unwrap_or(0)
    }

    /// Every counted request.
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// `"verb resource"` → count.
    pub fn entries(&self) -> &BTreeMap<String, u64> {
        &self.0
    }
}

/// The live counters.
#[derive(Debug, Default)]
pub(crate) struct Accounting {
    counts: Mutex<BTreeMap<String, u64>>,
}

impl Accounting {
    pub(crate) fn count(&self, verb: Verb, resource: &str) {
        *self
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(format!("{} {resource}", verb.as_str()))
            .or_default() += 1;
    }

    pub(crate) fn snapshot(&self) -> RequestCounts {
        RequestCounts(
            self.counts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }

    pub(crate) fn reset(&self) {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_verb_and_resource_until_reset() {
        let acc = Accounting::default();
        acc.count(Verb::Watch, "pods");
        acc.count(Verb::Watch, "pods");
        acc.count(Verb::Follow, "pods/log");
        let snap = acc.snapshot();
        assert_eq!(snap.get(Verb::Watch, "pods"), 2);
        assert_eq!(snap.get(Verb::Follow, "pods/log"), 1);
        assert_eq!(snap.total(), 3);
        acc.reset();
        assert_eq!(acc.snapshot().total(), 0);
    }
}
