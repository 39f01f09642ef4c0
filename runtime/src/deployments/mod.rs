//! Deployments: named, immutable bundles behind one gateway, kept in a registry folder
//! ([`registry`]) and served serverless-style ([`deployment`]): a deployment with no traffic
//! holds no sandbox, its compiled snapshot is mapped on its first request and unmapped again
//! when the gateway's memory budget needs the room (least recently used first) or after it has
//! been idle a while. Every deployment's guest calls take turns on the same cores.

mod deployment;
mod registry;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::Duration;

use axum::body::Bytes;
use feelings_core::Manifest;

pub use deployment::{Deployment, DeploymentInfo, Warm};
pub use registry::{BundleFiles, Record, Registry, RegistryError};

use crate::engine::SandboxEngine;
use crate::metrics::Metrics;
use crate::pool::{Pool, PoolOptions};
use crate::{SandboxError, SandboxOptions, Sandboxes};

/// What every deployment's sandboxes are made with.
#[derive(Clone)]
pub struct Host {
    /// The shared engine.
    pub engine: SandboxEngine,
    /// The classifier component (the server build).
    pub wasm: Arc<Vec<u8>>,
    /// How sandboxes are made.
    pub sandbox: SandboxOptions,
    /// Each deployment's pool, unless its record says otherwise (the gate shared by all).
    pub pool: PoolOptions,
    /// The gateway's metrics.
    pub metrics: Arc<Metrics>,
    /// The most bytes of compiled snapshots mapped at once; beyond it the least recently used
    /// idle deployment is cooled.
    pub budget_bytes: u64,
    /// The snapshots mapped now, by bundle sha256: deployments of the same bundle share one.
    pub snapshots: Arc<Mutex<HashMap<String, SnapshotSlot>>>,
}

/// One bundle's mapped snapshot, if any; locked while it is being made, so that the same
/// bundle is made once (other bundles' are made meanwhile).
pub type SnapshotSlot = Arc<Mutex<Weak<Sandboxes>>>;

impl Host {
    /// The mapped snapshot of bundle `digest`, shared with the deployments using it now, or
    /// made by `make` (read from the compiled cache, or snapshotted and compiled).
    pub(crate) fn snapshot(
        &self,
        digest: &str,
        make: impl FnOnce() -> Result<Sandboxes, SandboxError>,
    ) -> Result<Arc<Sandboxes>, SandboxError> {
        let slot = {
            let mut snapshots = self
                .snapshots
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            // A slot stays while someone holds it (making or waiting) or its snapshot lives.
            snapshots.retain(|_, slot| {
                Arc::strong_count(slot) > 1
                    || slot.try_lock().map_or(true, |s| s.strong_count() > 0)
            });
            snapshots.entry(digest.to_string()).or_default().clone()
        };
        let mut mapped = slot.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(shared) = mapped.upgrade() {
            return Ok(shared);
        }
        let made = Arc::new(make()?);
        *mapped = Arc::downgrade(&made);
        Ok(made)
    }

    /// Whether the snapshot of bundle `digest` is mapped now (by a deployment using it); false
    /// while it is being made.
    pub(crate) fn is_mapped(&self, digest: &str) -> bool {
        let snapshots = self
            .snapshots
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        snapshots
            .get(digest)
            .and_then(|slot| slot.try_lock().ok())
            .is_some_and(|mapped| mapped.strong_count() > 0)
    }
}

/// Why a change to the deployments was refused.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// No deployment has that name.
    #[error("no deployment is named {0:?}")]
    NotFound(String),
    /// A deployment already has that name.
    #[error("a deployment named {0:?} exists: delete it first (bundles are immutable)")]
    Exists(String),
    /// The request is not a deployment (bad name, bad bundle, wrong sha256, limits).
    #[error("{0}")]
    Invalid(String),
    /// Its measured cost contradicts the gateway's limits (a bundle given at start).
    #[error("the limits cannot all hold: {0}")]
    Limits(String),
    /// The bundle does not run: its sandbox failed or refused it.
    #[error("the bundle does not run in a sandbox: {0}")]
    Broken(SandboxError),
    /// The registry folder cannot be written.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// What a new deployment is made of.
