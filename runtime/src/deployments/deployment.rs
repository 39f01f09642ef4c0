//! One deployment: its record, its bundle's manifest, and, while it is warm, its compiled
//! snapshot and the pool of sandbox slots made from it. A cold deployment holds neither: its
//! first request maps the snapshot again (from the compiled cache) and starts the pool.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use feelings_core::manifest::TestMetrics;
use feelings_core::{Bundle, Manifest, ReviewEncoder};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Host, Record};
use crate::metrics::PoolMetrics;
use crate::pool::{AnswerCheck, Pool, PoolOptions};
use crate::{LoadingSandboxes, SandboxError, Sandboxes};

/// A warm deployment's sandboxes: the compiled snapshot (mapped, shared by every deployment of
/// the same bundle) and the pool over it; or, while a new deployment's snapshot is made, a pool
/// of sandboxes that load the bundle themselves.
pub struct Warm {
    /// The slots and their queue.
    pub pool: Pool,
    /// The compiled snapshot (`None` for a pool the embedder made, or one that loads).
    pub snapshot: Option<Arc<Sandboxes>>,
    /// Whether each sandbox loads the bundle itself (until the snapshot is ready).
    pub loading: bool,
}

impl Warm {
    /// The mapped snapshot's bytes and identity, for the memory budget.
    pub fn snapshot_bytes(&self) -> Option<(usize, u64)> {
        self.snapshot
            .as_ref()
            .map(|s| (Arc::as_ptr(s) as usize, s.image_bytes()))
    }
}

/// One deployment.
pub struct Deployment {
    /// Its name.
    pub name: String,
    /// Its bundle's manifest.
    pub manifest: Manifest,
    /// Its bundle's `feelings.json` as stored.
    pub manifest_json: Bytes,
    /// Its bundle's folder in the registry (`None`: a pool given by the embedder, always warm).
    pub bundle_dir: Option<PathBuf>,
    /// Its metrics.
    pub metrics: PoolMetrics,
    record: Mutex<Record>,
    warm: tokio::sync::Mutex<Option<Arc<Warm>>>,
    last_used: Mutex<Instant>,
    requests: AtomicU64,
    /// Whether its snapshot is being made now.
    preparing: AtomicBool,
    /// Its bundle's tokenizer, read natively once asked for (`/tokenize`, token counts).
    encoder: std::sync::OnceLock<Result<Arc<ReviewEncoder>, String>>,
}

/// A deployment as `GET /v1/deployments` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeploymentInfo {
    /// Its name.
    pub name: String,
    /// The bundle's model name.
    pub model: String,
    /// The sha256 of the bundle's `feelings.json`.
    pub bundle_sha256: String,
    /// When it was created (RFC 3339, UTC).
    pub created: String,
    /// Whether it answers requests.
    pub enabled: bool,
    /// Whether `POST /v1/classify` answers with it.
    pub default: bool,
    /// Whether its compiled snapshot is mapped now (a cold one maps it on its next request).
    pub warm: bool,
    /// Sandboxes alive now (none while it is idle, unless sandboxes are reused).
    pub sandboxes: usize,
    /// Whether its snapshot is being made now (a new deployment's, in the background).
    pub preparing: bool,
    /// Whether its sandboxes load the bundle themselves (about half a second a request for
    /// MiniLM) because its snapshot is not ready yet.
    pub loading: bool,
    /// Classify requests it answered since the gateway started.
    pub requests: u64,
    /// What one full-length review costs a sandbox, in milliseconds: measured when it was made
    /// (and at every start for a bundle given at start), and again when it warms up if the
    /// limits could not take the recorded figure.
    pub review_ms: Option<f64>,
    /// Whether its classify route takes its own API key.
    pub has_api_key: bool,
    /// The bundle's test metrics (from its manifest).
    #[schema(value_type = Option<Object>)]
    pub test_metrics: Option<TestMetrics>,
    /// Its classify route.
    pub classify_url: String,
    /// Its web page.
    pub web_app: String,
}

impl Deployment {
    /// A deployment of the registry's bundle `bundle_dir`, cold.
    pub(super) fn new(
        record: Record,
        manifest: Manifest,
        manifest_json: Bytes,
        bundle_dir: Option<PathBuf>,
        metrics: PoolMetrics,
    ) -> Self {
        Self {
            name: record.name.clone(),
            manifest,
            manifest_json,
            bundle_dir,
            metrics,
            record: Mutex::new(record),
            warm: tokio::sync::Mutex::new(None),
            last_used: Mutex::new(Instant::now()),
            requests: AtomicU64::new(0),
            preparing: AtomicBool::new(false),
            encoder: std::sync::OnceLock::new(),
        }
    }

