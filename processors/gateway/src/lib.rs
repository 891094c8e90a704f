//! The OTLP gateway: OTLP/gRPC (`TraceService/Export`, port 4317) and OTLP/HTTP (`POST
//! /v1/traces`, port 4318, protobuf or JSON, optionally gzip) receivers that write
//! `tracepipe.spans` keyed by trace id, exactly as the router does.
//!
//! A request is answered success only after Kafka acknowledged every record derived from it, so
//! what a client was told is stored is stored. Everything else is answered with the protocol's
//! status, retryable or not as the OTLP specification defines:
//!
//! | condition | gRPC | HTTP |
//! |---|---|---|
//! | body is not OTLP, or not in the declared encoding | INVALID_ARGUMENT | 400 |
//! | body over `max_request_bytes` (after decompression) | RESOURCE_EXHAUSTED / OUT_OF_RANGE | 413 |
//! | over `max_in_flight_bytes` waiting for Kafka, or the producer queue full | RESOURCE_EXHAUSTED + RetryInfo | 429 + Retry-After |
//! | Kafka did not acknowledge within `ack_timeout` | UNAVAILABLE + RetryInfo | 503 + Retry-After |
//!
//! Spans with missing or malformed ids are dropped and reported in the response's
//! `partial_success` (count and reason), the rest of the request is stored.

pub mod config;
mod grpc;
mod http;
mod metrics;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracepipe_runtime::{KafkaSettings, PublishError, Publisher};
use tracepipe_schemas::otlp_collector::{ExportTracePartialSuccess, ExportTraceServiceResponse};
use tracepipe_schemas::{Encoding, SpanSplitter, SplitBatch};

pub use metrics::{GATEWAY_REQUESTS, GATEWAY_SPANS};

/// The gateway's settings, validated (see topology.yaml's `processors.gateway`).
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// OTLP/gRPC listen address; `None` disables the receiver.
    pub grpc_listen: Option<SocketAddr>,
    /// OTLP/HTTP listen address; `None` disables the receiver.
    pub http_listen: Option<SocketAddr>,
    /// Largest request body accepted, after decompression.
    pub max_request_bytes: usize,
    /// Request bytes that may wait for Kafka at once; past it requests are refused as overload.
    pub max_in_flight_bytes: usize,
    /// How long a request waits for Kafka's acknowledgement before it is answered unavailable.
    pub ack_timeout: Duration,
    /// What clients are told to wait before retrying an overloaded or unavailable request.
    pub retry_after: Duration,
    /// tracepipe's own tracing (`self_tracing` in the topology): the gateway is where records
    /// enter tracepipe past the router, so it chooses a share of the requests to follow (a
    /// `send` span each) and publishes the others' records unsampled, whatever the client sampled.
    pub self_trace: Option<tracepipe_runtime::self_trace::SelfTraceSettings>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            grpc_listen: Some(SocketAddr::from(([127, 0, 0, 1], 4317))),
            http_listen: Some(SocketAddr::from(([127, 0, 0, 1], 4318))),
            max_request_bytes: 16 << 20,
            max_in_flight_bytes: 256 << 20,
            ack_timeout: Duration::from_secs(5),
            retry_after: Duration::from_secs(1),
            self_trace: None,
        }
    }
}

/// How a request came in, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
    HttpJson,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http_protobuf",
            Protocol::HttpJson => "http_json",
        }
    }

    fn encoding(self) -> Encoding {
        match self {
            Protocol::Grpc | Protocol::HttpProtobuf => Encoding::OtlpProto,
            Protocol::HttpJson => Encoding::OtlpJson,
        }
    }
}

/// A stored request: how many spans Kafka has, and which were dropped and why.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub spans: u64,
    pub rejected_spans: u64,
    /// Why spans were rejected, e.g. `2 spans rejected: all-zero trace id (2)`.
    pub rejection: Option<String>,
}

impl Accepted {
    /// The OTLP answer, the same for gRPC and HTTP: `partial_success` only when spans were dropped.
    pub fn response(&self) -> ExportTraceServiceResponse {
        let partial_success = (self.rejected_spans > 0).then(|| ExportTracePartialSuccess {
            rejected_spans: self.rejected_spans as i64,
            error_message: self.rejection.clone().unwrap_or_default(),
        });
        ExportTraceServiceResponse { partial_success }
    }
}

/// Why a request was not stored.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{0}")]
    Invalid(String),
    #[error("request body is {size} bytes, over the gateway's limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("the gateway is overloaded ({0}); retry later")]
    Overloaded(&'static str),
    #[error("Kafka did not acknowledge the spans: {0}; retry later")]
    Unavailable(String),
    #[error("Kafka refused the spans: {0}")]
    Refused(String),
}

