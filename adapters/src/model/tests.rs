use super::*;

#[test]
fn names_follow_the_design_conventions() {
    let svc = ServiceName::new("shop", "web");
    assert_eq!(svc.to_string(), "shop/web");
    assert_eq!(ClusterName::new(&svc, 80).as_str(), "shop/web|80");
    assert_eq!(
        svc.hostnames("cluster.local"),
        [
            "web",
            "web.shop",
            "web.shop.svc",
            "web.shop.svc.cluster.local"
        ]
    );
    assert_eq!(
        Identity::new("shop", "web").spiffe_id("example.org"),
        "spiffe://example.org/ns/shop/sa/web"
    );
}

#[test]
fn default_settings_are_strict_in_cluster_local() {
    let s = MeshSettings::default();
    assert_eq!(s.access_mode, AccessMode::Strict);
    assert_eq!(s.trust_domain, "cluster.local");
}
