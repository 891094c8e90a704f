//! The router: reads spans in any supported encoding from the input topics and writes them to the
//! spans topic as `tracepipe.v1.TraceSpans`, one record per trace per input message, keyed by the
//! 16-byte trace id so one trace always lands in one partition and one assembler.
//!
//! Policy for bad input: a message that cannot be decoded at all goes to the DLQ (kind `decode`).
//! A message with some invalid spans (missing, all-zero or wrong-length ids) has its valid spans
//! routed and is also written to the DLQ (kind `rejected_spans`) with a reason that counts each
//! kind of rejection; `tracepipe_router_rejected_spans_total` counts the spans.

pub mod config;
mod metrics;

use prometheus::IntCounter;
use tracepipe_processor::{Emitter, InputRecord, OutputId, Poison, Processor, UnixNanos};
use tracepipe_schemas::split::SplitBatch;
use tracepipe_schemas::{Encoding, SpanSplitter};

pub use metrics::{REJECTED_SPANS, ROUTED_SPANS};

/// Per input topic: its encoding and that encoding's counters.
struct RoutedInput {
    encoding: Encoding,
    routed: IntCounter,
    chunks: IntCounter,
}

pub struct Router {
    inputs: Vec<RoutedInput>,
    output: OutputId,
    splitter: SpanSplitter,
    batch: SplitBatch,
}

impl Router {
    /// `encodings[i]` is the encoding of input topic `i`; spans go to `output`.
    pub fn new(encodings: Vec<Encoding>, output: OutputId, max_message_bytes: usize) -> Self {
        let inputs = encodings
            .into_iter()
            .map(|encoding| RoutedInput {
                encoding,
                routed: metrics::ROUTED.with_label_values(&[encoding.as_str()]),
                chunks: metrics::CHUNKS.with_label_values(&[encoding.as_str()]),
            })
            .collect();
        Router { inputs, output, splitter: SpanSplitter::new(max_message_bytes), batch: SplitBatch::default() }
    }
}

impl Processor for Router {
    fn name(&self) -> &'static str {
        "router"
    }

    fn on_input(&mut self, input: &InputRecord<'_>, _now: UnixNanos, out: &mut Emitter) -> Result<(), Poison> {
        let routed_input = &self.inputs[input.source.input as usize];
        let encoding = routed_input.encoding;
        self.splitter
            .split(encoding, input.payload, &mut self.batch)
            .map_err(|error| Poison::new("decode", format!("{encoding}: {error}")))?;
        for chunk in &self.batch.chunks {
            out.emit(self.output, &chunk.trace_id.0, self.batch.payload(chunk));
        }
        routed_input.routed.inc_by(self.batch.span_count());
        routed_input.chunks.inc_by(self.batch.chunks.len() as u64);
        if let Some(summary) = self.batch.rejection_summary() {
            for rejection in &self.batch.rejected {
                metrics::REJECTED.with_label_values(&[encoding.as_str(), rejection.kind()]).inc();
            }
            out.dead_letter(Poison::new("rejected_spans", format!("{encoding}: {summary}")));
        }
        Ok(())
    }
}
