//! An assembled trace read by borrowing: what analysis needs of each span (ids, name, kind, times,
//! status, the first exception, the attributes that name a peer), straight from the protobuf
//! bytes. Nothing is copied and attributes nobody looks at are skipped, so analysis decodes each
//! trace once and allocates one vector per trace, not per span. Any other attribute of a span or
//! resource is found by key when asked for ([`SpanView::attribute`],
//! [`TraceView::resource_attribute`]), from the bytes the view keeps.

use crate::wire::{Reader, Value};
use crate::{DecodeError, TraceId};

/// OTLP `Status.code` for an error.
pub const STATUS_ERROR: u8 = 2;

/// OTLP span kinds (`Span.kind`).
pub mod kind {
    pub const UNSPECIFIED: u8 = 0;
    pub const INTERNAL: u8 = 1;
    pub const SERVER: u8 = 2;
    pub const CLIENT: u8 = 3;
    pub const PRODUCER: u8 = 4;
    pub const CONSUMER: u8 = 5;
}

/// The first `exception` event of a span (OpenTelemetry exception semantic conventions).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Exception<'a> {
    pub exception_type: &'a str,
    pub message: &'a str,
}

/// Attributes that say whom a client or producer span talked to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerAttributes<'a> {
    pub peer_service: Option<&'a str>,
    pub server_address: Option<&'a str>,
    pub db_system: Option<&'a str>,
    pub db_namespace: Option<&'a str>,
    pub messaging_system: Option<&'a str>,
    pub messaging_destination: Option<&'a str>,
    pub http_status_code: Option<i64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SpanView<'a> {
    /// Index into [`TraceView::services`]: the resource the span came from.
    pub resource: u32,
    pub span_id: [u8; 8],
    /// `None` for a root (empty or all-zero parent id).
    pub parent_span_id: Option<[u8; 8]>,
    pub name: &'a str,
    pub kind: u8,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub status_code: u8,
    pub status_message: &'a str,
    pub exception: Option<Exception<'a>>,
    /// The first link to another span of the same trace (a messaging consumer links to its producer).
    pub link: Option<[u8; 8]>,
    pub peer: PeerAttributes<'a>,
    /// `sampler.param`: the probability a head sampler kept this span's trace with, as Jaeger
    /// clients and tracepipe's instrumentation record on the root.
    pub head_sampling_probability: Option<f64>,
    /// The span's encoded fields, for attributes looked up by key.
    pub body: &'a [u8],
}

impl<'a> SpanView<'a> {
    /// The value of the span attribute `key`, if it has one (the last, if repeated).
    pub fn attribute(&self, key: &str) -> Option<AttributeValue<'a>> {
        find_attribute(self.body, 9, key)
    }

    pub fn is_error(&self) -> bool {
        self.status_code == STATUS_ERROR || self.exception.is_some()
    }

    /// One pass over the span's fields: the value of each of `keys` it has (the last, if
    /// repeated) into `found` (as long as `keys`), and each feature flag evaluated, as
    /// [`SpanView::feature_flags`] reads them, to `flag`. Cheaper than a lookup per key.
    pub fn scan<K: AsRef<str>>(&self, keys: &[K], found: &mut [Option<AttributeValue<'a>>], mut flag: impl FnMut(&'a str, &'a str)) {
        found.iter_mut().for_each(|f| *f = None);
        for field in Reader::new(self.body, 0).map_while(Result::ok) {
            match (field.number, field.value) {
                (9, Value::Len(kv)) => {
                    if let Ok(Some((key, value))) = read_key_value(kv, |k| keys.iter().any(|w| w.as_ref().as_bytes() == k)) {
                        if let Some(i) = keys.iter().position(|w| w.as_ref().as_bytes() == key) {
                            found[i] = Some(value);
                        }
                    }
                }
                (11, Value::Len(event)) => {
                    if let Some((key, variant)) = read_flag_evaluation(event) {
                        flag(key, variant);
                    }
                }
                _ => {}
            }
        }
    }

    /// The feature flags evaluated in this span, as (flag key, variant) from its
    /// `feature_flag.evaluation` events (OpenTelemetry's feature-flag conventions: the variant in
    /// `feature_flag.result.variant`, or `feature_flag.variant` as earlier versions named it).
    /// Events without a key or a variant are skipped.
    pub fn feature_flags(&self) -> impl Iterator<Item = (&'a str, &'a str)> {
        Reader::new(self.body, 0).map_while(Result::ok).filter_map(|field| match (field.number, field.value) {
            (11, Value::Len(event)) => read_flag_evaluation(event),
            _ => None,
        })
    }

    /// No parent ([`crate::ids::is_root_parent`]).
    pub fn is_root(&self) -> bool {
        self.parent_span_id.is_none()
    }

    /// Duration in nanoseconds; a span that ends before it starts lasts zero.
    pub fn duration_nanos(&self) -> u64 {
        self.end_unix_nano.saturating_sub(self.start_unix_nano)
    }
}

