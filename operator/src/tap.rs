//! Tap: live requests from the proxies a user selects, as they happen.
//!
//! ```text
//!  switchyard tap ──GET /tap?…──▶ admin (local mode) ─┐
//!  switchyard tap ─▶ API server ─▶ tap API (cluster) ─┴open──▶ Hub ──selects(proxy)──▶ publisher: tapped proxies'
//!        ▲                                         │                       HCMs get an access log
//!        └──── one JSON line per request ◀─ Session ◀─ publish(proxy, events) ◀─ AccessLogService
//!                                          (filter, max rps, bounded queue)       ◀── proxies (tapped only)
//! ```
//!
//! In a cluster the tap API ([`crate::controller::tap_api`]) authorizes the user (RBAC, then a
//! SubjectAccessReview) and merges the other replicas' sessions into the one it opens here.
//!
//! A proxy streams its requests only while a session selects it: the [`Hub`] tells the
//! publisher which proxies are tapped, and the publisher gives exactly those the access log
//! ([`switchyard_adapters::envoy::tap`]). When the last session selecting a proxy ends, its
//! configuration loses the access log again. Everything is bounded: sessions (at most
//! [`MAX_SESSIONS`]), each session's rate ([`TapFilter::max_rps`]) and queue
//! ([`SESSION_QUEUE`]); events past a bound are dropped and counted, never buffered. A proxy
//! never logs a request header (see the adapter), so no credential reaches a tap. A session
//! shows events in the order their requests started ([`reorder`]), a fraction of a second late.

pub mod event;
pub mod hub;
pub mod reorder;
pub mod server;
pub mod stream;

#[cfg(test)]
pub(crate) mod tests;

pub use self::{
    event::{Direction, TapEvent, events_of},
    hub::{Hub, MAX_SESSIONS, SESSION_QUEUE, Session, TapFilter},
    server::AccessLogServer,
};

/// The admin path of a tap: `GET /tap?namespace=<ns>&pod=<name>&method=<m>&authority=<a>&path=<prefix>&max_rps=<n>`,
/// answered with one JSON [`TapEvent`] per line for as long as the client reads.
pub const TAP_PATH: &str = "/tap";
