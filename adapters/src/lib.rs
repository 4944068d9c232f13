//! The mesh model (the contract between the index and the data planes) and the adapters that
//! compile it into one proxy's configuration for one data plane.

#![forbid(unsafe_code)]

pub mod bundled;
pub mod envoy;
pub mod model;
#[cfg(any(test, feature = "test-support"))]
pub mod test_support;
