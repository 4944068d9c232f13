//! The clients: each prints what the end-to-end suites parse and returns the exit code.

mod grpc;
mod http_get;
mod load;
mod tcp;

pub(crate) use grpc::grpc;
pub use http_get::GetSummary;
pub(crate) use http_get::{ClientOptions, RequestTemplate, get};
pub use load::LoadSummary;
pub(crate) use load::load;
pub(crate) use tcp::{banner, tcp};
