//! The encodings tracepipe reads from input topics.

use std::fmt;
use std::str::FromStr;

/// How the records of an input topic are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// OTLP `ExportTraceServiceRequest` protobuf, the OpenTelemetry Collector kafka exporter's
    /// default; a record that starts with `{` is read as OTLP JSON, since the exporter writes both
    /// encodings to the same default topic.
    OtlpProto,
    /// OTLP `ExportTraceServiceRequest` in the OTLP JSON mapping (`encoding: otlp_json`).
    OtlpJson,
    /// One Jaeger `model.proto` Span per record, as Jaeger's Kafka span writer produces.
    JaegerProto,
    /// A Zipkin v2 JSON list of spans.
    ZipkinJson,
}

impl Encoding {
    pub const ALL: [Encoding; 4] = [
        Encoding::OtlpProto,
        Encoding::OtlpJson,
        Encoding::JaegerProto,
        Encoding::ZipkinJson,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Encoding::OtlpProto => "otlp_proto",
            Encoding::OtlpJson => "otlp_json",
            Encoding::JaegerProto => "jaeger_proto",
            Encoding::ZipkinJson => "zipkin_json",
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Encoding {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Encoding::ALL
            .into_iter()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| {
                format!("unknown encoding `{s}`, expected one of otlp_proto, otlp_json, jaeger_proto, zipkin_json")
            })
    }
}
