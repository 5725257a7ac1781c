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

use airdock_storage::{SizeCache, StoreStats};

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
    /// Blob sizes from earlier scrapes. tokio Mutex, held across the count (a blocking
    /// task) and the encoding on purpose: scrapes take turns, so one never encodes the
    /// per-repository series while another is rewriting them.
    sizes: Arc<tokio::sync::Mutex<SizeCache>>,
}

impl Scrape {
    pub fn new(settings: &MetricsSettings) -> Scrape {
        Scrape {
            anonymous: settings.anonymous,
            top: settings.top_repositories,
            sizes: Arc::default(),
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
    let store = state.store.clone();
    let mut sizes = Arc::clone(&state.scrape.sizes).lock_owned().await;
    let counted = tokio::task::spawn_blocking(move || {
        let stats = store.stats(&mut sizes);
        (stats, sizes)
    })
    .await;
    let text = match counted {
        Ok((stats, _turn)) => {
            publish(m, stats, state.scrape.top);
            m.encode()
        }
        Err(e) => {
            // The store's series keep their last values; the rest is still worth serving.
            tracing::warn!(error = %e, "counting the store for /metrics failed");
            m.encode()
        }
    };
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

/// Set the store's gauges from `stats`: totals, and per repository the `top` largest by
/// bytes (ties by name) with the rest summed as [`OTHER`], so the label has at most
/// `top + 1` values however many repositories there are.
fn publish(m: &Metrics, stats: StoreStats, top: usize) {
    m.stored_bytes.set(gauge_value(stats.bytes));
    m.stored_blobs.set(gauge_value(stats.blobs));
    m.stored_manifests.set(gauge_value(stats.manifests));
    m.repositories
        .set(gauge_value(stats.repositories.len() as u64));
    let mut repos = stats.repositories;
    repos.sort_by(|a, b| {
        b.bytes
            .cmp(&a.bytes)
            .then_with(|| a.name.as_str().cmp(b.name.as_str()))
    });
    let rest = repos.split_off(top.min(repos.len()));
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
    for r in &repos {
        set(r.name.as_str(), [r.bytes, r.blobs, r.manifests, r.tags]);
    }
    if !rest.is_empty() {
        let mut sum = [0u64; 4];
        for r in &rest {
            for (s, v) in sum.iter_mut().zip([r.bytes, r.blobs, r.manifests, r.tags]) {
                *s = s.saturating_add(v);
            }
        }
        set(OTHER, sum);
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
    use airdock_storage::{RepoName, RepoStats};

    fn repo(name: &str, bytes: u64) -> RepoStats {
        RepoStats {
            name: RepoName::parse(name).expect("name"),
            blobs: 1,
            manifests: 2,
            tags: 3,
            bytes,
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
        let stats = StoreStats {
            repositories: vec![repo("a", 10), repo("b", 30), repo("d", 20), repo("c", 20)],
            blobs: 4,
            manifests: 8,
            bytes: 80,
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
        let stats = StoreStats {
            repositories: vec![repo("a", 10)],
            ..StoreStats::default()
        };
        publish(m, stats, 2);
        let lines = repository_lines(m);
        assert_eq!(lines.len(), 4, "{lines:#?}");
        assert!(lines.iter().all(|l| l.contains("repository=\"a\"")));
    }
}
