//! OTLP JSON (the protobuf JSON mapping with hex ids), as the OpenTelemetry Collector's kafka
//! exporter writes with `encoding: otlp_json`.

use crate::{DecodeError, ExportTraceServiceRequest};

pub fn decode(payload: &[u8]) -> Result<ExportTraceServiceRequest, DecodeError> {
    serde_json::from_slice(payload).map_err(|e| DecodeError::Json(e.to_string()))
}

pub fn encode(request: &ExportTraceServiceRequest) -> Vec<u8> {
    serde_json::to_vec(request).expect("OTLP types serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape the collector's pdata JSON marshaler produces.
    const COLLECTOR_JSON: &str = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"checkout"}}]},
      "scopeSpans":[{"scope":{"name":"io.opentelemetry.http"},"spans":[{"traceId":"5b8efff798038103d269b633813fc60c",
      "spanId":"eee19b7ec3c1b174","parentSpanId":"eee19b7ec3c1b173","name":"GET /cart","kind":2,
      "startTimeUnixNano":"1544712660000000000","endTimeUnixNano":"1544712661000000000",
      "attributes":[{"key":"http.response.status_code","value":{"intValue":"200"}}],"status":{"code":2,"message":"boom"}}]}]}]}"#;

    #[test]
    fn decodes_collector_output() {
        let request = decode(COLLECTOR_JSON.as_bytes()).unwrap();
        let span = &request.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(hex::encode(&span.trace_id), "5b8efff798038103d269b633813fc60c");
        assert_eq!(span.start_time_unix_nano, 1_544_712_660_000_000_000);
        assert_eq!(span.kind, 2);
        assert_eq!(span.status.as_ref().unwrap().code, 2);
        let again = decode(&encode(&request)).unwrap();
        assert_eq!(again, request);
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(decode(b"{\"resourceSpans\": [ {"), Err(DecodeError::Json(_))));
        assert!(matches!(decode(b"\xff\xfe"), Err(DecodeError::Json(_))));
        assert!(matches!(decode(b"[1,2,3]"), Err(DecodeError::Json(_))));
        assert!(matches!(decode(br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"xyz"}]}]}]}"#), Err(DecodeError::Json(_))));
    }
}
