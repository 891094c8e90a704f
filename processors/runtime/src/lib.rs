//! The one crate of tracepipe that talks to Kafka.
//!
//! A [`Processor`] (the contract, in `tracepipe-processor`) is a synchronous state machine;
//! [`Pipeline`] runs one against Kafka on a dedicated thread: poll → processor → produce → commit.
//!
//! # Offset protocol
//!
//! tracepipe is at-least-once and loses nothing at any crash. For every assigned input partition
//! the pipeline tracks three things (see [`progress`]):
//!
//! - the next offset to consume (one past the last message handed to the processor),
//! - the offsets whose outputs are still in flight: every record the processor emits *holds* an
//!   input offset until the broker acknowledges it: by default the message it was derived from,
//!   or the processor's low watermark of that partition when it is older (so a processor that
//!   can resume only from some positions never sees a commit between two of them); a stateful
//!   processor may name the oldest offset the output covers instead,
//! - the processor's low watermark: the smallest offset still held in its state
//!   ([`Processor::low_watermark`]), e.g. the first span of a trace that is still open.
//!
//! The committed position of a partition is the minimum of the three. So an offset is committed
//! only after every output derived from it is acknowledged and no state depends on it; a crash
//! replays from there and downstream deduplicates by span id, trace id and window keys.
//!
//! Undecodable input (a [`Poison`]) is written to the dead-letter topic with headers naming the
//! processor, the reason and the source topic, partition and offset; the DLQ record holds the
//! input offset like any output, so the offset advances only once the DLQ has it.
//!
//! On a rebalance the revoked partitions are flushed ([`Processor::on_revoke`]), their outputs
//! awaited, their positions committed synchronously, and their state dropped before the
//! assignment changes; the new owner replays from the committed watermark.
//!
//! A position counts as committed only once the broker accepted it (per partition, in the commit
//! callback, or the answer of a synchronous commit); until then every commit round asks for it
//! again, and the synchronous commits at revoke and drain are retried until their deadline.
//!
//! More than `max_in_flight` unacknowledged outputs, half the producer queue's bytes in flight,
//! or a processor that says it is congested ([`Processor::congested`]) is backpressure: the
//! pipeline pauses its input partitions and keeps polling the consumer (so the member stays in its
//! group), ticking and serving acknowledgements until there is room, then resumes them. A delivery
//! that fails for a reason that may pass is sent again for as long as it fails; one the broker
//! refuses for good goes to the dead-letter topic with the input position it holds.
//!
//! Consumer errors are logged at most every 30 s per kind and librdkafka retries them; what it
//! cannot retry its way out of stops the pipeline with the reason: the broker refusing the
//! credentials or the TLS handshake before the pipeline ever connected, authorization refused,
//! and records that cannot be read holding a partition for 30 s.

pub mod admin;
pub mod dlq;
pub mod error;
pub mod metrics;
pub mod pipeline;
pub mod progress;
pub mod publish;
pub mod replay;
pub mod self_trace;
pub mod settings;

pub use admin::{AdminServer, ComponentState, Health};
pub use error::RuntimeError;
pub use pipeline::{Pipeline, PipelineExit};
pub use tracepipe_processor::{trace_context, Emitter, InputRecord, OutputId, Poison, Processor, SourceOffset, SourcePartition, UnixNanos};
pub use publish::{PublishError, Publisher};
pub use replay::{read_to_end, ReplayError};
pub use settings::{KafkaSettings, PipelineSettings};
