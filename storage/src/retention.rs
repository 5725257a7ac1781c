//! Retention rules: per repository, keep the newest N tags matching a pattern, and drop
//! manifests no tag keeps once they are older than a duration. GC applies them in its
//! metadata step, under the journal lock.
//!
//! A rule counts and drops only the tags its `tags` matcher accepts, so a tag the caller
//! must never lose (the server keeps imgpkg's own `sha256-<hex>.imgpkg` tags out of every
//! matcher) is left out there. What a rule never removes besides: every manifest of an
//! import some tag of which still points where the import set it (so a kept bundle keeps
//! everything its import brought with it).

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::meta::Repo;
use crate::Tag;

/// A string predicate (a glob or pattern the caller compiled).
pub type Matcher = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// One retention rule. The patterns are closures so that the storage crate does not fix a
/// glob syntax; the server builds them from its configuration.
#[derive(Clone)]
pub struct Retention {
    /// Shown in logs and `Debug`.
    pub name: String,
    /// Which repositories the rule applies to.
    pub repos: Matcher,
    /// Which tags `keep_newest` counts (and may drop); a tag it rejects is never dropped.
    pub tags: Matcher,
    /// Keep this many of the matching tags, newest (by when they were last set) first.
    pub keep_newest: Option<usize>,
    /// Drop manifests no tag keeps once their bytes were last written this long ago.
    pub untagged_older_than: Option<Duration>,
}

impl fmt::Debug for Retention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retention")
            .field("name", &self.name)
            .field("keep_newest", &self.keep_newest)
            .field("untagged_older_than", &self.untagged_older_than)
            .finish()
    }
}

/// The tags of `repo` that some rule's `keep_newest` leaves out. Each rule decides on its
/// own; a tag any rule drops goes. Tags with no recorded time (older journals) count as
/// oldest; ties go by name, so the result does not depend on map order.
pub(crate) fn tags_to_drop<'a>(repo: &'a Repo, rules: &[&Retention]) -> HashSet<&'a Tag> {
    let mut drop = HashSet::new();
    for rule in rules {
        let Some(n) = rule.keep_newest else {
            continue;
        };
        let mut candidates: Vec<(&Tag, u64)> = repo
            .tags
            .iter()
            .filter(|(t, _)| (rule.tags)(t.as_str()))
            .map(|(t, e)| (t, e.at))
            .collect();
        candidates.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(a.0)));
        drop.extend(candidates.into_iter().skip(n).map(|(t, _)| t));
    }
    drop
}
