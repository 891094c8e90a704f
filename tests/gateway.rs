//! The OTLP gateway against Tansu: gRPC, HTTP protobuf and HTTP JSON exports reach
//! `tracepipe.spans` keyed by trace id; malformed requests get specific errors; with the broker
//! down, requests are answered with retryable statuses and nothing is acknowledged that Kafka did
//! not store; past `max_in_flight_bytes`, 429 and RESOURCE_EXHAUSTED.

mod support;

use std::collections::BTreeSet;
use std::io::Write;
use std::time::Duration;

use bytes::{Buf, BufMut};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use support::{export_requests, read_routed, Cluster, Gateway};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Code;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

#[derive(prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

#[test]
fn grpc_and_http_exports_reach_kafka_keyed_by_trace_id() {
    let cluster = Cluster::start();
    let gateway = Gateway::start(&cluster);
    let grpc_requests = export_requests(1, 20, 5);
    let http_requests = export_requests(2, 20, 5);
    let json_requests = export_requests(3, 20, 5);
    let total: u64 = [&grpc_requests, &http_requests, &json_requests].iter().flat_map(|r| r.iter()).map(|(_, n)| n).sum();

    runtime().block_on(async {
        let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{}", gateway.grpc)).await.unwrap();
        for (request, _) in &grpc_requests {
            let response = client.export(request.clone()).await.expect("gRPC export accepted").into_inner();
            assert_eq!(response.partial_success, None, "nothing rejected");
        }
        let http = reqwest::Client::new();
        for (i, (request, _)) in http_requests.iter().enumerate() {
            let mut post = http.post(gateway.url()).header("content-type", "application/x-protobuf");
            // Every other request gzip-compressed, as SDKs do with OTEL_EXPORTER_OTLP_COMPRESSION=gzip.
            post = if i % 2 == 0 { post.header("content-encoding", "gzip").body(gzip(&request.encode_to_vec())) } else { post.body(request.encode_to_vec()) };
            let response = post.send().await.unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(response.headers()["content-type"], "application/x-protobuf");
            let body = ExportTraceServiceResponse::decode(response.bytes().await.unwrap()).unwrap();
            assert_eq!(body.partial_success, None);
        }
        for (request, _) in &json_requests {
            let json = tracepipe_schemas::otlp_json::encode(request);
            let response = http.post(gateway.url()).header("content-type", "application/json").body(json).send().await.unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(response.text().await.unwrap(), "{}");
        }
    });

    let routed = read_routed(&cluster.brokers(), total, Duration::from_secs(60));
    assert_eq!(routed.distinct_spans(), total, "every exported span is in tracepipe.spans");
    assert_eq!(routed.duplicates(), 0);
    assert!(routed.partitions.values().all(|p| p.len() == 1), "each trace in one partition");
    assert_eq!(routed.missing_traceparent, 0, "every record carries a traceparent");
    let metrics = support::metrics(gateway.admin);
    assert!(metrics.contains("tracepipe_gateway_spans_total{outcome=\"accepted\",protocol=\"grpc\"}"), "{metrics}");
}

/// Sends bytes as they are over gRPC, to send what no OTLP client would.
#[derive(Clone, Copy, Default)]
struct RawCodec;
struct RawEncoder;
struct ResponseDecoder;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = ExportTraceServiceResponse;
    type Encoder = RawEncoder;
    type Decoder = ResponseDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> ResponseDecoder {
        ResponseDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        buf.put_slice(&item);
        Ok(())
    }
}

impl Decoder for ResponseDecoder {
    type Item = ExportTraceServiceResponse;
    type Error = tonic::Status;
    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<ExportTraceServiceResponse>, tonic::Status> {
        let bytes = buf.copy_to_bytes(buf.remaining());
        ExportTraceServiceResponse::decode(bytes).map(Some).map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

async fn grpc_raw(port: u16, body: Vec<u8>) -> Result<ExportTraceServiceResponse, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}")).unwrap().connect().await.unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static("/opentelemetry.proto.collector.trace.v1.TraceService/Export");
    grpc.unary(tonic::Request::new(body), path, RawCodec).await.map(tonic::Response::into_inner)
}