impl IngestError {
    fn outcome(&self) -> &'static str {
        match self {
            IngestError::Invalid(_) => "invalid",
            IngestError::TooLarge { .. } => "too_large",
            IngestError::Overloaded(_) => "overloaded",
            IngestError::Unavailable(_) => "unavailable",
            IngestError::Refused(_) => "refused",
        }
    }
}

/// A span splitter and its output buffers, reused from request to request.
#[derive(Default)]
struct Splitter {
    splitter: SpanSplitter,
    batch: SplitBatch,
}

/// The protocol-independent half of the gateway: split by trace id, publish, await acks.
pub struct Ingest {
    publisher: Publisher,
    config: GatewayConfig,
    splitters: Mutex<Vec<Splitter>>,
    /// Permits are KiB of request bodies waiting for Kafka.
    in_flight: Semaphore,
}

impl Ingest {
    pub fn new(publisher: Publisher, config: GatewayConfig) -> Ingest {
        let permits = (config.max_in_flight_bytes / 1024).max(1);
        Ingest { publisher, config, splitters: Mutex::new(Vec::new()), in_flight: Semaphore::new(permits) }
    }

    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    /// Reserves room for a request of `bytes` among those waiting for Kafka (at most
    /// `max_in_flight_bytes` in all), before its body is read; [`Reserved::grow`] adds to it
    /// when the body turns out larger (no Content-Length, or inflated).
    pub fn reserve(&self, bytes: usize) -> Result<Reserved<'_>, IngestError> {
        let mut reserved = Reserved { ingest: self, permits: Vec::new(), bytes: 0 };
        reserved.grow(bytes)?;
        Ok(reserved)
    }

    /// Stores one export request's spans; resolves once Kafka acknowledged them all. The records
    /// carry a `traceparent` continuing the request's, when it had one.
    pub async fn export(&self, protocol: Protocol, body: Bytes, traceparent: Option<&[u8]>, reserved: Reserved<'_>) -> Result<Accepted, IngestError> {
        let started = Instant::now();
        let size = body.len();
        let result = self.store(protocol, body, traceparent, reserved).await;
        metrics::record(protocol, &result, size, started.elapsed());
        if let Err(error) = &result {
            log_refusal(protocol, error);
        }
        result
    }

    async fn store(&self, protocol: Protocol, body: Bytes, traceparent: Option<&[u8]>, mut reserved: Reserved<'_>) -> Result<Accepted, IngestError> {
        if body.len() > self.config.max_request_bytes {
            return Err(IngestError::TooLarge { size: body.len(), limit: self.config.max_request_bytes });
        }
        // An empty request is a valid, empty ExportTraceServiceRequest in protobuf.
        if body.is_empty() && protocol != Protocol::HttpJson {
            return Ok(Accepted::default());
        }
        reserved.grow(body.len())?;
        let splitter = self.splitters.lock().unwrap().pop().unwrap_or_default();
        // Splitting is CPU work proportional to the body: on the blocking pool, not on the
        // reactor threads the query and admin servers share.
        let (splitter, split) = tokio::task::spawn_blocking(move || {
            let mut splitter = splitter;
            let Splitter { splitter: spans, batch } = &mut splitter;
            let split = spans.split(protocol.encoding(), &body, batch).map_err(|error| IngestError::Invalid(format!("{}: {error}", protocol.encoding())));
            (splitter, split)
        })
        .await
        .map_err(|error| IngestError::Invalid(format!("splitting the request failed: {error}")))?;
        let result = match split {
            Ok(()) => self.publish(traceparent, &splitter).await,
            Err(error) => Err(error),
        };
        self.splitters.lock().unwrap().push(splitter);
        drop(reserved);
        result
    }

    async fn publish(&self, traceparent: Option<&[u8]>, splitter: &Splitter) -> Result<Accepted, IngestError> {
        let batch = &splitter.batch;
        let records = batch.chunks.iter().map(|chunk| (&chunk.trace_id.0[..], batch.payload(chunk)));
        self.publisher.publish_all(traceparent, records).await.map_err(|error| match error {
            PublishError::QueueFull => IngestError::Overloaded("producer queue full"),
            PublishError::NotAcknowledged(error) => IngestError::Unavailable(error.to_string()),
            PublishError::Refused(error) => IngestError::Refused(error.to_string()),
        })?;
        Ok(Accepted { spans: batch.span_count(), rejected_spans: batch.rejected.len() as u64, rejection: batch.rejection_summary() })
    }

    pub fn flush(&self, timeout: Duration) {
        self.publisher.flush(timeout);
    }

    /// tracepipe's own spans waiting for their interval, published (self-tracing only).
    pub fn publish_own_spans_due(&self) {
        self.publisher.publish_own_spans_due();
    }
}

