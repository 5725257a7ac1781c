//! `GET /livez` and `GET /readyz`: the probes of kubelets, load balancers and `airdock health`.
//! Both sit outside `/v2` and `/admin`, so the auth layer never asks them for credentials, and
//! both are cheap enough to be called every second: `/livez` touches nothing, `/readyz` looks
//! at the disk at most once a second and answers from its last look in between.

use std::sync::Arc;
use std::time::{Duration, Instant};

use airdock_storage::Store;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

pub use crate::config::DEFAULT_MIN_FREE_MIB;

/// How long one look at the disk stands for every probe.
const FRESH: Duration = Duration::from_secs(1);

/// The readiness check of one store. Cheap to clone.
#[derive(Clone)]
pub struct Readiness {
    store: Store,
    min_free_bytes: u64,
    /// The last verdict and when it was made. tokio Mutex, held across the check on purpose:
    /// probes arriving during a check wait for its result instead of each starting their own.
    last: Arc<tokio::sync::Mutex<Option<(Instant, Verdict)>>>,
}

/// What `/readyz` answers, as JSON.
#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    pub ready: bool,
    /// Why not, for a person: empty when ready.
    pub reasons: Vec<String>,
    pub free_bytes: Option<u64>,
    pub min_free_bytes: u64,
}

impl Readiness {
    pub fn new(store: Store, min_free_mib: u64) -> Readiness {
        Readiness {
            store,
            min_free_bytes: min_free_mib.saturating_mul(1 << 20),
            last: Arc::default(),
        }
    }

    /// The current verdict: the last one if younger than [`FRESH`], else a new look.
    pub async fn verdict(&self) -> Verdict {
        let mut last = self.last.lock().await;
        if let Some((at, v)) = last.as_ref() {
            if at.elapsed() < FRESH {
                return v.clone();
            }
        }
        let v = self.look().await;
        if !v.ready {
            tracing::warn!(reasons = ?v.reasons, "not ready");
        }
        *last = Some((Instant::now(), v.clone()));
        v
    }

    async fn look(&self) -> Verdict {
        let vitals = self.store.vitals().await;
        let mut reasons: Vec<String> = [vitals.write_error, vitals.journal_error]
            .into_iter()
            .flatten()
            .collect();
        match vitals.free_bytes {
            Some(free) if free < self.min_free_bytes => reasons.push(format!(
                "{free} bytes free on the data dir's filesystem, below the floor of {} \
                 (storage.min_free_mib); free space or run GC",
                self.min_free_bytes
            )),
            Some(_) => {}
            None => reasons.push("cannot read the free space of the data dir".into()),
        }
        Verdict {
            ready: reasons.is_empty(),
            reasons,
            free_bytes: vitals.free_bytes,
            min_free_bytes: self.min_free_bytes,
        }
    }
}

/// `GET /livez`: the process accepts and answers requests. Nothing else is looked at, so a
/// full disk makes the server unready, never restarted.
pub async fn livez() -> Response {
    json(StatusCode::OK, &serde_json::json!({ "live": true }))
}

/// `GET /readyz`: 200 when the store can take writes, 503 with the reasons otherwise.
pub async fn readyz(State(state): State<crate::AppState>) -> Response {
    let v = state.readiness.verdict().await;
    let status = if v.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json(status, &v)
}

fn json(status: StatusCode, body: &impl Serialize) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response()
}
