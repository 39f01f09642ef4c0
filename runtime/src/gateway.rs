//! Putting deployments behind the API: opens the registry, reads the component, builds the
//! shared engine, makes the bundle given on the command line the default deployment (checked
//! and warm) and checks that the limits can be met. `feelings-serve` is a thin shell over
//! [`start`] and [`crate::serve`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::api::{Access, AppState, Limits};
use crate::deployments::{DeployError, Deployments, Host, Registry, RegistryError};
use crate::engine::{function_cache_in, EngineOptions, SandboxEngine};
use crate::metrics::Metrics;
use crate::pool::{Gate, PoolOptions, ADMISSION_SHARE};
use crate::{SandboxError, SandboxOptions};

/// Everything the gateway needs besides its address.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// The bundle folder made by `feelings export`, served as the default deployment.
    pub model: PathBuf,
    /// The default deployment's name.
    pub default_name: String,
    /// More bundle folders deployed as the gateway starts, each under its name (e.g. the second
    /// shipped model), like the default one: kept across restarts, replaced when the folder's
    /// bundle changed.
    pub more_models: Vec<(String, PathBuf)>,
    /// The registry folder (deployments and their bundles).
    pub registry: PathBuf,
    /// The classifier component (the server build made by `web/build.sh`).
    pub component: PathBuf,
    /// The web pages' folder; `None` serves only the API.
    pub web_dir: Option<PathBuf>,
    /// How sandboxes are made.
    pub sandbox: SandboxOptions,
    /// Each deployment's slots and queue (unless its record says otherwise).
    pub pool: PoolOptions,
    /// Guest calls running at once, all deployments together (their turns are first come,
    /// first served).
    pub cores: usize,
    /// The most sandboxes alive at once, all deployments together.
    pub max_sandboxes: u32,
    /// The most bytes of compiled snapshots mapped at once (least recently used idle
    /// deployments are cooled beyond it).
    pub budget_bytes: u64,
    /// Request limits.
    pub limits: Limits,
    /// Who may call the API.
    pub access: Access,
}

/// Why the gateway cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The registry or a bundle is missing or damaged (the error names the file).
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A deployment given on the command line (the default one or another) cannot be made.
    #[error("{path}: {source}")]
    Default {
        /// The bundle folder.
        path: PathBuf,
        /// Why.
        source: DeployError,
    },
    /// The component file cannot be read.
    #[error("{path}: {source} (build it with `bash web/build.sh`, or pass --component)")]
    Component {
        /// The component's path.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The engine cannot be made.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// The limits contradict each other: a request they allow could never be answered.
    #[error("the limits cannot all hold: {0}")]
    Limits(String),
}

/// What a deployment's measured cost is checked against: a request the limits allow must be
/// answerable.
#[derive(Debug, Clone)]
pub struct LimitCheck {
    /// Slots per deployment.
    pub instances: usize,
    /// Reviews per guest call.
    pub max_batch: usize,
    /// The guest call deadline.
    pub deadline: Duration,
    /// Request limits.
    pub limits: Limits,
}

impl LimitCheck {
    /// The largest cost of one full-length review that [`Self::check`] accepts.
    pub fn slowest_review(&self) -> Duration {
        self.slowest_for_a_call().min(self.slowest_for_a_request())
    }

    /// The largest review cost at which a guest call of `max_batch` reviews meets the deadline.
    fn slowest_for_a_call(&self) -> Duration {
        self.deadline / self.max_batch.max(1) as u32
    }

    /// The largest review cost at which the largest request, spread over the deployment's
    /// sandboxes, is answered within the admission share of the timeout.
    fn slowest_for_a_request(&self) -> Duration {
        self.limits.timeout.mul_f64(
            ADMISSION_SHARE * self.instances.max(1) as f64 / self.limits.max_texts.max(1) as f64,
        )
    }

    /// Refuses limits under which a request that passes every check could still never be
    /// answered, given `review` (what one full-length review costs a sandbox, measured).
    pub fn check(&self, review: Duration) -> Result<(), String> {
        if review > self.slowest_for_a_call() {
            let call = review * self.max_batch.max(1) as u32;
            return Err(format!(
                "--deadline {:?} is shorter than one guest call of --max-batch {} full-length reviews (about {call:.2?}: {review:.2?} each, measured)",
                self.deadline, self.max_batch
            ));
        }
        if review > self.slowest_for_a_request() {
            let sandboxes = self.instances.max(1) as u32;
            let largest = review * self.limits.max_texts as u32 / sandboxes;
            return Err(format!(
                "a request of --max-texts {} full-length reviews takes about {largest:.1?} on {sandboxes} sandboxes with nothing else to do ({review:.2?} a review, measured); requests are admitted within two thirds of --timeout {:?}, so it would never be",
                self.limits.max_texts, self.limits.timeout
            ));
        }
        Ok(())
    }
}

