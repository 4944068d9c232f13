use http::{HeaderMap, HeaderValue, Uri, Version, header};

use super::{BadTarget, normalize_path, preview, request_target};

fn n(path: &str) -> Result<String, BadTarget> {
    normalize_path(path).map(std::borrow::Cow::into_owned)
}

fn ok(path: &str) -> String {
    n(path).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

#[test]
fn dot_segments_are_resolved_as_envoy_resolves_them() {
    assert_eq!(ok("/api/users"), "/api/users");
    assert_eq!(ok("/api/x/../../admin"), "/admin");
    assert_eq!(ok("/api/./x"), "/api/x");
    assert_eq!(ok("/a/b/.."), "/a/");
    assert_eq!(ok("/.."), "/");
    assert_eq!(ok("/../api/x"), "/api/x");
    assert_eq!(ok("/%61pi/%2e%2e/admin"), "/admin");
    assert_eq!(ok("/api/%2E%2e/admin"), "/admin");
    assert_eq!(ok("/api/.%2E/admin"), "/admin");
    // Empty segments are kept (merge_slashes is off) and count as segments.
    assert_eq!(ok("/api//x"), "/api//x");
    assert_eq!(ok("/api//../x"), "/api/x");
    assert!(matches!(
        normalize_path("/plain/path"),
        Ok(std::borrow::Cow::Borrowed(_))
    ));
}

#[test]
fn a_backslash_is_a_slash() {
    assert_eq!(ok("/api/x\\..\\..\\admin"), "/admin");
    assert_eq!(ok("/api\\x"), "/api/x");
    assert_eq!(ok("/api/x\\.\\y"), "/api/x/y");
}

#[test]
fn path_parameters_on_a_dot_segment_are_dropped_with_it() {
    assert_eq!(ok("/api/..;/admin"), "/admin");
    assert_eq!(ok("/api/..;x=1/admin"), "/admin");
    assert_eq!(ok("/api/.;/x"), "/api/x");
    assert_eq!(ok("/api/x/..;;/admin"), "/api/admin");
    // Envoy forwards these as `..;`, which Tomcat reads as `..`; here they are dots too.
    assert_eq!(ok("/api/%2e%2e;/admin"), "/admin");
    assert_eq!(ok("/api/.%2E;a/admin"), "/admin");
    // Parameters elsewhere are the application's.
    assert_eq!(ok("/api/a;/b"), "/api/a;/b");
    assert_eq!(ok("/api/x;y/../admin"), "/api/admin");
}

#[test]
fn a_dot_segment_only_decoding_reveals_is_refused() {
    for p in [
        "/api/x%2f..%2f..%2fadmin",
        "/api/x%2F..%2F..%2Fadmin",
        "/api/x%5c..%5c..%5cadmin",
        "/api/x%5C..",
        "/api/..%2f",
        "/api/%2e%2e%2fadmin",
        "/api/..%3b/admin",
        "/api/.%3Bx/admin",
        "/api/x%2F.",
        // Parameters the proxy would drop with the dot segment, which such a server splits.
        "/api/x/..;%5C..%5Cadmin",
        "/api/..;x=1%2f..;%5Cadmin",
        "/api/.;%2fadmin",
        // A `..` that removes a segment a decoding server splits in two.
        "/api/a%2Fb/../admin",
        "/api/a%5cb/..",
    ] {
        assert_eq!(n(p), Err(BadTarget::AmbiguousDotSegment), "{p}");
    }
    // Encoded separators without dots are kept as sent (path_with_escaped_slashes_action
    // is unset: KEEP_UNCHANGED), in upper case.
    assert_eq!(ok("/api/group%2fproject"), "/api/group%2Fproject");
    assert_eq!(ok("/api/a%5Cb"), "/api/a%5Cb");
    assert_eq!(ok("/api/a%3Bb"), "/api/a%3Bb");
    assert_eq!(ok("/api/...%2F"), "/api/...%2F");
    // Decoded once, as a server decodes: `%252e` is `%2e`, not a dot.
    assert_eq!(ok("/api/%252e%252e/admin"), "/api/%252e%252e/admin");
}

#[test]
fn escapes_are_decoded_or_kept_in_one_spelling() {
    assert_eq!(ok("/a%2fb"), "/a%2Fb");
    assert_eq!(ok("/api/%41%7e%c3%a9"), "/api/A~%C3%A9");
    // A `%` that starts no escape is escaped, so decoding cannot make a new escape of it (which
    // the upstream would decode to `..`) and normalizing is idempotent (found by fuzzing).
    assert_eq!(ok("/o%%41d"), "/o%25Ad");
    assert_eq!(
        ok("/public/%%32%65%%32%65/admin"),
        "/public/%252e%252e/admin"
    );
    assert_eq!(ok("/100%"), "/100%25");
    assert_eq!(ok("/a%4"), "/a%254");
    for p in [
        "/o%%41d",
        "/public/%%32%65%%32%65/admin",
        "/100%",
        "/a%2f%2e%2Ex/y",
        "/api/..;x/%2e;/y",
        "/a\\b/%5c",
    ] {
        let once = ok(p);
        assert_eq!(ok(&once), once, "{p}");
    }
}

#[test]
fn control_and_non_ascii_bytes_are_refused_raw_or_encoded() {
    for p in [
        "/api/x\0",
        "/api/x\u{1}y",
        "/api/x\ty",
        "/api/x y",
        "/api/x\u{7f}",
    ] {
        assert_eq!(n(p), Err(BadTarget::ControlCharacter), "{p:?}");
    }
    for p in [
        "/api/x%00",
        "/api/%0a",
        "/api/%0D%0A",
        "/api/%1f",
        "/api/%7F",
    ] {
        assert_eq!(n(p), Err(BadTarget::ControlCharacter), "{p:?}");
    }
    assert_eq!(n("/api/caf\u{e9}"), Err(BadTarget::NonAscii));
    assert_eq!(n("/api/x#frag"), Err(BadTarget::Fragment));
    for p in ["", "*", "api/x", "?q"] {
        assert_eq!(n(p), Err(BadTarget::NotAPath), "{p:?}");
    }
}

fn headers(hosts: &[&str]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for host in hosts {
        h.append(header::HOST, HeaderValue::from_str(host).unwrap());
    }
    h
}

fn target(uri: &str, hosts: &[&str]) -> Result<(Option<String>, String), BadTarget> {
    let uri: Uri = uri.parse().unwrap();
    request_target(&uri, &headers(hosts), Version::HTTP_11)
        .map(|t| (t.uri.map(|u| u.to_string()), t.authority))
}

#[test]
fn the_target_keeps_its_query_and_is_rebuilt_only_when_it_changes() {
    assert_eq!(
        target("/api/x?q=/../admin", &["Api"]),
        Ok((None, "api".to_owned()))
    );
    assert_eq!(
        target("/api/../admin?q=%00", &["api"]),
        Ok((Some("/admin?q=%00".to_owned()), "api".to_owned()))
    );
    assert_eq!(
        target("/api/x?q=\u{e9}", &["api"]),
        Err(BadTarget::NonAscii)
    );
}

#[test]
fn an_absolute_form_target_names_the_authority() {
    // Its authority wins over Host, without userinfo; its path is normalized.
    assert_eq!(
        target("http://Other:8080/api/../admin", &["api"]),
        Ok((
            Some("http://Other:8080/admin".to_owned()),
            "other:8080".to_owned()
        ))
    );
    assert_eq!(
        target("http://user@other/api/x", &["api"]),
        Ok((Some("http://other/api/x".to_owned()), "other".to_owned()))
    );
    assert_eq!(target("https://other", &[]), Ok((None, "other".to_owned())));
    assert_eq!(
        target("ftp://other/api/x", &["api"]),
        Err(BadTarget::Scheme)
    );
}

#[test]
fn host_must_be_one_authority() {
    assert_eq!(target("/api/x", &[]), Err(BadTarget::Host));
    assert_eq!(target("/api/x", &["a", "b"]), Err(BadTarget::Host));
    assert_eq!(target("/api/x", &["a b"]), Err(BadTarget::Host));
    assert_eq!(target("/api/x", &["a/b"]), Err(BadTarget::Host));
    assert_eq!(target("/api/x", &[""]), Ok((None, String::new())));
    // HTTP/1.0 needs no Host.
    let uri: Uri = "/api/x".parse().unwrap();
    assert_eq!(
        request_target(&uri, &HeaderMap::new(), Version::HTTP_10).map(|t| t.authority),
        Ok(String::new())
    );
    // CONNECT's authority-form and `OPTIONS *` have no path to route on.
    assert_eq!(
        target("other:443", &["other:443"]),
        Err(BadTarget::NotAPath)
    );
    assert_eq!(target("*", &["api"]), Err(BadTarget::NotAPath));
}

/// What an access log's filter sees of a request before routing is what routing sees of it,
/// borrowed from the request when nothing changes.
#[test]
fn the_preview_is_the_target_routing_sees() {
    let cases = [
        ("/api/x?q=1", vec!["api"]),
        ("/api/x", vec!["Web.Demo:80"]),
        ("/api/x/../../admin?q=/../x", vec!["api"]),
        ("/%61pi/x", vec!["api"]),
        ("http://user@Other:8080/api/../admin", vec!["api"]),
        ("https://other", vec![]),
        ("/api/x", vec![""]),
    ];
    for (uri, hosts) in cases {
        let parsed: Uri = uri.parse().unwrap();
        let headers = headers(&hosts);
        let target = request_target(&parsed, &headers, Version::HTTP_11).unwrap();
        let routed = target.uri.unwrap_or_else(|| parsed.clone());
        let (path, authority) = preview(&parsed, &headers);
        assert_eq!(
            (path.as_ref(), authority.as_ref()),
            (routed.path(), target.authority.as_str()),
            "{uri} {hosts:?}"
        );
    }
    let plain: Uri = "/api/x?q=1".parse().unwrap();
    let headers = headers(&["web.demo:80"]);
    assert!(matches!(
        preview(&plain, &headers),
        (
            std::borrow::Cow::Borrowed("/api/x"),
            std::borrow::Cow::Borrowed("web.demo:80")
        )
    ));
    // A target routing refuses (answered 400) is seen as sent.
    let refused: Uri = "/api/x%2f..%2fadmin".parse().unwrap();
    assert_eq!(preview(&refused, &headers).0, "/api/x%2f..%2fadmin");
}

#[test]
fn the_head_size_counts_names_and_values_as_envoy_does() {
    let request = http::Request::get("/api/x")
        .header("host", "api")
        .body(())
        .unwrap();
    // `:method` GET, `:path` /api/x, host api.
    assert_eq!(super::head_size(&request), 7 + 3 + 5 + 6 + 4 + 3);
    let long = format!("/api/{}", "a".repeat(super::MAX_REQUEST_HEADERS));
    let request = http::Request::get(long.as_str()).body(()).unwrap();
    assert!(super::head_size(&request) > super::MAX_REQUEST_HEADERS);
}
