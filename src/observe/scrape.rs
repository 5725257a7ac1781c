//! `GET /metrics`: the process's metrics in the Prometheus text format, with the store's
//! gauges (stored bytes, blobs, manifests, per repository for the largest ones, open upload
//! sessions) counted at scrape time. On the main port the auth layer admits it like the
//! admin API (or lets anyone in with `metrics.anonymous`); on `--metrics-addr` ([`router`])
//! it is open to whoever reaches that address.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use airdock_storage::Usage;

use crate::config::MetricsSettings;
use crate::error::RegistryError;
use crate::metrics::{self, Metrics, OTHER};
use crate::AppState;

/// What a scrape needs besides the store. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Scrape {
    /// `/metrics` on the main port needs no credentials.
    pub anonymous: bool,
    /// Repositories with series of their own.
    pub top: usize,
    /// tokio Mutex, held across the count and the encoding on purpose: scrapes take
    /// turns, so one never encodes the per-repository series while another rewrites them.
    turn: Arc<tokio::sync::Mutex<()>>,
}

impl Scrape {
    pub fn new(settings: &MetricsSettings) -> Scrape {
        Scrape {
            anonymous: settings.anonymous,
            top: settings.top_repositories,
            turn: Arc::default(),
        }
    }
}

impl Default for Scrape {
    fn default() -> Scrape {
        Scrape::new(&MetricsSettings::default())
    }
}

/// `GET /metrics` → 200, `text/plain; version=0.0.4`.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let m = metrics::get();
    m.upload_sessions
        .set(i64::try_from(state.store.open_uploads()).unwrap_or(i64::MAX));
    let _turn = state.scrape.turn.lock().await;
    // The store's usage: its metadata and one `stat` per blob file, no blob read.
    match state.store.usage().await {
        Ok(usage) => publish(m, usage, state.scrape.top),
        // The store's series keep their last values; the rest is still worth serving.
        Err(e) => tracing::warn!(error = %e, "counting the store for /metrics failed"),
    }
    let text = m.encode();
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
        text,
    )
        .into_response()
}

fn gauge_value(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Set the store's gauges from `usage`: totals, and per repository the `top` largest by
/// bytes (ties by name) with the rest summed as [`OTHER`], so the label has at most
/// `top + 1` values however many repositories there are.
fn publish(m: &Metrics, mut usage: Usage, top: usize) {
    m.stored_bytes.set(gauge_value(usage.bytes));
    m.stored_blobs.set(gauge_value(usage.blobs));
    m.stored_manifests.set(gauge_value(usage.manifests));
    m.repositories.set(gauge_value(usage.repositories));
    let values = |r: &airdock_storage::RepoUsage| [r.bytes, r.blobs, r.manifests, r.tags];
    let sum = |repos: &[airdock_storage::RepoUsage]| {
        repos.iter().fold([0u64; 4], |mut acc, r| {
            for (a, v) in acc.iter_mut().zip(values(r)) {
                *a = a.saturating_add(v);
            }
            acc
        })
    };
    let (all, count) = (sum(&usage.repos), usage.repos.len());
    usage.top(top);
    let families = [
        &m.repository_bytes,
        &m.repository_blobs,
        &m.repository_manifests,
        &m.repository_tags,
    ];
    for f in families {
        // Repositories that left the top N (or the store) must not linger.
        f.reset();
    }
    let set = |name: &str, values: [u64; 4]| {
        for (f, v) in families.iter().zip(values) {
            f.with_label_values(&[name]).set(gauge_value(v));
        }
    };
    for r in &usage.repos {
        set(&r.name, values(r));
    }
    if count > usage.repos.len() {
        let kept = sum(&usage.repos);
        let mut rest = [0u64; 4];
        for ((r, a), k) in rest.iter_mut().zip(all).zip(kept) {
            *r = a.saturating_sub(k);
        }
        set(OTHER, rest);
    }
}

/// The router of `--metrics-addr`: `/metrics` only, no credentials, with the request
/// layer (ids, access lines) like the main port.
pub fn router(state: AppState) -> Router {
    let forwarding = state.forwarding.clone();
    Router::new()
        .route("/metrics", get(metrics))
        .fallback(|uri: Uri| async move {
            RegistryError::NotFound(format!(
                "no such endpoint: {} (this address serves /metrics only)",
                uri.path()
            ))
        })
        .with_state(state)
        .layer(axum::middleware::from_fn(super::layer))
        .layer(axum::middleware::from_fn_with_state(
            forwarding,
            crate::forwarded::layer,
        ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use airdock_storage::RepoUsage;

    fn repo(name: &str, bytes: u64) -> RepoUsage {
        RepoUsage {
            name: name.to_owned(),
            blobs: 1,
            manifests: 2,
            tags: 3,
            bytes,
            ..RepoUsage::default()
        }
    }

    /// The `airdock_repository_*` lines of the exposition.
    fn repository_lines(m: &Metrics) -> Vec<String> {
        m.encode()
            .lines()
            .filter(|l| l.starts_with("airdock_repository_"))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn the_largest_repositories_get_series_and_the_rest_are_summed() {
        let m = metrics::get();
        let stats = Usage {
            repos: vec![repo("a", 10), repo("b", 30), repo("d", 20), repo("c", 20)],
            blobs: 4,
            manifests: 8,
            bytes: 80,
            repositories: 4,
        };
        publish(m, stats, 2);
        let lines = repository_lines(m);
        for want in [
            "airdock_repository_stored_bytes{repository=\"b\"} 30",
            // A tie goes by name.
            "airdock_repository_stored_bytes{repository=\"c\"} 20",
            "airdock_repository_stored_bytes{repository=\"_other\"} 30",
            "airdock_repository_blobs{repository=\"_other\"} 2",
            "airdock_repository_tags{repository=\"_other\"} 6",
        ] {
            assert!(lines.iter().any(|l| l == want), "{want} not in {lines:#?}");
        }
        assert_eq!(lines.len(), 3 * 4, "{lines:#?}");
        assert_eq!(m.stored_bytes.get(), 80);
        assert_eq!(m.repositories.get(), 4);
        // Repositories that are gone leave no series behind; no `_other` without a rest.
        let stats = Usage {
            repos: vec![repo("a", 10)],
            ..Usage::default()
        };
        publish(m, stats, 2);
        let lines = repository_lines(m);
        assert_eq!(lines.len(), 4, "{lines:#?}");
        assert!(lines.iter().all(|l| l.contains("repository=\"a\"")));
    }
}
