//! Disk usage per repository, kept current as metadata commits apply: no request walks the
//! repositories or asks the backend. A blob counts towards every repository that references
//! it (a link, a manifest's own bytes, a layer, a config or a child); it is `unique` to a
//! repository that alone references it and `shared` otherwise, so deleting a repository
//! frees about its unique bytes (after GC's grace window).
//!
//! A blob's size is known while the metadata says it is stored: while some repository links
//! it (each `link` op carries the size the backend reported at commit) or holds it as a
//! manifest (its record's size is its bytes' length). A digest that is only referenced (a
//! non-distributable layer, a sparse push's missing child) counts nothing. Sizes never
//! change (a blob's name is its content's digest), so every figure is a sum kept up to date
//! by [`Tally::note`], which `State::apply` calls before each op: the same op sequence, from a
//! commit or from the journal's replay, always gives the same tally, equal to a full
//! recomputation from the state (the test below checks that on random op sequences).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use smallvec::SmallVec;

use crate::meta::{Op, Repo};
use crate::{Digest, ManifestRecord, RepoName, Store, StoreError};

/// What the whole store and each repository use.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Distinct blob files some repository references (manifests included), and their bytes.
    pub blobs: u64,
    pub bytes: u64,
    /// Distinct manifests (one stored in two repositories counts once).
    pub manifests: u64,
    pub repositories: u64,
    /// Per repository, sorted by name; see [`Usage::page`] and [`Usage::top`].
    pub repos: Vec<RepoUsage>,
}

/// One repository's share of the store.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RepoUsage {
    pub name: String,
    /// All the blobs it references: `unique_bytes + shared_bytes`.
    pub bytes: u64,
    pub blobs: u64,
    /// Blobs no other repository references: what deleting this one would free.
    pub unique_bytes: u64,
    pub unique_blobs: u64,
    /// Blobs some other repository references too.
    pub shared_bytes: u64,
    pub shared_blobs: u64,
    pub manifests: u64,
    pub tags: u64,
}

impl Usage {
    /// Keep the repositories after `last` (by name), at most `n`; true if more follow.
    pub fn page(&mut self, last: Option<&str>, n: Option<usize>) -> bool {
        if let Some(last) = last {
            self.repos.retain(|r| r.name.as_str() > last);
        }
        let n = n.unwrap_or(usize::MAX);
        let more = self.repos.len() > n;
        self.repos.truncate(n);
        more
    }

    /// Keep the `n` repositories using the most bytes, largest first (ties by name).
    pub fn top(&mut self, n: usize) {
        self.repos
            .sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.name.cmp(&b.name)));
        self.repos.truncate(n);
    }
}

/// How [`Store::usage_page`] orders and pages repositories.
#[derive(Clone, Copy, Debug)]
pub enum UsageOrder<'a> {
    /// By name, after this one.
    Name { after: Option<&'a str> },
    /// Largest first (ties by name), from this position: sizes are not unique.
    Size { from: usize },
}

/// One page of [`Store::usage_page`]: the store's totals (`totals.repos` empty), how many
/// repositories match the filter, the page's rows, whether more follow.
#[derive(Clone, Debug, Default)]
pub struct UsagePage {
    pub totals: Usage,
    pub matching: usize,
    pub rows: Vec<RepoUsage>,
    pub more: bool,
}

/// One digest some repository references.
struct Entry {
    /// Known while `sources > 0` and one of them said it (see the module doc).
    size: Option<u64>,
    /// Links of it plus manifests that are it, over every repository.
    sources: u32,
    /// Repositories holding it as a manifest.
    manifests: u32,
    /// (repository id, references from that repository), sorted by id. Most digests have
    /// one holder; a base layer may have thousands.
    holders: SmallVec<[(u32, u32); 1]>,
}

/// One repository's sums.
#[derive(Clone, Copy, Default)]
struct Counts {
    unique_blobs: u64,
    unique_bytes: u64,
    shared_blobs: u64,
    shared_bytes: u64,
    /// Distinct digests it references (sized or not): its id is freed at zero.
    digests: u64,
}

impl Counts {
    fn add(&mut self, shared: bool, size: u64) {
        if shared {
            self.shared_blobs += 1;
            self.shared_bytes += size;
        } else {
            self.unique_blobs += 1;
            self.unique_bytes += size;
        }
    }

