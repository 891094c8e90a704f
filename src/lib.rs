//! The `tracepipe` binary's wiring: the topology file, the registry of processors, commands, the
//! embedded broker and the load generator. Processors, their configuration and Kafka I/O live in
//! their own crates.

pub mod embedded;
pub mod loadgen;
pub mod registry;
pub mod topics;
pub mod topology;
