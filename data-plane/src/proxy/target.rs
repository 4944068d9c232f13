//! The target of a request as routing, RBAC and the application all see it: refused where Envoy
//! (with the adapter's `normalize_path`) refuses it, or where a lenient server could read a dot
//! segment into it that the proxy did not see; otherwise normalized once, and forwarded as
//! normalized.
//!
//! Per class, as Envoy 1.40 does with the adapter's HCM (`normalize_path: true`,
//! `merge_slashes` and `path_with_escaped_slashes_action` unset), and where it is stricter:
//!
//! | class | Envoy | here |
//! |---|---|---|
//! | `\` in the path | read as `/` | the same |
//! | `.` / `..` segments, `%2e` spellings | resolved | the same |
//! | `.;x` / `..;x` (path parameters on a dot segment) | resolved, parameters dropped | the same, also when the dots are `%2e` (Envoy forwards `%2e%2e;` as `..;`) |
//! | `%2F`, `%5C`, `%3B` | kept as sent | kept, but refused where a server decoding them would resolve dot segments differently (`..%2F`, `x%5C..`, `..%3B`, `..;%5C..`, `a%2Fb/..`) |
//! | other escapes | unreserved decoded, the rest kept | unreserved decoded, the rest in upper case, a bare `%` as `%25` |
//! | `//` | kept | kept |
//! | raw control bytes, space, non-ASCII | 400 | 400 |
//! | `%00` | 400 | 400, and every other encoded control byte (`%01`–`%1F`, `%7F`) |
//! | `#` fragment | 400 | 400 where the proxy sees it (HTTP's URI parser drops a fragment before the proxy sees the request, so that one is forwarded without it) |
//! | `*`, empty, not starting with `/` | 400 (`OPTIONS *`: no route) | 400 |
//! | absolute-form target | its path; `Host` becomes its authority, userinfo dropped | the same; a scheme other than `http`/`https` is refused, as Envoy does |
//! | `Host` missing (HTTP/1.1), not an authority | 400 | 400 |
//! | `Host` repeated | joined with `,` | 400 |
//! | HTTP/2 `host` beside `:authority` | `:authority` is the `Host` | the same |
//! | headers over 60 KiB (`max_request_headers_kb`) | 431 | 431 (HTTP/2: refused past hyper's 16 KiB header list) |

use std::borrow::Cow;

use http::{
    HeaderMap, Uri, Version, header,
    uri::{Authority, PathAndQuery, Scheme},
};

#[cfg(test)]
mod tests;

/// The most bytes a request's headers may take, counted as [`head_size`] counts them: 60 KiB,
/// Envoy's default `max_request_headers_kb` (unset in the adapter's HCM). A larger request is
/// answered 431, as Envoy answers it.
pub(crate) const MAX_REQUEST_HEADERS: usize = 60 * 1024;

/// The size of a request's headers as Envoy counts it against `max_request_headers_kb`: the
/// names and values of its headers, with `:method`, `:path` and, when the target has them,
/// `:authority` and `:scheme` among them.
pub(crate) fn head_size<B>(request: &http::Request<B>) -> usize {
    let uri = request.uri();
    let pseudo = [
        (":method", Some(request.method().as_str())),
        (":path", uri.path_and_query().map(PathAndQuery::as_str)),
        (":authority", uri.authority().map(Authority::as_str)),
        (":scheme", uri.scheme_str()),
    ];
    let pseudo: usize = pseudo
        .iter()
        .filter_map(|(name, value)| value.map(|v| name.len() + v.len()))
        .sum();
    let headers: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    pseudo + headers
}