    fn sub(&mut self, shared: bool, size: u64) {
        if shared {
            self.shared_blobs -= 1;
            self.shared_bytes -= size;
        } else {
            self.unique_blobs -= 1;
            self.unique_bytes -= size;
        }
    }
}

/// The running usage sums, part of the metadata state (`State::usage`).
#[derive(Default)]
pub(crate) struct Tally {
    digests: HashMap<Digest, Entry>,
    /// Repositories by a small id: a holder entry is 8 bytes, not a name.
    ids: HashMap<RepoName, u32>,
    counts: Vec<Counts>,
    free: Vec<u32>,
    blobs: u64,
    bytes: u64,
    manifests: u64,
    /// Digests with a source but no size: linked by a journal written before links carried
    /// their size. [`Store::usage`] asks the backend for those once.
    sizeless: usize,
}

impl Tally {
    /// Account for `op`, about to be applied to `repos` (which still show the state before it).
    pub(crate) fn note(&mut self, repos: &BTreeMap<RepoName, Repo>, op: &Op) {
        match op {
            Op::Link { repo, digest, size } => {
                if repos.get(repo).is_some_and(|r| r.blobs.contains(digest)) {
                    return;
                }
                let id = self.id(repo);
                self.add_ref(id, digest);
                self.add_source(digest, *size);
            }
            Op::Unlink { repo, digest } => {
                if !repos.get(repo).is_some_and(|r| r.blobs.contains(digest)) {
                    return;
                }
                let Some(&id) = self.ids.get(repo) else {
                    return;
                };
                self.remove_source(digest);
                self.remove_ref(repo, id, digest);
            }
            Op::Manifest { repo, record } => {
                let id = self.id(repo);
                // Replaying a manifest already held replaces its record: take the old one out.
                if let Some(old) = repos
                    .get(repo)
                    .and_then(|r| r.manifests.get(&record.digest))
                {
                    self.remove_manifest(repo, id, old);
                    // Its last reference may have freed the id.
                    let id = self.id(repo);
                    self.add_manifest(id, record);
                } else {
                    self.add_manifest(id, record);
                }
            }
            Op::Unmanifest { repo, digest } => {
                let Some(old) = repos.get(repo).and_then(|r| r.manifests.get(digest)) else {
                    return;
                };
                if let Some(&id) = self.ids.get(repo) {
                    self.remove_manifest(repo, id, old);
                }
            }
            Op::Tag { .. } | Op::Untag { .. } | Op::Import { .. } | Op::Unimport { .. } => {}
        }
    }

    /// The size of `d` as the metadata knows it (a journal compaction writes it back).
    pub(crate) fn size_of(&self, d: &Digest) -> Option<u64> {
        self.digests.get(d).and_then(|e| e.size)
    }

    /// Digests linked without a size, for [`Tally::learn`].
    pub(crate) fn unsized_digests(&self) -> Vec<Digest> {
        if self.sizeless == 0 {
            return Vec::new();
        }
        self.digests
            .iter()
            .filter(|(_, e)| e.sources > 0 && e.size.is_none())
            .map(|(d, _)| d.clone())
            .collect()
    }

    /// The backend's size of a digest linked without one; ignored if it no longer is.
    pub(crate) fn learn(&mut self, d: &Digest, size: u64) {
        if self
            .digests
            .get(d)
            .is_some_and(|e| e.sources > 0 && e.size.is_none())
        {
            self.sizeless -= 1;
            self.set_size(d, Some(size));
        }
    }

    /// The report: totals, and per repository of `repos` (in name order) its sums.
    pub(crate) fn report(&self, repos: &BTreeMap<RepoName, Repo>) -> Usage {
        let mut usage = Usage {
            blobs: self.blobs,
            bytes: self.bytes,
            manifests: self.manifests,
            repositories: repos.len() as u64,
            repos: Vec::with_capacity(repos.len()),
        };
        usage
            .repos
            .extend(repos.iter().map(|(name, r)| self.row(name, r)));
        usage
    }

    /// The bytes repository `name` references.
    fn bytes_of(&self, name: &RepoName) -> u64 {
        self.ids.get(name).map_or(0, |&id| {
            let c = &self.counts[id as usize];
            c.unique_bytes + c.shared_bytes
        })
    }

