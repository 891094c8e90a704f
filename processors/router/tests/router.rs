use prost::Message;
use tracepipe_router::Router;
use tracepipe_processor::{Emitter, InputRecord, OutputId, Processor, SourcePartition};
use tracepipe_schemas::otlp_trace::{ResourceSpans, ScopeSpans, Span};
use tracepipe_schemas::v1::TraceSpans;
use tracepipe_schemas::{Encoding, ExportTraceServiceRequest};

fn span(trace: u8, id: u8) -> Span {
    Span { trace_id: vec![trace; 16], span_id: vec![id; 8], name: "op".into(), ..Default::default() }
}

fn input(payload: &[u8]) -> InputRecord<'_> {
    InputRecord { source: SourcePartition { input: 0, partition: 3 }, topic: "otlp_spans", offset: 42, key: None, payload, timestamp_ms: None }
}

fn request(spans: Vec<Span>) -> Vec<u8> {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans { scope_spans: vec![ScopeSpans { spans, ..Default::default() }], ..Default::default() }],
    }
    .encode_to_vec()
}

#[test]
fn routes_each_trace_keyed_by_its_id() {
    let mut router = Router::new(vec![Encoding::OtlpProto], OutputId(0), 0);
    let mut out = Emitter::default();
    router.on_input(&input(&request(vec![span(1, 1), span(2, 1), span(1, 2)])), 0, &mut out).unwrap();
    let records: Vec<_> = out.records().map(|(o, k, v)| (o, k.to_vec(), TraceSpans::decode(v).unwrap())).collect();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].1, vec![1; 16]);
    assert_eq!(records[0].2.span_count(), 2);
    assert_eq!(records[1].1, vec![2; 16]);
    assert!(out.pending_dead_letter().is_none());
}

#[test]
fn undecodable_input_is_poison_and_invalid_spans_are_dead_lettered() {
    let mut router = Router::new(vec![Encoding::OtlpProto], OutputId(0), 0);
    let mut out = Emitter::default();
    let poison = router.on_input(&input(b"\x0a\x7f\x01"), 0, &mut out).unwrap_err();
    assert_eq!(poison.kind, "decode");
    assert!(poison.reason.starts_with("otlp_proto: invalid protobuf"), "{}", poison.reason);

    let mut zero = span(1, 1);
    zero.trace_id = vec![0; 16];
    router.on_input(&input(&request(vec![zero, span(2, 2)])), 0, &mut out).unwrap();
    assert_eq!(out.len(), 1);
    let dead = out.pending_dead_letter().unwrap();
    assert_eq!(dead.kind, "rejected_spans");
    assert_eq!(dead.reason, "otlp_proto: 1 spans rejected: all-zero trace id (1)");
}
