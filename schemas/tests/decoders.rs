//! Decoders and the splitter against well-formed, hostile and random input.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use prost::Message;
use tracepipe_schemas::otlp_common::InstrumentationScope;
use tracepipe_schemas::otlp_resource::Resource;
use tracepipe_schemas::otlp_trace::{span, ResourceSpans, ScopeSpans, Span, Status};
use tracepipe_schemas::split::SplitBatch;
use tracepipe_schemas::v1::TraceSpans;
use tracepipe_schemas::{attributes, jaeger, otlp_json, zipkin, DecodeError, Encoding, ExportTraceServiceRequest, SpanRejection, SpanSplitter};

fn trace_id(n: u8) -> Vec<u8> {
    let mut id = vec![0u8; 16];
    id[0] = 0xab;
    id[15] = n;
    id
}

fn make_span(trace: u8, id: u8, parent: Option<u8>) -> Span {
    Span {
        trace_id: trace_id(trace),
        span_id: vec![trace, id, 1, 1, 1, 1, 1, 1],
        parent_span_id: parent.map(|p| vec![trace, p, 1, 1, 1, 1, 1, 1]).unwrap_or_default(),
        name: format!("op-{id}"),
        kind: span::SpanKind::Server as i32,
        start_time_unix_nano: 1_700_000_000_000_000_000 + u64::from(id) * 1000,
        end_time_unix_nano: 1_700_000_000_000_000_000 + u64::from(id) * 1000 + 5_000_000,
        attributes: vec![attributes::string("http.route", "/cart"), attributes::int("http.response.status_code", 200)],
        status: Some(Status { code: 2, message: "boom".into() }),
        events: vec![span::Event { name: "exception".into(), time_unix_nano: 1_700_000_000_000_000_100, ..Default::default() }],
        ..Default::default()
    }
}

fn request(resources: Vec<(&str, Vec<Vec<Span>>)>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: resources
            .into_iter()
            .map(|(service, scopes)| ResourceSpans {
                resource: Some(Resource { attributes: vec![attributes::string("service.name", service)], ..Default::default() }),
                scope_spans: scopes
                    .into_iter()
                    .enumerate()
                    .map(|(i, spans)| ScopeSpans {
                        scope: Some(InstrumentationScope { name: format!("scope-{i}"), ..Default::default() }),
                        spans,
                        schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
                    })
                    .collect(),
                schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
            })
            .collect(),
    }
}

/// (trace id, service, scope name, span) of every span, as a comparable set.
fn flatten(resource_spans: &[ResourceSpans]) -> BTreeSet<(Vec<u8>, String, String, Vec<u8>)> {
    let mut out = BTreeSet::new();
    for rs in resource_spans {
        let service = attributes::find_str(&rs.resource.as_ref().unwrap().attributes, "service.name").unwrap().to_string();
        for ss in &rs.scope_spans {
            let scope = ss.scope.as_ref().map(|s| s.name.clone()).unwrap_or_default();
            for s in &ss.spans {
                out.insert((s.trace_id.clone(), service.clone(), scope.clone(), s.encode_to_vec()));
            }
        }
    }
    out
}

fn split(encoding: Encoding, payload: &[u8]) -> Result<SplitBatch, DecodeError> {
    let mut splitter = SpanSplitter::new(1 << 20);
    let mut batch = SplitBatch::default();
    splitter.split(encoding, payload, &mut batch).map(|_| batch)
}

fn chunks(batch: &SplitBatch) -> Vec<TraceSpans> {
    batch.chunks.iter().map(|c| {
        let decoded = TraceSpans::decode(batch.payload(c)).unwrap();
        assert_eq!(decoded.trace_id, c.trace_id.0);
        assert_eq!(decoded.span_count(), c.span_count as usize);
        decoded
    }).collect()
}