pub struct NewDeployment {
    /// Its name.
    pub name: String,
    /// Its bundle's files.
    pub files: BundleFiles,
    /// The sha256 the uploader says the bundle has (of its `feelings.json`).
    pub sha256: Option<String>,
    /// Whether it answers at once.
    pub enabled: bool,
    /// Its own API key for its classify route.
    pub api_key: Option<String>,
    /// Its own slots.
    pub instances: Option<u16>,
    /// Its own queue limit.
    pub queue: Option<u32>,
}

/// How a new deployment first serves.
#[derive(Debug, Clone, Copy)]
enum Serve {
    /// From its snapshot, made first (snapshot and compile: seconds).
    FromSnapshot,
    /// At once, from sandboxes that load the bundle themselves, while its snapshot is made
    /// in the background (falling back to the snapshot first if they cannot start).
    WhileSnapshotting,
}

/// Every deployment of the gateway.
pub struct Deployments {
    host: Option<Host>,
    registry: Option<Registry>,
    all: RwLock<BTreeMap<String, Arc<Deployment>>>,
    default: Option<String>,
    /// Creating and deleting take turns.
    changes: tokio::sync::Mutex<()>,
}

/// A review longer than the model reads: what the longest review costs.
pub(crate) fn probe_review(manifest: &Manifest) -> String {
    let sentence =
        "A first review, to check the sandbox and time a review as long as the model reads. ";
    sentence.repeat(manifest.max_seq_len / 16 + 1)
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

impl Deployments {
    /// The registry's deployments, all cold, on `host`.
    pub fn open(host: Host, registry: Registry) -> Result<Self, DeployError> {
        let mut all = BTreeMap::new();
        for record in registry.records()? {
            // The whole bundle is read and checked when the deployment is first warmed.
            let dir = registry.bundle_dir(&record.bundle_sha256);
            let (manifest, json) = registry.read_manifest(&record.bundle_sha256)?;
            let metrics = host.metrics.deployment(&record.name);
            let name = record.name.clone();
            let deployment =
                Deployment::new(record, manifest, Bytes::from(json), Some(dir), metrics);
            all.insert(name, Arc::new(deployment));
        }
        Ok(Self {
            host: Some(host),
            registry: Some(registry),
            all: RwLock::new(all),
            default: None,
            changes: tokio::sync::Mutex::new(()),
        })
    }

    /// One deployment, `name`, always warm on `pool` (sandboxes the embedder made); nothing
    /// can be created or deleted.
    pub fn pinned(name: &str, manifest: Manifest, pool: Pool, metrics: &Metrics) -> Self {
        let record = Record {
            name: name.to_string(),
            bundle_sha256: feelings_core::deployment::bundle_digest(
                &feelings_core::manifest::to_json(&manifest),
            ),
            created: now_rfc3339(),
            enabled: true,
            review_ms: Some(pool.review_cost().as_secs_f64() * 1e3),
            instances: None,
            queue: None,
            api_key_sha256: None,
        };
        let deployment = Deployment::pinned(record, manifest, pool, metrics.deployment(name));
        Self {
            host: None,
            registry: None,
            all: RwLock::new(BTreeMap::from([(name.to_string(), Arc::new(deployment))])),
            default: Some(name.to_string()),
            changes: tokio::sync::Mutex::new(()),
        }
    }

    /// Makes the bundle in `dir` the default deployment `name` (see [`Self::put_bundle`]) and
    /// returns it.
    pub fn set_default(
        &mut self,
        name: &str,
        dir: &Path,
        check: impl Fn(Duration) -> Result<(), String>,
    ) -> Result<Arc<Deployment>, DeployError> {
        let deployment = self.put_bundle(name, dir, check)?;
        self.default = Some(name.to_string());
        Ok(deployment)
    }

    /// Warms `deployment` as the gateway starts (blocking), probed however its cost was
    /// recorded (the component may have changed since), checks that cost with `check` and
    /// records it.
    fn warm_at_start(
        &self,
        deployment: Arc<Deployment>,
        check: impl Fn(Duration) -> Result<(), String>,
    ) -> Result<Arc<Deployment>, DeployError> {
        if deployment.warm_now().is_none() {
            let warm = deployment
                .make_warm(self.host()?, true)
                .map_err(DeployError::Broken)?;
            let cost = warm.pool.review_cost();
            check(cost).map_err(DeployError::Limits)?;
            pollster::block_on(deployment.set_warm(Arc::new(warm)));
            self.keep_measured_cost(&deployment, cost);
        }
        Ok(deployment)
    }

    /// Deploys the bundle in `dir` as `name`, warm, as the gateway starts (blocking): kept
    /// (and probed) when the deployment `name` already serves that bundle, else made (checked
    /// in a sandbox) and recorded, replacing one of that name that serves another bundle
    /// (keeping whether it is enabled), unless that one was uploaded with its own API key,
    /// slots or queue, which a folder has none of (refused). A cost `check` refuses leaves the
    /// registry as it was.
    pub fn put_bundle(
        &mut self,
        name: &str,
        dir: &Path,
        check: impl Fn(Duration) -> Result<(), String>,
    ) -> Result<Arc<Deployment>, DeployError> {
        let files = BundleFiles::read_dir(dir)?;
        let digest = files.digest();
        let existing = self.get(name);
        let replaced = existing.as_ref().map(|d| d.record());
        match (existing, &replaced) {
            (Some(d), Some(record)) if record.bundle_sha256 == digest => {
                return self.warm_at_start(d, check)
            }
            (_, Some(record))
                if record.api_key_sha256.is_some()
                    || record.instances.is_some()
                    || record.queue.is_some() =>
            {
                return Err(DeployError::Invalid(format!(
                    "the deployment {name} serves another bundle, with its own API key, slots or queue, which this folder would drop: delete it (DELETE /v1/deployments/{name}) or give this bundle another name"
                )));
            }
            _ => {}
        }
        let new = NewDeployment {
            name: name.to_string(),
            files,
            sha256: None,
            enabled: replaced.as_ref().is_none_or(|r| r.enabled),
            api_key: None,
            instances: None,
            queue: None,
        };
        let (deployment, warm) = self.make(new, Serve::FromSnapshot)?;
        if let Err(refused) = check(warm.pool.review_cost()) {
            self.remove_unused_bundle(&digest);
            return Err(DeployError::Limits(refused));
        }
        pollster::block_on(deployment.set_warm(Arc::new(warm)));
        // The new record takes the old one's place in one rename; then the old bundle goes.
        self.registry()?.write_record(&deployment.record())?;
        self.insert(deployment.clone());
        if let Some(old) = replaced {
            tracing::info!(
                deployment = name,
                "the bundle given changed: replaced the deployment"
            );
            self.remove_unused_bundle(&old.bundle_sha256);
        }
        Ok(deployment)
    }

    fn host(&self) -> Result<&Host, DeployError> {
        self.host
            .as_ref()
            .ok_or_else(|| DeployError::Invalid("this gateway serves one fixed deployment".into()))
    }

    fn registry(&self) -> Result<&Registry, DeployError> {
        self.registry
            .as_ref()
            .ok_or_else(|| DeployError::Invalid("this gateway serves one fixed deployment".into()))
    }

    /// The deployment named `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Deployment>> {
        self.all
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// The default deployment (`POST /v1/classify`), if there is one.
    pub fn default_deployment(&self) -> Option<Arc<Deployment>> {
        self.default.as_deref().and_then(|name| self.get(name))
    }

    /// The default deployment's name.
    pub fn default_name(&self) -> Option<&str> {
        self.default.as_deref()
    }

    /// Every deployment, by name.
    pub fn list(&self) -> Vec<Arc<Deployment>> {
        self.all
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// Every deployment as the API shows it.
    pub fn infos(&self) -> Vec<DeploymentInfo> {
        self.list()
            .iter()
            .map(|d| d.info(Some(d.name.as_str()) == self.default.as_deref()))
            .collect()
    }

    fn insert(&self, deployment: Arc<Deployment>) {
        self.all
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(deployment.name.clone(), deployment);
    }

    /// The sandboxes of `deployment`, mapping its snapshot first if it is cold, then cooling
    /// others if the memory budget is exceeded.
    pub async fn warm(&self, deployment: &Arc<Deployment>) -> Result<Arc<Warm>, SandboxError> {
        let Some(host) = &self.host else {
            return deployment
                .warm_now()
                .ok_or_else(|| SandboxError::Component("the pinned pool is gone".into()));
        };
        let (warm, made) = deployment.warm(host).await?;
        if made {
            host.metrics.snapshot_loads.inc();
            // Warming changes no record: the cost it trusted, or not, is still the record's.
            if deployment.trusted_cost(host).is_none() {
                self.keep_measured_cost(deployment, warm.pool.review_cost());
            }
            self.enforce_budget(&deployment.name);
        }
        Ok(warm)
    }

    /// Records `cost`, just measured, as what a review of `deployment` costs, so the next
    /// warm-up trusts it. Skipped while a change is under way (which may be its deletion: its
    /// record must stay gone) and when the write fails (logged, not the request's): the record
    /// keeps its old figure and the next warm-up measures again.
    fn keep_measured_cost(&self, deployment: &Arc<Deployment>, cost: Duration) {
        let Ok(_turn) = self.changes.try_lock() else {
            return;
        };
        let current = self.get(&deployment.name);
        let (true, Some(registry)) = (
            current.is_some_and(|d| Arc::ptr_eq(&d, deployment)),
            &self.registry,
        ) else {
            return;
        };
        // Read under the turn, so a change made just before (enabled, say) is not undone.
        let mut record = deployment.record();
        record.review_ms = Some(cost.as_secs_f64() * 1e3);
        match registry.write_record(&record) {
            Ok(()) => deployment.set_record(record),
            Err(e) => {
                tracing::warn!(deployment = %deployment.name, "the measured cost is not kept: {e}")
            }
        }
    }

    /// Cools the least recently used idle deployments (never `keep`) while the mapped
    /// snapshots exceed the budget.
    fn enforce_budget(&self, keep: &str) {
        let Some(host) = &self.host else { return };
        let mut warm: Vec<Arc<Deployment>> = self
            .list()
            .into_iter()
            .filter(|d| d.warm_now().is_some() && d.name != keep)
            .collect();
        warm.sort_by_key(|d| std::cmp::Reverse(d.idle_for()));
        for deployment in warm {
            if self.mapped_bytes() <= host.budget_bytes {
                break;
            }
            self.cool(&deployment);
        }
        host.metrics.warm_deployments.set(self.warm_count() as i64);
    }

    /// Bytes of the distinct snapshots the warm deployments map.
    pub fn mapped_bytes(&self) -> u64 {
        let mut seen = HashSet::new();
        self.list()
            .iter()
            .filter_map(|d| d.warm_now()?.snapshot_bytes())
            .filter(|(id, _)| seen.insert(*id))
            .map(|(_, bytes)| bytes)
            .sum()
    }

    fn warm_count(&self) -> usize {
        self.list()
            .iter()
            .filter(|d| d.warm_now().is_some())
            .count()
    }

    /// Cools `deployment` if it is idle; says whether it did.
    fn cool(&self, deployment: &Deployment) -> bool {
        let Some(warm) = deployment.cool() else {
            return false;
        };
        tracing::info!(deployment = %deployment.name, "snapshot unmapped");
        if let Some(host) = &self.host {
            host.metrics.snapshot_unloads.inc();
        }
        // Dropping a pool joins its threads: not on the async runtime's threads.
        std::thread::spawn(move || drop(warm));
        true
    }

    /// Cools every deployment idle for at least `after` (scale to zero); returns how many.
    pub fn cool_idle(&self, after: Duration) -> usize {
        let cooled = self
            .list()
            .iter()
            .filter(|d| d.warm_now().is_some() && d.idle_for() >= after && self.cool(d))
            .count();
        if let Some(host) = &self.host {
            host.metrics.warm_deployments.set(self.warm_count() as i64);
        }
        cooled
    }

    /// Checks and stores a new deployment's bundle, runs it in a sandbox (probed, and checked
    /// against the limits by `check`), writes its record, and serves it: at once from
    /// sandboxes that load the bundle themselves, then from its snapshot, made in the
    /// background.
    pub async fn create(
        self: &Arc<Self>,
        new: NewDeployment,
        check: impl FnOnce(Duration) -> Result<(), String> + Send + 'static,
    ) -> Result<Arc<Deployment>, DeployError> {
        feelings_core::deployment::validate_name(&new.name).map_err(DeployError::Invalid)?;
        let _turn = self.changes.lock().await;
        if self.get(&new.name).is_some() {
            return Err(DeployError::Exists(new.name));
        }
        let this = self.clone();
        let (deployment, warm) = tokio::task::spawn_blocking(move || {
            let made = this.make(new, Serve::WhileSnapshotting)?;
            if let Err(refused) = check(made.1.pool.review_cost()) {
                this.remove_unused_bundle(&made.0.record().bundle_sha256);
                return Err(DeployError::Invalid(refused));
            }
            Ok::<_, DeployError>(made)
        })
        .await
        .map_err(|e| DeployError::Broken(SandboxError::Crashed(e.to_string())))??;
        let loading = warm.loading;
        deployment.set_warm(Arc::new(warm)).await;
        self.registry()?.write_record(&deployment.record())?;
        self.insert(deployment.clone());
        self.enforce_budget(&deployment.name);
        if loading {
            let (snapshotting, host) = (deployment.clone(), self.host()?.clone());
            snapshotting.mark_preparing();
            tokio::task::spawn_blocking(move || snapshotting.swap_in_snapshot(&host));
        }
        Ok(deployment)
    }

    /// Stores the bundle and starts a probed pool on it (blocking), serving as `serve` says;
    /// the record is not written.
    fn make(
        &self,
        new: NewDeployment,
        serve: Serve,
    ) -> Result<(Arc<Deployment>, Warm), DeployError> {
        let (host, registry) = (self.host()?, self.registry()?);
        let manifest_json = Bytes::from(new.files.manifest.clone());
        let (bundle, digest) = registry
            .store_bundle(new.files, new.sha256.as_deref())
            .map_err(|e| match e {
                RegistryError::Io { .. } => DeployError::Registry(e),
                other => DeployError::Invalid(other.to_string()),
            })?;
        let record = Record {
            name: new.name.clone(),
            bundle_sha256: digest.clone(),
            created: now_rfc3339(),
            enabled: new.enabled,
            review_ms: None,
            instances: new.instances,
            queue: new.queue,
            api_key_sha256: new
                .api_key
                .map(|key| feelings_core::sha256_hex(key.as_bytes())),
        };
        let dir = registry.bundle_dir(&digest);
        let metrics = host.metrics.deployment(&new.name);
        let deployment = Arc::new(Deployment::new(
            record,
            bundle.manifest.clone(),
            manifest_json,
            Some(dir),
            metrics,
        ));
        let loading = match serve {
            Serve::FromSnapshot => None,
            // Another deployment of the same bundle has the snapshot mapped: it is ready now.
            Serve::WhileSnapshotting if host.is_mapped(&digest) => None,
            Serve::WhileSnapshotting => deployment
                .make_loading(host, Arc::new(bundle))
                .map_err(
                    |e| tracing::warn!(deployment = %new.name, "{e}; making its snapshot first"),
                )
                .ok(),
        };
        let warm = match loading {
            Some(warm) => warm,
            None => deployment.make_warm(host, true).map_err(|e| {
                self.remove_unused_bundle(&digest);
                DeployError::Broken(e)
            })?,
        };
        let mut record = deployment.record();
        record.review_ms = Some(warm.pool.review_cost().as_secs_f64() * 1e3);
        deployment.set_record(record);
        Ok((deployment, warm))
    }

    /// Enables or disables `name`; returns it.
    pub async fn set_enabled(
        &self,
        name: &str,
        enabled: bool,
    ) -> Result<Arc<Deployment>, DeployError> {
        let _turn = self.changes.lock().await;
        let deployment = self
            .get(name)
            .ok_or_else(|| DeployError::NotFound(name.into()))?;
        let mut record = deployment.record();
        record.enabled = enabled;
        self.registry()?.write_record(&record)?;
        deployment.set_record(record);
        Ok(deployment)
    }

    /// Deletes `name`: its record, its sandboxes, and its bundle unless another deployment
    /// serves the same one.
    pub async fn delete(&self, name: &str) -> Result<(), DeployError> {
        let _turn = self.changes.lock().await;
        let deployment = self
            .get(name)
            .ok_or_else(|| DeployError::NotFound(name.into()))?;
        if let Some(warm) = deployment.take_warm().await {
            std::thread::spawn(move || drop(warm));
        }
        self.remove_blocking(name)
    }

    fn remove_blocking(&self, name: &str) -> Result<(), DeployError> {
        let registry = self.registry()?;
        registry.remove_record(name)?;
        let removed = self
            .all
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
        if let Some(host) = &self.host {
            host.metrics.forget(name);
        }
        if let Some(deployment) = removed {
            self.remove_unused_bundle(&deployment.record().bundle_sha256);
        }
        Ok(())
    }

    /// Removes bundle `digest` from the registry if no deployment serves it.
    fn remove_unused_bundle(&self, digest: &str) {
        let used = self
            .list()
            .iter()
            .any(|d| d.record().bundle_sha256 == digest);
        if let (false, Some(registry)) = (used, &self.registry) {
            if let Err(e) = registry.remove_bundle(digest) {
                tracing::warn!("cannot remove an unused bundle: {e}");
            }
        }
    }
}