/// One `AssembledTrace` (or `TraceSpans`) message, borrowed.
#[derive(Debug, Clone)]
pub struct TraceView<'a> {
    pub trace_id: TraceId,
    /// `service.name` of each resource, `unknown_service` when missing (as OpenTelemetry SDKs do).
    pub services: Vec<&'a str>,
    pub spans: Vec<SpanView<'a>>,
    /// Each resource's encoded fields, for attributes looked up by key.
    pub resources: Vec<&'a [u8]>,
    /// 0 for a trace's first emission, n for its n-th late fragment.
    pub fragment: u32,
    pub truncated: bool,
}

pub const UNKNOWN_SERVICE: &str = "unknown_service";

fn invalid(message: &'static str, reason: impl Into<String>) -> DecodeError {
    DecodeError::Protobuf { message, reason: reason.into() }
}

fn utf8<'a>(bytes: &'a [u8], what: &'static str) -> Result<&'a str, DecodeError> {
    std::str::from_utf8(bytes).map_err(|e| DecodeError::Invalid(format!("{what} is not UTF-8: {e}")))
}

fn span_id(bytes: &[u8], what: &str) -> Result<Option<[u8; 8]>, DecodeError> {
    match bytes.len() {
        0 => Ok(None),
        8 if crate::ids::is_root_parent(bytes) => Ok(None),
        8 => Ok(Some(bytes.try_into().expect("8 bytes"))),
        n => Err(DecodeError::Invalid(format!("{what} of {n} bytes"))),
    }
}

impl<'a> TraceView<'a> {
    /// Reads an `AssembledTrace` or `TraceSpans` message (they share fields 1 and 2).
    pub fn parse(message: &'a [u8]) -> Result<Self, DecodeError> {
        // Encoded spans take 100 to 400 bytes: reserve once rather than grow and copy.
        let mut view = TraceView { trace_id: TraceId([0; 16]), services: Vec::new(), spans: Vec::with_capacity(message.len() / 200 + 1), resources: Vec::new(), fragment: 0, truncated: false };
        let mut trace_id = None;
        for field in Reader::new(message, 0) {
            let field = field.map_err(|e| invalid("AssembledTrace", e))?;
            match (field.number, field.value) {
                (1, Value::Len(bytes)) => {
                    trace_id = Some(TraceId::from_slice(bytes).map_err(|e| DecodeError::Invalid(format!("trace id: {e}")))?);
                }
                (2, Value::Len(body)) => view.read_resource_spans(body)?,
                (4, Value::Varint(v)) => view.truncated = v != 0,
                (5, Value::Varint(v)) => view.fragment = u32::try_from(v).unwrap_or(u32::MAX),
                (1 | 2, _) => return Err(invalid("AssembledTrace", format!("field {} has the wrong wire type", field.number))),
                _ => {}
            }
        }
        view.trace_id = trace_id.ok_or_else(|| DecodeError::Invalid("missing trace id".into()))?;
        Ok(view)
    }

    /// The trace's root: the earliest-starting span without a parent (a trace may hold more than
    /// one when an uninstrumented hop broke it), `None` when the root has not arrived.
    pub fn root(&self) -> Option<usize> {
        self.spans.iter().enumerate().filter(|(_, span)| span.is_root()).min_by_key(|(_, span)| span.start_unix_nano).map(|(index, _)| index)
    }

