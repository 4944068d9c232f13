//! The request head an application may trust: what the proxy rejects, removes and sets before
//! routing and RBAC look at a request, as Envoy 1.40's codec and connection manager do with the
//! settings the adapter sends (`use_remote_address` unset, so no client is taken as internal).
//!
//! - `Connection` may name hop-by-hop headers to remove, but not `x-forwarded-for`,
//!   `x-forwarded-host`, `x-forwarded-proto` or a pseudo-header, nor ten names or more (400);
//!   a removed `Host` leaves a request without an authority (400). `te` keeps `trailers`.
//! - The authority and the path are then `proxy::target`'s: one authority, the `Host` the
//!   application gets, and a normalized target, or a 400.
//! - `x-forwarded-client-cert` is removed, then set from the verified client certificate when
//!   the connection manager says `SANITIZE_SET` ([`client_cert_details`]); the `x-envoy-*`
//!   headers Envoy removes from requests of clients it does not trust are removed too.

#[cfg(test)]
mod tests;

use http::{HeaderMap, HeaderName, HeaderValue, header};
use sha2::{Digest, Sha256};

/// The request header that carries the client certificate the mesh verified.
pub(crate) const XFCC: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

/// The `x-envoy-*` headers Envoy removes from a request whose client it does not take as
/// internal (`cleanInternalHeaders`, and `x-envoy-internal` always): with the adapter's
/// settings, every request. They steer Envoy's router (retries, timeouts, stats) or claim a
/// trusted origin, so a client must not hand them to the application through the mesh.
const ENVOY_INTERNAL: [HeaderName; 16] = [
    HeaderName::from_static("x-envoy-internal"),
    HeaderName::from_static("x-envoy-retriable-status-codes"),
    HeaderName::from_static("x-envoy-retriable-header-names"),
    HeaderName::from_static("x-envoy-retry-on"),
    HeaderName::from_static("x-envoy-retry-grpc-on"),
    HeaderName::from_static("x-envoy-max-retries"),
    HeaderName::from_static("x-envoy-upstream-alt-stat-name"),
    HeaderName::from_static("x-envoy-upstream-rq-timeout-ms"),
    HeaderName::from_static("x-envoy-upstream-rq-per-try-timeout-ms"),
    HeaderName::from_static("x-envoy-upstream-rq-timeout-alt-response"),
    HeaderName::from_static("x-envoy-expected-rq-timeout-ms"),
    HeaderName::from_static("x-envoy-force-trace"),
    HeaderName::from_static("x-envoy-ip-tags"),
    HeaderName::from_static("x-envoy-original-url"),
    HeaderName::from_static("x-envoy-hedge-on-per-try-timeout"),
    // Consumed by Envoy's router, so never forwarded either.
    HeaderName::from_static("x-envoy-upstream-stream-duration-ms"),
];

/// Headers `Connection` may not name: removing them would hide where a request came from
/// (Envoy's `sanitizeConnectionHeader`).
const NOT_NOMINABLE: [HeaderName; 3] = [
    HeaderName::from_static("x-forwarded-for"),
    HeaderName::from_static("x-forwarded-host"),
    HeaderName::from_static("x-forwarded-proto"),
];

/// Tokens of `Connection` that are options, not header names.
const CONNECTION_OPTIONS: [&str; 4] = ["close", "http2-settings", "keep-alive", "upgrade"];

/// From this many tokens on, `Connection` is refused (Envoy's limit).
const MAX_CONNECTION_TOKENS: usize = 10;

/// Why a request is answered 400 before it is routed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Rejected {
    #[error("the connection header names too many headers")]
    TooManyNominated,
    #[error("the connection header names an x-forwarded header or a pseudo-header")]
    NominatesForwarded,
}

/// Removes the headers `Connection` names, then `Connection` itself, as Envoy's HTTP/1 codec
/// and connection manager do; `te` keeps only `trailers` (gRPC needs it).
pub(crate) fn sanitize_connection(headers: &mut HeaderMap) -> Result<(), Rejected> {
    if !headers.contains_key(header::CONNECTION) {
        return Ok(());
    }
    let tokens: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    if tokens.len() >= MAX_CONNECTION_TOKENS {
        return Err(Rejected::TooManyNominated);
    }
    for token in &tokens {
        if CONNECTION_OPTIONS.contains(&token.as_str()) || token == header::CONNECTION.as_str() {
            continue;
        }
        if token.starts_with(':') || NOT_NOMINABLE.iter().any(|h| h.as_str() == token) {
            return Err(Rejected::NominatesForwarded);
        }
        // A token that is no header name names nothing there is to remove.
        let Ok(name) = HeaderName::from_bytes(token.as_bytes()) else {
            continue;
        };
        if name == header::TE {
            let trailers = headers.get_all(header::TE).iter().any(|v| {
                v.to_str().is_ok_and(|v| {
                    v.split(',')
                        .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
                })
            });
            headers.remove(header::TE);
            if trailers {
                headers.insert(header::TE, HeaderValue::from_static("trailers"));
            }
            continue;
        }
        headers.remove(name);
    }
    headers.remove(header::CONNECTION);
    Ok(())
}

/// Removes the identity headers a client may not set, and sets `x-forwarded-client-cert` to
/// `client_cert` (the connection's, from [`client_cert_details`]) when there is one.
pub(crate) fn sanitize_mesh_headers(headers: &mut HeaderMap, client_cert: Option<&HeaderValue>) {
    headers.remove(XFCC);
    for name in &ENVOY_INTERNAL {
        headers.remove(name);
    }
    if let Some(value) = client_cert {
        headers.insert(XFCC, value.clone());
    }
}

/// The `x-forwarded-client-cert` value Envoy's `SANITIZE_SET` gives a connection whose client
/// presented `peer_leaf` (DER): `By=` the proxy's own first URI SAN (left out when it has
/// none), `Hash=` the lower-case hex SHA-256 of `peer_leaf`, and with `uri`, `URI=` the
/// client's first URI SAN (present, if empty, when it has none). `None` when a SAN cannot be
/// a header value: then the application gets no header rather than a wrong one.
pub(crate) fn client_cert_details(
    own_uri: Option<&str>,
    peer_leaf: &[u8],
    peer_uri: Option<&str>,
    uri: bool,
) -> Option<HeaderValue> {
    use std::fmt::Write as _;
    let mut value = String::with_capacity(200);
    if let Some(own) = own_uri {
        value.push_str("By=");
        value.push_str(own);
        value.push(';');
    }
    value.push_str("Hash=");
    for b in Sha256::digest(peer_leaf).iter() {
        let _ = write!(value, "{b:02x}");
    }
    if uri {
        value.push_str(";URI=");
        value.push_str(peer_uri.unwrap_or_default());
    }
    HeaderValue::from_str(&value).ok()
}
