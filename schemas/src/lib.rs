//! tracepipe's span messages and the decoders that turn what applications publish into them.
//!
//! Every input encoding is normalized to the OTLP data model (resource, scope, span) and then split
//! by trace id into [`v1::TraceSpans`] messages, the value of `tracepipe.spans` records.
//! OTLP protobuf is split without decoding the spans ([`otlp_proto`]); the other encodings are
//! decoded into OTLP types once and go through the same splitter.

pub mod encoding;
pub mod error;
pub mod ids;
pub mod analytics;
pub mod attributes;
pub mod jaeger;
pub mod otlp_json;
pub mod otlp_proto;
pub mod split;
pub mod trace_view;
pub mod v1;
pub mod view;
mod wire;
pub mod zipkin;

pub use encoding::Encoding;
pub use error::{DecodeError, SpanRejection};
pub use ids::{SpanId, TraceId};
pub use split::{SpanSplitter, SplitBatch, TraceChunk};

/// OTLP generated types, re-exported so that every crate uses the same version.
pub use opentelemetry_proto::tonic::{
    collector::trace::v1 as otlp_collector,
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1 as otlp_common,
    resource::v1 as otlp_resource,
    trace::v1 as otlp_trace,
};
