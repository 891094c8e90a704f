//! OTLP/HTTP: `POST /v1/traces` with `application/x-protobuf` or `application/json` bodies,
//! optionally `Content-Encoding: gzip`. Responses come in the request's encoding; errors carry a
//! `google.rpc.Status` as the specification asks, and retryable ones a `Retry-After`.

use std::io::Read;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use prost::Message;
use tokio_util::sync::CancellationToken;

use crate::{Ingest, IngestError, Protocol, Reserved};

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

/// `google.rpc.Status`, the error body OTLP/HTTP specifies.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

pub(crate) async fn serve(listener: tokio::net::TcpListener, ingest: Arc<Ingest>, shutdown: CancellationToken) {
    // Bodies are read (and limited) by the handler, after it has taken room for them.
    let app = Router::new().route("/v1/traces", post(export)).layer(DefaultBodyLimit::disable()).with_state(ingest);
    if let Err(error) = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await {
        tracing::error!(%error, "OTLP/HTTP receiver stopped");
    }
}

async fn export(State(ingest): State<Arc<Ingest>>, request: Request) -> Response {
    // On a task of its own, so a client that hangs up does not cancel it: once its records are
    // queued for Kafka, the room they hold is given back only when they are answered.
    match tokio::spawn(handle(ingest, request)).await {
        Ok(response) => response,
        Err(error) => error_response(Protocol::HttpProtobuf, StatusCode::INTERNAL_SERVER_ERROR, 13, format!("the export failed: {error}"), None),
    }
}

async fn handle(ingest: Arc<Ingest>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let headers = parts.headers;
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media_type = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let protocol = match media_type.as_str() {
        PROTOBUF | "application/protobuf" => Protocol::HttpProtobuf,
        JSON => Protocol::HttpJson,
        _ => {
            let message = format!("Content-Type `{content_type}` is not supported; send {PROTOBUF} or {JSON}");
            return error_response(Protocol::HttpProtobuf, StatusCode::UNSUPPORTED_MEDIA_TYPE, 3, message, None);
        }
    };
    let encoding = match headers.get(header::CONTENT_ENCODING).map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase()) {
        None => None,
        Some(encoding) if encoding.is_empty() || encoding == "identity" => None,
        Some(encoding) if encoding == "gzip" => Some(()),
        Some(other) => {
            let message = format!("Content-Encoding `{other}` is not supported; send gzip or no encoding");
            return error_response(protocol, StatusCode::UNSUPPORTED_MEDIA_TYPE, 3, message, None);
        }
    };
    let limit = ingest.config().max_request_bytes;
    // Room among the bytes waiting for Kafka is taken before the body is read, by what it says
    // its length is, so a burst of large requests is refused before it is in memory.
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.trim().parse::<usize>().ok());
    if let Some(size) = declared.filter(|size| *size > limit) {
        discard(body, limit).await;
        return refuse(protocol, IngestError::TooLarge { size, limit }, &ingest, 0);
    }
    let mut reserved = match ingest.reserve(declared.unwrap_or(0)) {
        Ok(reserved) => reserved,
        Err(error) => {
            discard(body, limit).await;
            return refuse(protocol, error, &ingest, declared.unwrap_or(0));
        }
    };
    let mut stream = body.into_data_stream();
    let body = match tokio::time::timeout(BODY_TIMEOUT, read_body(&mut stream, limit, &mut reserved)).await {
        Ok(Ok(body)) => body,
        Ok(Err((error, read))) => {
            // The room is given back before the rest is read and thrown away.
            drop(reserved);
            discard_stream(stream, limit).await;
            return refuse(protocol, error, &ingest, read);
        }
        Err(_) => {
            let error = IngestError::Invalid(format!("the request body did not arrive within {}s", BODY_TIMEOUT.as_secs()));
            return refuse(protocol, error, &ingest, reserved.bytes());
        }
    };
    let body = match encoding {
        None => body,
        Some(()) => {
            // Inflating is bounded by the limit, and CPU work: on the blocking pool.
            let compressed = body.len();
            match tokio::task::spawn_blocking(move || gunzip(&body, limit)).await {
                Ok(Ok(inflated)) => {
                    if let Err(error) = reserved.grow(inflated.len()) {
                        return refuse(protocol, error, &ingest, compressed);
                    }
                    Bytes::from(inflated)
                }
                Ok(Err(error)) => return refuse(protocol, error, &ingest, compressed),
                Err(error) => return refuse(protocol, IngestError::Invalid(format!("inflating the body failed: {error}")), &ingest, compressed),
            }
        }
    };
    let traceparent = headers.get("traceparent").map(HeaderValue::as_bytes);
    match ingest.export(protocol, body, traceparent, reserved).await {
        Ok(accepted) => {
            let response = accepted.response();
            match protocol {
                Protocol::HttpJson => {
                    let mut json = serde_json::json!({});
                    if let Some(partial) = &response.partial_success {
                        json = serde_json::json!({"partialSuccess": {"rejectedSpans": partial.rejected_spans.to_string(), "errorMessage": partial.error_message}});
                    }
                    ([(header::CONTENT_TYPE, JSON)], json.to_string()).into_response()
                }
                _ => ([(header::CONTENT_TYPE, PROTOBUF)], response.encode_to_vec()).into_response(),
            }
        }
        Err(error) => failure(protocol, &error, &ingest),
    }
}

