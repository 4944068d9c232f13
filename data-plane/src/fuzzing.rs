//! Entry points for the fuzz targets in `data-plane/fuzz/`: thin public wrappers over the
//! crate-private request matching of the data path. Not an API; hidden from the docs.

use std::{borrow::Cow, net::SocketAddr};

use http::{HeaderMap, Method};

use crate::{
    config::{HttpManager, Rbac, Route, RouteTable, VirtualHost},
    proxy::{
        routing::{self, Peer, RequestView},
        target,
    },
};

pub use crate::proxy::target::{BadTarget, Target};

/// What the matchers look at in a request, as the HTTP proxy hands it to them.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub method: &'a Method,
    /// The path without the query string.
    pub path: &'a str,
    /// Lower-case `host[:port]`.
    pub authority: &'a str,
    /// `http` or `https`.
    pub scheme: &'a str,
    pub headers: &'a HeaderMap,
}

impl<'a> Request<'a> {
    fn view(&self) -> RequestView<'a> {
        RequestView {
            method: self.method,
            path: self.path,
            authority: self.authority,
            scheme: self.scheme,
            headers: self.headers,
        }
    }
}

/// The path as routing, RBAC and the upstream see it, or why the request is refused.
///
/// # Errors
///
/// As the proxy's own `target::normalize_path` says.
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, BadTarget> {
    target::normalize_path(path)
}

/// The target of a request as the HTTP proxy decides on it and forwards it, or why it is
/// refused (400).
///
/// # Errors
///
/// As the proxy's own `target::request_target` says.
pub fn request_target(
    uri: &http::Uri,
    headers: &HeaderMap,
    version: http::Version,
) -> Result<Target, BadTarget> {
    target::request_target(uri, headers, version)
}

/// The virtual host of a route table that answers `authority`.
pub fn virtual_host<'t>(table: &'t RouteTable, authority: &str) -> Option<&'t VirtualHost> {
    routing::virtual_host(table, authority)
}

/// The first route of a virtual host that matches the request.
pub fn route<'v>(vh: &'v VirtualHost, req: &Request<'_>) -> Option<&'v Route> {
    routing::route(vh, &req.view())
}

/// The RBAC in force for a route, if any.
pub fn effective_rbac<'a>(
    manager: &'a HttpManager,
    vh: &'a VirtualHost,
    route: Option<&'a Route>,
) -> Option<&'a Rbac> {
    routing::effective_rbac(manager, vh, route)
}

/// Whether an ALLOW RBAC lets a request (`Some`) or a connection (`None`) from the peer with
/// `identity` (a SPIFFE ID; `None` for plaintext), arriving on `local`, through.
pub fn allows(
    rbac: &Rbac,
    identity: Option<&str>,
    local: SocketAddr,
    req: Option<&Request<'_>>,
) -> bool {
    let view = req.map(Request::view);
    routing::allows(rbac, &Peer { identity, local }, view.as_ref())
}

/// How a lenient application server reads a path: `\` as `/`, every escape decoded once (and a
/// decoded `\` as `/` too), path parameters (`;…`) dropped from every segment (so `..;x` is
/// `..`), dot segments resolved; empty segments kept. Bytes outside UTF-8 become U+FFFD.
///
/// The model the fuzz target and the differential end-to-end test hold forwarded paths to:
/// whatever path the proxy lets through a policy, an application reading it this way must
/// find inside that policy too.
pub fn lenient_path(path: &str) -> String {
    let slashed = path.replace('\\', "/");
    let bytes = slashed.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        let escape = match (bytes.get(i + 1), bytes.get(i + 2)) {
            (Some(hi), Some(lo)) if bytes[i] == b'%' => hex(*hi).zip(hex(*lo)),
            _ => None,
        };
        match escape {
            Some((hi, lo)) => {
                // Two hex digits: at most 0xff.
                decoded.push(u8::try_from((hi << 4) | lo).unwrap_or(u8::MAX));
                i += 3;
            }
            None => {
                decoded.push(bytes[i]);
                i += 1;
            }
        }
    }
    let decoded = String::from_utf8_lossy(&decoded).replace('\\', "/");
    let mut out: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in decoded.split('/').skip(1) {
        let name = segment.split(';').next().unwrap_or_default();
        trailing_slash = false;
        match name {
            "." => trailing_slash = true,
            ".." => {
                out.pop();
                trailing_slash = true;
            }
            name => out.push(name),
        }
    }
    let mut read = String::with_capacity(decoded.len());
    for segment in &out {
        read.push('/');
        read.push_str(segment);
    }
    if trailing_slash || read.is_empty() {
        read.push('/');
    }
    read
}
