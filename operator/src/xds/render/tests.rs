use envoy_types::pb::envoy::{
    config::{
        cluster::v3::Cluster,
        core::v3::{DataSource, TransportSocket, data_source, transport_socket},
    },
    extensions::transport_sockets::tls::v3::{
        CommonTlsContext, Secret, TlsCertificate, UpstreamTlsContext, secret,
    },
};
use prost::Name;

use super::*;
use crate::xds::to_any;

const KEY: &str =
    "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIKEYKEYKEYKEY\n-----END PRIVATE KEY-----\n";
const CHAIN: &str = "-----BEGIN CERTIFICATE-----\nMIIBCERT\n-----END CERTIFICATE-----\n";

fn inline_bytes(s: &str) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(data_source::Specifier::InlineBytes(s.as_bytes().to_vec())),
        ..Default::default()
    })
}

fn certificate() -> TlsCertificate {
    TlsCertificate {
        certificate_chain: inline_bytes(CHAIN),
        private_key: inline_bytes(KEY),
        ..Default::default()
    }
}

/// Whether the key shows in `json`: raw, or base64 as proto3 JSON writes bytes (taken from
/// the unredacted rendering, so it is exactly the form a leak would have).
fn leaks(json: &Value) -> bool {
    let base64 = render_resource(&to_any(&Secret {
        name: String::new(),
        r#type: Some(secret::Type::TlsCertificate(certificate())),
    }))["tlsCertificate"]["privateKey"]["inlineBytes"]
        .as_str()
        .expect("the key as base64")
        .to_owned();
    let text = json.to_string();
    text.contains("PRIVATE KEY") || text.contains(&base64)
}

#[test]
fn a_secrets_private_key_is_redacted_and_the_rest_shown() {
    let secret = Secret {
        name: "spiffe://cluster.local/ns/demo/sa/web".to_owned(),
        r#type: Some(secret::Type::TlsCertificate(certificate())),
    };
    let any = to_any(&secret);
    // Unredacted, the key is there (what `switchyard compile` prints): the check below can fail.
    assert!(leaks(&render_resource(&any)));

    let json = render_redacted(&any);
    assert_eq!(json["@type"], Secret::type_url());
    assert_eq!(json["name"], "spiffe://cluster.local/ns/demo/sa/web");
    assert_eq!(json["tlsCertificate"]["privateKey"], REDACTED);
    assert!(
        json["tlsCertificate"]["certificateChain"]["inlineBytes"].is_string(),
        "{json}"
    );
    assert!(!leaks(&json), "{json}");
}

#[test]
fn a_key_inside_a_nested_any_is_redacted_too() {
    let tls = UpstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificates: vec![certificate()],
            ..Default::default()
        }),
        ..Default::default()
    };
    let cluster = Cluster {
        name: "demo/web|80".to_owned(),
        transport_socket: Some(TransportSocket {
            name: "envoy.transport_sockets.tls".to_owned(),
            config_type: Some(transport_socket::ConfigType::TypedConfig(to_any(&tls))),
        }),
        ..Default::default()
    };
    let any = to_any(&cluster);
    assert!(leaks(&render_resource(&any)));
    let json = render_redacted(&any);
    assert_eq!(
        json["transportSocket"]["typedConfig"]["commonTlsContext"]["tlsCertificates"][0]["privateKey"],
        REDACTED,
        "{json}"
    );
    assert!(!leaks(&json), "{json}");
}

#[test]
fn a_generic_secret_is_redacted() {
    let secret = Secret {
        name: "token".to_owned(),
        r#type: Some(secret::Type::GenericSecret(
            envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::GenericSecret {
                secret: inline_bytes(KEY),
                ..Default::default()
            },
        )),
    };
    let json = render_redacted(&to_any(&secret));
    assert_eq!(json["genericSecret"]["secret"], REDACTED, "{json}");
    assert!(!leaks(&json));
}

#[test]
fn an_unknown_type_fails_closed() {
    let any = Any {
        type_url: "type.googleapis.com/example.v1.Nope".to_owned(),
        value: KEY.as_bytes().to_vec(),
    };
    let json = render_redacted(&any);
    assert_eq!(json["error"], "unknown type");
    assert!(!leaks(&json));
}
