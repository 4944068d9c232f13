//! Arbitrary requests (target, authority, method, headers, peer identity and local port) through
//! the proxy's request handling over a real mesh configuration: the request target's check and
//! normalization, virtual host choice, route choice, the RBAC in force and its verdict. Nothing
//! may panic; a target is refused when it holds what no request target may (a non-ASCII byte,
//! an encoded control byte in its path); a forwarded target normalizes to itself, keeps its
//! query, and means to a lenient server (`\` as `/`, `..;` as `..`, percent-decoded, dot
//! segments resolved) what the request meant; and whatever path a policy lets through, a
//! lenient server reading it still finds inside that policy.

#![no_main]

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::LazyLock,
};

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, Version};
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

/// Target pieces that exercise normalization and the configuration's matchers: separators
/// (raw, encoded, doubled), dot segments and their spellings, path parameters, escapes, control
/// and non-ASCII bytes, fragments, queries and absolute forms.
const PIECES: [&str; 36] = [
    "/",
    "/api/",
    "/healthz",
    "/admin",
    ".",
    "..",
    "/./",
    "/../",
    "%2e",
    "%2E%2e",
    "%2f",
    "%2F",
    "%41",
    "%7e",
    "%",
    "?q=1",
    "\\",
    "%5c",
    "%5C",
    "..;",
    ";",
    ";x=1",
    "%3b",
    "%3B",
    "//",
    "%00",
    "%0a",
    "%7F",
    "%25",
    "#",
    "\u{e9}",
    "%c3%a9",
    "*",
    "http://api",
    "https://API:8080",
    "user@",
];
const METHODS: [&str; 5] = ["GET", "HEAD", "POST", "CONNECT", "OPTIONS"];
const HEADERS: [&str; 4] = ["x-canary", "host", "content-type", "x-user"];
const VALUES: [&str; 4] = ["true", "yes", "no", "application/grpc"];

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data), &FIXTURE);
});

fn run(u: &mut Unstructured<'_>, fixture: &Fixture) -> Result<()> {
    let target = path(u)?;
    check_normalization(&target);

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
    if let Ok(host) = HeaderValue::from_str(&authority) {
        headers.insert(http::header::HOST, host);
    }
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

    // As hyper hands the request to the proxy: the target parsed by `http` (which refuses
    // controls and spaces, and drops a fragment), then checked and normalized as the HTTP
    // proxy does; a refused one is answered 400 and never matched or forwarded.
    let Ok(uri) = Uri::try_from(target.as_str()) else {
        return Ok(());
    };
    let Some(forwarded) = forwarded(&uri, &headers) else {
        return Ok(());
    };
    let path_only = forwarded.path();
    let request = Request {
        method: &method,
        path: path_only,
        authority: &authority,
        scheme,
        headers: &headers,
    };
    let rt = &fixture.runtime;
    check_strict_port(rt, &request);
    check_lenient_reading(rt, &request);
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

/// The target the proxy forwards for `uri`, or `None` when it refuses it, with the properties
/// of the module docs checked.
fn forwarded(uri: &Uri, headers: &HeaderMap) -> Option<Uri> {
    let path = uri.path();
    // What no forwarded path may hold: a byte outside ASCII, an encoded control byte.
    let must_refuse = !path.is_ascii() || has_encoded_control(path);
    let target = match fuzzing::request_target(uri, headers, Version::HTTP_11) {
        Ok(target) => target,
        Err(_) => return None,
    };
    assert!(!must_refuse, "{uri:?} was not refused");
    let forwarded = target.uri.unwrap_or_else(|| uri.clone());
    assert_eq!(forwarded.query(), uri.query(), "{uri:?}: the query changed");
    let again = fuzzing::request_target(&forwarded, headers, Version::HTTP_11);
    assert!(
        matches!(&again, Ok(t) if t.uri.is_none()),
        "{uri:?} forwarded as {forwarded:?}, which normalizes to {again:?}"
    );
    assert_eq!(
        fuzzing::lenient_path(forwarded.path()),
        fuzzing::lenient_path(path),
        "{uri:?} forwarded as {forwarded:?}: a lenient server reads it differently"
    );
    Some(forwarded)
}

fn has_encoded_control(path: &str) -> bool {
    let bytes = path.as_bytes();
    bytes.windows(3).any(|w| {
        let hex = |b: u8| char::from(b).to_digit(16);
        w[0] == b'%'
            && hex(w[1])
                .zip(hex(w[2]))
                .is_some_and(|(hi, lo)| hi < 2 || (hi == 7 && lo == 15))
    })
}

/// Whatever the strict inbound HTTP port 8080 lets through, for any identity, a lenient
/// server reading the forwarded path finds allowed too.
fn check_lenient_reading(rt: &Runtime, request: &Request<'_>) {
    let Some(listener) = rt.listeners.get("inbound|8080") else {
        panic!("the fixture has no inbound|8080");
    };
    let local = SocketAddr::new(listener.address.ip(), 8080);
    let read = fuzzing::lenient_path(request.path);
    let lenient = Request {
        path: &read,
        ..*request
    };
    for chain in &listener.chains {
        let NetworkFilter::Http(manager) = &chain.filter else {
            continue;
        };
        let RouteSource::Rds(name) = &manager.routes else {
            continue;
        };
        let Some(table) = rt.routes.get(name) else {
            continue;
        };
        let verdict = |req: &Request<'_>, identity: &str| {
            let Some(vh) = fuzzing::virtual_host(table, req.authority) else {
                return false;
            };
            let route = fuzzing::route(vh, req);
            fuzzing::effective_rbac(manager, vh, route)
                .is_some_and(|rbac| fuzzing::allows(rbac, Some(identity), local, Some(req)))
        };
        for identity in IDENTITIES {
            if verdict(request, identity) {
                assert!(
                    verdict(&lenient, identity),
                    "{identity} allowed {request:?}, which a lenient server reads as {read:?}, outside the policy"
                );
            }
        }
    }
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
    let Ok(once) = fuzzing::normalize_path(path) else {
        return;
    };
    let twice = fuzzing::normalize_path(&once);
    assert_eq!(
        Ok(&once),
        twice.as_ref(),
        "normalizing {path:?} twice differs from once"
    );
    assert!(once.starts_with('/'), "{path:?} normalized to {once:?}");
    assert!(
        !once.split('/').any(|s| s == "." || s == ".."),
        "{path:?} normalized to {once:?}"
    );
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