/// Opens the registry, builds the engine, makes the bundle `options.model` the default
/// deployment (checked in a sandbox and warm), deploys `options.more_models`, and checks the
/// limits against what a review costs; returns the state for [`crate::app`].
pub fn start(options: &GatewayOptions) -> Result<Arc<AppState>, StartError> {
    check_queue(options)?;
    check_names(options)?;
    let wasm = read(&options.component)?;
    let engine = SandboxEngine::new(&EngineOptions {
        memory_limit: options.sandbox.memory_limit,
        max_sandboxes: options.max_sandboxes,
        function_cache: options.sandbox.cache_dir.as_deref().map(function_cache_in),
    })?;
    let metrics = Arc::new(Metrics::new());
    let checks = LimitCheck {
        instances: options.pool.instances,
        max_batch: options.pool.max_batch,
        deadline: options.sandbox.deadline,
        limits: options.limits.clone(),
    };
    let host = Host {
        engine,
        wasm: Arc::new(wasm),
        sandbox: options.sandbox.clone(),
        pool: PoolOptions {
            gate: Some(Arc::new(Gate::new(options.cores))),
            probe_again_above: Some(checks.slowest_review()),
            ..options.pool.clone()
        },
        metrics: metrics.clone(),
        budget_bytes: options.budget_bytes,
        snapshots: Arc::default(),
    };
    let registry = Registry::open(&options.registry)?;
    let mut deployments = Deployments::open(host, registry).map_err(|source| match source {
        DeployError::Registry(e) => StartError::Registry(e),
        other => StartError::Default {
            path: options.registry.clone(),
            source: other,
        },
    })?;
    deployments
        .set_default(&options.default_name, &options.model, |review| {
            checks.check(review)
        })
        .map_err(|source| start_error(&options.model, source))?;
    deploy_more_models(&mut deployments, options, &checks)?;
    Ok(Arc::new(AppState {
        deployments: Arc::new(deployments),
        checks,
        web_dir: options.web_dir.clone(),
        limits: options.limits.clone(),
        access: options.access.clone(),
        metrics,
    }))
}

/// Every deployment given on the command line needs a name of its own, and each folder is
/// given once: checked before anything is deployed.
fn check_names(options: &GatewayOptions) -> Result<(), StartError> {
    let same_folder = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    };
    let mut given = vec![(options.default_name.as_str(), options.model.as_path())];
    for (name, dir) in &options.more_models {
        let clash = given.iter().find(|(n, d)| n == name || same_folder(d, dir));
        if let Some((taken, first)) = clash {
            let why = if same_folder(first, dir) {
                format!("the bundle folder is given twice (also as the deployment {taken})")
            } else {
                format!(
                    "two bundles would be deployed as {name} (the other is {}): rename a folder, or give the default deployment another --name",
                    first.display()
                )
            };
            return Err(StartError::Default {
                path: dir.clone(),
                source: DeployError::Invalid(why),
            });
        }
        given.push((name, dir));
    }
    Ok(())
}

/// Deploys `options.more_models` (their names checked by [`check_names`]); returns them.
fn deploy_more_models(
    deployments: &mut Deployments,
    options: &GatewayOptions,
    checks: &LimitCheck,
) -> Result<(), StartError> {
    for (name, dir) in &options.more_models {
        deployments
            .put_bundle(name, dir, |review| checks.check(review))
            .map_err(|source| start_error(dir, source))?;
    }
    Ok(())
}

/// Why a deployment given at start (its folder `dir`) cannot be deployed: the limits, which
/// its measured cost contradicts, or the deployment.
fn start_error(dir: &Path, source: DeployError) -> StartError {
    match source {
        DeployError::Limits(refused) => {
            StartError::Limits(format!("the bundle {}: {refused}", dir.display()))
        }
        source => StartError::Default {
            path: dir.to_path_buf(),
            source,
        },
    }
}

/// The queue must hold the largest request.
fn check_queue(options: &GatewayOptions) -> Result<(), StartError> {
    let (queue, max_texts) = (options.pool.queue, options.limits.max_texts);
    if queue < max_texts {
        return Err(StartError::Limits(format!(
            "--queue {queue} reviews is less than --max-texts {max_texts}: a request of {max_texts} texts would always be turned away"
        )));
    }
    Ok(())
}

fn read(path: &Path) -> Result<Vec<u8>, StartError> {
    std::fs::read(path).map_err(|source| StartError::Component {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::LimitCheck;
    use crate::Limits;

    #[test]
    fn the_slowest_review_the_limits_take_is_the_one_their_check_accepts() {
        let ms = Duration::from_millis;
        // Each with the bound worked by hand, and the limit that sets it.
        for (instances, max_batch, deadline, max_texts, timeout, bound, refusal) in [
            // 30 s · ⅔ · 2 sandboxes / 64 reviews = 625 ms (20 s a call allows 20 s).
            (
                2,
                1,
                ms(20_000),
                64,
                ms(30_000),
                ms(625),
                "a request of --max-texts 64",
            ),
            // 2 s / 16 reviews a call = 125 ms (the request allows 312.5 ms).
            (1, 16, ms(2_000), 64, ms(30_000), ms(125), "--deadline 2s"),
            // 5 s · ⅔ · 4 / 256 = 52.083 ms (a call allows 2.5 s).
            (
                4,
                8,
                ms(20_000),
                256,
                ms(5_000),
                Duration::from_nanos(52_083_333),
                "a request",
            ),
        ] {
            let checks = LimitCheck {
                instances,
                max_batch,
                deadline,
                limits: Limits {
                    max_texts,
                    timeout,
                    ..Limits::default()
                },
            };
            let slowest = checks.slowest_review();
            assert!(
                slowest.abs_diff(bound) < Duration::from_micros(1),
                "{slowest:?}"
            );
            assert_eq!(checks.check(slowest), Ok(()));
            let refused = checks.check(slowest + Duration::from_nanos(1)).unwrap_err();
            assert!(refused.starts_with(refusal), "{refused}");
        }
    }
}