    /// The service that emitted `span`.
    pub fn service(&self, span: &SpanView<'_>) -> &'a str {
        self.services[span.resource as usize]
    }

    /// The value of the attribute `key` of the resource `span` came from.
    pub fn resource_attribute(&self, span: &SpanView<'_>, key: &str) -> Option<AttributeValue<'a>> {
        find_attribute(self.resources[span.resource as usize], 1, key)
    }

    fn read_resource_spans(&mut self, body: &'a [u8]) -> Result<(), DecodeError> {
        let resource = u32::try_from(self.services.len()).map_err(|_| DecodeError::Invalid("too many resources".into()))?;
        let mut service = UNKNOWN_SERVICE;
        let mut resource_fields: &[u8] = &[];
        for field in Reader::new(body, 0) {
            let field = field.map_err(|e| invalid("ResourceSpans", e))?;
            match (field.number, field.value) {
                (1, Value::Len(resource_body)) => {
                    resource_fields = resource_body;
                    for attribute in Reader::new(resource_body, 0) {
                        let attribute = attribute.map_err(|e| invalid("Resource", e))?;
                        if let (1, Value::Len(kv)) = (attribute.number, attribute.value) {
                            if let Some((_, value)) = read_key_value(kv, |k| k == b"service.name")? {
                                service = value.text("service.name")?.unwrap_or(service);
                            }
                        }
                    }
                }
                (2, Value::Len(scope_body)) => {
                    for span in Reader::new(scope_body, 0) {
                        let span = span.map_err(|e| invalid("ScopeSpans", e))?;
                        if let (2, Value::Len(span_body)) = (span.number, span.value) {
                            let view = read_span(span_body, resource)?;
                            self.spans.push(view);
                        }
                    }
                }
                _ => {}
            }
        }
        self.services.push(service);
        self.resources.push(resource_fields);
        Ok(())
    }
}

/// An attribute's value as found in the bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AttributeValue<'a> {
    /// String bytes, not yet checked to be UTF-8: most attributes are skipped unread.
    Str(&'a [u8]),
    Bool(bool),
    Int(i64),
    Double(f64),
    /// Bytes, arrays and maps.
    Other,
}

impl<'a> AttributeValue<'a> {
    fn text(self, what: &'static str) -> Result<Option<&'a str>, DecodeError> {
        match self {
            AttributeValue::Str(bytes) => utf8(bytes, what).map(Some),
            _ => Ok(None),
        }
    }

    /// The string, if this is one and valid UTF-8.
    pub fn as_str(self) -> Option<&'a str> {
        match self {
            AttributeValue::Str(bytes) => std::str::from_utf8(bytes).ok(),
            _ => None,
        }
    }
}

/// The value of the `KeyValue` with `key` among the `field` fields of `message` (the last one,
/// as a decoder keeping the last would see). Unreadable bytes count as absent: the view was
/// parsed from the same bytes, so only values nobody else reads can be malformed.
fn find_attribute<'a>(message: &'a [u8], field: u32, key: &str) -> Option<AttributeValue<'a>> {
    let mut found = None;
    for entry in Reader::new(message, 0) {
        let Ok(entry) = entry else { break };
        if let (number, Value::Len(kv)) = (entry.number, entry.value) {
            if number == field {
                if let Ok(Some((_, value))) = read_key_value(kv, |k| k == key.as_bytes()) {
                    found = Some(value);
                }
            }
        }
    }
    found
}

