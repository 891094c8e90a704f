//! OTLP/gRPC: `opentelemetry.proto.collector.trace.v1.TraceService/Export`.
//!
//! tonic serves the protocol (HTTP/2, framing, gzip, deadlines); the request message is handed to
//! the splitter as the bytes it arrived in rather than decoded into OTLP structs, which is what
//! makes the gateway as cheap per span as the router.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use prost::Message;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::body::Body;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};
use tracepipe_schemas::otlp_collector::ExportTraceServiceResponse;

use crate::{Ingest, IngestError, Protocol};

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Requests stay bytes; responses are encoded with prost.
#[derive(Clone, Copy, Default)]
struct RawRequestCodec;

struct RawDecoder;
struct ResponseEncoder;

impl Codec for RawRequestCodec {
    type Encode = ExportTraceServiceResponse;
    type Decode = Bytes;
    type Encoder = ResponseEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> ResponseEncoder {
        ResponseEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(buf.copy_to_bytes(buf.remaining())))
    }
}

impl Encoder for ResponseEncoder {
    type Item = ExportTraceServiceResponse;
    type Error = Status;

    fn encode(&mut self, item: ExportTraceServiceResponse, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(buf).map_err(|e| Status::internal(e.to_string()))
    }
}

/// The trace service, answering only `Export`.
#[derive(Clone)]
struct TraceService {
    ingest: Arc<Ingest>,
}

impl NamedService for TraceService {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

struct Export(Arc<Ingest>);

impl UnaryService<Bytes> for Export {
    type Response = ExportTraceServiceResponse;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response<ExportTraceServiceResponse>, Status>> + Send>>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let ingest = self.0.clone();
        // On a task of its own, so a client that hangs up does not cancel it: its records are
        // queued for Kafka, and the room they hold is given back only once they are answered.
        let exporting = tokio::spawn(async move {
            let traceparent = request.metadata().get("traceparent").map(|v| v.as_bytes().to_vec());
            let body = request.into_inner();
            // reserve(0) holds nothing yet: the body is already read (tonic bounds it by
            // max_request_bytes), and its room is taken by its size inside export.
            let Ok(reserved) = ingest.reserve(0) else { unreachable!("reserving no bytes cannot fail") };
            match ingest.export(Protocol::Grpc, body, traceparent.as_deref(), reserved).await {
                Ok(accepted) => Ok(Response::new(accepted.response())),
                Err(error) => Err(status(&error, ingest.config().retry_after)),
            }
        });
        Box::pin(async move { exporting.await.unwrap_or_else(|error| Err(Status::internal(format!("the export failed: {error}")))) })
    }
}

/// The gRPC status for an error. OTLP clients retry UNAVAILABLE always and RESOURCE_EXHAUSTED
/// only when the server says recovery is possible, which RetryInfo does.
fn status(error: &IngestError, retry_after: std::time::Duration) -> Status {
    let message = error.to_string();
    let retry = || ErrorDetails::with_retry_info(Some(retry_after));
    match error {
        IngestError::Invalid(_) | IngestError::Refused(_) => Status::invalid_argument(message),
        IngestError::TooLarge { .. } => Status::new(Code::OutOfRange, message),
        IngestError::Overloaded(_) => Status::with_error_details(Code::ResourceExhausted, message, retry()),
        IngestError::Unavailable(_) => Status::with_error_details(Code::Unavailable, message, retry()),
    }
}

impl tower_service::Service<http::Request<Body>> for TraceService {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let ingest = self.ingest.clone();
        Box::pin(async move {
            if request.uri().path() != EXPORT_PATH {
                return Ok(Status::unimplemented(format!("{} is not served here; this is OTLP's trace service", request.uri().path())).into_http());
            }
            let limit = ingest.config().max_request_bytes;
            let mut grpc = Grpc::new(RawRequestCodec)
                .accept_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(limit)
                .max_encoding_message_size(usize::MAX);
            Ok(grpc.unary(Export(ingest), request).await)
        })
    }
}

pub(crate) async fn serve(listener: tokio::net::TcpListener, ingest: Arc<Ingest>, shutdown: CancellationToken) {
    let served = tonic::transport::Server::builder()
        .add_service(TraceService { ingest })
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown.cancelled_owned())
        .await;
    if let Err(error) = served {
        tracing::error!(%error, "OTLP/gRPC receiver stopped");
    }
}