    fn row(&self, name: &RepoName, r: &Repo) -> RepoUsage {
        let c = self
            .ids
            .get(name)
            .map(|&id| self.counts[id as usize])
            .unwrap_or_default();
        RepoUsage {
            name: name.to_string(),
            bytes: c.unique_bytes + c.shared_bytes,
            blobs: c.unique_blobs + c.shared_blobs,
            unique_bytes: c.unique_bytes,
            unique_blobs: c.unique_blobs,
            shared_bytes: c.shared_bytes,
            shared_blobs: c.shared_blobs,
            manifests: r.manifests.len() as u64,
            tags: r.tags.len() as u64,
        }
    }

    fn id(&mut self, repo: &RepoName) -> u32 {
        if let Some(&id) = self.ids.get(repo) {
            return id;
        }
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                self.counts.push(Counts::default());
                u32::try_from(self.counts.len() - 1).expect("fewer than 2^32 repositories")
            }
        };
        self.counts[id as usize] = Counts::default();
        self.ids.insert(repo.clone(), id);
        id
    }

    fn add_manifest(&mut self, id: u32, m: &ManifestRecord) {
        self.add_ref(id, &m.digest);
        self.add_source(&m.digest, Some(m.size));
        if let Some(e) = self.digests.get_mut(&m.digest) {
            e.manifests += 1;
            if e.manifests == 1 {
                self.manifests += 1;
            }
        }
        for d in m.blobs.iter().chain(&m.manifests) {
            self.add_ref(id, &d.digest);
        }
    }

    fn remove_manifest(&mut self, repo: &RepoName, id: u32, m: &ManifestRecord) {
        for d in m.blobs.iter().chain(&m.manifests) {
            self.remove_ref(repo, id, &d.digest);
        }
        if let Some(e) = self.digests.get_mut(&m.digest) {
            e.manifests -= 1;
            if e.manifests == 0 {
                self.manifests -= 1;
            }
        }
        self.remove_source(&m.digest);
        self.remove_ref(repo, id, &m.digest);
    }

    /// One more reference from repository `id` to `d`.
    fn add_ref(&mut self, id: u32, d: &Digest) {
        let e = self.digests.entry(d.clone()).or_insert_with(|| Entry {
            size: None,
            sources: 0,
            manifests: 0,
            holders: SmallVec::new(),
        });
        match e.holders.binary_search_by_key(&id, |h| h.0) {
            Ok(i) => e.holders[i].1 += 1,
            Err(i) => {
                e.holders.insert(i, (id, 1));
                self.counts[id as usize].digests += 1;
                let Some(size) = e.size else { return };
                match e.holders.len() {
                    1 => {}
                    // The one holder so far now shares it.
                    2 => {
                        let other = e.holders[1 - i].0 as usize;
                        self.counts[other].sub(false, size);
                        self.counts[other].add(true, size);
                    }
                    _ => {}
                }
                let shared = e.holders.len() > 1;
                self.counts[id as usize].add(shared, size);
            }
        }
    }

    /// One reference fewer from repository `id` (named `repo`) to `d`.
    fn remove_ref(&mut self, repo: &RepoName, id: u32, d: &Digest) {
        let Some(e) = self.digests.get_mut(d) else {
            return;
        };
        let Ok(i) = e.holders.binary_search_by_key(&id, |h| h.0) else {
            return;
        };
        e.holders[i].1 -= 1;
        if e.holders[i].1 > 0 {
            return;
        }
        let shared = e.holders.len() > 1;
        e.holders.remove(i);
        if let Some(size) = e.size {
            self.counts[id as usize].sub(shared, size);
            // The one holder left has it to itself now.
            if e.holders.len() == 1 {
                let other = e.holders[0].0 as usize;
                self.counts[other].sub(true, size);
                self.counts[other].add(false, size);
            }
        }
        if e.holders.is_empty() {
            // Every source is also a reference, so none is left either.
            if let Some(size) = e.size {
                self.blobs -= 1;
                self.bytes -= size;
            }
            self.digests.remove(d);
        }
        let c = &mut self.counts[id as usize];
        c.digests -= 1;
        if c.digests == 0 {
            self.ids.remove(repo);
            self.free.push(id);
        }
    }

    /// One more source of `d` (already referenced), which may say its size.
    fn add_source(&mut self, d: &Digest, size: Option<u64>) {
        let Some(e) = self.digests.get_mut(d) else {
            return;
        };
        e.sources += 1;
        match (e.size, size) {
            (None, Some(n)) => {
                if e.sources > 1 {
                    // It had a source without a size.
                    self.sizeless -= 1;
                }
                self.set_size(d, Some(n));
            }
            (None, None) if e.sources == 1 => self.sizeless += 1,
            _ => {}
        }
    }

    /// One source of `d` fewer: at none, its size is no longer known.
    fn remove_source(&mut self, d: &Digest) {
        let Some(e) = self.digests.get_mut(d) else {
            return;
        };
        e.sources -= 1;
        if e.sources > 0 {
            return;
        }
        if e.size.is_some() {
            self.set_size(d, None);
        } else {
            self.sizeless -= 1;
        }
    }

    /// Make `d`'s size known or unknown, moving its bytes into or out of every sum.
    fn set_size(&mut self, d: &Digest, size: Option<u64>) {
        let Some(e) = self.digests.get_mut(d) else {
            return;
        };
        let (n, adding) = match (e.size, size) {
            (None, Some(n)) => (n, true),
            (Some(n), None) => (n, false),
            _ => return,
        };
        e.size = size;
        let shared = e.holders.len() > 1;
        for &(id, _) in &e.holders {
            let c = &mut self.counts[id as usize];
            if adding {
                c.add(shared, n);
            } else {
                c.sub(shared, n);
            }
        }
        if adding {
            self.blobs += 1;
            self.bytes += n;
        } else {
            self.blobs -= 1;
            self.bytes -= n;
        }
    }
}