/// Why a request is refused before routing: the proxy answers it 400.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadTarget {
    #[error("the request target is not a path starting with `/`")]
    NotAPath,
    #[error("the request target has a fragment")]
    Fragment,
    #[error("the request target has a control character or a space, raw or percent-encoded")]
    ControlCharacter,
    #[error("the request target has a byte outside ASCII")]
    NonAscii,
    #[error("the path has a dot segment that a server decoding its escapes reads differently")]
    AmbiguousDotSegment,
    #[error("the request target's scheme is neither http nor https")]
    Scheme,
    #[error("the request has no Host header, more than one, or one that is not an authority")]
    Host,
}

/// What the proxy decides on and forwards: the target URI with its path normalized (the query
/// as sent, the authority without userinfo), and the request's authority in lower case.
#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    /// `None` when the request's URI is already normal.
    pub uri: Option<Uri>,
    /// `host[:port]`, lower case: the URI's (HTTP/2 `:authority`, an absolute-form target),
    /// else the `Host` header's; empty when there is neither (HTTP/1.0).
    pub authority: String,
}

/// The target of a request with `uri`, `headers` and `version`, as [`Target`] says, or why it
/// is refused.
///
/// # Errors
///
/// As the [module](self) docs say, per class.
pub(crate) fn request_target(
    uri: &Uri,
    headers: &HeaderMap,
    version: Version,
) -> Result<Target, BadTarget> {
    if let Some(scheme) = uri.scheme()
        && *scheme != Scheme::HTTP
        && *scheme != Scheme::HTTPS
    {
        return Err(BadTarget::Scheme);
    }
    let authority = authority(uri, headers, version)?;
    let raw = uri.path_and_query().map_or("", PathAndQuery::as_str);
    check_bytes(raw)?;
    let (path, query) = match raw.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (raw, None),
    };
    // An absolute-form target without a path (`http://host`) is for `/`.
    let path = if path.is_empty() && uri.scheme().is_some() {
        "/"
    } else {
        path
    };
    let normalized = normalize_path(path)?;
    let path_and_query = match query {
        Some(q) => Cow::Owned(format!("{normalized}?{q}")),
        None => normalized,
    };
    let userinfo = uri.authority().is_some_and(|a| a.as_str().contains('@'));
    let uri = if path_and_query == raw && !userinfo {
        None
    } else {
        let mut parts = uri.clone().into_parts();
        parts.path_and_query = Some(
            PathAndQuery::try_from(path_and_query.into_owned()).map_err(|_| BadTarget::NotAPath)?,
        );
        if let Some(a) = uri.authority() {
            parts.authority = Some(without_userinfo(a).ok_or(BadTarget::Host)?);
        }
        Some(Uri::from_parts(parts).map_err(|_| BadTarget::NotAPath)?)
    };
    Ok(Target { uri, authority })
}

/// The authority of an absolute URI without its userinfo (`user@host:port` → `host:port`).
fn without_userinfo(a: &Authority) -> Option<Authority> {
    match a.port() {
        Some(port) => format!("{}:{}", a.host(), port.as_str()).parse().ok(),
        None => a.host().parse().ok(),
    }
}

/// See [`Target::authority`]: the checks, then [`named_authority`].
fn authority(uri: &Uri, headers: &HeaderMap, version: Version) -> Result<String, BadTarget> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(BadTarget::Host);
    }
    // An empty Host is allowed (RFC 9112 §3.2, a target without an authority); any other
    // must be one, so that what matches `:authority` is what the application reads.
    if let Some(h) = host
        && !h.is_empty()
        && h.to_str()
            .ok()
            .and_then(|s| s.parse::<Authority>().ok())
            .is_none()
    {
        return Err(BadTarget::Host);
    }
    match uri.authority() {
        Some(a) if without_userinfo(a).is_none() => return Err(BadTarget::Host),
        None if host.is_none() && version == Version::HTTP_11 => return Err(BadTarget::Host),
        _ => {}
    }
    Ok(named_authority(uri, headers).into_owned())
}

