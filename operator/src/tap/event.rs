//! What a tap shows of one request, read from the access-log entry a proxy sent (sans-IO).
//!
//! The entry says where the request came from and went (addresses, the client certificate's
//! SPIFFE ID on an inbound mTLS connection, the upstream cluster) and what it was (method,
//! authority, path, status, bytes, times). The proxy's side of the request is known from the
//! cluster: `inbound|<port>` is the proxy's own application, any other cluster a Service it
//! called. Identities the entry does not carry come from what the control plane compiled:
//! the proxy's own, and an outbound endpoint's ([`Peers`]).
//!
//! Every string an entry brings is cut to a bound ([`MAX_PATH_BYTES`], [`MAX_FIELD_BYTES`]):
//! a request's path is whatever its client sent (Envoy takes request heads up to 60 KiB), and
//! an event must stay one line a tap's reader takes ([`MAX_LINE_BYTES`]).

use std::{net::SocketAddr, time::Duration};

use envoy_types::pb::envoy::{
    config::core::v3::{Address, RequestMethod, address},
    data::accesslog::v3::{
        HttpAccessLogEntry, tls_properties::certificate_properties::subject_alt_name::San,
    },
};
use serde::{Deserialize, Serialize};
use switchyard_adapters::model::ProxyId;

use super::stream::MAX_LINE_BYTES;
use crate::edges::Peers;

/// The most bytes of a request's path an event keeps (cut at a character boundary).
pub const MAX_PATH_BYTES: usize = 4_096;

/// The most bytes an event keeps of any other string an entry brings: the authority, the
/// scheme, the cluster, `grpc-status` and the client certificate's SPIFFE ID.
pub const MAX_FIELD_BYTES: usize = 1_024;

// An event's JSON line fits a reader's bound even when every byte of those strings is a
// control character (escaped as `\u00XX`, 6 bytes), with 4 KiB left for the rest: the proxy's
// name, the destination's SPIFFE ID (both from the control plane) and the keys and numbers.
const _: () = assert!(6 * (MAX_PATH_BYTES + 5 * MAX_FIELD_BYTES) + 4_096 <= MAX_LINE_BYTES);

/// Which way the request went through the tapped proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Direction {
    /// To the proxy's own application.
    Inbound,
    /// From the proxy's application to a Service.
    Outbound,
}

/// One request, as `switchyard tap -o json` prints it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TapEvent {
    /// The proxy that saw it: `namespace/pod`.
    pub proxy: String,
    pub direction: Direction,
    /// The client's address.
    pub source: Option<SocketAddr>,
    /// The client's SPIFFE ID: on an inbound request, the verified client certificate's (none
    /// in plaintext); on an outbound one, the tapped proxy's own.
    pub source_identity: Option<String>,
    /// The server's address: the endpoint the request was sent to.
    pub destination: Option<SocketAddr>,
    /// The server's SPIFFE ID: on an inbound request, the tapped proxy's; on an outbound one,
    /// the endpoint's, when it is meshed.
    pub destination_identity: Option<String>,
    /// The cluster it was routed to (`<ns>/<svc>|<port>`, or `inbound|<port>`).
    pub cluster: String,
    pub method: String,
    pub scheme: String,
    pub authority: String,
    pub path: String,
    /// The status sent to the client; 0 when none was (a reset).
    pub status: u32,
    /// `grpc-status`, from the response's headers or trailers.
    pub grpc_status: Option<String>,
    /// When the proxy had the request's first byte, in microseconds since the Unix epoch
    /// (0 when the entry does not say). Sessions show events in this order.
    pub start_micros: u64,
    /// From the request's first byte to the response's last, in microseconds.
    pub latency_micros: u64,
    pub request_bytes: u64,
    pub response_bytes: u64,
}

impl TapEvent {
    /// One line, as `linkerd viz tap` writes the end of a request.
    pub fn line(&self) -> String {
        let or_dash = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".to_owned());
        let addr = |a: &Option<SocketAddr>| a.map_or_else(|| "-".to_owned(), |a| a.to_string());
        let dir = match self.direction {
            Direction::Inbound => "in",
            Direction::Outbound => "out",
        };
        let mut line = format!(
            "proxy={dir} pod={} src={} src_id={} dst={} dst_id={} tls={} :method={} :authority={} :path={} :status={} latency={}µs response-length={}B",
            self.proxy,
            addr(&self.source),
            or_dash(&self.source_identity),
            addr(&self.destination),
            or_dash(&self.destination_identity),
            self.tls(),
            self.method,
            self.authority,
            self.path,
            self.status,
            self.latency_micros,
            self.response_bytes,
        );
        if let Some(grpc) = &self.grpc_status {
            line.push_str(&format!(" grpc-status={grpc}"));
        }
        line
    }

