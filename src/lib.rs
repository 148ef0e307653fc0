//! segmentd: customer segments as roaring-bitmap set algebra, served over gRPC.
//!
//! The crate is one library with a thin binary. The engine (`index`,
//! `store`, `engine`, `rule`) knows nothing of gRPC; `service` converts
//! protobuf messages to the engine's types and back, and `server` wires the
//! service, health and reflection onto a listener.

pub mod auth;
pub mod cancel;
pub mod cli;
pub mod client;
pub mod engine;
pub mod error;
pub mod gate;
pub mod generate;
pub mod import;
pub mod index;
pub mod load;
pub mod metrics;
pub mod proto;
pub mod rule;
pub mod server;
pub mod service;
pub mod store;
pub mod time;
pub mod web;

pub use error::Error;
