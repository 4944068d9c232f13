//! The Switchyard operator and CLI.

#![forbid(unsafe_code)]

pub mod annotations;
pub mod api_status;
pub mod cli;
pub mod controller;
pub mod edges;
pub mod identity;
pub mod index;
pub mod inject;
pub mod install;
pub mod intercept;
#[cfg(test)]
mod json_lookup;
pub mod local;
pub mod publish;
pub mod tap;
pub mod telemetry;
pub mod traffic_metrics;
pub mod webhook;
pub mod xds;
