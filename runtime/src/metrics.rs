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

/// Every metric the gateway exports.
pub struct Metrics {
    registry: Registry,
    /// Requests answered, by route and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Seconds from a request's arrival to its answer.
    pub latency: Histogram,
    /// Sandboxes instantiated (at start and to replace broken ones).
    pub instantiations: Counter,
    /// Sandboxes dropped: guest traps, deadlines, impossible answers, host panics.
    pub traps: Counter,
    /// Reviews waiting for a sandbox.
    pub queue_depth: Gauge,
    /// Requests turned away at once (queue full, or no answer possible in time).
    pub rejected: Counter,
    /// Requests dropped before all their reviews ran: their client left or their time was up.
    pub abandoned: Counter,
    /// Sandbox slots with a live sandbox.
    pub live_sandboxes: Gauge,
    /// Client connections open.
    pub open_connections: Gauge,
    /// Reviews per guest call (after micro-batching).
    pub batch_size: Histogram,
}

impl Metrics {
    /// Creates and registers the metrics.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("feelings");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Histogram::new(exponential_buckets(0.002, 2.0, 14));
        let instantiations = Counter::default();
        let traps = Counter::default();
        let queue_depth = Gauge::default();
        let rejected = Counter::default();
        let abandoned = Counter::default();
        let live_sandboxes = Gauge::default();
        let open_connections = Gauge::default();
        let batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 8));
        registry.register("http_requests", "HTTP requests answered", requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "Seconds from arrival to answer",
            latency.clone(),
        );
        registry.register(
            "sandbox_instantiations",
            "Sandboxes instantiated",
            instantiations.clone(),
        );
        registry.register(
            "sandbox_traps",
            "Sandboxes dropped: traps, deadlines, impossible answers, host panics",
            traps.clone(),
        );
        registry.register(
            "queue_depth",
            "Reviews waiting for a sandbox",
            queue_depth.clone(),
        );
        registry.register(
            "rejected",
            "Requests shed at once: queue full, or no answer possible in time",
            rejected.clone(),
        );
        registry.register(
            "abandoned",
            "Requests dropped before all their reviews ran (client gone or time up)",
            abandoned.clone(),
        );
        registry.register(
            "live_sandboxes",
            "Sandbox slots with a live sandbox",
            live_sandboxes.clone(),
        );
        registry.register(
            "open_connections",
            "Client connections open",
            open_connections.clone(),
        );
        registry.register(
            "guest_batch_size",
            "Reviews per guest call",
            batch_size.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            instantiations,
            traps,
            queue_depth,
            rejected,
            abandoned,
            live_sandboxes,
            open_connections,
            batch_size,
        }
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
