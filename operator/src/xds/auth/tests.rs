use tonic::Code;

use super::*;

fn metadata(authorization: Option<&str>) -> MetadataMap {
    let mut m = MetadataMap::new();
    if let Some(value) = authorization {
        m.insert("authorization", value.parse().unwrap());
    }
    m
}

fn tokens() -> StaticTokens {
    StaticTokens::new().with("s3cret", ProxyKey::from("default/web-0"))
}

#[test]
fn a_known_bearer_token_names_the_proxy() {
    let node = Node {
        id: "anything".to_string(),
        ..Default::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let key = runtime
        .block_on(tokens().authenticate(&metadata(Some("Bearer s3cret")), &node))
        .unwrap();
    assert_eq!(
        key,
        ProxyKey::from("default/web-0"),
        "node.id plays no part"
    );
    assert!(tokens().lookup(&metadata(Some("bearer s3cret"))).is_ok());
}

#[test]
fn missing_malformed_and_unknown_tokens_are_unauthenticated() {
    for (value, message) in [
        (None, "missing authorization header"),
        (Some("s3cret"), "authorization header is not a bearer token"),
        (
            Some("Basic s3cret"),
            "authorization header is not a bearer token",
        ),
        (
            Some("Bearer "),
            "authorization header is not a bearer token",
        ),
        (Some("Bearer nope"), "unknown bearer token"),
    ] {
        let status = tokens().lookup(&metadata(value)).unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{value:?}");
        assert_eq!(status.message(), message, "{value:?}");
    }
}

#[test]
fn debug_output_hides_tokens() {
    assert_eq!(format!("{:?}", tokens()), "StaticTokens { tokens: 1 }");
}