#[test]
fn otlp_proto_splits_by_trace_keeping_resource_and_scope() {
    let req = request(vec![
        ("checkout", vec![vec![make_span(1, 1, None), make_span(2, 1, None), make_span(1, 2, Some(1))], vec![make_span(3, 1, None)]]),
        ("payments", vec![vec![make_span(2, 2, Some(1)), make_span(1, 3, Some(2))]]),
    ]);
    let batch = split(Encoding::OtlpProto, &req.encode_to_vec()).unwrap();
    assert!(batch.rejected.is_empty());
    let traces = chunks(&batch);
    assert_eq!(traces.len(), 3);
    let all: Vec<ResourceSpans> = traces.iter().flat_map(|t| t.resource_spans.clone()).collect();
    assert_eq!(flatten(&all), flatten(&req.resource_spans));
    for t in &traces {
        for s in t.resource_spans.iter().flat_map(|rs| &rs.scope_spans).flat_map(|ss| &ss.spans) {
            assert_eq!(s.trace_id, t.trace_id);
        }
        assert!(t.resource_spans.iter().all(|rs| rs.schema_url.ends_with("1.26.0")));
    }
    let first = &traces[0];
    assert_eq!(first.trace_id, trace_id(1));
    assert_eq!(first.resource_spans.len(), 2, "trace 1 has spans in two resources");
}

/// One trace of 2.4 MB in one request: several payloads of that trace, each within the chunk
/// limit, holding every span once with its resource and scope.
#[test]
fn an_enormous_trace_is_split_into_bounded_payloads() {
    let big = |trace: u8, id: u8| {
        let mut span = make_span(trace, id, Some(1));
        span.attributes.push(attributes::string("db.statement", &"x".repeat(12_000)));
        span
    };
    let req = request(vec![
        ("checkout", vec![(1..=100).map(|id| big(1, id)).collect(), vec![make_span(2, 1, None)]]),
        ("payments", vec![(101..=200).map(|id| big(1, id)).collect()]),
    ]);
    let payload = req.encode_to_vec();
    assert!(payload.len() > 2_400_000);
    let mut splitter = SpanSplitter::new(16 << 20);
    let mut batch = SplitBatch::default();
    splitter.split(Encoding::OtlpProto, &payload, &mut batch).unwrap();
    let limit = tracepipe_schemas::split::MAX_CHUNK_BYTES;
    let of_big: Vec<_> = batch.chunks.iter().filter(|c| c.trace_id.0 == trace_id(1)[..]).collect();
    assert!(of_big.len() >= 5, "{} payloads", of_big.len());
    for chunk in &of_big {
        assert!(chunk.payload.len() <= limit, "payload of {} bytes over {limit}", chunk.payload.len());
    }
    let traces = chunks(&batch);
    let all: Vec<ResourceSpans> = traces.iter().flat_map(|t| t.resource_spans.clone()).collect();
    let mut every = Vec::new();
    for t in &traces {
        every.extend(t.resource_spans.iter().flat_map(|rs| &rs.scope_spans).flat_map(|ss| &ss.spans).map(|s| s.span_id.clone()));
    }
    assert_eq!(every.len(), 201, "every span once");
    assert_eq!(flatten(&all), flatten(&req.resource_spans));
}

#[test]
fn invalid_ids_are_rejected_with_reason_and_the_rest_routed() {
    let mut zero = make_span(1, 9, None);
    zero.trace_id = vec![0; 16];
    let mut short = make_span(1, 8, None);
    short.trace_id = vec![1; 8];
    let mut zero_span = make_span(1, 7, None);
    zero_span.span_id = vec![0; 8];
    let mut bad_parent = make_span(1, 6, None);
    bad_parent.parent_span_id = vec![1, 2, 3];
    let req = request(vec![("a", vec![vec![zero, short, make_span(4, 1, None), zero_span, bad_parent]])]);
    let batch = split(Encoding::OtlpProto, &req.encode_to_vec()).unwrap();
    assert_eq!(batch.span_count(), 1);
    assert_eq!(
        batch.rejected,
        vec![SpanRejection::ZeroTraceId, SpanRejection::TraceIdLength(8), SpanRejection::ZeroSpanId, SpanRejection::ParentIdLength(3)]
    );
    assert!(batch.rejection_summary().unwrap().starts_with("4 spans rejected: all-zero trace id (1)"));
}

