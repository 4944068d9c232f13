//! `switchyard-proxy`: the bundled sidecar proxy that consumes the xDS subset emitted by the
//! `bundled` adapter.

#![forbid(unsafe_code)]

pub mod xds;
