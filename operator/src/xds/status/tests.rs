use envoy_types::pb::envoy::config::core::v3::{BuildVersion, node::UserAgentVersionType};
use envoy_types::pb::envoy::r#type::v3::SemanticVersion;

use super::*;
use crate::xds::stream::{Nonce, Rejection};

fn rejection(nonce: &str) -> Rejection {
    Rejection {
        nonce: Nonce::parse(nonce).unwrap(),
        code: 3,
        message: "bad".into(),
    }
}

#[test]
fn a_type_is_synced_only_when_its_latest_response_was_acknowledged() {
    let n = |s: &str| Nonce::parse(s);
    assert_eq!(
        TypeSync::of(false, None, false, None),
        TypeSync::NotRequested
    );
    assert_eq!(TypeSync::of(true, None, false, None), TypeSync::NotSent);
    assert_eq!(TypeSync::of(true, n("1"), true, None), TypeSync::Stale);
    assert_eq!(TypeSync::of(true, n("1"), false, None), TypeSync::Synced);
    let nacked = rejection("2");
    assert_eq!(
        TypeSync::of(true, n("2"), false, Some(&nacked)),
        TypeSync::Nacked {
            message: "bad".into()
        }
    );
    // An older NACK does not stick to a newer, accepted version.
    assert_eq!(
        TypeSync::of(true, n("3"), false, Some(&nacked)),
        TypeSync::Synced
    );
    assert_eq!(
        TypeSync::of(true, n("3"), true, Some(&nacked)),
        TypeSync::Stale
    );
}

#[test]
fn entries_come_and_go_with_their_streams() {
    let statuses = Arc::new(ProxyStatuses::default());
    let node = Node {
        id: "web-0".into(),
        user_agent_name: "envoy".into(),
        user_agent_version_type: Some(UserAgentVersionType::UserAgentBuildVersion(BuildVersion {
            version: Some(SemanticVersion {
                major_number: 1,
                minor_number: 40,
                patch: 0,
            }),
            metadata: None,
        })),
        ..Default::default()
    };
    let a = statuses.open(&ProxyKey::from("shop/web-0"), &node, "delta");
    let bundled = Node {
        id: "api-0".into(),
        user_agent_name: "switchyard-proxy".into(),
        user_agent_version_type: Some(UserAgentVersionType::UserAgentVersion("0.1.0".into())),
        ..Default::default()
    };
    let b = statuses.open(&ProxyKey::from("shop/api-0"), &bundled, "sotw");
    a.update(|t| {
        let sync = if t == TypeUrl::Cluster {
            TypeSync::Synced
        } else {
            TypeSync::NotRequested
        };
        (sync, Default::default())
    });
    let all = statuses.list();
    assert_eq!(
        all.iter()
            .map(|s| (s.proxy.as_str(), s.data_plane.as_str()))
            .collect::<Vec<_>>(),
        [
            ("shop/api-0", "switchyard-proxy 0.1.0"),
            ("shop/web-0", "envoy 1.40.0")
        ]
    );
    assert_eq!(all[1].types["CDS"], TypeSync::Synced);
    assert_eq!(all[1].types.len(), 6);
    assert_eq!(all[0].types["CDS"], TypeSync::NotRequested);
    let json = serde_json::to_value(&all[1]).unwrap();
    assert_eq!(json["types"]["CDS"], serde_json::json!({"state": "SYNCED"}));
    // The config lookup names a proxy; one that is not connected has none.
    let live = statuses.config("shop/web-0").unwrap();
    assert_eq!(live.status.node, "web-0");
    assert!(statuses.config("shop/nobody").is_none());
    drop(a);
    assert_eq!(statuses.list().len(), 1);
    assert!(
        statuses.config("shop/web-0").is_none(),
        "gone with its stream"
    );
    drop(b);
    assert!(statuses.list().is_empty());
}
