//! What every tracepipe processor is, independent of Kafka.
//!
//! - [`Processor`]: a synchronous state machine that gets input and the current time and writes
//!   outputs into an [`Emitter`]; it never touches Kafka, tokio or the clock. `tracepipe-runtime`
//!   runs one against Kafka.
//! - [`config`]: how a processor's section of topology.yaml is read and validated, every problem
//!   reported with its path in the file.
//! - [`trace_context`]: the W3C trace context carried on tracepipe's own records.

pub mod config;
pub mod processor;
pub mod trace_context;

pub use processor::{EmittedRecord, Emitter, InputRecord, OutputId, Poison, Processor, SourceOffset, SourcePartition, UnixNanos};
pub use trace_context::TraceContext;
