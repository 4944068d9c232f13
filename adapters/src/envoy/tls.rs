//! Mutual TLS between sidecars: the SDS secrets a proxy is served, and the transport sockets
//! and listener pieces that use them.
//!
//! Certificates never appear in clusters or listeners: these name two secrets that Envoy asks
//! for over SDS on the ADS stream, which lets the control plane rotate a certificate without
//! touching any other resource.
//!
//! | secret | name | content |
//! |---|---|---|
//! | the proxy's certificate | its SPIFFE ID, `spiffe://<td>/ns/<ns>/sa/<sa>` | chain and private key |
//! | the trust bundle | the trust domain's SPIFFE ID, `spiffe://<td>` | the mesh CA certificates |
//!
//! Both sides require TLS 1.3: every proxy is an Envoy (or `switchyard-proxy`) the mesh
//! configures itself, so there is no old peer to stay compatible with, and 1.3 leaves out the
//! cipher suite and renegotiation choices that 1.2 would need pinned.

use envoy_types::pb::{
    envoy::{
        config::{
            core::v3::{DataSource, TransportSocket, data_source, transport_socket},
            listener::v3::{ListenerFilter, listener_filter},
        },
        extensions::{
            filters::listener::tls_inspector::v3::TlsInspector,
            transport_sockets::tls::v3::{
                CertificateValidationContext, CommonTlsContext, DownstreamTlsContext,
                SdsSecretConfig, Secret, SubjectAltNameMatcher, TlsCertificate, TlsParameters,
                UpstreamTlsContext,
                common_tls_context::{CombinedCertificateValidationContext, ValidationContextType},
                secret,
                subject_alt_name_matcher::SanType,
                tls_parameters::TlsProtocol,
            },
        },
        r#type::matcher::v3::{StringMatcher, string_matcher},
    },
    google::protobuf::{BoolValue, Struct, Value, value},
};

use switchyard_proxy_config::TypeUrl;

use super::{Reference, Resource, SECRET_TYPE_URL, ads, to_any};
use crate::model::{Identity, MeshSettings, Protocol};

/// The transport socket extension both directions use.
const TLS_TRANSPORT_SOCKET: &str = "envoy.transport_sockets.tls";
/// The listener filter that tells TLS from plaintext (permissive mode).
pub(super) const TLS_INSPECTOR: &str = "envoy.filters.listener.tls_inspector";
/// The filter metadata namespace Envoy reads an endpoint's transport socket match from.
pub(super) const TRANSPORT_SOCKET_MATCH: &str = "envoy.transport_socket_match";
/// Key and value of the match: an endpoint labelled with them is reached over mTLS.
pub(super) const TLS_MATCH_KEY: &str = "switchyard.dev/tls";
pub(super) const TLS_MATCH_VALUE: &str = "mtls";
/// Name of the cluster's transport socket match, and of the inbound TLS filter chain; Envoy
/// uses both in stats.
pub(super) const MTLS: &str = "mtls";
/// Name of the inbound plaintext filter chain (permissive mode).
pub(super) const PLAINTEXT: &str = "plaintext";

/// The name of the secret holding a proxy's certificate and key: its SPIFFE ID.
pub fn certificate_secret_name(identity: &Identity, mesh: &MeshSettings) -> String {
    identity.spiffe_id(&mesh.trust_domain)
}

/// The name of the secret holding the trust bundle: the trust domain's SPIFFE ID.
pub fn trust_bundle_secret_name(mesh: &MeshSettings) -> String {
    format!("spiffe://{}", mesh.trust_domain)
}

/// The two SDS secrets of a proxy running as `identity`, sorted by name (the trust bundle
/// first): its certificate chain (leaf first) with its private key, and the trust bundle its
/// peers' certificates are validated against. All three inputs are PEM.
///
/// These are per-identity key material, so they are built on every call and never cached.
/// `Debug` on the returned resources prints neither key nor certificates.
pub fn secrets(
    identity: &Identity,
    mesh: &MeshSettings,
    cert_chain_pem: &str,
    private_key_pem: &str,
    trust_bundle_pem: &str,
) -> Vec<Resource> {
    let certificate = Secret {
        name: certificate_secret_name(identity, mesh),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: Some(inline(cert_chain_pem)),
            private_key: Some(inline(private_key_pem)),
            ..Default::default()
        })),
    };
    let bundle = Secret {
        name: trust_bundle_secret_name(mesh),
        r#type: Some(secret::Type::ValidationContext(
            CertificateValidationContext {
                trusted_ca: Some(inline(trust_bundle_pem)),
                ..Default::default()
            },
        )),
    };
    let mut out: Vec<Resource> = [bundle, certificate]
        .into_iter()
        .map(|s| Resource::new(SECRET_TYPE_URL, &s.name, to_any(&s)))
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// What a proxy's TLS configuration refers to: its own identity, in a trust domain.
#[derive(Clone, Copy, Debug)]
pub(super) struct Mtls<'a> {
    pub(super) identity: &'a Identity,
    pub(super) mesh: &'a MeshSettings,
}