/// The authority a request names, as [`Target::authority`] has it once [`request_target`]
/// accepted the request: the target's without its userinfo, else the `Host` header's (empty
/// without either), in lower case. Borrowed unless lower-casing changes it. Nothing is
/// checked: of a request `request_target` refuses, it is the target's, else the first
/// `Host`'s, or empty.
fn named_authority<'a>(uri: &'a Uri, headers: &'a HeaderMap) -> Cow<'a, str> {
    let named = match uri.authority() {
        // What follows the last `@` is the host and port, as `without_userinfo` rebuilds them.
        Some(a) => a
            .as_str()
            .rsplit_once('@')
            .map_or(a.as_str(), |(_, host)| host),
        None => headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default(),
    };
    if named.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(named.to_ascii_lowercase())
    } else {
        Cow::Borrowed(named)
    }
}

/// The path and authority routing would see for a request with `uri` and `headers`, for a look
/// at it before [`request_target`] runs (an access log's filter, as the request starts): the
/// normalized path without the query ([`normalize_path`]) and [`named_authority`]. Both are
/// borrowed from the request unless normalizing or lower-casing changes them, so the usual
/// request costs no allocation. Nothing is refused: of a request `request_target` refuses (it
/// is answered 400) the path is as sent.
pub(crate) fn preview<'a>(uri: &'a Uri, headers: &'a HeaderMap) -> (Cow<'a, str>, Cow<'a, str>) {
    let path = normalize_path(uri.path()).unwrap_or(Cow::Borrowed(uri.path()));
    (path, named_authority(uri, headers))
}

/// Bytes a request target never has (RFC 9112 §3.2: no controls, spaces or non-ASCII, and a
/// fragment is the client's own).
fn check_bytes(target: &str) -> Result<(), BadTarget> {
    for b in target.bytes() {
        match b {
            0..=0x20 | 0x7f => return Err(BadTarget::ControlCharacter),
            0x80.. => return Err(BadTarget::NonAscii),
            b'#' => return Err(BadTarget::Fragment),
            _ => {}
        }
    }
    Ok(())
}

/// The path (no query) as routing, RBAC and the upstream see it, and as Envoy's
/// `normalize_path` leaves it (RFC 3986 §6.2.2): `\` read as `/`; percent-encoded unreserved
/// characters decoded, other escapes in upper case, a `%` that starts no escape encoded as
/// `%25`; `.` and `..` segments removed, with any path parameters (`..;x`). Normalizing again
/// changes nothing. `/api/../admin` and its spellings cannot slip past a rule about `/admin`,
/// and a server that decodes `%2F`, `%5C` or `%3B` before it resolves dot segments reads what
/// is forwarded as the request meant: a path it would resolve differently is refused (a dot
/// segment that only decoding reveals, or a `..` that removes a segment with an encoded
/// separator, which is two segments to such a server).
///
/// # Errors
///
/// A path that does not start with `/`, has a byte a request target never has, an encoded
/// control byte, or a dot segment that a server decoding first resolves differently.
pub(crate) fn normalize_path(path: &str) -> Result<Cow<'_, str>, BadTarget> {
    if !path.starts_with('/') {
        return Err(BadTarget::NotAPath);
    }
    check_bytes(path)?;
    let plain =
        !path.contains(['%', '\\']) && !path.split('/').any(|segment| dot(segment).is_some());
    if plain {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(path)?;
    let mut out: Vec<&str> = Vec::new();
    // The path starts with `/`, so the first segment is empty.
    let mut trailing_slash = false;
    for segment in decoded.split('/').skip(1) {
        trailing_slash = false;
        reveals_no_dot(segment)?;
        match dot(segment) {
            Some(Dot::Current) => trailing_slash = true,
            Some(Dot::Parent) => {
                // `a%2Fb/..` is `/` here but `a/` to a server that decodes first.
                if out
                    .last()
                    .is_some_and(|s| s.contains("%2F") || s.contains("%5C"))
                {
                    return Err(BadTarget::AmbiguousDotSegment);
                }
                out.pop();
                trailing_slash = true;
            }
            None => out.push(segment),
        }
    }
    let mut normalized = String::with_capacity(decoded.len());
    for segment in &out {
        normalized.push('/');
        normalized.push_str(segment);
    }
    if trailing_slash || normalized.is_empty() {
        normalized.push('/');
    }
    Ok(Cow::Owned(normalized))
}

