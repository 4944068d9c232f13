//! Arbitrary requests (path, authority, method, headers, peer identity and local port) through
//! the proxy's request matching over a real mesh configuration: path normalization, virtual
//! host choice, route choice, the RBAC in force and its verdict. Nothing may panic, and path
//! normalization must be idempotent and keep a leading `/`, leaving no `.` or `..` segment.

#![no_main]

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::LazyLock,
};

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use libfuzzer_sys::{
    arbitrary::{Result, Unstructured},
    fuzz_target,
};
use switchyard_proxy::{
    config::{HttpManager, NetworkFilter, Rbac, RouteSource, RouteTable, Runtime},
    fuzzing::{self, Request},
};
use switchyard_proxy_fuzz::{IDENTITIES, runtime};

struct Fixture {
    runtime: Runtime,
    /// Every domain of every virtual host, as authorities to try.
    domains: Vec<String>,
    /// Every listener port.
    ports: Vec<u16>,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let runtime = runtime();
    let mut domains: Vec<String> = runtime
        .routes
        .values()
        .flat_map(|t| &t.virtual_hosts)
        .flat_map(|v| &v.domains)
        .cloned()
        .collect();
    domains.sort();
    domains.dedup();
    let ports = runtime
        .listeners
        .values()
        .map(|l| l.address.port())
        .collect();
    Fixture {
        runtime,
        domains,
        ports,
    }
});

/// Path pieces that exercise normalization and the configuration's matchers.
const PIECES: [&str; 16] = [
    "/", "/api/", "/healthz", "/admin", ".", "..", "/./", "/../", "%2e", "%2E%2e", "%2f", "%2F",
    "%41", "%7e", "%", "?q=1",
];
const METHODS: [&str; 5] = ["GET", "HEAD", "POST", "CONNECT", "OPTIONS"];
const HEADERS: [&str; 4] = ["x-canary", "host", "content-type", "x-user"];
const VALUES: [&str; 4] = ["true", "yes", "no", "application/grpc"];

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data), &FIXTURE);
});

fn run(u: &mut Unstructured<'_>, fixture: &Fixture) -> Result<()> {
    let path = path(u)?;
    check_normalization(&path);

    let authority = match u.choose_index(3)? {
        0 => u.arbitrary::<String>()?,
        1 => format!("{}:{}", u.choose(&fixture.domains)?, u.arbitrary::<u16>()?),
        _ => u.choose(&fixture.domains)?.clone(),
    }
    .to_ascii_lowercase();
    let method = if u.ratio(3, 4)? {
        Method::from_bytes(u.choose(&METHODS)?.as_bytes())
    } else {
        Method::from_bytes(u.arbitrary::<&[u8]>()?)
    }
    .unwrap_or(Method::GET);
    let mut headers = HeaderMap::new();
    for _ in 0..u.int_in_range(0..=4u8)? {
        let name = if u.ratio(3, 4)? {
            HeaderName::from_static(u.choose(&HEADERS)?)
        } else {
            match HeaderName::from_bytes(u.arbitrary::<&[u8]>()?) {
                Ok(name) => name,
                Err(_) => continue,
            }
        };
        let value = if u.ratio(1, 2)? {
            HeaderValue::from_static(u.choose(&VALUES)?)
        } else {
            match HeaderValue::from_bytes(u.arbitrary::<&[u8]>()?) {
                Ok(value) => value,
                Err(_) => continue,
            }
        };
        headers.append(name, value);
    }
    let scheme = if u.arbitrary()? { "https" } else { "http" };
    let identity = match u.choose_index(3)? {
        0 => None,
        1 => Some(u.choose(&IDENTITIES)?.to_string()),
        _ => Some(u.arbitrary::<String>()?),
    };
    let port = if u.ratio(3, 4)? {
        *u.choose(&fixture.ports)?
    } else {
        u.arbitrary()?
    };
    let local = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 1, 5)), port);

    // As the HTTP proxy does: match on the normalized path without the query string.
    let normalized = fuzzing::normalize_path(&path);
    let path_only = normalized.split('?').next().unwrap_or_default();
    let request = Request {
        method: &method,
        path: path_only,
        authority: &authority,
        scheme,
        headers: &headers,
    };
    let rt = &fixture.runtime;
    check_strict_port(rt, &request);
    for listener in rt.listeners.values() {
        for chain in &listener.chains {
            match &chain.filter {
                NetworkFilter::Http(manager) => {
                    let table = match &manager.routes {
                        RouteSource::Rds(name) => rt.routes.get(name).map(AsRef::as_ref),
                        RouteSource::Inline(table) => Some(table.as_ref()),
                    };
                    if let Some(table) = table {
                        matching(manager, table, &request, identity.as_deref(), local);
                    }
                }
                NetworkFilter::Tcp(tcp) => {
                    if let Some(rbac) = &tcp.rbac {
                        connection(rbac, identity.as_deref(), local);
                    }
                }
                NetworkFilter::Close => {}
            }
        }
    }
    Ok(())
}

