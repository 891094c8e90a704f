//! Head sampling: always, parent-based by ratio, or parent-based with per-operation
//! probabilities fetched from a sampling endpoint in Jaeger's remote-sampling format — tracepipe's
//! query server computes them from the traffic it observed toward a target of traces per second
//! per operation (`GET /api/sampling?service=NAME`), as Jaeger's adaptive sampling does; Jaeger's
//! own collector endpoint works too.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use opentelemetry::trace::{Link, SpanKind, TraceId};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{Sampler, SamplingResult, ShouldSample};
use serde::Deserialize;

#[derive(Debug, Clone)]
pub enum Sampling {
    AlwaysOn,
    /// Parent-based; new traces kept with this probability, decided on the trace id.
    Ratio(f64),
    /// Parent-based; new traces kept with their root operation's probability from `url`.
    Remote(RemoteSampling),
}

#[derive(Debug, Clone)]
pub struct RemoteSampling {
    /// e.g. `http://tracepipe-query:16686/api/sampling`; `?service=NAME` is appended.
    pub url: String,
    /// Used until the first answer, and for operations the answer does not name.
    pub default_ratio: f64,
    pub refresh: Duration,
    /// Sent as `Authorization: Bearer …`, for a query server that wants a token.
    pub bearer_token: Option<String>,
}

impl RemoteSampling {
    pub fn new(url: impl Into<String>) -> RemoteSampling {
        RemoteSampling { url: url.into(), default_ratio: 1.0, refresh: Duration::from_secs(60), bearer_token: None }
    }

    /// Reads the OpenTelemetry SDKs' `jaeger_remote` sampler argument:
    /// `endpoint=URL,pollingIntervalMs=N,initialSamplingRate=P`, each optional; the endpoint
    /// defaults to a local query server.
    pub fn from_sampler_argument(argument: &str) -> RemoteSampling {
        let mut remote = RemoteSampling::new("http://127.0.0.1:16686/api/sampling");
        for pair in argument.split(',') {
            let Some((key, value)) = pair.split_once('=') else { continue };
            let value = value.trim();
            match key.trim() {
                "endpoint" => remote.url = value.to_string(),
                "pollingIntervalMs" => {
                    if let Ok(ms) = value.parse::<u64>() {
                        remote.refresh = Duration::from_millis(ms.max(100));
                    }
                }
                "initialSamplingRate" => {
                    if let Ok(rate) = value.parse::<f64>() {
                        remote.default_ratio = rate;
                    }
                }
                _ => {}
            }
        }
        remote
    }
}

impl Sampling {
    /// The sampling that `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` name, as the
    /// OpenTelemetry SDK configuration specifies them: `always_on`, `always_off`, `traceidratio`
    /// (the argument is the ratio, 1 when missing), `jaeger_remote` (the argument is
    /// `endpoint=…,pollingIntervalMs=…,initialSamplingRate=…`), each also as `parentbased_…`.
    /// Every sampling here is parent-based, so the plain names are read as their parent-based
    /// ones: a service never breaks a trace it continues. Unset, a ratio argument alone is used;
    /// else every trace is kept. An unknown name is returned as the error.
    pub fn from_otel_env(sampler: Option<&str>, argument: &str) -> Result<Sampling, String> {
        let ratio = || argument.trim().parse::<f64>().ok();
        match sampler.map(str::trim).map(|s| s.strip_prefix("parentbased_").unwrap_or(s)) {
            None | Some("") => Ok(ratio().map_or(Sampling::AlwaysOn, Sampling::Ratio)),
            Some("always_on") => Ok(Sampling::AlwaysOn),
            Some("always_off") => Ok(Sampling::Ratio(0.0)),
            Some("traceidratio") => Ok(Sampling::Ratio(ratio().unwrap_or(1.0))),
            Some("jaeger_remote") => Ok(Sampling::Remote(RemoteSampling::from_sampler_argument(argument))),
            Some(_) => Err(sampler.unwrap_or_default().to_string()),
        }
    }

    pub(crate) fn sampler(&self, service: &str) -> Result<Box<dyn ShouldSample>, String> {
        match self {
            Sampling::AlwaysOn => Ok(Box::new(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))),
            Sampling::Ratio(ratio) if (0.0..=1.0).contains(ratio) => Ok(Box::new(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(*ratio))))),
            Sampling::Ratio(ratio) => Err(format!("ratio must be between 0 and 1, got {ratio}")),
            Sampling::Remote(remote) => {
                if !(0.0..=1.0).contains(&remote.default_ratio) {
                    return Err(format!("default ratio must be between 0 and 1, got {}", remote.default_ratio));
                }
                let sampler = AdaptiveSampler::new(remote.default_ratio);
                let separator = if remote.url.contains('?') { '&' } else { '?' };
                let url = format!("{}{separator}service={}", remote.url, encode_query_value(service));
                sampler.poll(url, remote.refresh, remote.bearer_token.clone());
                // Not `Sampler::ParentBased`, which keeps only the root sampler's decision and
                // would drop the `sampler.param` it records.
                Ok(Box::new(Sampler::parent_based(sampler)))
            }
        }
    }
}

