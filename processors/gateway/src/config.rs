//! `processors.gateway` in topology.yaml.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use tracepipe_processor::config::{positive, size, Problems, Section, SectionConfig, Size};

use crate::GatewayConfig;

/// The gateway's section, validated.
#[derive(Debug, Clone)]
pub struct GatewaySpec {
    /// Where received spans go, keyed by trace id.
    pub output: String,
    pub config: GatewayConfig,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGateway {
    output: Option<String>,
    grpc_listen: Option<String>,
    http_listen: Option<String>,
    max_request_bytes: Option<Size>,
    max_in_flight_bytes: Option<Size>,
    #[serde(default, with = "humantime_serde")]
    ack_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    retry_after: Option<Duration>,
}

impl SectionConfig for GatewaySpec {
    type Raw = RawGateway;

    fn validate(raw: RawGateway, section: &Section<'_>, problems: &mut Problems) -> Option<GatewaySpec> {
        let defaults = GatewayConfig::default();
        let output = section.topic("output", &raw.output, problems);
        let mut listen = |field: &str, value: &Option<String>, default: Option<SocketAddr>| match value.as_deref() {
            None => default,
            Some("off") | Some("") => None,
            Some(text) => text.parse().map(Some).unwrap_or_else(|_| {
                problems.add(section.at(field), format!("`{text}` is not an address like 0.0.0.0:4317 (or `off`)"));
                None
            }),
        };
        let grpc_listen = listen("grpc_listen", &raw.grpc_listen, defaults.grpc_listen);
        let http_listen = listen("http_listen", &raw.http_listen, defaults.http_listen);
        let mut bytes = |field: &str, value: Option<Size>, default: usize| size(section.at(field), value, 1..=usize::MAX, "a size like 16MiB or 1000000", problems).unwrap_or(default);
        let max_request_bytes = bytes("max_request_bytes", raw.max_request_bytes, defaults.max_request_bytes);
        let max_in_flight_bytes = bytes("max_in_flight_bytes", raw.max_in_flight_bytes, defaults.max_in_flight_bytes);
        if max_in_flight_bytes < max_request_bytes {
            problems.add(section.at("max_in_flight_bytes"), format!("must be at least max_request_bytes ({max_request_bytes}), or the largest requests could never be taken"));
        }
        let ack_timeout = positive(section.at("ack_timeout"), raw.ack_timeout, defaults.ack_timeout, problems);
        let retry_after = positive(section.at("retry_after"), raw.retry_after, defaults.retry_after, problems);
        if grpc_listen.is_none() && http_listen.is_none() {
            problems.add(section.path, "grpc_listen and http_listen are both off; remove the section instead");
        }
        let config = GatewayConfig { grpc_listen, http_listen, max_request_bytes, max_in_flight_bytes, ack_timeout, retry_after, self_trace: None };
        Some(GatewaySpec { output: output?, config })
    }
}