    /// Whether the hop between the two ends was mTLS: both have an identity.
    pub fn tls(&self) -> bool {
        self.source_identity.is_some() && self.destination_identity.is_some()
    }
}

/// The events of `entries`, which `proxy` sent; `peers` supplies the identities entries do not
/// carry.
pub fn events_of(proxy: &ProxyId, entries: &[HttpAccessLogEntry], peers: &Peers) -> Vec<TapEvent> {
    entries.iter().map(|e| event(proxy, e, peers)).collect()
}

fn event(proxy: &ProxyId, entry: &HttpAccessLogEntry, peers: &Peers) -> TapEvent {
    let common = entry.common_properties.clone().unwrap_or_default();
    let request = entry.request.clone().unwrap_or_default();
    let response = entry.response.clone().unwrap_or_default();
    let own = peers.spiffe_id(proxy);
    let destination = socket(common.upstream_remote_address.as_ref());
    let cluster = common.upstream_cluster;
    let direction = if switchyard_adapters::envoy::inbound_port(&cluster).is_some() {
        Direction::Inbound
    } else {
        Direction::Outbound
    };
    let (source_identity, destination_identity) = match direction {
        Direction::Inbound => {
            let peer = common
                .tls_properties
                .and_then(|t| t.peer_certificate_properties)
                .and_then(|c| {
                    c.subject_alt_name.into_iter().find_map(|s| match s.san {
                        Some(San::Uri(uri)) => Some(uri),
                        _ => None,
                    })
                });
            (peer.map(|p| bounded(p, MAX_FIELD_BYTES)), own)
        }
        Direction::Outbound => {
            let server = destination.and_then(|d| peers.endpoint_spiffe_id(proxy, &cluster, d));
            (own, server)
        }
    };
    let grpc_status = ["grpc-status"].iter().find_map(|h| {
        response
            .response_headers
            .get(*h)
            .or_else(|| response.response_trailers.get(*h))
            .cloned()
    });
    let method = RequestMethod::try_from(request.request_method)
        .ok()
        .filter(|m| *m != RequestMethod::MethodUnspecified)
        .map_or_else(|| "-".to_owned(), |m| m.as_str_name().to_owned());
    let latency = common
        .time_to_last_downstream_tx_byte
        .map(|d| {
            Duration::new(
                u64::try_from(d.seconds).unwrap_or(0),
                u32::try_from(d.nanos).unwrap_or(0),
            )
        })
        .unwrap_or_default();
    let start_micros = common.start_time.map_or(0, |t| {
        let secs = u64::try_from(t.seconds).unwrap_or(0);
        let micros = u64::try_from(t.nanos).unwrap_or(0) / 1_000;
        secs.saturating_mul(1_000_000).saturating_add(micros)
    });
    TapEvent {
        proxy: proxy.to_string(),
        direction,
        source: socket(common.downstream_remote_address.as_ref()),
        source_identity,
        destination,
        destination_identity,
        cluster: bounded(cluster, MAX_FIELD_BYTES),
        method,
        scheme: bounded(request.scheme, MAX_FIELD_BYTES),
        authority: bounded(request.authority, MAX_FIELD_BYTES),
        path: bounded(request.path, MAX_PATH_BYTES),
        status: response.response_code.map_or(0, |c| c.value),
        grpc_status: grpc_status.map(|g| bounded(g, MAX_FIELD_BYTES)),
        start_micros,
        latency_micros: u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
        request_bytes: request.request_body_bytes,
        response_bytes: response.response_body_bytes,
    }
}

/// `s` cut to at most `max` bytes, at a character boundary.
fn bounded(mut s: String, max: usize) -> String {
    if s.len() > max {
        // A boundary is at most 3 bytes back; 0 always is one.
        let end = (0..=max)
            .rev()
            .find(|&i| s.is_char_boundary(i))
            .unwrap_or(0);
        s.truncate(end);
    }
    s
}

fn socket(address: Option<&Address>) -> Option<SocketAddr> {
    let Some(address::Address::SocketAddress(s)) = address?.address.as_ref() else {
        return None;
    };
    let port = match s.port_specifier {
        Some(
            envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier::PortValue(p),
        ) => u16::try_from(p).ok()?,
        _ => return None,
    };
    Some(SocketAddr::new(s.address.parse().ok()?, port))
}