/// Reads a `KeyValue` whose key `wanted` accepts; `None` for any other (its value unread).
fn read_key_value<'a>(body: &'a [u8], wanted: impl Fn(&[u8]) -> bool) -> Result<Option<(&'a [u8], AttributeValue<'a>)>, DecodeError> {
    let mut key: Option<&[u8]> = None;
    let mut value = AttributeValue::Other;
    // Keys come first in what every SDK writes, so an unwanted attribute costs one field read.
    for field in Reader::new(body, 0) {
        let field = field.map_err(|e| invalid("KeyValue", e))?;
        match (field.number, field.value) {
            (1, Value::Len(bytes)) => {
                if !wanted(bytes) {
                    return Ok(None);
                }
                key = Some(bytes);
            }
            (2, Value::Len(any)) => {
                for v in Reader::new(any, 0) {
                    let v = v.map_err(|e| invalid("AnyValue", e))?;
                    value = match (v.number, v.value) {
                        (1, Value::Len(s)) => AttributeValue::Str(s),
                        (2, Value::Varint(b)) => AttributeValue::Bool(b != 0),
                        (3, Value::Varint(i)) => AttributeValue::Int(i as i64),
                        (4, Value::I64(bits)) => AttributeValue::Double(f64::from_bits(bits)),
                        _ => AttributeValue::Other,
                    };
                }
            }
            _ => {}
        }
    }
    Ok(key.filter(|k| wanted(k)).map(|k| (k, value)))
}

/// The span attributes read; every other one is skipped after its key.
const SPAN_KEYS: &[&[u8]] = &[
    b"peer.service",
    b"server.address",
    b"net.peer.name",
    b"db.system",
    b"db.system.name",
    b"db.namespace",
    b"db.name",
    b"messaging.system",
    b"messaging.destination.name",
    b"messaging.destination",
    b"http.response.status_code",
    b"http.status_code",
    b"sampler.param",
];