#[test]
fn garbage_is_a_clear_error() {
    assert_eq!(split(Encoding::OtlpProto, b"").unwrap_err(), DecodeError::Empty);
    assert!(matches!(split(Encoding::OtlpProto, &[0xff; 64]).unwrap_err(), DecodeError::Protobuf { .. }));
    assert!(matches!(split(Encoding::OtlpProto, b"{\"resourceSpans\":[").unwrap_err(), DecodeError::Json(_)));
    assert!(matches!(split(Encoding::OtlpJson, &make_span(1, 1, None).encode_to_vec()).unwrap_err(), DecodeError::Json(_)));
    assert!(matches!(split(Encoding::ZipkinJson, b"{\"traceId\":\"1\"}").unwrap_err(), DecodeError::Json(_)));
    assert!(matches!(split(Encoding::JaegerProto, b"\x0a\xff\xff\xff").unwrap_err(), DecodeError::Protobuf { .. }));
    assert!(matches!(split(Encoding::OtlpProto, &vec![0x0a; 2 << 20]).unwrap_err(), DecodeError::TooLarge { .. }));
    let mut bad_name = make_span(1, 1, None);
    bad_name.name = "x".repeat(3);
    let mut bytes = request(vec![("a", vec![vec![bad_name]])]).encode_to_vec();
    let at = bytes.windows(3).position(|w| w == b"xxx").unwrap();
    bytes[at] = 0xff;
    let err = split(Encoding::OtlpProto, &bytes).unwrap_err();
    assert!(err.to_string().contains("UTF-8"), "{err}");
}

#[test]
fn every_truncation_errors_or_routes_a_subset() {
    let req = request(vec![("a", vec![vec![make_span(1, 1, None), make_span(2, 2, None)]])]);
    let bytes = req.encode_to_vec();
    for len in 1..bytes.len() {
        if let Ok(batch) = split(Encoding::OtlpProto, &bytes[..len]) {
            assert!(batch.span_count() <= 2);
            chunks(&batch);
        }
    }
    let json = otlp_json::encode(&req);
    for len in 0..json.len() {
        let _ = split(Encoding::OtlpJson, &json[..len]);
    }
}

#[test]
fn otlp_json_jaeger_and_zipkin_normalize_to_the_same_spans() {
    let req = request(vec![("checkout", vec![vec![make_span(1, 1, None), make_span(1, 2, Some(1))]])]);

    let json = split(Encoding::OtlpJson, &otlp_json::encode(&req)).unwrap();
    assert_eq!(flatten(&chunks(&json)[0].resource_spans), flatten(&req.resource_spans));
    let json_on_proto_topic = split(Encoding::OtlpProto, &otlp_json::encode(&req)).unwrap();
    assert_eq!(flatten(&chunks(&json_on_proto_topic)[0].resource_spans), flatten(&req.resource_spans));

    for jaeger_span in jaeger::from_otlp(&req) {
        let batch = split(Encoding::JaegerProto, &jaeger_span.encode_to_vec()).unwrap();
        let trace = &chunks(&batch)[0];
        let rs = &trace.resource_spans[0];
        assert_eq!(rs.resource.as_ref().unwrap().attributes[0].key, "service.name");
        let s = &rs.scope_spans[0].spans[0];
        let original = req.resource_spans[0].scope_spans[0].spans.iter().find(|o| o.span_id == s.span_id).unwrap();
        assert_eq!((s.kind, &s.parent_span_id, s.start_time_unix_nano, s.end_time_unix_nano), (original.kind, &original.parent_span_id, original.start_time_unix_nano, original.end_time_unix_nano));
        assert_eq!(s.status.as_ref().unwrap().code, 2);
        assert_eq!(s.events[0].name, "exception");
        assert_eq!(rs.scope_spans[0].scope.as_ref().unwrap().name, "scope-0");
    }

    let zipkin_json = serde_json::to_vec(&zipkin::from_otlp(&req)).unwrap();
    let batch = split(Encoding::ZipkinJson, &zipkin_json).unwrap();
    let s = &chunks(&batch)[0].resource_spans[0].scope_spans[0].spans[1];
    assert_eq!(s.parent_span_id, req.resource_spans[0].scope_spans[0].spans[1].parent_span_id);
    assert_eq!(s.status.as_ref().unwrap().message, "boom");
    assert_eq!(s.end_time_unix_nano - s.start_time_unix_nano, 5_000_000);
}