    /// A deployment that is always warm on `pool` (made by the embedder).
    pub(super) fn pinned(
        record: Record,
        manifest: Manifest,
        pool: Pool,
        metrics: PoolMetrics,
    ) -> Self {
        let manifest_json = Bytes::from(feelings_core::manifest::to_json(&manifest));
        let warm = Warm {
            pool,
            snapshot: None,
            loading: false,
        };
        Self {
            name: record.name.clone(),
            manifest,
            manifest_json,
            bundle_dir: None,
            metrics,
            record: Mutex::new(record),
            warm: tokio::sync::Mutex::new(Some(Arc::new(warm))),
            last_used: Mutex::new(Instant::now()),
            requests: AtomicU64::new(0),
            preparing: AtomicBool::new(false),
            encoder: std::sync::OnceLock::new(),
        }
    }

    /// Its record now.
    pub fn record(&self) -> Record {
        self.record
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(super) fn set_record(&self, record: Record) {
        *self.record.lock().unwrap_or_else(PoisonError::into_inner) = record;
    }

    /// Whether it answers requests.
    pub fn is_enabled(&self) -> bool {
        self.record
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .enabled
    }

    /// Whether `key` (from `Authorization: Bearer`) is this deployment's own API key; false
    /// when it has none.
    pub fn accepts_key(&self, key: &str) -> bool {
        let Some(expected) = self.record().api_key_sha256 else {
            return false;
        };
        let given = feelings_core::sha256_hex(key.trim().as_bytes());
        constant_time_eq::constant_time_eq(given.as_bytes(), expected.as_bytes())
    }

    /// Its bundle's tokenizer as the model reads reviews (its sequence length and
    /// truncation), read from the registry on first use; refused for a deployment without a
    /// bundle folder, or a tokenizer that does not load.
    pub fn encoder(&self) -> Result<Arc<ReviewEncoder>, String> {
        self.encoder
            .get_or_init(|| {
                let dir = self
                    .bundle_dir
                    .as_ref()
                    .ok_or("this deployment's bundle is not in a registry folder")?;
                let path = dir.join(feelings_core::manifest::TOKENIZER_FILE);
                let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                let encoder = ReviewEncoder::from_bytes(
                    &bytes,
                    self.manifest.max_seq_len,
                    self.manifest.truncation,
                )
                .map_err(|e| format!("{}: {e}", path.display()))?;
                Ok(Arc::new(encoder))
            })
            .clone()
    }

    /// Counts a classify request and marks the deployment used now.
    pub fn count_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        *self
            .last_used
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Instant::now();
    }

    /// How long since its last request.
    pub fn idle_for(&self) -> Duration {
        self.last_used
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .elapsed()
    }

    /// Its sandboxes if it is warm (without waiting for one being made).
    pub fn warm_now(&self) -> Option<Arc<Warm>> {
        self.warm.try_lock().ok().and_then(|warm| warm.clone())
    }

    /// Its sandboxes: mapped and started first if it is cold (other requests wait for the same
    /// start); the second value says whether this call made them.
    pub(super) async fn warm(
        self: &Arc<Self>,
        host: &Host,
    ) -> Result<(Arc<Warm>, bool), SandboxError> {
        let mut warm = self.warm.lock().await;
        if let Some(ready) = &*warm {
            return Ok((ready.clone(), false));
        }
        let (this, host) = (self.clone(), host.clone());
        let made = tokio::task::spawn_blocking(move || this.make_warm(&host, false))
            .await
            .map_err(|e| SandboxError::Crashed(e.to_string()))??;
        let made = Arc::new(made);
        *warm = Some(made.clone());
        Ok((made, true))
    }

    /// What one full-length review costs, as recorded, unless there is no figure or one the
    /// limits cannot take (measured on a busy machine, say): then it is to be measured again.
    pub(super) fn trusted_cost(&self, host: &Host) -> Option<Duration> {
        let slowest = host.pool.probe_again_above;
        self.record()
            .review_ms
            .map(|ms| Duration::from_secs_f64(ms / 1e3))
            .filter(|cost| slowest.is_none_or(|slowest| *cost <= slowest))
    }

    /// Maps the snapshot and starts the pool (blocking): probed when `probe` or when there is
    /// no [`Self::trusted_cost`], otherwise trusting that.
    pub(super) fn make_warm(&self, host: &Host, probe: bool) -> Result<Warm, SandboxError> {
        let dir = self.bundle_dir.as_ref().ok_or_else(|| {
            SandboxError::Component("this deployment has no bundle folder".into())
        })?;
        let record = self.record();
        let sandboxes = host.snapshot(&record.bundle_sha256, || {
            let bundle = Bundle::read_dir(dir).map_err(|e| SandboxError::Refused(e.to_string()))?;
            let (sandboxes, prepared) =
                Sandboxes::new(&host.engine, &host.wasm, &bundle, &host.sandbox)?;
            tracing::info!(
                deployment = %self.name,
                from_cache = prepared.from_cache,
                seconds = prepared.duration.as_secs_f64(),
                mib = sandboxes.image_bytes() >> 20,
                "snapshot mapped"
            );
            Ok(sandboxes)
        })?;
        let known = self.trusted_cost(host).filter(|_| !probe);
        let pool = Pool::start(
            sandboxes.clone() as Arc<dyn crate::Instances>,
            &self.pool_options(host),
            self.answer_check(),
            self.metrics.clone(),
            known,
        )?;
        Ok(Warm {
            pool,
            snapshot: Some(sandboxes),
            loading: false,
        })
    }

