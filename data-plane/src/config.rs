//! The proxy's runtime model and its translation from xDS, which live in
//! `switchyard-proxy-config` (shared with the bundled adapter); re-exported under the name the
//! data path uses.

#[cfg(test)]
mod tests;

pub use switchyard_proxy_config::*;