/// A path built from pieces: known ones and arbitrary strings.
fn path(u: &mut Unstructured<'_>) -> Result<String> {
    let mut path = String::new();
    for _ in 0..u.int_in_range(0..=8u8)? {
        if u.ratio(2, 3)? {
            path.push_str(u.choose(&PIECES)?);
        } else {
            path.push_str(u.arbitrary::<&str>()?);
        }
    }
    Ok(path)
}

fn check_normalization(path: &str) {
    let once = fuzzing::normalize_path(path);
    let twice = fuzzing::normalize_path(&once);
    assert_eq!(once, twice, "normalizing {path:?} twice differs from once");
    if path.starts_with('/') {
        assert!(once.starts_with('/'), "{path:?} normalized to {once:?}");
        assert!(
            !once.split('/').any(|s| s == "." || s == ".."),
            "{path:?} normalized to {once:?}"
        );
    }
}

fn matching(
    manager: &HttpManager,
    table: &RouteTable,
    request: &Request<'_>,
    identity: Option<&str>,
    local: SocketAddr,
) {
    let Some(vh) = fuzzing::virtual_host(table, request.authority) else {
        return;
    };
    let route = fuzzing::route(vh, request);
    if let Some(route) = route {
        assert!(vh.routes.iter().any(|r| std::ptr::eq(r, route)));
    }
    if let Some(rbac) = fuzzing::effective_rbac(manager, vh, route) {
        let _ = fuzzing::allows(rbac, identity, local, Some(request));
    }
}

/// The strict inbound HTTP port 8080 admits `ops/admin` for every request and nobody without a
/// certificate, whatever the request looks like.
fn check_strict_port(rt: &Runtime, request: &Request<'_>) {
    let Some(listener) = rt.listeners.get("inbound|8080") else {
        panic!("the fixture has no inbound|8080");
    };
    let local = SocketAddr::new(listener.address.ip(), 8080);
    for chain in &listener.chains {
        let NetworkFilter::Http(manager) = &chain.filter else {
            continue;
        };
        let RouteSource::Rds(name) = &manager.routes else {
            continue;
        };
        let Some(vh) = rt
            .routes
            .get(name)
            .and_then(|t| fuzzing::virtual_host(t, request.authority))
        else {
            continue;
        };
        let route = fuzzing::route(vh, request);
        let Some(rbac) = fuzzing::effective_rbac(manager, vh, route) else {
            panic!("inbound|8080 without RBAC for {request:?}");
        };
        assert!(
            fuzzing::allows(rbac, Some(IDENTITIES[1]), local, Some(request)),
            "ops/admin denied: {request:?}"
        );
        assert!(
            !fuzzing::allows(rbac, None, local, Some(request)),
            "a plaintext peer allowed: {request:?}"
        );
    }
}

fn connection(rbac: &Rbac, identity: Option<&str>, local: SocketAddr) {
    let _ = fuzzing::allows(rbac, identity, local, None);
}