fn log_refusal(protocol: Protocol, error: &IngestError) {
    match error {
        IngestError::Unavailable(_) | IngestError::Refused(_) => tracing::warn!(protocol = protocol.as_str(), %error, "export not stored"),
        _ => tracing::debug!(protocol = protocol.as_str(), %error, "export refused"),
    }
}

/// Room held for one request's bytes among those waiting for Kafka; given back, and taken off
/// the in-flight gauge, when the request is answered, however it ends.
pub struct Reserved<'a> {
    ingest: &'a Ingest,
    permits: Vec<tokio::sync::SemaphorePermit<'a>>,
    bytes: usize,
}

impl Reserved<'_> {
    /// The bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Holds room for `bytes` in all (never less than already held).
    pub fn grow(&mut self, bytes: usize) -> Result<(), IngestError> {
        if bytes <= self.bytes {
            return Ok(());
        }
        let held_kib = self.bytes.div_ceil(1024);
        let more_kib = bytes.div_ceil(1024).max(1).saturating_sub(held_kib).max(if self.permits.is_empty() { 1 } else { 0 });
        if more_kib > 0 {
            let kib = u32::try_from(more_kib).unwrap_or(u32::MAX);
            let permit = self.ingest.in_flight.try_acquire_many(kib).map_err(|_| IngestError::Overloaded("too many bytes waiting for Kafka"))?;
            self.permits.push(permit);
        }
        metrics::IN_FLIGHT_BYTES.add((bytes - self.bytes) as i64);
        self.bytes = bytes;
        Ok(())
    }
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        metrics::IN_FLIGHT_BYTES.sub(self.bytes as i64);
    }
}

/// The addresses the running receivers listen on.
#[derive(Debug, Clone, Copy)]
pub struct Listening {
    pub grpc: Option<SocketAddr>,
    pub http: Option<SocketAddr>,
}

/// Why the gateway did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("create the gateway's Kafka producer: {0}")]
    Producer(String),
    #[error("OTLP/{protocol} receiver on {addr}: {source}")]
    Bind { protocol: &'static str, addr: SocketAddr, source: std::io::Error },
}

async fn bind(protocol: &'static str, addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), StartError> {
    let bound = async {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        Ok((listener, local))
    };
    bound.await.map_err(|source| StartError::Bind { protocol, addr, source })
}

/// This process in tracepipe's own spans: the pod's name in Kubernetes (HOSTNAME), else its pid.
fn instance_name() -> String {
    std::env::var("HOSTNAME").ok().filter(|name| !name.is_empty()).unwrap_or_else(|| format!("pid-{}", std::process::id()))
}

/// Binds both receivers and serves until `shutdown`; then flushes what is queued for Kafka.
pub async fn start(kafka: &KafkaSettings, topic: &str, config: GatewayConfig, shutdown: CancellationToken) -> Result<(Listening, tokio::task::JoinHandle<()>), StartError> {
    let publisher = Publisher::new(kafka, "gateway", topic, config.ack_timeout).map_err(|e| StartError::Producer(e.to_string()))?.self_traced(config.self_trace.clone(), &instance_name());
    let ingest = Arc::new(Ingest::new(publisher, config.clone()));
    let mut tasks = tokio::task::JoinSet::new();
    let mut listening = Listening { grpc: None, http: None };
    if let Some(addr) = config.grpc_listen {
        let (listener, local) = bind("gRPC", addr).await?;
        listening.grpc = Some(local);
        tasks.spawn(grpc::serve(listener, ingest.clone(), shutdown.clone()));
    }
    if let Some(addr) = config.http_listen {
        let (listener, local) = bind("HTTP", addr).await?;
        listening.http = Some(local);
        tasks.spawn(http::serve(listener, ingest.clone(), shutdown.clone()));
    }
    if config.self_trace.is_some() {
        let (ingest, shutdown) = (ingest.clone(), shutdown.clone());
        tasks.spawn(async move {
            let mut every_second = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = every_second.tick() => ingest.publish_own_spans_due(),
                }
            }
        });
    }
    let handle = tokio::spawn(async move {
        while tasks.join_next().await.is_some() {}
        let timeout = ingest.config().ack_timeout;
        let _ = tokio::task::spawn_blocking(move || ingest.flush(timeout)).await;
    });
    Ok((listening, handle))
}
