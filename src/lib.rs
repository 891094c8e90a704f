//! The `tracepipe` binary's wiring: topology, commands, the embedded broker and the load generator.
//! Processors and Kafka I/O live in their own crates.

pub mod embedded;
pub mod loadgen;
pub mod processes;
pub mod topics;
pub mod topology;
