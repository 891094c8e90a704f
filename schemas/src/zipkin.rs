//! Zipkin v2 JSON span lists, converted to OTLP as the OpenTelemetry Collector's Zipkin receiver
//! does: 64-bit trace ids are widened, `error` and `otel.status_*` tags set the status,
//! annotations become events, the remote endpoint becomes `peer.service` and `server.address`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::attributes::{self, SERVICE_NAME};
use crate::otlp_common::any_value;
use crate::otlp_resource::Resource;
use crate::otlp_trace::{span, ResourceSpans, ScopeSpans, Span as OtlpSpan, Status};
use crate::{DecodeError, ExportTraceServiceRequest, SpanId, SpanRejection, TraceId};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ZipkinSpan {
    pub trace_id: String,
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Microseconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<u64>,
    /// Microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_endpoint: Option<Endpoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_endpoint: Option<Endpoint>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub annotations: Vec<Annotation>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debug: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Annotation {
    pub timestamp: u64,
    pub value: String,
}

pub fn decode(payload: &[u8], rejected: &mut Vec<SpanRejection>) -> Result<ExportTraceServiceRequest, DecodeError> {
    let spans: Vec<ZipkinSpan> = serde_json::from_slice(payload)
        .map_err(|e| DecodeError::Json(format!("expected a zipkin v2 span list: {e}")))?;
    let mut by_service: BTreeMap<String, Vec<OtlpSpan>> = BTreeMap::new();
    for zipkin in spans {
        let service = zipkin
            .local_endpoint
            .as_ref()
            .and_then(|e| e.service_name.clone())
            .unwrap_or_else(|| "unknown_service".into());
        match to_otlp(zipkin) {
            Ok(span) => by_service.entry(service).or_default().push(span),
            Err(rejection) => rejected.push(rejection),
        }
    }
    let resource_spans = by_service
        .into_iter()
        .map(|(service, spans)| ResourceSpans {
            resource: Some(Resource { attributes: vec![attributes::string(SERVICE_NAME, service)], ..Default::default() }),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        })
        .collect();
    Ok(ExportTraceServiceRequest { resource_spans })
}

fn to_otlp(zipkin: ZipkinSpan) -> Result<OtlpSpan, SpanRejection> {
    let trace_id = TraceId::from_hex(&zipkin.trace_id)?;
    let span_id = SpanId::from_hex(&zipkin.id)?;
    let parent_span_id = match zipkin.parent_id.as_deref() {
        None | Some("") => Vec::new(),
        Some(parent) => SpanId::from_hex(parent).map_err(|_| SpanRejection::ParentIdLength(parent.len() / 2))?.0.to_vec(),
    };
    let start = zipkin.timestamp.unwrap_or(0).saturating_mul(1000);
    let mut span = OtlpSpan {
        trace_id: trace_id.0.to_vec(),
        span_id: span_id.0.to_vec(),
        parent_span_id,
        name: zipkin.name.unwrap_or_default(),
        kind: match zipkin.kind.as_deref() {
            Some("CLIENT") => span::SpanKind::Client,
            Some("SERVER") => span::SpanKind::Server,
            Some("PRODUCER") => span::SpanKind::Producer,
            Some("CONSUMER") => span::SpanKind::Consumer,
            _ => span::SpanKind::Internal,
        } as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: start.saturating_add(zipkin.duration.unwrap_or(0).saturating_mul(1000)),
        ..Default::default()
    };
    let mut status = Status::default();
    for (key, value) in zipkin.tags {
        match key.as_str() {
            "error" => {
                status.code = 2;
                if value != "true" && !value.is_empty() {
                    status.message = value;
                }
            }
            "otel.status_code" => {
                status.code = match value.as_str() {
                    "ERROR" => 2,
                    "OK" => 1,
                    _ => status.code,
                }
            }
            "otel.status_description" => status.message = value,
            _ => span.attributes.push(attributes::string(key, value)),
        }
    }
    if let Some(remote) = zipkin.remote_endpoint {
        if let Some(name) = remote.service_name {
            span.attributes.push(attributes::string("peer.service", name));
        }
        if let Some(ip) = remote.ipv4.or(remote.ipv6) {
            span.attributes.push(attributes::string("server.address", ip));
        }
        if let Some(port) = remote.port {
            span.attributes.push(attributes::int("server.port", i64::from(port)));
        }
    }
    if status != Status::default() {
        span.status = Some(status);
    }
    span.events = zipkin
        .annotations
        .into_iter()
        .map(|a| span::Event { time_unix_nano: a.timestamp.saturating_mul(1000), name: a.value, ..Default::default() })
        .collect();
    Ok(span)
}

/// Converts OTLP spans to a Zipkin v2 list (the inverse of [`decode`]), for load generation.
pub fn from_otlp(request: &ExportTraceServiceRequest) -> Vec<ZipkinSpan> {
    let mut out = Vec::new();
    for rs in &request.resource_spans {
        let resource_attributes = rs.resource.as_ref().map(|r| r.attributes.as_slice()).unwrap_or(&[]);
        let service = attributes::find_str(resource_attributes, SERVICE_NAME).unwrap_or("unknown_service");
        for s in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
            let mut tags = BTreeMap::new();
            let mut remote = Endpoint::default();
            for kv in &s.attributes {
                let Some(value) = kv.value.as_ref().and_then(|v| v.value.as_ref()) else { continue };
                match (kv.key.as_str(), value) {
                    ("peer.service", any_value::Value::StringValue(v)) => remote.service_name = Some(v.clone()),
                    ("server.address", any_value::Value::StringValue(v)) => remote.ipv4 = Some(v.clone()),
                    ("server.port", any_value::Value::IntValue(p)) => remote.port = u16::try_from(*p).ok(),
                    (key, value) => {
                        tags.insert(key.to_string(), attributes::to_text(value));
                    }
                }
            }
            if let Some(status) = &s.status {
                if status.code == 2 {
                    tags.insert("error".into(), if status.message.is_empty() { "true".into() } else { status.message.clone() });
                }
            }
            let kind = match span::SpanKind::try_from(s.kind).unwrap_or(span::SpanKind::Unspecified) {
                span::SpanKind::Client => Some("CLIENT"),
                span::SpanKind::Server => Some("SERVER"),
                span::SpanKind::Producer => Some("PRODUCER"),
                span::SpanKind::Consumer => Some("CONSUMER"),
                _ => None,
            };
            out.push(ZipkinSpan {
                trace_id: hex::encode(&s.trace_id),
                id: hex::encode(&s.span_id),
                parent_id: (!s.parent_span_id.is_empty()).then(|| hex::encode(&s.parent_span_id)),
                name: Some(s.name.clone()),
                kind: kind.map(str::to_string),
                timestamp: Some(s.start_time_unix_nano / 1000),
                duration: Some(s.end_time_unix_nano.saturating_sub(s.start_time_unix_nano) / 1000),
                local_endpoint: Some(Endpoint { service_name: Some(service.to_string()), ..Default::default() }),
                remote_endpoint: (remote != Endpoint::default()).then_some(remote),
                annotations: s.events.iter().map(|e| Annotation { timestamp: e.time_unix_nano / 1000, value: e.name.clone() }).collect(),
                tags,
                ..Default::default()
            });
        }
    }
    out
}