    /// A probed pool of sandboxes that each load `bundle` themselves (blocking): a new
    /// deployment answers with it at once, while [`Deployment::swap_in_snapshot`] makes its
    /// snapshot.
    pub(super) fn make_loading(
        &self,
        host: &Host,
        bundle: Arc<Bundle>,
    ) -> Result<Warm, SandboxError> {
        let started = Instant::now();
        let sandboxes = LoadingSandboxes::new(&host.engine, &host.wasm, bundle, &host.sandbox)?;
        let pool = Pool::start(
            Arc::new(sandboxes),
            &self.pool_options(host),
            self.answer_check(),
            self.metrics.clone(),
            None,
        )?;
        tracing::info!(
            deployment = %self.name,
            seconds = started.elapsed().as_secs_f64(),
            "serving from sandboxes that load the bundle while its snapshot is made"
        );
        Ok(Warm {
            pool,
            snapshot: None,
            loading: true,
        })
    }

    /// Marks the deployment as having its snapshot made (before [`Deployment::swap_in_snapshot`]
    /// runs, so that its answer to the upload says so).
    pub(super) fn mark_preparing(&self) {
        self.preparing.store(true, Ordering::SeqCst);
    }

    /// Makes the snapshot (blocking) and, if the deployment still serves from sandboxes that
    /// load the bundle, puts the snapshot's pool in their place; the loading pool answers
    /// what it admitted, then stops. A deployment cooled or deleted meanwhile is left as it is
    /// (the compiled snapshot stays in the cache for its next request).
    pub(super) fn swap_in_snapshot(&self, host: &Host) {
        let made = self.make_warm(host, true);
        let replaced = made.map(|warm| {
            let mut current = self.warm.blocking_lock();
            match current.as_ref() {
                Some(now) if now.loading => current.replace(Arc::new(warm)),
                _ => None,
            }
        });
        self.preparing.store(false, Ordering::SeqCst);
        match replaced {
            Ok(Some(old)) => {
                tracing::info!(deployment = %self.name, "now serving from its snapshot");
                // Requests still holding the loading pool finish first: its threads are
                // joined here, never on the async runtime.
                while Arc::strong_count(&old) > 1 {
                    std::thread::sleep(Duration::from_millis(20));
                }
                drop(old);
            }
            Ok(None) => tracing::info!(deployment = %self.name, "snapshot made; not in use"),
            Err(e) => tracing::error!(
                deployment = %self.name,
                "cannot make the snapshot; its sandboxes keep loading the bundle: {e}"
            ),
        }
    }

    /// Its pool's sizes: the host's, unless its record says otherwise.
    fn pool_options(&self, host: &Host) -> PoolOptions {
        let record = self.record();
        PoolOptions {
            instances: record.instances.map_or(host.pool.instances, usize::from),
            queue: record.queue.map_or(host.pool.queue, |q| q as usize),
            ..host.pool.clone()
        }
    }

    /// What its sandboxes' answers must agree with.
    fn answer_check(&self) -> AnswerCheck {
        AnswerCheck {
            labels: self.manifest.labels.clone(),
            threshold: self.manifest.threshold,
            probe: super::probe_review(&self.manifest),
        }
    }

    /// Puts sandboxes made outside (at creation) in place.
    pub(super) async fn set_warm(&self, warm: Arc<Warm>) {
        *self.warm.lock().await = Some(warm);
    }

    /// Takes its sandboxes away if it is warm and idle, and it has a bundle to map them from
    /// again; they are dropped once the last request holding them is answered.
    pub(super) fn cool(&self) -> Option<Arc<Warm>> {
        self.bundle_dir.as_ref()?;
        let mut warm = self.warm.try_lock().ok()?;
        if !warm.as_ref()?.pool.is_idle() {
            return None;
        }
        warm.take()
    }

    /// Takes its sandboxes away, idle or not (it is being deleted).
    pub(super) async fn take_warm(&self) -> Option<Arc<Warm>> {
        self.warm.lock().await.take()
    }

    /// How it shows in `GET /v1/deployments`.
    pub fn info(&self, default: bool) -> DeploymentInfo {
        let record = self.record();
        let warm = self.warm_now();
        DeploymentInfo {
            name: self.name.clone(),
            model: self.manifest.name.clone(),
            bundle_sha256: record.bundle_sha256,
            created: record.created,
            enabled: record.enabled,
            default,
            warm: warm.is_some(),
            sandboxes: warm.as_ref().map_or(0, |w| w.pool.alive()),
            preparing: self.preparing.load(Ordering::SeqCst),
            loading: warm.is_some_and(|w| w.loading),
            requests: self.requests.load(Ordering::Relaxed),
            review_ms: record.review_ms,
            has_api_key: record.api_key_sha256.is_some(),
            test_metrics: self.manifest.test_metrics.clone(),
            classify_url: format!("/v1/deployments/{}/classify", self.name),
            web_app: format!("/d/{}/", self.name),
        }
    }
}
