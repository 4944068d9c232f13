use super::*;

#[test]
fn references_are_registry_repository_tag() {
    assert_eq!(
        Image::Operator.reference("localhost", "0.1.0"),
        "localhost/switchyard:0.1.0"
    );
    assert_eq!(
        Image::Envoy.reference("ghcr.io/switchyard-mesh", "dev"),
        "ghcr.io/switchyard-mesh/switchyard-envoy:dev"
    );
    assert_eq!(
        Image::Echo.default_reference(),
        format!("localhost/switchyard-echo:{}", env!("CARGO_PKG_VERSION"))
    );
    let repositories: Vec<_> = Image::ALL.iter().map(|i| i.repository()).collect();
    assert_eq!(
        repositories,
        [
            "switchyard",
            "switchyard-proxy",
            "switchyard-envoy",
            "switchyard-pause",
            "switchyard-echo"
        ]
    );
}

#[test]
fn no_image_runs_as_root_and_proxies_share_the_excluded_uid() {
    for image in Image::ALL {
        assert_ne!(image.user().uid, 0, "{image}");
        assert_ne!(image.user().gid, 0, "{image}");
    }
    assert_eq!(
        Image::Proxy.user(),
        User {
            uid: 1337,
            gid: 1337
        }
    );
    assert_eq!(Image::Envoy.user(), Image::Proxy.user());
    assert_eq!(Image::Operator.user().to_string(), "65532:65532");
    assert_eq!(Image::Pause.user().to_string(), "65535:65535");
}