#[test]
fn zipkin_64_bit_ids_and_bad_ids() {
    let list = br#"[{"traceId":"463ac35c9f6413ad","id":"a2fb4a1d1a96d312","name":"get","timestamp":1,"duration":2,"localEndpoint":{"serviceName":"web"},"remoteEndpoint":{"serviceName":"db","port":5432},"tags":{"error":"timeout"}},
                    {"traceId":"00000000000000000000000000000000","id":"a2fb4a1d1a96d312"},
                    {"traceId":"463ac35c9f6413ad","id":"nothex!!nothex!!"}]"#;
    let batch = split(Encoding::ZipkinJson, list).unwrap();
    assert_eq!(batch.span_count(), 1);
    assert_eq!(batch.rejected, vec![SpanRejection::ZeroTraceId, SpanRejection::NotHex]);
    assert_eq!(batch.chunks[0].trace_id.to_hex(), "0000000000000000463ac35c9f6413ad");
    let s = &chunks(&batch)[0].resource_spans[0].scope_spans[0].spans[0];
    assert_eq!(attributes::find_str(&s.attributes, "peer.service"), Some("db"));
    assert_eq!(s.status.as_ref().unwrap().message, "timeout");
}

fn arb_request() -> impl Strategy<Value = ExportTraceServiceRequest> {
    let span = (0u8..6, 1u8..40, proptest::option::of(1u8..40), any::<bool>()).prop_map(|(t, id, parent, zero)| {
        let mut s = make_span(t, id, parent);
        if zero {
            s.trace_id = vec![0; 16];
        }
        s
    });
    let scope = proptest::collection::vec(span, 0..8);
    let resource = ("[a-c]", proptest::collection::vec(scope, 0..3));
    proptest::collection::vec(resource, 0..4).prop_map(|resources| {
        request(resources.iter().map(|(s, scopes)| (s.as_str(), scopes.clone())).collect())
    })
}

proptest! {
    #[test]
    fn split_routes_every_valid_span_exactly_once(req in arb_request()) {
        let bytes = req.encode_to_vec();
        prop_assume!(!bytes.is_empty());
        let batch = split(Encoding::OtlpProto, &bytes).unwrap();
        let traces = chunks(&batch);
        let mut seen: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
        for t in &traces {
            *seen.entry(t.trace_id.clone()).or_default() += 1;
        }
        prop_assert!(seen.values().all(|&n| n == 1), "one chunk per trace");
        let all: Vec<ResourceSpans> = traces.iter().flat_map(|t| t.resource_spans.clone()).collect();
        let routed: Vec<_> = all.iter().flat_map(|rs| &rs.scope_spans).flat_map(|ss| &ss.spans).cloned().collect();
        let mut expected: Vec<Span> = req.resource_spans.iter().flat_map(|rs| &rs.scope_spans).flat_map(|ss| &ss.spans).filter(|s| s.trace_id != vec![0; 16]).cloned().collect();
        let mut routed_sorted = routed.clone();
        routed_sorted.sort_by_key(|s| s.encode_to_vec());
        expected.sort_by_key(|s| s.encode_to_vec());
        prop_assert_eq!(routed_sorted, expected);
        prop_assert_eq!(batch.rejected.len() + routed.len(), req.resource_spans.iter().flat_map(|rs| &rs.scope_spans).map(|ss| ss.spans.len()).sum::<usize>());
    }

    #[test]
    fn decoders_never_panic_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        for encoding in Encoding::ALL {
            let _ = split(encoding, &bytes);
        }
    }
}