/// Reads the body, taking room for it as it arrives (a chunked body announces no length), so
/// what is in memory is always counted among the bytes waiting for Kafka.
async fn read_body(stream: &mut axum::body::BodyDataStream, limit: usize, reserved: &mut Reserved<'_>) -> Result<Bytes, (IngestError, usize)> {
    use tokio_stream::StreamExt as _;
    let mut first: Option<Bytes> = None;
    let mut joined: Vec<u8> = Vec::new();
    let mut read = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|error| (IngestError::Invalid(format!("reading the request body: {error}")), read))?;
        read += chunk.len();
        if read > limit {
            return Err((IngestError::TooLarge { size: read, limit }, read));
        }
        if let Err(error) = reserved.grow(read) {
            return Err((error, read));
        }
        // A body that arrives in one piece (the usual case with Content-Length) is kept as it is.
        match first.take() {
            None if joined.is_empty() => first = Some(chunk),
            None => joined.extend_from_slice(&chunk),
            Some(previous) => {
                joined.reserve(reserved.bytes());
                joined.extend_from_slice(&previous);
                joined.extend_from_slice(&chunk);
            }
        }
    }
    Ok(first.unwrap_or_else(|| Bytes::from(joined)))
}

/// Reads a refused request's body to its end (or `limit` bytes) without keeping it, so the
/// client, still sending, reads the answer instead of a reset connection.
async fn discard(body: axum::body::Body, limit: usize) {
    discard_stream(body.into_data_stream(), limit).await;
}

async fn discard_stream(mut stream: axum::body::BodyDataStream, limit: usize) {
    use tokio_stream::StreamExt as _;
    let deadline = tokio::time::Instant::now() + BODY_TIMEOUT;
    let mut read = 0;
    while read <= limit {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(chunk))) => read += chunk.len(),
            _ => return,
        }
    }
}

/// How long a request body may take to arrive, so a client that stops sending holds neither a
/// task nor room among the bytes waiting for Kafka for longer.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A request answered before it reached [`Ingest::export`]: counted like the others.
fn refuse(protocol: Protocol, error: IngestError, ingest: &Ingest, bytes: usize) -> Response {
    let response = failure(protocol, &error, ingest);
    crate::metrics::record(protocol, &Err(error), bytes, std::time::Duration::ZERO);
    response
}

fn gunzip(body: &[u8], limit: usize) -> Result<Vec<u8>, IngestError> {
    let mut inflated = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
    let read = flate2::read::GzDecoder::new(body).take(limit as u64 + 1).read_to_end(&mut inflated);
    match read {
        Ok(size) if size > limit => Err(IngestError::TooLarge { size, limit }),
        Ok(_) => Ok(inflated),
        Err(error) => Err(IngestError::Invalid(format!("gzip body: {error}"))),
    }
}

fn failure(protocol: Protocol, error: &IngestError, ingest: &Ingest) -> Response {
    let retry_after = Some(ingest.config().retry_after.as_secs().max(1));
    // Codes as in google.rpc.Code.
    let (status, code, retry_after) = match error {
        IngestError::Invalid(_) | IngestError::Refused(_) => (StatusCode::BAD_REQUEST, 3, None),
        IngestError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, 11, None),
        IngestError::Overloaded(_) => (StatusCode::TOO_MANY_REQUESTS, 8, retry_after),
        IngestError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, 14, retry_after),
    };
    error_response(protocol, status, code, error.to_string(), retry_after)
}

fn error_response(protocol: Protocol, status: StatusCode, code: i32, message: String, retry_after: Option<u64>) -> Response {
    let mut response = match protocol {
        Protocol::HttpJson => (status, [(header::CONTENT_TYPE, JSON)], serde_json::json!({"code": code, "message": message}).to_string()).into_response(),
        _ => (status, [(header::CONTENT_TYPE, PROTOBUF)], RpcStatus { code, message }.encode_to_vec()).into_response(),
    };
    if let Some(seconds) = retry_after {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}