/// A dot segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dot {
    /// `.`
    Current,
    /// `..`
    Parent,
}

/// Whether a segment is a dot segment: `.` or `..`, with or without path parameters (what
/// follows a `;`), as Envoy and servers that strip parameters (Tomcat, Jetty) read it.
fn dot(segment: &str) -> Option<Dot> {
    match segment.split(';').next() {
        Some(".") => Some(Dot::Current),
        Some("..") => Some(Dot::Parent),
        _ => None,
    }
}

/// Refuses a segment in which a server that decodes `%2F` and `%5C` to separators and `%3B`
/// to `;` would find a dot segment the proxy does not resolve as one: `..%2F`, `x%5C..`,
/// `..%3B`, and a dot segment whose parameters hold a separator (`..;%5C..`), whose
/// parameters the proxy drops but such a server splits into more segments. Every other escape
/// of a dot or a separator is decoded or refused before this.
fn reveals_no_dot(segment: &str) -> Result<(), BadTarget> {
    if !segment.contains('%') {
        return Ok(());
    }
    let decoded = percent_decode(segment);
    let is_dot = |piece: &[u8]| {
        let name = piece.split(|b| *b == b';').next().unwrap_or_default();
        name == b"." || name == b".."
    };
    let separator = |b: &u8| *b == b'/' || *b == b'\\';
    let hidden = if decoded.split(separator).nth(1).is_none() {
        // One segment to such a server too: hidden only if the proxy does not see its dots.
        is_dot(&decoded) && dot(segment).is_none()
    } else {
        decoded.split(separator).any(is_dot)
    };
    if hidden {
        return Err(BadTarget::AmbiguousDotSegment);
    }
    Ok(())
}

/// Every escape decoded once; a `%` that starts none is kept.
fn percent_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if let Some(c) = escape_at(bytes, i) {
            out.push(c);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// The byte an escape at `i` stands for, if there is one.
fn escape_at(bytes: &[u8], i: usize) -> Option<u8> {
    if bytes.get(i) != Some(&b'%') {
        return None;
    }
    let hi = hex(*bytes.get(i + 1)?)?;
    let lo = hex(*bytes.get(i + 2)?)?;
    Some((hi << 4) | lo)
}

/// See [`normalize_path`]: unreserved escapes decoded, the others in upper case, a bare `%`
/// escaped, `\` as `/`; an encoded control byte is refused.
fn decode_unreserved(path: &str) -> Result<String, BadTarget> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if let Some(c) = escape_at(bytes, i) {
            if c.is_ascii_control() {
                // A server decoding `%00` ends the path there; `%0A` splits a log line.
                return Err(BadTarget::ControlCharacter);
            }
            if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
                out.push(char::from(c));
            } else {
                out.push('%');
                out.push(char::from(bytes[i + 1].to_ascii_uppercase()));
                out.push(char::from(bytes[i + 2].to_ascii_uppercase()));
            }
            i += 3;
        } else if bytes[i] == b'%' {
            // A `%` that starts no escape is escaped itself. Left bare, it would form a new
            // escape with what the decoding puts after it (`%%32%65` → `%2e`), which the
            // upstream would decode once more: a `..` the routing and RBAC never saw.
            out.push_str("%25");
            i += 1;
        } else if bytes[i] == b'\\' {
            // Envoy and many servers read a backslash as a slash.
            out.push('/');
            i += 1;
        } else {
            // ASCII only: `check_bytes` refused the rest.
            out.push(char::from(bytes[i]));
            i += 1;
        }
    }
    Ok(out)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}