impl Mtls<'_> {
    /// The secrets every TLS context of the proxy names: its certificate and the trust bundle.
    pub(super) fn secrets(&self) -> [Reference; 2] {
        [
            Reference::new(
                TypeUrl::Secret,
                certificate_secret_name(self.identity, self.mesh),
            ),
            Reference::new(TypeUrl::Secret, trust_bundle_secret_name(self.mesh)),
        ]
    }

    /// The client side of a mesh cluster: the proxy's certificate, and the peer's checked
    /// against the bundle and against `peers` (SPIFFE IDs, exact).
    pub(super) fn upstream(&self, peers: Vec<String>, protocol: Protocol) -> TransportSocket {
        let alpn = match protocol {
            Protocol::Http2 => vec!["h2".to_owned()],
            Protocol::Http => vec!["http/1.1".to_owned()],
            Protocol::Tcp | Protocol::Unknown => Vec::new(),
        };
        let context = UpstreamTlsContext {
            common_tls_context: Some(self.common(peers, alpn)),
            ..Default::default()
        };
        transport_socket(to_any(&context))
    }

    /// The server side of an inbound port: the proxy's certificate, and a client certificate
    /// from the mesh CA required; with `peers` (SPIFFE IDs, exact), only those identities pass
    /// the handshake, otherwise any mesh identity does and RBAC decides who may call.
    pub(super) fn downstream(&self, protocol: Protocol, peers: Vec<String>) -> TransportSocket {
        // Offering both lets an HTTP/2 client negotiate h2 and an HTTP/1.1 client keep
        // HTTP/1.1; the HCM's automatic codec follows the negotiated protocol.
        let alpn = match protocol {
            Protocol::Http | Protocol::Http2 => vec!["h2".to_owned(), "http/1.1".to_owned()],
            Protocol::Tcp | Protocol::Unknown => Vec::new(),
        };
        let context = DownstreamTlsContext {
            common_tls_context: Some(self.common(peers, alpn)),
            require_client_certificate: Some(BoolValue { value: true }),
            ..Default::default()
        };
        transport_socket(to_any(&context))
    }

    /// With `peers`, the bundle plus an exact URI SAN check; without, the bundle alone.
    fn common(&self, peers: Vec<String>, alpn_protocols: Vec<String>) -> CommonTlsContext {
        let bundle = sds(trust_bundle_secret_name(self.mesh));
        let validation = if peers.is_empty() {
            ValidationContextType::ValidationContextSdsSecretConfig(bundle)
        } else {
            ValidationContextType::CombinedValidationContext(CombinedCertificateValidationContext {
                default_validation_context: Some(CertificateValidationContext {
                    match_typed_subject_alt_names: peers.into_iter().map(uri_san).collect(),
                    ..Default::default()
                }),
                validation_context_sds_secret_config: Some(bundle),
                ..Default::default()
            })
        };
        CommonTlsContext {
            // The maximum too: Envoy's client side defaults to at most TLS 1.2, and a minimum
            // above the maximum fails every handshake (NO_SUPPORTED_VERSIONS_ENABLED).
            tls_params: Some(TlsParameters {
                tls_minimum_protocol_version: TlsProtocol::TlSv13 as i32,
                tls_maximum_protocol_version: TlsProtocol::TlSv13 as i32,
                ..Default::default()
            }),
            tls_certificate_sds_secret_configs: vec![sds(certificate_secret_name(
                self.identity,
                self.mesh,
            ))],
            alpn_protocols,
            validation_context_type: Some(validation),
            ..Default::default()
        }
    }
}

/// `envoy.filters.listener.tls_inspector`: detects TLS, so that filter chains can match on
/// `transport_protocol`.
pub(super) fn tls_inspector() -> ListenerFilter {
    ListenerFilter {
        name: TLS_INSPECTOR.to_owned(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(to_any(
            &TlsInspector::default(),
        ))),
        ..Default::default()
    }
}

/// `{"switchyard.dev/tls": "mtls"}`: the match of a cluster's mTLS transport socket, and the
/// `envoy.transport_socket_match` metadata of the endpoints that use it. One field, so prost's
/// map encoding is deterministic.
pub(super) fn match_labels() -> Struct {
    Struct {
        fields: [(
            TLS_MATCH_KEY.to_owned(),
            Value {
                kind: Some(value::Kind::StringValue(TLS_MATCH_VALUE.to_owned())),
            },
        )]
        .into(),
    }
}

fn transport_socket(context: envoy_types::pb::google::protobuf::Any) -> TransportSocket {
    TransportSocket {
        name: TLS_TRANSPORT_SOCKET.to_owned(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(context)),
    }
}

/// A secret Envoy fetches over the ADS stream.
fn sds(name: String) -> SdsSecretConfig {
    SdsSecretConfig {
        name,
        sds_config: Some(ads()),
    }
}

fn uri_san(spiffe_id: String) -> SubjectAltNameMatcher {
    SubjectAltNameMatcher {
        san_type: SanType::Uri as i32,
        matcher: Some(StringMatcher {
            match_pattern: Some(string_matcher::MatchPattern::Exact(spiffe_id)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn inline(pem: &str) -> DataSource {
    DataSource {
        specifier: Some(data_source::Specifier::InlineString(pem.to_owned())),
        ..Default::default()
    }
}