impl Store {
    /// Disk usage of every repository (sorted by name), read from the running sums under the
    /// metadata read lock. The first call after opening a journal whose links carry no size
    /// asks the backend for those sizes (through the contract, a few at a time: on S3 each is
    /// a `HEAD`); a linked blob whose file is absent counts nothing.
    pub async fn usage(&self) -> Result<Usage, StoreError> {
        self.inner
            .sizes_filled
            .get_or_try_init(|| self.fill_sizes())
            .await?;
        let state = self.inner.meta.read();
        Ok(state.usage.report(&state.repos))
    }

    /// One page of the repositories whose name contains `filter`, in `order`, at most `n`,
    /// with the totals: only the page's rows are copied out, so a page costs about the same
    /// at ten or ten thousand repositories (a name filter is a pass over the names).
    pub async fn usage_page(
        &self,
        filter: &str,
        order: UsageOrder<'_>,
        n: usize,
    ) -> Result<UsagePage, StoreError> {
        self.inner
            .sizes_filled
            .get_or_try_init(|| self.fill_sizes())
            .await?;
        let state = self.inner.meta.read();
        let t = &state.usage;
        let mut page = UsagePage {
            totals: Usage {
                blobs: t.blobs,
                bytes: t.bytes,
                manifests: t.manifests,
                repositories: state.repos.len() as u64,
                repos: Vec::new(),
            },
            ..UsagePage::default()
        };
        let matches = state
            .repos
            .iter()
            .filter(|(name, _)| name.as_str().contains(filter));
        match order {
            UsageOrder::Name { after } => {
                for (name, r) in matches {
                    page.matching += 1;
                    if after.is_some_and(|a| name.as_str() <= a) {
                        continue;
                    }
                    if page.rows.len() < n {
                        page.rows.push(t.row(name, r));
                    } else {
                        page.more = true;
                    }
                }
            }
            UsageOrder::Size { from } => {
                let mut all: Vec<(u64, &RepoName, &Repo)> = matches
                    .map(|(name, r)| (t.bytes_of(name), name, r))
                    .collect();
                page.matching = all.len();
                let end = from.saturating_add(n).min(all.len());
                // Largest first, ties by name, as `Usage::top`; only the first `end` sorted.
                let order = |a: &(u64, &RepoName, &Repo), b: &(u64, &RepoName, &Repo)| {
                    b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1))
                };
                if end > 0 && end < all.len() {
                    all.select_nth_unstable_by(end - 1, order);
                    all.truncate(end);
                }
                all.sort_unstable_by(order);
                page.rows = all
                    .iter()
                    .skip(from)
                    .map(|(_, name, r)| t.row(name, r))
                    .collect();
                page.more = page.matching > end;
            }
        }
        Ok(page)
    }

    async fn fill_sizes(&self) -> Result<(), StoreError> {
        use futures_util::{StreamExt, TryStreamExt};
        let sizeless = self.inner.meta.read().usage.unsized_digests();
        if sizeless.is_empty() {
            return Ok(());
        }
        let blobs = &self.inner.blobs;
        let found: Vec<(Digest, u64)> = futures_util::stream::iter(sizeless)
            .map(|d| async move { Ok::<_, StoreError>(blobs.stat(&d).await?.map(|n| (d, n))) })
            .buffer_unordered(16)
            .try_filter_map(|x| async move { Ok(x) })
            .try_collect()
            .await?;
        self.inner.meta.learn_sizes(&found);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;
    use crate::meta::State;
    use crate::{Algorithm, Descriptor, MediaType, Reference, Tag, OCI_MANIFEST};

    fn sha(b: &[u8]) -> Digest {
        Digest::of(Algorithm::Sha256, b)
    }

    /// The usage of `state` computed from scratch, the way it was before the tally: every
    /// repository's referenced digests, how many repositories reference each, and a size
    /// for a digest some repository links or holds as a manifest (`size_of`: what the
    /// backend would say).
    fn full(state: &State, size_of: &dyn Fn(&Digest) -> u64) -> Usage {
        let mut holders: HashMap<&Digest, u32> = HashMap::new();
        let mut stored: HashSet<&Digest> = HashSet::new();
        let mut manifests: HashSet<&Digest> = HashSet::new();
        let mut per_repo = Vec::new();
        for (name, repo) in &state.repos {
            let mut set: HashSet<&Digest> = repo.blobs.iter().collect();
            stored.extend(repo.blobs.iter());
            for (d, m) in &repo.manifests {
                set.insert(d);
                stored.insert(d);
                manifests.insert(d);
                set.extend(m.blobs.iter().map(|b| &b.digest));
                set.extend(m.manifests.iter().map(|c| &c.digest));
            }
            for d in &set {
                *holders.entry(*d).or_default() += 1;
            }
            per_repo.push((name, repo, set));
        }
        let size = |d: &Digest| stored.contains(d).then(|| size_of(d));
        let mut u = Usage {
            manifests: manifests.len() as u64,
            repositories: state.repos.len() as u64,
            ..Usage::default()
        };
        for d in holders.keys() {
            if let Some(n) = size(d) {
                u.blobs += 1;
                u.bytes += n;
            }
        }
        for (name, repo, set) in per_repo {
            let mut r = RepoUsage {
                name: name.to_string(),
                manifests: repo.manifests.len() as u64,
                tags: repo.tags.len() as u64,
                ..RepoUsage::default()
            };
            for d in set {
                let Some(n) = size(d) else { continue };
                if holders[d] > 1 {
                    r.shared_blobs += 1;
                    r.shared_bytes += n;
                } else {
                    r.unique_blobs += 1;
                    r.unique_bytes += n;
                }
            }
            r.blobs = r.unique_blobs + r.shared_blobs;
            r.bytes = r.unique_bytes + r.shared_bytes;
            u.repos.push(r);
        }
        u
    }

    /// A small deterministic generator (xorshift64*): the sequences are reproducible.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
        }
    }

    #[test]
    fn the_tally_equals_a_full_recomputation_after_every_op() {
        // A pool of blobs (sizes 10, 20, …) and of manifests over them: images (a config and
        // layers, some shared, some only referenced) and indexes of images.
        let blobs: Vec<Digest> = (0..12u8).map(|i| sha(&[b'b', i])).collect();
        let size_of_blob: HashMap<Digest, u64> = blobs
            .iter()
            .enumerate()
            .map(|(i, d)| (d.clone(), 10 * (i as u64 + 1)))
            .collect();
        let desc = |d: &Digest| Descriptor {
            media_type: MediaType::new("application/vnd.oci.image.layer.v1.tar"),
            digest: d.clone(),
            size: 0,
        };
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut records: Vec<ManifestRecord> = Vec::new();
        for i in 0..10u8 {
            let children: Vec<Descriptor> = if i >= 7 {
                records.iter().take(3).map(|m| desc(&m.digest)).collect()
            } else {
                Vec::new()
            };
            let layers: Vec<Descriptor> = if i >= 7 {
                Vec::new()
            } else {
                // Sometimes the same layer twice: a reference counts once.
                (0..1 + rng.below(3))
                    .map(|_| desc(&blobs[rng.below(blobs.len())]))
                    .collect()
            };
            records.push(ManifestRecord {
                digest: sha(&[b'm', i]),
                media_type: MediaType::new(OCI_MANIFEST),
                size: 1000 + u64::from(i),
                artifact_type: None,
                subject: None,
                blobs: layers,
                manifests: children,
                labelled: None,
            });
        }
        let size_of = |d: &Digest| {
            size_of_blob.get(d).copied().unwrap_or_else(|| {
                records
                    .iter()
                    .find(|m| m.digest == *d)
                    .map_or(0, |m| m.size)
            })
        };
        let repos: Vec<RepoName> = ["a", "b", "c/d", "e"]
            .iter()
            .map(|r| RepoName::parse(r).expect("name"))
            .collect();
        let mut state = State::default();
        for step in 0..4000 {
            let repo = repos[rng.below(repos.len())].clone();
            let blob = blobs[rng.below(blobs.len())].clone();
            let record = records[rng.below(records.len())].clone();
            let op = match rng.below(7) {
                0 | 1 => Op::Link {
                    repo,
                    size: Some(size_of(&blob)),
                    digest: blob,
                },
                2 => Op::Unlink { repo, digest: blob },
                3 => Op::Manifest { repo, record },
                4 => Op::Unmanifest {
                    repo,
                    digest: record.digest,
                },
                5 => Op::Tag {
                    repo,
                    tag: Tag::parse("t").expect("tag"),
                    digest: record.digest,
                    at: None,
                },
                _ => Op::Untag {
                    repo,
                    tag: Tag::parse("t").expect("tag"),
                },
            };
            state.apply(op);
            let tally = state.usage.report(&state.repos);
            assert_eq!(tally, full(&state, &size_of), "after step {step}");
        }
        // Everything removed: nothing left in the tally either.
        for name in &repos {
            let ops: Vec<Op> = {
                let Some(r) = state.repos.get(name) else {
                    continue;
                };
                r.blobs
                    .iter()
                    .map(|d| Op::Unlink {
                        repo: name.clone(),
                        digest: d.clone(),
                    })
                    .chain(r.manifests.keys().map(|d| Op::Unmanifest {
                        repo: name.clone(),
                        digest: d.clone(),
                    }))
                    .chain(r.tags.keys().map(|t| Op::Untag {
                        repo: name.clone(),
                        tag: t.clone(),
                    }))
                    .collect()
            };
            for op in ops {
                state.apply(op);
            }
        }
        assert_eq!(state.usage.report(&state.repos), Usage::default());
        assert!(state.usage.digests.is_empty() && state.usage.ids.is_empty());
    }

    /// Push an image of `config` and `layers` into `repo` under `tag`; its manifest size.
    async fn push(s: &Store, repo: &str, tag: &str, config: &[u8], layers: &[&[u8]]) -> u64 {
        let repo = RepoName::parse(repo).expect("name");
        let desc = |media: &str, b: &[u8]| {
            format!(
                r#"{{"mediaType":"{media}","digest":"{}","size":{}}}"#,
                sha(b),
                b.len()
            )
        };
        s.push_blob(&repo, &sha(config), config)
            .await
            .expect("config");
        let mut ls = Vec::new();
        for l in layers {
            s.push_blob(&repo, &sha(l), *l).await.expect("layer");
            ls.push(desc("application/vnd.oci.image.layer.v1.tar", l));
        }
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{},"layers":[{}]}}"#,
            desc("application/vnd.oci.image.config.v1+json", config),
            ls.join(",")
        );
        let reference = Reference::parse(tag).expect("tag");
        s.put_manifest(&repo, &reference, OCI_MANIFEST, body.as_bytes(), &[], true)
            .await
            .expect("put");
        body.len() as u64
    }

    #[tokio::test]
    async fn shared_layers_count_as_shared_and_the_rest_as_unique() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).await.expect("open");
        let shared = vec![7u8; 1000];
        let m1 = push(&s, "a", "v1", b"{\"a\":1}", &[&shared, &[1u8; 10]]).await;
        let m2 = push(&s, "b/c", "v1", b"{\"b\":22}", &[&shared]).await;
        let u = s.usage().await.expect("usage");
        assert_eq!(u.repositories, 2);
        assert_eq!(u.manifests, 2);
        assert_eq!(u.blobs, 6);
        assert_eq!(u.bytes, 1000 + 10 + 7 + 8 + m1 + m2);
        let a = &u.repos[0];
        assert_eq!(a.name, "a");
        assert_eq!((a.shared_blobs, a.shared_bytes), (1, 1000));
        assert_eq!((a.unique_blobs, a.unique_bytes), (3, 10 + 7 + m1));
        assert_eq!((a.manifests, a.tags, a.bytes), (1, 1, 1010 + 7 + m1));
        let b = &u.repos[1];
        assert_eq!((b.name.as_str(), b.shared_bytes), ("b/c", 1000));
        assert_eq!(b.unique_bytes, 8 + m2);

        let mut top = u.clone();
        top.top(1);
        assert_eq!(top.repos.len(), 1);
        assert_eq!(top.repos[0].name, "a");
        let by_size = s
            .usage_page("", UsageOrder::Size { from: 0 }, 1)
            .await
            .expect("page");
        assert_eq!(
            (by_size.rows, by_size.more, by_size.matching),
            (top.repos.clone(), true, 2)
        );
        let by_name = s
            .usage_page("/", UsageOrder::Name { after: None }, 5)
            .await
            .expect("page");
        assert_eq!(
            (by_name.rows.as_slice(), by_name.matching),
            (&u.repos[1..], 1)
        );
        assert_eq!(by_name.totals.bytes, u.bytes);
        let second = s
            .usage_page("", UsageOrder::Size { from: 1 }, 1)
            .await
            .expect("page");
        assert_eq!((second.rows[0].name.as_str(), second.more), ("b/c", false));
        let mut page = u.clone();
        assert!(page.page(None, Some(1)));
        assert_eq!(page.repos[0].name, "a");
        let mut page = u.clone();
        assert!(!page.page(Some("a"), Some(1)));
        assert_eq!(page.repos[0].name, "b/c");

        // Deleting b/c leaves the shared layer to a alone; a reopen replays the same sums.
        s.delete_repo(&RepoName::parse("b/c").expect("name"))
            .await
            .expect("delete");
        let after = s.usage().await.expect("usage");
        assert_eq!(after.repositories, 1);
        assert_eq!(after.repos[0].unique_bytes, 1000 + 10 + 7 + m1);
        assert_eq!(after.repos[0].shared_bytes, 0);
        drop(s);
        let s = Store::open(dir.path()).await.expect("reopen");
        // Every link journalled its size: nothing to ask the backend.
        assert!(s.inner.meta.read().usage.unsized_digests().is_empty());
        assert_eq!(s.usage().await.expect("usage"), after);
    }

    /// A journal written before links carried their size: the first report asks the backend
    /// for each linked blob's size, once; a linked blob whose file is gone counts nothing.
    #[tokio::test]
    async fn links_without_a_size_are_sized_from_the_backend_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).await.expect("open");
        let layer = vec![3u8; 500];
        let gone = vec![4u8; 70];
        let m = push(&s, "a", "v1", b"{}", &[&layer, &gone]).await;
        let before = s.usage().await.expect("usage");
        assert_eq!(before.bytes, 500 + 70 + 2 + m);
        drop(s);
        crate::meta::strip_link_sizes(dir.path());
        std::fs::remove_file(crate::layout::blob_path(dir.path(), &sha(&gone))).expect("rm");
        let s = Store::open(dir.path()).await.expect("reopen");
        let u = s.usage().await.expect("usage");
        assert_eq!(u.bytes, 500 + 2 + m);
        assert_eq!(u.repos[0].unique_blobs, 3);
        // Asked once: the layer's file gone now changes nothing (its size is its content's).
        std::fs::remove_file(crate::layout::blob_path(dir.path(), &sha(&layer))).expect("rm");
        assert_eq!(s.usage().await.expect("usage"), u);
    }
}
