//! Request matching: the virtual host for an authority, the first route that matches a
//! request, the RBAC policy in force and whether it allows the request. Pure functions over
//! the runtime model.

use std::net::SocketAddr;

use http::{HeaderMap, Method};

use crate::config::{
    HeaderMatch, HttpManager, PathMatch, Permission, Principal, Rbac, Route, RouteTable,
    StringMatch, VirtualHost,
};

/// What a matcher looks at in a request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RequestView<'a> {
    pub(crate) method: &'a Method,
    /// The path without the query string.
    pub(crate) path: &'a str,
    /// Lower-case `host[:port]` of the request (`:authority` or `Host`).
    pub(crate) authority: &'a str,
    pub(crate) scheme: &'a str,
    pub(crate) headers: &'a HeaderMap,
}

/// The virtual host that answers `authority`, as Envoy picks it: an exact domain, then the
/// longest `*.suffix` / `*suffix` wildcard, then the longest `prefix*` wildcard, then `*`.
/// The authority is tried as given and, when it has a port, without it.
pub(crate) fn virtual_host<'t>(table: &'t RouteTable, authority: &str) -> Option<&'t VirtualHost> {
    let mut best: Option<(u8, usize, &VirtualHost)> = None;
    let mut consider = |rank: u8, len: usize, vh: &'t VirtualHost| {
        let better = match best {
            None => true,
            Some((r, l, _)) => rank > r || (rank == r && len > l),
        };
        if better {
            best = Some((rank, len, vh));
        }
    };
    for vh in &table.virtual_hosts {
        for domain in &vh.domains {
            if domain == "*" {
                consider(0, 0, vh);
            } else if let Some(suffix) = domain.strip_prefix('*') {
                if authority.len() > suffix.len() && authority.ends_with(suffix) {
                    consider(2, suffix.len(), vh);
                }
            } else if let Some(prefix) = domain.strip_suffix('*') {
                if authority.len() > prefix.len() && authority.starts_with(prefix) {
                    consider(1, prefix.len(), vh);
                }
            } else if domain == authority {
                return Some(vh);
            }
        }
    }
    best.map(|(_, _, vh)| vh)
}

/// The first route of a virtual host that matches the request.
pub(crate) fn route<'v>(vh: &'v VirtualHost, req: &RequestView<'_>) -> Option<&'v Route> {
    vh.routes.iter().find(|r| {
        path_matches(&r.matcher.path, req.path)
            && r.matcher.headers.iter().all(|h| header_matches(h, req))
    })
}

fn path_matches(m: &PathMatch, path: &str) -> bool {
    match m {
        PathMatch::Prefix(p) => path.starts_with(p.as_str()),
        PathMatch::Exact(p) => path == p,
        PathMatch::Regex(re) => re.is_match(path),
    }
}

/// A header condition; pseudo-headers read the request line. A header that is repeated is
/// matched on its values joined with `,`, as Envoy does.
pub(crate) fn header_matches(h: &HeaderMatch, req: &RequestView<'_>) -> bool {
    let joined;
    let value: Option<&str> = match h.name.as_str() {
        ":method" => Some(req.method.as_str()),
        ":path" => Some(req.path),
        ":authority" | "host" => Some(req.authority),
        ":scheme" => Some(req.scheme),
        name => {
            let mut values = req.headers.get_all(name).iter();
            match (values.next(), values.next()) {
                (None, _) => None,
                (Some(one), None) => one.to_str().ok(),
                (Some(first), Some(second)) => {
                    let mut all = vec![first, second];
                    all.extend(values);
                    joined = all
                        .iter()
                        .filter_map(|v| v.to_str().ok())
                        .collect::<Vec<_>>()
                        .join(",");
                    Some(joined.as_str())
                }
            }
        }
    };
    let matched = match value {
        None => false,
        Some(v) => string_matches(&h.matcher, v),
    };
    matched != h.invert
}

pub(crate) fn string_matches(m: &StringMatch, value: &str) -> bool {
    match m {
        StringMatch::Exact(s) => value == s,
        StringMatch::Prefix(s) => value.starts_with(s.as_str()),
        StringMatch::Suffix(s) => value.ends_with(s.as_str()),
        StringMatch::Contains(s) => value.contains(s.as_str()),
        StringMatch::Regex(re) => re.is_match(value),
        StringMatch::Present => true,
    }
}

/// The RBAC in force for a route: the route's override, else the virtual host's, else the
/// connection manager's filter; `None` when no RBAC applies.
pub(crate) fn effective_rbac<'a>(
    manager: &'a HttpManager,
    vh: &'a VirtualHost,
    route: Option<&'a Route>,
) -> Option<&'a Rbac> {
    manager.rbac.as_ref()?;
    let over = route.and_then(|r| r.rbac.as_ref()).or(vh.rbac.as_ref());
    match over {
        Some(inner) => inner.as_deref(),
        None => manager.rbac.as_deref(),
    }
}

/// Who is asking and where: the peer's authenticated identity (a SPIFFE ID from its verified
/// certificate) and the local address the connection came in on.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Peer<'a> {
    pub(crate) identity: Option<&'a str>,
    pub(crate) local: SocketAddr,
}

/// Whether an ALLOW RBAC lets a request (`Some`) or a connection (`None`) through.
pub(crate) fn allows(rbac: &Rbac, peer: &Peer<'_>, req: Option<&RequestView<'_>>) -> bool {
    rbac.policies.iter().any(|(_, p)| {
        p.principals.iter().any(|pr| principal_matches(pr, peer))
            && p.permissions
                .iter()
                .any(|pm| permission_matches(pm, peer, req))
    })
}

fn principal_matches(p: &Principal, peer: &Peer<'_>) -> bool {
    match p {
        Principal::Any => true,
        Principal::And(all) => all.iter().all(|p| principal_matches(p, peer)),
        Principal::Or(any) => any.iter().any(|p| principal_matches(p, peer)),
        Principal::Not(p) => !principal_matches(p, peer),
        Principal::Authenticated(m) => peer.identity.is_some_and(|id| string_matches(m, id)),
    }
}

fn permission_matches(p: &Permission, peer: &Peer<'_>, req: Option<&RequestView<'_>>) -> bool {
    match p {
        Permission::Any => true,
        Permission::And(all) => all.iter().all(|p| permission_matches(p, peer, req)),
        Permission::Or(any) => any.iter().any(|p| permission_matches(p, peer, req)),
        Permission::Not(p) => !permission_matches(p, peer, req),
        Permission::DestinationPort(port) => peer.local.port() == *port,
        // A connection has no path or headers: such permissions never match one (fail closed).
        Permission::UrlPath(m) => req.is_some_and(|r| string_matches(m, r.path)),
        Permission::Header(h) => req.is_some_and(|r| header_matches(h, r)),
    }
}
