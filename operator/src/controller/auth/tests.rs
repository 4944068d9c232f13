use std::collections::BTreeMap;

use k8s_openapi::api::authentication::v1::{TokenReviewStatus, UserInfo};

use super::*;

fn review(authenticated: bool, user: &str, pod: Option<&str>, audiences: &[&str]) -> TokenReview {
    TokenReview {
        status: Some(TokenReviewStatus {
            authenticated: Some(authenticated),
            audiences: Some(audiences.iter().map(|a| (*a).to_owned()).collect()),
            user: Some(UserInfo {
                username: Some(user.into()),
                extra: pod.map(|p| {
                    BTreeMap::from([(
                        "authentication.kubernetes.io/pod-name".to_owned(),
                        vec![p.to_owned()],
                    )])
                }),
                ..UserInfo::default()
            }),
            ..TokenReviewStatus::default()
        }),
        ..TokenReview::default()
    }
}

fn proxy(ns: &str, pod: &str) -> ProxyId {
    parse_node_id(&format!("{ns}/{pod}")).unwrap()
}

#[test]
fn node_ids_are_namespace_slash_pod() {
    assert_eq!(proxy("demo", "web-0").pod, "web-0");
    for bad in ["", "demo", "/web", "demo/", "a/b/c"] {
        assert!(parse_node_id(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn a_review_names_the_service_account_and_bound_pod() {
    let owner = owner_of(
        &review(
            true,
            "system:serviceaccount:demo:web",
            Some("web-0"),
            &["switchyard"],
        ),
        "switchyard",
    )
    .unwrap();
    assert_eq!(
        owner,
        TokenOwner {
            namespace: "demo".into(),
            service_account: "web".into(),
            pod: Some("web-0".into())
        }
    );
    let err = owner_of(&review(false, "x", None, &[]), "switchyard").unwrap_err();
    assert!(err.contains("not authenticated"), "{err}");
    let err = owner_of(
        &review(true, "system:serviceaccount:demo:web", None, &["other"]),
        "switchyard",
    )
    .unwrap_err();
    assert!(err.contains("audience"), "{err}");
    let err = owner_of(&review(true, "alice", None, &["switchyard"]), "switchyard").unwrap_err();
    assert!(err.contains("not a ServiceAccount"), "{err}");
}

#[test]
fn a_token_serves_only_pods_of_its_own_account_and_pod() {
    let owner = TokenOwner {
        namespace: "demo".into(),
        service_account: "web".into(),
        pod: Some("web-0".into()),
    };
    assert!(authorize(&owner, &proxy("demo", "web-0"), Some("web")).is_ok());
    let denied = |p: ProxyId, sa: Option<&str>| authorize(&owner, &p, sa).unwrap_err().code();
    assert_eq!(
        denied(proxy("demo", "web-1"), Some("web")),
        tonic::Code::PermissionDenied
    );
    assert_eq!(
        denied(proxy("other", "web-0"), Some("web")),
        tonic::Code::PermissionDenied
    );
    assert_eq!(
        denied(proxy("demo", "web-0"), Some("db")),
        tonic::Code::PermissionDenied
    );
    // Not seen yet: retryable.
    assert_eq!(
        denied(proxy("demo", "web-0"), None),
        tonic::Code::Unavailable
    );
    let unbound = TokenOwner { pod: None, ..owner };
    assert!(authorize(&unbound, &proxy("demo", "web-7"), Some("web")).is_ok());
}