#[test]
fn malformed_requests_get_specific_errors_and_invalid_spans_a_partial_success() {
    let cluster = Cluster::start_with(|yaml| yaml.replace("max_request_bytes: 16MiB", "max_request_bytes: 64KiB"));
    let gateway = Gateway::start(&cluster);
    let (valid, valid_spans) = export_requests(4, 1, 3).pop().unwrap();
    let encoded = valid.encode_to_vec();
    let truncated = encoded[..encoded.len() / 2].to_vec();

    let mut with_bad_ids = valid.clone();
    let spans = &mut with_bad_ids.resource_spans[0].scope_spans[0].spans;
    let mut zero_trace = spans[0].clone();
    zero_trace.trace_id = vec![0; 16];
    let mut short_span_id = spans[0].clone();
    short_span_id.span_id = vec![1, 2, 3];
    spans.push(zero_trace);
    spans.push(short_span_id);

    runtime().block_on(async {
        // gRPC: a truncated message and a message that is not OTLP at all.
        for body in [truncated.clone(), b"\x0a\xff\xff\xff\xff\x0fnot otlp".to_vec()] {
            let status = grpc_raw(gateway.grpc, body).await.expect_err("malformed gRPC body refused");
            assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
            assert!(status.message().contains("otlp_proto"), "the message says what is wrong: {}", status.message());
        }
        let status = grpc_raw(gateway.grpc, vec![0x0a; 100_000]).await.expect_err("oversized gRPC body refused");
        assert!(matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted), "{status:?}");

        let http = reqwest::Client::new();
        let post = |content_type: &'static str, body: Vec<u8>| http.post(gateway.url()).header("content-type", content_type).body(body).send();

        let response = post("application/x-protobuf", truncated.clone()).await.unwrap();
        assert_eq!(response.status(), 400);
        let status = RpcStatus::decode(response.bytes().await.unwrap()).expect("a google.rpc.Status body");
        assert_eq!(status.code, 3);
        assert!(status.message.contains("otlp_proto"), "{}", status.message);

        let response = post("application/json", br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"xyz"#.to_vec()).await.unwrap();
        assert_eq!(response.status(), 400);
        let body: serde_json::Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        assert_eq!(body["code"], 3);
        assert!(body["message"].as_str().unwrap().contains("json"), "{body}");

        let response = post("text/plain", encoded.clone()).await.unwrap();
        assert_eq!(response.status(), 415);

        let response = http.post(gateway.url()).header("content-type", "application/x-protobuf").header("content-encoding", "gzip").body(b"not gzip".to_vec()).send().await.unwrap();
        assert_eq!(response.status(), 400);
        let status = RpcStatus::decode(response.bytes().await.unwrap()).unwrap();
        assert!(status.message.contains("gzip"), "{}", status.message);

        let response = post("application/x-protobuf", vec![0x0a; 100_000]).await.unwrap();
        assert_eq!(response.status(), 413);
        // A small gzip body that inflates past the limit.
        let response = http.post(gateway.url()).header("content-type", "application/x-protobuf").header("content-encoding", "gzip").body(gzip(&[0u8; 200_000])).send().await.unwrap();
        assert_eq!(response.status(), 413);

        // Invalid ids: the valid spans are stored, the others reported.
        let response = post("application/x-protobuf", with_bad_ids.encode_to_vec()).await.unwrap();
        assert_eq!(response.status(), 200);
        let partial = ExportTraceServiceResponse::decode(response.bytes().await.unwrap()).unwrap().partial_success.expect("partial success");
        assert_eq!(partial.rejected_spans, 2);
        assert!(partial.error_message.contains("all-zero trace id"), "{}", partial.error_message);
        let json = tracepipe_schemas::otlp_json::encode(&with_bad_ids);
        let response = post("application/json", json).await.unwrap();
        assert_eq!(response.status(), 200);
        let body: serde_json::Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        assert_eq!(body["partialSuccess"]["rejectedSpans"], "2", "{body}");
    });
    let routed = read_routed(&cluster.brokers(), valid_spans, Duration::from_secs(30));
    assert_eq!(routed.distinct_spans(), valid_spans, "only the valid spans were stored");
    drop(gateway);
}