/// Percent-encodes what is not unreserved in a URL query value (service names may hold spaces or `&`).
fn encode_query_value(value: &str) -> String {
    let mut encoded = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => encoded.push(byte as char),
            _ => encoded.push_str(&format!("%{byte:02X}")),
        }
    }
    encoded
}

/// Per-operation probabilities, replaced whenever the endpoint answers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Strategies {
    pub default_probability: f64,
    pub per_operation: HashMap<String, f64>,
}

impl Strategies {
    /// Reads Jaeger's `SamplingStrategyResponse` JSON.
    pub fn from_jaeger_json(body: &[u8]) -> Result<Strategies, String> {
        let response: StrategyResponse = serde_json::from_slice(body).map_err(|e| format!("not a sampling strategy: {e}"))?;
        let default_probability = response
            .operation_sampling
            .as_ref()
            .map(|o| o.default_sampling_probability)
            .or(response.probabilistic_sampling.as_ref().map(|p| p.sampling_rate))
            .ok_or("the strategy has neither operationSampling nor probabilisticSampling")?;
        let per_operation = response
            .operation_sampling
            .map(|o| o.per_operation_strategies.into_iter().map(|s| (s.operation, s.probabilistic_sampling.sampling_rate.clamp(0.0, 1.0))).collect())
            .unwrap_or_default();
        Ok(Strategies { default_probability: default_probability.clamp(0.0, 1.0), per_operation })
    }

