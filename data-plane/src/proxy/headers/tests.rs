use http::{HeaderMap, HeaderValue, Request, header};

use super::{Rejected, XFCC, client_cert_details, sanitize_connection, sanitize_mesh_headers};
use crate::proxy::target::request_target;

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        map.append(
            header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    map
}

/// The header names, sorted (a removal may reorder a `HeaderMap`).
fn names(map: &HeaderMap) -> Vec<&str> {
    let mut names: Vec<&str> = map.keys().map(|k| k.as_str()).collect();
    names.sort_unstable();
    names
}

#[test]
fn connection_removes_what_it_names_and_itself() {
    let mut h = headers(&[
        ("host", "web"),
        ("x-foo", "1"),
        ("authorization", "secret"),
        ("cookie", "c"),
        ("connection", "x-foo, Authorization"),
        (
            "connection",
            "close, keep-alive, upgrade, connection, not a name",
        ),
    ]);
    assert_eq!(sanitize_connection(&mut h), Ok(()));
    assert_eq!(names(&h), ["cookie", "host"]);
}

/// `Connection: host` goes first, so the request has no authority left (400), as in Envoy,
/// unless its target is absolute-form, whose authority it keeps.
#[test]
fn connection_naming_host_leaves_no_authority() {
    let mut request = Request::builder()
        .uri("/x")
        .header("host", "web")
        .header("connection", "host")
        .body(())
        .unwrap();
    assert_eq!(sanitize_connection(request.headers_mut()), Ok(()));
    assert!(
        request_target(request.uri(), request.headers(), request.version()).is_err(),
        "{request:?}"
    );
    let mut request = Request::builder()
        .uri("http://web/x")
        .header("host", "web")
        .header("connection", "host, close")
        .body(())
        .unwrap();
    assert_eq!(sanitize_connection(request.headers_mut()), Ok(()));
    let target = request_target(request.uri(), request.headers(), request.version()).unwrap();
    assert_eq!(target.authority, "web");
}

#[test]
fn connection_may_not_name_forwarding_headers_pseudo_headers_or_ten_names() {
    for value in [
        "x-forwarded-for",
        "close, X-Forwarded-Host",
        "x-forwarded-proto",
        ":authority",
    ] {
        let mut h = headers(&[("connection", value), ("x-forwarded-for", "10.0.0.1")]);
        assert_eq!(
            sanitize_connection(&mut h),
            Err(Rejected::NominatesForwarded),
            "{value}"
        );
    }
    let nine = "a1,a2,a3,a4,a5,a6,a7,a8,close";
    assert_eq!(
        sanitize_connection(&mut headers(&[("connection", nine)])),
        Ok(())
    );
    let ten = "a1,a2,a3,a4,a5,a6,a7,a8,a9,close";
    assert_eq!(
        sanitize_connection(&mut headers(&[("connection", ten)])),
        Err(Rejected::TooManyNominated)
    );
}

#[test]
fn a_named_te_keeps_trailers_only() {
    let mut h = headers(&[("te", "trailers, gzip"), ("connection", "te")]);
    sanitize_connection(&mut h).unwrap();
    assert_eq!(h[header::TE], "trailers");
    let mut h = headers(&[("te", "gzip"), ("connection", "te")]);
    sanitize_connection(&mut h).unwrap();
    assert!(h.is_empty(), "{h:?}");
}

#[test]
fn mesh_headers_from_a_client_never_reach_the_application() {
    let claimed =
        "By=spiffe://cluster.local/ns/demo/sa/api;URI=spiffe://cluster.local/ns/demo/sa/admin";
    let sent = || {
        headers(&[
            ("x-forwarded-client-cert", claimed),
            ("x-envoy-internal", "true"),
            ("x-envoy-retry-on", "5xx"),
            ("x-envoy-upstream-rq-timeout-ms", "1"),
            ("x-envoy-original-path", "/kept"),
            ("x-request-id", "kept"),
        ])
    };
    let mut h = sent();
    sanitize_mesh_headers(&mut h, None);
    assert_eq!(names(&h), ["x-envoy-original-path", "x-request-id"]);
    let set = HeaderValue::from_static("By=a;Hash=00;URI=b");
    let mut h = sent();
    sanitize_mesh_headers(&mut h, Some(&set));
    let xfcc: Vec<_> = h.get_all(XFCC).iter().collect();
    assert_eq!(xfcc, [&set]);
}

#[test]
fn client_cert_details_have_envoys_format() {
    const API: &str = "spiffe://cluster.local/ns/demo/sa/api";
    const CLIENT: &str = "spiffe://cluster.local/ns/demo/sa/client";
    // SHA-256 of "abc" (FIPS 180-2, appendix B.1).
    let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    let value = client_cert_details(Some(API), b"abc", Some(CLIENT), true).unwrap();
    assert_eq!(value, format!("By={API};Hash={abc};URI={CLIENT}").as_str());
    // Without `uri`; without a URI SAN of its own (no `By`); a peer without one (`URI=`).
    let value = client_cert_details(Some(API), b"abc", Some(CLIENT), false).unwrap();
    assert_eq!(value, format!("By={API};Hash={abc}").as_str());
    let value = client_cert_details(None, b"abc", None, true).unwrap();
    assert_eq!(value, format!("Hash={abc};URI=").as_str());
    // A SAN that cannot be a header value gives no header at all.
    assert_eq!(
        client_cert_details(Some(API), b"abc", Some("spiffe://x/\n"), true),
        None
    );
}
