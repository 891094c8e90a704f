//! The store the sink writes and the query server reads: one SQL schema, migrated on open, on
//! SQLite (a file, the embedded default) or PostgreSQL (by URL, for shared deployments), and the
//! Jaeger form in which spans are stored.
//!
//! No Kafka here: the query server links this crate and not the runtime.

pub mod config;
pub mod jaeger;
pub mod reads;
pub mod store;

pub use config::{Retention, StorageSpec};
pub use store::{Cell, Param, Row, Store, StoreError, StoreUrl, Transaction};