    pub fn probability(&self, operation: &str) -> f64 {
        self.per_operation.get(operation).copied().unwrap_or(self.default_probability)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StrategyResponse {
    probabilistic_sampling: Option<Probabilistic>,
    operation_sampling: Option<OperationSampling>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probabilistic {
    sampling_rate: f64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OperationSampling {
    default_sampling_probability: f64,
    #[serde(default)]
    per_operation_strategies: Vec<OperationStrategy>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OperationStrategy {
    operation: String,
    probabilistic_sampling: Probabilistic,
}

/// Decides a new trace by its root span's name, with that operation's probability, on the trace
/// id (so it agrees with any TraceIdRatioBased sampler given the same probability). Kept roots
/// carry `sampler.type` and `sampler.param`, as Jaeger clients record, so the server can tell
/// observed rates from actual ones.
#[derive(Debug, Clone)]
pub struct AdaptiveSampler {
    strategies: Arc<RwLock<Strategies>>,
}

impl AdaptiveSampler {
    pub fn new(default_probability: f64) -> AdaptiveSampler {
        AdaptiveSampler { strategies: Arc::new(RwLock::new(Strategies { default_probability, per_operation: HashMap::new() })) }
    }

    pub fn update(&self, strategies: Strategies) {
        *self.strategies.write().unwrap() = strategies;
    }

    /// Fetches `url` every `refresh` on a thread of its own, for as long as the sampler lives.
    fn poll(&self, url: String, refresh: Duration, bearer_token: Option<String>) {
        let strategies: Weak<RwLock<Strategies>> = Arc::downgrade(&self.strategies);
        let spawned = std::thread::Builder::new().name("sampling-poller".into()).spawn(move || {
            let client = match reqwest::blocking::Client::builder().timeout(Duration::from_secs(5)).build() {
                Ok(client) => client,
                Err(error) => return tracing::warn!(%error, "sampling: no HTTP client"),
            };
            loop {
                let Some(target) = strategies.upgrade() else { return };
                let mut request = client.get(&url);
                if let Some(token) = &bearer_token {
                    request = request.bearer_auth(token);
                }
                let fetched = request.send().and_then(|r| r.error_for_status()).and_then(|r| r.bytes());
                match fetched.map_err(|e| e.to_string()).and_then(|body| Strategies::from_jaeger_json(&body)) {
                    Ok(fresh) => *target.write().unwrap() = fresh,
                    Err(error) => tracing::debug!(%error, %url, "sampling strategies not refreshed; keeping the last ones"),
                }
                drop(target);
                std::thread::sleep(refresh);
            }
        });
        if let Err(error) = spawned {
            tracing::warn!(%error, "sampling: cannot start the poller; the default probability applies");
        }
    }
}

impl ShouldSample for AdaptiveSampler {
    fn should_sample(&self, parent_context: Option<&Context>, trace_id: TraceId, name: &str, span_kind: &SpanKind, attributes: &[KeyValue], links: &[Link]) -> SamplingResult {
        let probability = self.strategies.read().unwrap().probability(name);
        let mut result = Sampler::TraceIdRatioBased(probability).should_sample(parent_context, trace_id, name, span_kind, attributes, links);
        result.attributes.push(KeyValue::new("sampler.type", "probabilistic"));
        result.attributes.push(KeyValue::new("sampler.param", probability));
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_sdks_sampler_names() {
        let ratio = |s: Sampling| match s {
            Sampling::Ratio(r) => Some(r),
            _ => None,
        };
        assert!(matches!(Sampling::from_otel_env(None, ""), Ok(Sampling::AlwaysOn)));
        assert_eq!(ratio(Sampling::from_otel_env(None, "0.25").unwrap()), Some(0.25));
        assert!(matches!(Sampling::from_otel_env(Some("always_on"), ""), Ok(Sampling::AlwaysOn)));
        assert!(matches!(Sampling::from_otel_env(Some("parentbased_always_on"), "0.5"), Ok(Sampling::AlwaysOn)));
        assert_eq!(ratio(Sampling::from_otel_env(Some("always_off"), "").unwrap()), Some(0.0));
        assert_eq!(ratio(Sampling::from_otel_env(Some("parentbased_always_off"), "").unwrap()), Some(0.0));
        assert_eq!(ratio(Sampling::from_otel_env(Some("traceidratio"), "0.1").unwrap()), Some(0.1));
        assert_eq!(ratio(Sampling::from_otel_env(Some("parentbased_traceidratio"), "").unwrap()), Some(1.0));
        match Sampling::from_otel_env(Some("parentbased_jaeger_remote"), "endpoint=http://q:16686/api/sampling,initialSamplingRate=0.5") {
            Ok(Sampling::Remote(remote)) => assert_eq!((remote.url.as_str(), remote.default_ratio), ("http://q:16686/api/sampling", 0.5)),
            other => panic!("{other:?}"),
        }
        assert_eq!(Sampling::from_otel_env(Some("xray"), "").unwrap_err(), "xray");
    }

    #[test]
    fn reads_jaeger_strategies() {
        let body = br#"{"strategyType":"PROBABILISTIC","probabilisticSampling":{"samplingRate":0.5},
            "operationSampling":{"defaultSamplingProbability":0.25,"perOperationStrategies":[
              {"operation":"GET /items","probabilisticSampling":{"samplingRate":0.01}}]}}"#;
        let strategies = Strategies::from_jaeger_json(body).unwrap();
        assert_eq!(strategies.probability("GET /items"), 0.01);
        assert_eq!(strategies.probability("POST /checkout"), 0.25);
        let plain = Strategies::from_jaeger_json(br#"{"strategyType":"PROBABILISTIC","probabilisticSampling":{"samplingRate":0.5}}"#).unwrap();
        assert_eq!(plain.probability("x"), 0.5);
        assert!(Strategies::from_jaeger_json(b"{}").is_err());
        assert!(Strategies::from_jaeger_json(b"<html>").is_err());
    }

    #[test]
    fn reads_the_sdks_remote_sampler_argument() {
        let remote = RemoteSampling::from_sampler_argument("endpoint=http://query:16686/api/sampling, pollingIntervalMs=5000,initialSamplingRate=0.25,unknown=1");
        assert_eq!(remote.url, "http://query:16686/api/sampling");
        assert_eq!(remote.refresh, Duration::from_secs(5));
        assert_eq!(remote.default_ratio, 0.25);
        let defaults = RemoteSampling::from_sampler_argument("");
        assert_eq!((defaults.url.as_str(), defaults.default_ratio), ("http://127.0.0.1:16686/api/sampling", 1.0));
        assert_eq!(encode_query_value("shop front&co"), "shop%20front%26co");
    }

    #[test]
    fn kept_roots_record_their_probability() {
        let sampler = Sampling::Remote(RemoteSampling { default_ratio: 1.0, ..RemoteSampling::new("http://127.0.0.1:9/api/sampling") }).sampler("svc").unwrap();
        let root = sampler.should_sample(None, TraceId::from(7u128), "GET /", &SpanKind::Server, &[], &[]);
        assert_eq!(root.decision, opentelemetry_sdk::trace::SamplingDecision::RecordAndSample);
        assert!(root.attributes.contains(&KeyValue::new("sampler.param", 1.0)), "{:?}", root.attributes);
    }

    #[test]
    fn per_operation_probabilities_decide_roots() {
        let sampler = AdaptiveSampler::new(1.0);
        sampler.update(Strategies { default_probability: 1.0, per_operation: HashMap::from([("noisy".to_string(), 0.0)]) });
        let decide = |name: &str, id: u128| sampler.should_sample(None, TraceId::from(id), name, &SpanKind::Server, &[], &[]).decision;
        let kept = |name: &str| (1..=1000u128).filter(|i| decide(name, i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)) == opentelemetry_sdk::trace::SamplingDecision::RecordAndSample).count();
        assert_eq!(kept("noisy"), 0);
        assert_eq!(kept("quiet"), 1000);
    }
}