#[test]
fn broker_down_gets_retryable_statuses_and_nothing_unstored_is_acknowledged() {
    let mut cluster = Cluster::start_with_persistent(|yaml| yaml.replace("ack_timeout: 5s", "ack_timeout: 2s"));
    let gateway = Gateway::start(&cluster);
    let url = gateway.url();
    let batch = export_requests(5, 400, 2);
    let (sender_done, sender) = {
        let (tx, rx) = std::sync::mpsc::channel();
        let bodies: Vec<(Vec<u8>, Vec<Vec<u8>>)> = batch
            .iter()
            .map(|(request, _)| {
                let ids = request.resource_spans.iter().flat_map(|rs| &rs.scope_spans).flat_map(|ss| &ss.spans).map(|s| s.span_id.clone()).collect();
                (request.encode_to_vec(), ids)
            })
            .collect();
        let handle = std::thread::spawn(move || {
            runtime().block_on(async move {
                let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
                let mut acknowledged: BTreeSet<Vec<u8>> = BTreeSet::new();
                let mut retryable = 0;
                for (body, ids) in bodies {
                    let response = http.post(&url).header("content-type", "application/x-protobuf").body(body).send().await.unwrap();
                    match response.status().as_u16() {
                        200 => acknowledged.extend(ids),
                        503 | 429 => {
                            assert!(response.headers().contains_key("retry-after"), "retryable answers say when");
                            retryable += 1;
                        }
                        other => panic!("unexpected status {other}: {}", response.text().await.unwrap_or_default()),
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                tx.send(()).unwrap();
                (acknowledged, retryable)
            })
        });
        (rx, handle)
    };
    std::thread::sleep(Duration::from_secs(2));
    cluster.tansu.stop();
    std::thread::sleep(Duration::from_secs(5));
    cluster.tansu.restart();
    sender_done.recv_timeout(Duration::from_secs(120)).expect("sender finished");
    let (acknowledged, retryable) = sender.join().unwrap();
    assert!(retryable > 0, "requests while the broker was down were answered retryable");
    assert!(!acknowledged.is_empty());

    // gRPC with the broker down: UNAVAILABLE.
    cluster.tansu.stop();
    let status = runtime().block_on(async {
        let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{}", gateway.grpc)).await.unwrap();
        client.export(export_requests(6, 1, 1).pop().unwrap().0).await.expect_err("not stored, not acknowledged")
    });
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    cluster.tansu.restart();

    let routed = read_routed(&cluster.brokers(), acknowledged.len() as u64, Duration::from_secs(60));
    let stored: BTreeSet<&Vec<u8>> = routed.spans.values().flat_map(|s| s.keys()).collect();
    let lost: Vec<_> = acknowledged.iter().filter(|id| !stored.contains(id)).collect();
    assert!(lost.is_empty(), "{} acknowledged spans are not in Kafka", lost.len());
    eprintln!("broker outage: {} spans acknowledged and stored, {retryable} requests answered retryable", acknowledged.len());
}

/// More request bytes waiting for Kafka than `max_in_flight_bytes`: the excess is answered 429
/// with Retry-After (HTTP) and RESOURCE_EXHAUSTED with RetryInfo (gRPC); what was answered 200 is
/// in Kafka; once the burst has passed, requests are taken again.
#[test]
fn overload_gets_resource_exhausted_and_429_and_acknowledged_spans_are_stored() {
    // Kafka acknowledges only after a 300 ms linger, so a burst piles up in flight.
    let cluster = Cluster::start_batched_with(|yaml| {
        yaml.replace("  producer: {}", "  producer: { linger.ms: 300 }")
            .replace("max_request_bytes: 16MiB", "max_request_bytes: 1MiB")
            .replace("max_in_flight_bytes: 256MiB", "max_in_flight_bytes: 1MiB")
    });
    let gateway = Gateway::start(&cluster);
    let requests = export_requests(7, 32, 250);
    let request_bytes = requests[0].0.encoded_len();
    assert!((200_000..1_000_000).contains(&request_bytes), "requests of {request_bytes} bytes");
    // One burst per protocol: 16 requests at once, about four times the bytes allowed in flight.
    let (http_statuses, grpc_codes, acknowledged) = runtime().block_on(async {
        let http = reqwest::Client::new();
        let grpc = TraceServiceClient::connect(format!("http://127.0.0.1:{}", gateway.grpc)).await.unwrap();
        let (mut statuses, mut codes, mut acknowledged) = (Vec::new(), Vec::new(), BTreeSet::new());
        for burst in requests.chunks(16) {
            let over_grpc = codes.is_empty() && !statuses.is_empty();
            let mut tasks = Vec::new();
            for (request, spans) in burst.iter().cloned() {
                let (http, mut grpc, url) = (http.clone(), grpc.clone(), gateway.url());
                tasks.push(tokio::spawn(async move {
                    let ids: Vec<Vec<u8>> = request.resource_spans.iter().flat_map(|rs| &rs.scope_spans).flat_map(|ss| &ss.spans).map(|s| s.span_id.clone()).collect();
                    assert_eq!(ids.len() as u64, spans);
                    if over_grpc {
                        match grpc.export(request).await {
                            Ok(_) => (None, Some(Code::Ok), ids),
                            Err(status) => {
                                if status.code() == Code::ResourceExhausted {
                                    assert!(status.details().windows(20).any(|w| w == b"google.rpc.RetryInfo"), "RESOURCE_EXHAUSTED carries RetryInfo");
                                }
                                (None, Some(status.code()), Vec::new())
                            }
                        }
                    } else {
                        let response = http.post(url).header("content-type", "application/x-protobuf").body(request.encode_to_vec()).send().await.unwrap();
                        let status = response.status().as_u16();
                        if status == 429 {
                            assert_eq!(response.headers()["retry-after"], "1", "429 says when to retry");
                            let body = RpcStatus::decode(response.bytes().await.unwrap()).unwrap();
                            assert!(body.message.contains("waiting for Kafka"), "{}", body.message);
                        }
                        (Some(status), None, if status == 200 { ids } else { Vec::new() })
                    }
                }));
            }
            for task in tasks {
                let (status, code, ids) = task.await.unwrap();
                statuses.extend(status);
                codes.extend(code);
                acknowledged.extend(ids);
            }
        }
        (statuses, codes, acknowledged)
    });
    eprintln!("overload: HTTP statuses {http_statuses:?}, gRPC codes {grpc_codes:?}");
    assert!(http_statuses.iter().all(|s| [200, 429].contains(s)), "{http_statuses:?}");
    assert!(http_statuses.contains(&429), "the burst overflowed max_in_flight_bytes over HTTP: {http_statuses:?}");
    assert!(http_statuses.contains(&200), "some of the burst was taken");
    assert!(grpc_codes.iter().all(|c| [Code::Ok, Code::ResourceExhausted].contains(c)), "{grpc_codes:?}");
    assert!(grpc_codes.contains(&Code::ResourceExhausted), "the burst overflowed max_in_flight_bytes over gRPC: {grpc_codes:?}");
    assert!(grpc_codes.contains(&Code::Ok), "some of the burst was taken");

    // After the burst, a request is taken again.
    let (request, _) = export_requests(8, 1, 100).pop().unwrap();
    let status = runtime().block_on(async {
        reqwest::Client::new().post(gateway.url()).header("content-type", "application/x-protobuf").body(request.encode_to_vec()).send().await.unwrap().status()
    });
    assert_eq!(status, 200);

    let routed = read_routed(&cluster.brokers(), acknowledged.len() as u64, Duration::from_secs(60));
    let stored: BTreeSet<&Vec<u8>> = routed.spans.values().flat_map(|s| s.keys()).collect();
    assert!(acknowledged.iter().all(|id| stored.contains(id)), "every acknowledged span is in Kafka");
    let metrics = support::metrics(gateway.admin);
    assert!(metrics.contains("outcome=\"overloaded\""), "overloaded requests are counted");
}

/// The headers of an OTLP/HTTP request announcing `length` bytes, sent on a raw connection.
fn announce(port: u16, length: usize) -> std::net::TcpStream {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(stream, "POST /v1/traces HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-protobuf\r\nContent-Length: {length}\r\n\r\n").unwrap();
    stream
}

fn status_line(stream: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut answer = vec![0u8; 512];
    let read = stream.read(&mut answer).unwrap_or(0);
    String::from_utf8_lossy(&answer[..read]).lines().next().unwrap_or("").to_string()
}

/// Room among the bytes waiting for Kafka is taken by a request's Content-Length before its body
/// is read: while one request announcing 700 KiB is still sending its body, a second announcing as
/// much is answered 429 and one over max_request_bytes 413, their bodies never held in memory.
#[test]
fn request_bodies_are_accounted_for_by_their_length_before_they_are_read() {
    let cluster = Cluster::start_with(|yaml| yaml.replace("max_request_bytes: 16MiB", "max_request_bytes: 1MiB").replace("max_in_flight_bytes: 256MiB", "max_in_flight_bytes: 1MiB"));
    let gateway = Gateway::start(&cluster);
    let mut slow = announce(gateway.http, 700 << 10);
    slow.write_all(&[0u8; 1024]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // Their bodies are read and thrown away, so the clients get the answer, not a reset.
    let mut second = announce(gateway.http, 700 << 10);
    let _ = second.write_all(&vec![0u8; 700 << 10]);
    let second = status_line(&mut second);
    let mut too_large = announce(gateway.http, 2 << 20);
    let _ = too_large.write_all(&vec![0u8; (1 << 20) + (64 << 10)]);
    let too_large = status_line(&mut too_large);
    eprintln!("while 700 KiB are announced and unread: a second 700 KiB request gets `{second}`, a 2 MiB one `{too_large}`");
    assert!(second.contains(" 429 "), "{second}");
    assert!(too_large.contains(" 413 "), "{too_large}");
    // The slow request's room is given back when it ends; the next one is taken again.
    drop(slow);
    std::thread::sleep(Duration::from_millis(300));
    let (request, _) = export_requests(9, 1, 10).pop().unwrap();
    let body = request.encode_to_vec();
    let mut stream = announce(gateway.http, body.len());
    stream.write_all(&body).unwrap();
    let answer = status_line(&mut stream);
    assert!(answer.contains(" 200 "), "{answer}");
}

#[test]
fn with_self_tracing_the_gateway_starts_tracepipes_own_trace_for_the_requests_it_chooses() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
    use rdkafka::message::{Headers, Message as _};
    let cluster = Cluster::start_with(|yaml| {
        let traced = yaml.replace("  enabled: false      # `tracepipe up --demo` turns it on\n  ratio: 0.01", "  enabled: true\n  ratio: 1.0");
        assert_ne!(traced, yaml, "the topology's self_tracing section");
        traced
    });
    let gateway = Gateway::start(&cluster);
    let requests = export_requests(4, 5, 4);
    let total: u64 = requests.iter().map(|(_, n)| n).sum();
    runtime().block_on(async {
        let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{}", gateway.grpc)).await.unwrap();
        for (request, _) in &requests {
            // A client that sampled its own export: tracepipe's trace is new, linked to it.
            let mut call = tonic::Request::new(request.clone());
            call.metadata_mut().insert("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".parse().unwrap());
            client.export(call).await.expect("gRPC export accepted");
        }
    });

    // Each record in tracepipe.spans carries the context of a `send` span of the gateway's.
    let mut contexts = BTreeSet::new();
    support::consume_until(&cluster.brokers(), "tracepipe.spans", Duration::from_secs(60), &mut contexts, |contexts, message| {
        let header = message.headers().and_then(|h| h.iter().find(|h| h.key == "traceparent")).and_then(|h| h.value).unwrap();
        contexts.insert(String::from_utf8(header.to_vec()).unwrap());
    }, |contexts| !contexts.is_empty());
    assert!(contexts.iter().all(|c| c.ends_with("-01")), "chosen (ratio 1.0): sampled, {contexts:?}");
    assert!(contexts.iter().all(|c| !c.contains("0af7651916cd43dd8448eb211c80319c")), "a trace of tracepipe's own, not the client's");

    // The spans, in otlp_spans with the guard header, published within a second or so.
    let mut sends = Vec::new();
    support::consume_until(&cluster.brokers(), "otlp_spans", Duration::from_secs(60), &mut sends, |sends, message| {
        assert!(message.headers().is_some_and(|h| h.iter().any(|h| h.key == "tracepipe-self-telemetry")), "own spans carry the guard");
        let request = ExportTraceServiceRequest::decode(message.payload().unwrap()).unwrap();
        for resource in &request.resource_spans {
            let service = resource.resource.as_ref().unwrap().attributes.iter().find(|a| a.key == "service.name").unwrap().value.clone();
            for span in resource.scope_spans.iter().flat_map(|s| &s.spans) {
                sends.push((format!("{service:?}"), span.clone()));
            }
        }
    }, |sends| sends.len() >= requests.len());
    assert_eq!(sends.len(), requests.len(), "a span per request: {sends:?}");
    let mut span_contexts = BTreeSet::new();
    for (service, span) in &sends {
        assert!(service.contains("tracepipe-gateway"), "{service}");
        assert_eq!((span.name.as_str(), span.kind), ("send tracepipe.spans", SpanKind::Producer as i32));
        assert!(span.parent_span_id.is_empty(), "the root of tracepipe's trace");
        assert_eq!(hex::encode(&span.links[0].trace_id), "0af7651916cd43dd8448eb211c80319c", "linked to the client's context");
        assert!(span.end_time_unix_nano >= span.start_time_unix_nano && span.status.is_none());
        span_contexts.insert(format!("00-{}-{}-01", hex::encode(&span.trace_id), hex::encode(&span.span_id)));
    }
    assert_eq!(span_contexts, contexts, "the records carry their send span's context");
    let routed = read_routed(&cluster.brokers(), total, Duration::from_secs(30));
    assert_eq!(routed.distinct_spans(), total, "the exported spans are all in tracepipe.spans");
    assert!(support::metrics(gateway.admin).contains("tracepipe_self_trace_spans_total{outcome=\"published\",processor=\"gateway\"} 5"));
}
