//! `switchyard-proxy`: the bundled sidecar proxy that consumes the xDS subset emitted by the
//! `bundled` adapter.

#![forbid(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod ads;
pub mod balance;
pub mod bootstrap;
mod client_stream;
pub mod config;
#[doc(hidden)]
pub mod fuzzing;
pub mod metrics;
pub mod metrics_push;
pub mod proxy;
pub mod state;
pub mod tls;
pub mod xds;
