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

#[test]
fn a_tapped_listener_and_its_token_bucket_render() {
    use std::{num::NonZeroU32, sync::Arc};

    use switchyard_adapters::envoy::{
        BootstrapOptions, Output, ProxyTap, TapMatch, TapRate, TapSink, XdsCa, tap,
    };

    let listener = envoy_types::pb::envoy::config::listener::v3::Listener {
        name: "inbound".to_owned(),
        filter_chains: vec![envoy_types::pb::envoy::config::listener::v3::FilterChain {
            filters: vec![envoy_types::pb::envoy::config::listener::v3::Filter {
                name: "envoy.filters.network.http_connection_manager".to_owned(),
                config_type: Some(
                    envoy_types::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(
                        to_any(&envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager::default()),
                    ),
                ),
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut out = Output {
        resources: vec![Arc::new(switchyard_adapters::envoy::Resource {
            type_url: switchyard_adapters::envoy::LISTENER_TYPE_URL,
            name: "inbound".to_owned(),
            resource: to_any(&listener),
            references: Vec::new(),
        })],
        warnings: Vec::new(),
    };
    let opts = BootstrapOptions::new(
        "demo/web-0",
        std::net::IpAddr::from([127, 0, 0, 1]),
        "127.0.0.1",
        15010,
        "/token",
        XdsCa::File("/ca.crt".into()),
    );
    let rate = |n| TapRate::new(NonZeroU32::new(n).unwrap());
    let how = ProxyTap {
        every: Some(rate(100)),
        matching: vec![TapMatch {
            id: 9,
            method: None,
            authority: None,
            path_prefix: Some("/orders".to_owned()),
            rate: rate(3),
        }],
    };
    tap(&mut out, &TapSink::new(&opts), &how);
    let [listener, bucket, own] = out.resources.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(
        [bucket.name.as_str(), own.name.as_str()],
        ["switchyard-tap", "switchyard-tap-9"]
    );
    let listener = render_redacted(&listener.resource);
    let text = listener.to_string();
    assert!(
        text.contains("envoy.access_loggers.http_grpc")
            && text.contains("envoy.access_loggers.extension_filters.process_ratelimit")
            && text.contains("\"switchyard-tap\"")
            && text.contains("\"switchyard-tap-9\"")
            && text.contains("orFilter")
            && text.contains("\":path\"")
            && text.contains("\"/orders\""),
        "{listener:#}"
    );
    let bucket = render_redacted(&bucket.resource);
    assert_eq!(bucket["maxTokens"], 100, "{bucket:#}");
    assert_eq!(bucket["tokensPerFill"], 5, "{bucket:#}");
    assert_eq!(bucket["fillInterval"], "0.050s", "{bucket:#}");
}