fn read_span(body: &[u8], resource: u32) -> Result<SpanView<'_>, DecodeError> {
    let mut span = SpanView { resource, kind: kind::UNSPECIFIED, body, ..Default::default() };
    let mut has_id = false;
    for field in Reader::new(body, 0) {
        let field = field.map_err(|e| invalid("Span", e))?;
        match (field.number, field.value) {
            (2, Value::Len(id)) => {
                span.span_id = span_id(id, "span id")?.ok_or_else(|| DecodeError::Invalid("span id is zero".into()))?;
                has_id = true;
            }
            (4, Value::Len(id)) => span.parent_span_id = span_id(id, "parent span id")?,
            (5, Value::Len(name)) => span.name = utf8(name, "span name")?,
            (6, Value::Varint(k)) => span.kind = u8::try_from(k).unwrap_or(kind::UNSPECIFIED),
            (7, Value::I64(t)) => span.start_unix_nano = t,
            (8, Value::I64(t)) => span.end_unix_nano = t,
            (9, Value::Len(kv)) => read_span_attribute(kv, &mut span)?,
            (11, Value::Len(event)) if span.exception.is_none() => span.exception = read_exception(event)?,
            (13, Value::Len(link)) if span.link.is_none() => {
                for f in Reader::new(link, 0) {
                    let f = f.map_err(|e| invalid("Link", e))?;
                    if let (2, Value::Len(id)) = (f.number, f.value) {
                        span.link = span_id(id, "link span id")?;
                    }
                }
            }
            (15, Value::Len(status)) => {
                for f in Reader::new(status, 0) {
                    let f = f.map_err(|e| invalid("Status", e))?;
                    match (f.number, f.value) {
                        (2, Value::Len(m)) => span.status_message = utf8(m, "status message")?,
                        (3, Value::Varint(c)) => span.status_code = u8::try_from(c).unwrap_or(0),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    if !has_id {
        return Err(DecodeError::Invalid("span without a span id".into()));
    }
    Ok(span)
}

fn read_span_attribute<'a>(kv: &'a [u8], span: &mut SpanView<'a>) -> Result<(), DecodeError> {
    let Some((key, value)) = read_key_value(kv, |k| SPAN_KEYS.contains(&k))? else { return Ok(()) };
    let peer = &mut span.peer;
    let slot = match key {
        b"peer.service" => &mut peer.peer_service,
        b"server.address" | b"net.peer.name" => &mut peer.server_address,
        b"db.system" | b"db.system.name" => &mut peer.db_system,
        b"db.namespace" | b"db.name" => &mut peer.db_namespace,
        b"messaging.system" => &mut peer.messaging_system,
        b"messaging.destination.name" | b"messaging.destination" => &mut peer.messaging_destination,
        b"sampler.param" => {
            if let AttributeValue::Double(probability) = value {
                span.head_sampling_probability = Some(probability);
            }
            return Ok(());
        }
        _ => {
            if let AttributeValue::Int(code) = value {
                peer.http_status_code = Some(code);
            }
            return Ok(());
        }
    };
    if let Some(text) = value.text("attribute value")? {
        *slot = Some(text);
    }
    Ok(())
}

fn read_flag_evaluation(event: &[u8]) -> Option<(&str, &str)> {
    let mut is_evaluation = false;
    let (mut key, mut variant, mut old_variant) = (None, None, None);
    for field in Reader::new(event, 0) {
        let field = field.ok()?;
        match (field.number, field.value) {
            (2, Value::Len(name)) => is_evaluation = name == b"feature_flag.evaluation",
            (3, Value::Len(kv)) if is_evaluation => {
                let wanted = |k: &[u8]| k == b"feature_flag.key" || k == b"feature_flag.result.variant" || k == b"feature_flag.variant";
                if let Ok(Some((k, value))) = read_key_value(kv, wanted) {
                    let slot = match k {
                        b"feature_flag.key" => &mut key,
                        b"feature_flag.result.variant" => &mut variant,
                        _ => &mut old_variant,
                    };
                    *slot = value.as_str();
                }
            }
            _ => {}
        }
    }
    Some((key.filter(|k| !k.is_empty())?, variant.or(old_variant).filter(|v| !v.is_empty())?)).filter(|_| is_evaluation)
}

fn read_exception(event: &[u8]) -> Result<Option<Exception<'_>>, DecodeError> {
    let mut is_exception = false;
    let mut exception = Exception::default();
    for field in Reader::new(event, 0) {
        let field = field.map_err(|e| invalid("Event", e))?;
        match (field.number, field.value) {
            (2, Value::Len(name)) => is_exception = name == b"exception",
            // Encoders write fields in order, so the name (2) is known before the attributes (3).
            (3, Value::Len(kv)) if is_exception => {
                if let Some((key, value)) = read_key_value(kv, |k| k == b"exception.type" || k == b"exception.message")? {
                    let text = value.text("exception attribute")?.unwrap_or_default();
                    if key == b"exception.type" {
                        exception.exception_type = text;
                    } else {
                        exception.message = text;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(is_exception.then_some(exception))
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::attributes;
    use crate::otlp_resource::Resource;
    use crate::otlp_trace::{span, ResourceSpans, ScopeSpans, Span, Status};
    use crate::v1::AssembledTrace;

    #[test]
    fn reads_what_analysis_needs_and_survives_every_truncation() {
        let client = Span {
            trace_id: vec![7; 16],
            span_id: vec![2; 8],
            parent_span_id: vec![1; 8],
            name: "SELECT orders".into(),
            kind: span::SpanKind::Client as i32,
            start_time_unix_nano: 10,
            end_time_unix_nano: 30,
            attributes: vec![
                attributes::string("db.system", "postgresql"),
                attributes::string("db.namespace", "orders"),
                attributes::string("peer.service", "orders-db"),
                attributes::int("http.response.status_code", 503),
                attributes::string("unrelated", "x"),
            ],
            status: Some(Status { code: 2, message: "timeout".into() }),
            events: vec![
                span::Event { name: "log".into(), ..Default::default() },
                span::Event {
                    name: "exception".into(),
                    attributes: vec![attributes::string("exception.type", "TimeoutError"), attributes::string("exception.message", "after 30s")],
                    ..Default::default()
                },
            ],
            links: vec![span::Link { trace_id: vec![7; 16], span_id: vec![9; 8], ..Default::default() }],
            ..Default::default()
        };
        let root = Span {
            trace_id: vec![7; 16],
            span_id: vec![1; 8],
            name: "GET /".into(),
            kind: 2,
            start_time_unix_nano: 5,
            end_time_unix_nano: 50,
            attributes: vec![attributes::string("sampler.type", "probabilistic"), attributes::double("sampler.param", 0.25)],
            events: vec![
                span::Event {
                    name: "feature_flag.evaluation".into(),
                    attributes: vec![attributes::string("feature_flag.key", "new-checkout"), attributes::string("feature_flag.result.variant", "on")],
                    ..Default::default()
                },
                span::Event {
                    name: "feature_flag.evaluation".into(),
                    attributes: vec![attributes::string("feature_flag.key", "dark-mode"), attributes::string("feature_flag.variant", "blue")],
                    ..Default::default()
                },
                span::Event { name: "feature_flag.evaluation".into(), attributes: vec![attributes::string("feature_flag.key", "no-variant")], ..Default::default() },
                span::Event { name: "log".into(), attributes: vec![attributes::string("feature_flag.key", "not-a-flag"), attributes::string("feature_flag.variant", "x")], ..Default::default() },
            ],
            ..Default::default()
        };
        let message = AssembledTrace {
            trace_id: vec![7; 16],
            resource_spans: vec![
                ResourceSpans {
                    resource: Some(Resource { attributes: vec![attributes::string("host", "a"), attributes::string("service.name", "shop")], ..Default::default() }),
                    scope_spans: vec![ScopeSpans { spans: vec![root, client], ..Default::default() }],
                    ..Default::default()
                },
                ResourceSpans { scope_spans: vec![ScopeSpans { spans: vec![Span { span_id: vec![3; 8], parent_span_id: vec![0; 8], ..Default::default() }], ..Default::default() }], ..Default::default() },
            ],
            fragment: 2,
            truncated: true,
            ..Default::default()
        }
        .encode_to_vec();
        let view = TraceView::parse(&message).unwrap();
        assert_eq!(view.trace_id.0, [7; 16]);
        assert_eq!((view.fragment, view.truncated), (2, true));
        assert_eq!(view.services, vec!["shop", UNKNOWN_SERVICE]);
        let db = &view.spans[1];
        assert_eq!((db.name, db.kind, db.status_code, db.status_message), ("SELECT orders", kind::CLIENT, 2, "timeout"));
        assert_eq!(db.parent_span_id, Some([1; 8]));
        assert_eq!(db.link, Some([9; 8]));
        assert_eq!(db.exception, Some(Exception { exception_type: "TimeoutError", message: "after 30s" }));
        assert_eq!(db.peer.db_system, Some("postgresql"));
        assert_eq!(db.peer.db_namespace, Some("orders"));
        assert_eq!(db.peer.peer_service, Some("orders-db"));
        assert_eq!(db.peer.http_status_code, Some(503));
        assert!(db.is_error());
        assert_eq!(view.service(db), "shop");
        assert_eq!(view.spans[0].parent_span_id, None);
        assert_eq!(view.spans[0].head_sampling_probability, Some(0.25));
        assert_eq!(db.head_sampling_probability, None);
        assert_eq!(view.spans[0].feature_flags().collect::<Vec<_>>(), vec![("new-checkout", "on"), ("dark-mode", "blue")]);
        let (mut found, mut flags) = ([None; 3], Vec::new());
        view.spans[0].scan(&["sampler.param", "missing", "sampler.type"], &mut found, |k, v| flags.push((k, v)));
        assert_eq!(found, [Some(AttributeValue::Double(0.25)), None, Some(AttributeValue::Str(b"probabilistic"))]);
        assert_eq!(flags, vec![("new-checkout", "on"), ("dark-mode", "blue")]);
        assert_eq!(db.feature_flags().count(), 0);
        // Any attribute by key, from the span or its resource.
        assert_eq!(db.attribute("unrelated"), Some(AttributeValue::Str(b"x")));
        assert_eq!(db.attribute("http.response.status_code"), Some(AttributeValue::Int(503)));
        assert_eq!(db.attribute("missing"), None);
        assert_eq!(view.spans[0].attribute("sampler.param"), Some(AttributeValue::Double(0.25)));
        assert_eq!(view.resource_attribute(db, "host").and_then(AttributeValue::as_str), Some("a"));
        assert_eq!(view.resource_attribute(&view.spans[2], "host"), None);
        assert_eq!(view.spans[2].parent_span_id, None, "an all-zero parent id is a root");
        assert_eq!(view.service(&view.spans[2]), UNKNOWN_SERVICE);
        for len in 0..message.len() {
            let _ = TraceView::parse(&message[..len]);
        }
    }
}
