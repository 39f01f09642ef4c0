//! The gateway's Prometheus metrics (`GET /metrics`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The labels of a finished HTTP request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route, e.g. `/v1/classify`.
    pub route: String,
    /// The HTTP status code answered.
    pub status: u16,
}

/// The label of every per-deployment metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeploymentLabel {
    /// The deployment's name.
    pub deployment: String,
}

type HistogramFamily = Family<DeploymentLabel, Histogram, fn() -> Histogram>;

/// Every metric the gateway exports: HTTP requests by route and status, and per deployment
/// its sandboxes, queue and answers (labelled `deployment`).
pub struct Metrics {
    registry: Registry,
    /// Requests answered, by route and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Seconds from a request's arrival to its answer.
    pub latency: Histogram,
    /// Client connections open.
    pub open_connections: Gauge,
    /// Deployments whose compiled snapshot is mapped (warm).
    pub warm_deployments: Gauge,
    /// Snapshots mapped on a request to a cold deployment, and unmapped again (LRU budget or
    /// idle time).
    pub snapshot_loads: Counter,
    /// Snapshots unmapped.
    pub snapshot_unloads: Counter,
    instantiations: Family<DeploymentLabel, Counter>,
    traps: Family<DeploymentLabel, Counter>,
    queue_depth: Family<DeploymentLabel, Gauge>,
    rejected: Family<DeploymentLabel, Counter>,
    abandoned: Family<DeploymentLabel, Counter>,
    live_sandboxes: Family<DeploymentLabel, Gauge>,
    batch_size: HistogramFamily,
    classify_latency: HistogramFamily,
}

/// One deployment's metrics, as its pool and handlers update them.
#[derive(Clone)]
pub struct PoolMetrics {
    /// Sandboxes instantiated.
    pub instantiations: Counter,
    /// Sandboxes dropped: guest traps, deadlines, impossible answers, host panics.
    pub traps: Counter,
    /// Reviews waiting for a sandbox.
    pub queue_depth: Gauge,
    /// Requests turned away at once (queue full, or no answer possible in time).
    pub rejected: Counter,
    /// Requests dropped before all their reviews ran: their client left or their time was up.
    pub abandoned: Counter,
    /// Sandboxes alive now (while they classify, or kept with --reuse-sandboxes).
    pub live_sandboxes: Gauge,
    /// Reviews per guest call (after micro-batching).
    pub batch_size: Histogram,
    /// Seconds from a classify request's arrival to its answer.
    pub classify_latency: Histogram,
}

fn latency_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.002, 2.0, 14))
}

fn batch_buckets() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 8))
}

impl Metrics {
    /// Creates and registers the metrics.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("feelings");
        let metrics = Self {
            requests: Family::default(),
            latency: latency_buckets(),
            open_connections: Gauge::default(),
            warm_deployments: Gauge::default(),
            snapshot_loads: Counter::default(),
            snapshot_unloads: Counter::default(),
            instantiations: Family::default(),
            traps: Family::default(),
            queue_depth: Family::default(),
            rejected: Family::default(),
            abandoned: Family::default(),
            live_sandboxes: Family::default(),
            batch_size: Family::new_with_constructor(batch_buckets),
            classify_latency: Family::new_with_constructor(latency_buckets),
            registry: Registry::default(),
        };
        let m = &metrics;
        let r = &mut registry;
        r.register(
            "http_requests",
            "HTTP requests answered",
            m.requests.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "Seconds from arrival to answer",
            m.latency.clone(),
        );
        r.register(
            "open_connections",
            "Client connections open",
            m.open_connections.clone(),
        );
        r.register(
            "warm_deployments",
            "Deployments whose compiled snapshot is mapped",
            m.warm_deployments.clone(),
        );
        r.register(
            "snapshot_loads",
            "Snapshots mapped for a cold deployment",
            m.snapshot_loads.clone(),
        );
        r.register(
            "snapshot_unloads",
            "Snapshots unmapped (memory budget or idle)",
            m.snapshot_unloads.clone(),
        );
        r.register(
            "sandbox_instantiations",
            "Sandboxes instantiated",
            m.instantiations.clone(),
        );
        r.register(
            "sandbox_traps",
            "Sandboxes dropped: traps, deadlines, impossible answers, host panics",
            m.traps.clone(),
        );
        r.register(
            "queue_depth",
            "Reviews waiting for a sandbox",
            m.queue_depth.clone(),
        );
        r.register(
            "rejected",
            "Requests shed at once: queue full, or no answer possible in time",
            m.rejected.clone(),
        );
        r.register(
            "abandoned",
            "Requests dropped before all their reviews ran (client gone or time up)",
            m.abandoned.clone(),
        );
        r.register(
            "live_sandboxes",
            "Sandboxes alive",
            m.live_sandboxes.clone(),
        );
        r.register(
            "guest_batch_size",
            "Reviews per guest call",
            m.batch_size.clone(),
        );
        r.register(
            "classify_duration_seconds",
            "Seconds from a classify request's arrival to its answer",
            m.classify_latency.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }

    /// The metrics of deployment `name` (made at first use).
    pub fn deployment(&self, name: &str) -> PoolMetrics {
        let label = DeploymentLabel {
            deployment: name.to_string(),
        };
        PoolMetrics {
            instantiations: self.instantiations.get_or_create(&label).clone(),
            traps: self.traps.get_or_create(&label).clone(),
            queue_depth: self.queue_depth.get_or_create(&label).clone(),
            rejected: self.rejected.get_or_create(&label).clone(),
            abandoned: self.abandoned.get_or_create(&label).clone(),
            live_sandboxes: self.live_sandboxes.get_or_create(&label).clone(),
            batch_size: self.batch_size.get_or_create(&label).clone(),
            classify_latency: self.classify_latency.get_or_create(&label).clone(),
        }
    }

    /// Removes a deleted deployment's series.
    pub fn forget(&self, name: &str) {
        let label = DeploymentLabel {
            deployment: name.to_string(),
        };
        self.instantiations.remove(&label);
        self.traps.remove(&label);
        self.queue_depth.remove(&label);
        self.rejected.remove(&label);
        self.abandoned.remove(&label);
        self.live_sandboxes.remove(&label);
        self.batch_size.remove(&label);
        self.classify_latency.remove(&label);
    }

    /// The metrics in Prometheus' text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
