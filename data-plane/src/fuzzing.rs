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
/// As [`target::normalize_path`] says.
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, BadTarget> {
    target::normalize_path(path)
}

/// The target of a request as the HTTP proxy decides on it and forwards it, or why it is
/// refused (400).
///
/// # Errors
///
/// As [`target::request_target`] says.
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
