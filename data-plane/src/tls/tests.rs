use std::sync::Arc;

use rcgen::BasicConstraints;
use rustls::{ClientConfig, ClientConnection, Connection, ServerConnection, pki_types::ServerName};

use switchyard_adapters::test_support;

use super::*;
use crate::config::{DownstreamTls, Runtime, SecretMaterial, UpstreamTls};

// === Utils ===

const WEB: &str = "spiffe://cluster.local/ns/demo/sa/web";
const CLIENT: &str = "spiffe://cluster.local/ns/demo/sa/client";

/// A test CA issuing SPIFFE leaf certificates as the mesh CA does, as translated secrets.
struct TestCa(test_support::TestCa);

impl TestCa {
    fn new(name: &str) -> Self {
        TestCa(test_support::TestCa::new(
            name,
            BasicConstraints::Constrained(0),
        ))
    }

    fn bundle(&self) -> SecretMaterial {
        SecretMaterial::TrustBundle {
            ca_pem: self.0.pem.clone(),
        }
    }

    fn leaf(&self, spiffe_id: &str) -> SecretMaterial {
        let (chain_pem, private_key_pem) = self.0.leaf(spiffe_id);
        SecretMaterial::Certificate {
            chain_pem,
            private_key_pem,
        }
    }
}

fn downstream(require: bool) -> DownstreamTls {
    DownstreamTls {
        certificate: "default".to_owned(),
        trust_bundle: Some("ROOTCA".to_owned()),
        require_client_certificate: require,
        peer_sans: Vec::new(),
        alpn: vec!["h2".to_owned(), "http/1.1".to_owned()],
        tls13_only: true,
    }
}

fn upstream(peer_sans: &[&str]) -> UpstreamTls {
    UpstreamTls {
        certificate: "default".to_owned(),
        trust_bundle: "ROOTCA".to_owned(),
        peer_sans: peer_sans.iter().map(|s| (*s).to_owned()).collect(),
        alpn: vec!["h2".to_owned()],
        tls13_only: true,
    }
}

#[derive(Debug)]
enum Failed {
    Client(rustls::Error),
    Server(rustls::Error),
}

/// Moves bytes between the two ends until both finish the handshake or one fails.
fn handshake(
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
) -> Result<(Connection, Connection), Failed> {
    // Any name: the verifier ignores it, as the data path's connections will.
    let name = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    let mut client = Connection::Client(ClientConnection::new(client, name).unwrap());
    let mut server = Connection::Server(ServerConnection::new(server).unwrap());
    for _ in 0..20 {
        pump(&mut client, &mut server).map_err(Failed::Server)?;
        pump(&mut server, &mut client).map_err(Failed::Client)?;
        if !client.is_handshaking() && !server.is_handshaking() {
            // The server reads the client's last flight only now in TLS 1.3.
            pump(&mut client, &mut server).map_err(Failed::Server)?;
            return Ok((client, server));
        }
    }
    panic!("handshake did not finish");
}

/// Sends what `from` has to `to` and lets `to` process it; an error is `to`'s.
fn pump(from: &mut Connection, to: &mut Connection) -> Result<(), rustls::Error> {
    let mut bytes = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut bytes).unwrap();
    }
    let mut reader = &bytes[..];
    while !reader.is_empty() {
        to.read_tls(&mut reader).unwrap();
        to.process_new_packets()?;
    }
    Ok(())
}

fn configs(
    ca: &TestCa,
    server_id: &str,
    client_id: &str,
    peer_sans: &[&str],
) -> (Arc<ClientConfig>, Arc<ServerConfig>) {
    let bundle = ca.bundle();
    let server = server_config(&ca.leaf(server_id), Some(&bundle), &downstream(true)).unwrap();
    let client = client_config(&ca.leaf(client_id), &bundle, &upstream(peer_sans)).unwrap();
    (client, server)
}

fn peer(conn: &Connection) -> Option<String> {
    conn.peer_certificates().and_then(peer_identity)
}

// === Tests ===

#[test]
fn mutual_tls_with_the_expected_san() {
    let ca = TestCa::new("mesh");
    let (client, server) = configs(&ca, WEB, CLIENT, &["spiffe://other", WEB]);
    let (client, server) = handshake(client, server).unwrap();

    assert_eq!(peer(&server).as_deref(), Some(CLIENT));
    assert_eq!(peer(&client).as_deref(), Some(WEB));
    assert_eq!(server.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(client.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(
        server.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
}

#[test]
fn empty_peer_sans_accept_any_certificate_of_the_bundle() {
    let ca = TestCa::new("mesh");
    let (client, server) = configs(&ca, WEB, CLIENT, &[]);
    assert!(handshake(client, server).is_ok());
}

#[test]
fn wrong_san_is_rejected_by_the_client() {
    let ca = TestCa::new("mesh");
    let (client, server) = configs(&ca, WEB, CLIENT, &["spiffe://cluster.local/ns/demo/sa/api"]);
    match handshake(client, server) {
        Err(Failed::Client(rustls::Error::InvalidCertificate(CertificateError::Other(e)))) => {
            let message = e.to_string();
            assert!(message.contains(WEB), "{message}");
            assert!(message.contains("sa/api"), "{message}");
        }
        other => panic!("expected a SAN mismatch, got {other:?}"),
    }
}

#[test]
fn a_server_with_peer_sans_admits_only_those_client_identities() {
    let ca = TestCa::new("mesh");
    let bundle = ca.bundle();
    let tls = DownstreamTls {
        peer_sans: vec!["spiffe://other".to_owned(), CLIENT.to_owned()],
        ..downstream(true)
    };
    let server = server_config(&ca.leaf(WEB), Some(&bundle), &tls).unwrap();
    let allowed = client_config(&ca.leaf(CLIENT), &bundle, &upstream(&[WEB])).unwrap();
    let (_, server_end) = handshake(allowed, Arc::clone(&server)).unwrap();
    assert_eq!(peer(&server_end).as_deref(), Some(CLIENT));

    // Another identity from the same CA fails the handshake, before any data could flow.
    let intruder = "spiffe://cluster.local/ns/demo/sa/intruder";
    let other = client_config(&ca.leaf(intruder), &bundle, &upstream(&[WEB])).unwrap();
    match handshake(other, server) {
        Err(Failed::Server(rustls::Error::InvalidCertificate(CertificateError::Other(e)))) => {
            let message = e.to_string();
            assert!(message.contains(intruder), "{message}");
            assert!(message.contains(CLIENT), "{message}");
        }
        other => panic!("expected a SAN mismatch, got {other:?}"),
    }
}

#[test]
fn san_match_is_exact() {
    let ca = TestCa::new("mesh");
    let prefix = "spiffe://cluster.local/ns/demo/sa/we";
    let (client, server) = configs(&ca, WEB, CLIENT, &[prefix]);
    assert!(matches!(handshake(client, server), Err(Failed::Client(_))));
}

#[test]
fn server_certificate_from_another_ca_is_rejected() {
    let ca = TestCa::new("mesh");
    let other = TestCa::new("other");
    let server =
        server_config(&other.leaf(WEB), Some(&other.bundle()), &downstream(false)).unwrap();
    let client = client_config(&ca.leaf(CLIENT), &ca.bundle(), &upstream(&[WEB])).unwrap();
    match handshake(client, server) {
        Err(Failed::Client(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer))) => {
        }
        other => panic!("expected an unknown issuer, got {other:?}"),
    }
}

#[test]
fn client_certificate_from_another_ca_is_rejected() {
    let ca = TestCa::new("mesh");
    let other = TestCa::new("other");
    let server = server_config(&ca.leaf(WEB), Some(&ca.bundle()), &downstream(true)).unwrap();
    // The client trusts the mesh CA but presents a certificate the server does not trust.
    let client = client_config(&other.leaf(CLIENT), &ca.bundle(), &upstream(&[WEB])).unwrap();
    match handshake(client, server) {
        Err(Failed::Server(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer))) => {
        }
        other => panic!("expected an unknown issuer, got {other:?}"),
    }
}

/// A client with the mesh verifier but no certificate of its own.
fn anonymous_client(ca: &TestCa) -> Arc<ClientConfig> {
    let provider = provider();
    let verifier = PeerSanVerifier {
        roots: trust_bundle("ROOTCA", &ca.bundle()).unwrap(),
        peer_sans: vec![WEB.to_owned()],
        algorithms: provider.signature_verification_algorithms,
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Arc::new(config)
}

#[test]
fn missing_client_certificate_is_rejected_when_required() {
    let ca = TestCa::new("mesh");
    let server = server_config(&ca.leaf(WEB), Some(&ca.bundle()), &downstream(true)).unwrap();
    match handshake(anonymous_client(&ca), server) {
        Err(Failed::Server(rustls::Error::NoCertificatesPresented)) => {}
        other => panic!("expected no certificate, got {other:?}"),
    }
}

#[test]
fn missing_client_certificate_is_allowed_when_optional() {
    let ca = TestCa::new("mesh");
    let server = server_config(&ca.leaf(WEB), Some(&ca.bundle()), &downstream(false)).unwrap();
    let (_, server) = handshake(anonymous_client(&ca), server).unwrap();
    assert_eq!(peer(&server), None);
}

#[test]
fn tls13_only_refuses_tls12() {
    let ca = TestCa::new("mesh");
    let server = server_config(&ca.leaf(WEB), Some(&ca.bundle()), &downstream(true)).unwrap();
    let provider = provider();
    let verifier = PeerSanVerifier {
        roots: trust_bundle("ROOTCA", &ca.bundle()).unwrap(),
        peer_sans: vec![],
        algorithms: provider.signature_verification_algorithms,
    };
    let SecretMaterial::Certificate {
        chain_pem,
        private_key_pem,
    } = ca.leaf(CLIENT)
    else {
        unreachable!()
    };
    let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(private_key_pem.as_bytes()).unwrap();
    let tls12 = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(chain, key)
        .unwrap();
    assert!(matches!(
        handshake(Arc::new(tls12), server),
        Err(Failed::Server(rustls::Error::PeerIncompatible(_)))
    ));
}

#[test]
fn client_auth_needs_a_bundle() {
    let ca = TestCa::new("mesh");
    let tls = DownstreamTls {
        trust_bundle: None,
        ..downstream(true)
    };
    let error = server_config(&ca.leaf(WEB), None, &tls).unwrap_err();
    assert!(
        matches!(error, TlsError::NoBundleForClientAuth { .. }),
        "{error}"
    );

    let error = server_config(&ca.leaf(WEB), None, &downstream(false)).unwrap_err();
    assert_eq!(error.to_string(), "sds secret ROOTCA: not received");

    let plain = DownstreamTls {
        trust_bundle: None,
        ..downstream(false)
    };
    assert!(server_config(&ca.leaf(WEB), None, &plain).is_ok());
}

#[test]
fn errors_name_the_secret_and_the_problem() {
    let ca = TestCa::new("mesh");
    let bundle = ca.bundle();
    let tls = downstream(true);
    let leaf = ca.leaf(WEB);
    let SecretMaterial::Certificate {
        chain_pem,
        private_key_pem,
    } = &leaf
    else {
        unreachable!()
    };

    let no_key = SecretMaterial::Certificate {
        chain_pem: chain_pem.clone(),
        private_key_pem: String::new(),
    };
    let error = server_config(&no_key, Some(&bundle), &tls).unwrap_err();
    assert!(matches!(error, TlsError::NoKey { .. }), "{error}");
    assert!(
        error
            .to_string()
            .starts_with("sds secret default: private key"),
        "{error}"
    );

    let no_chain = SecretMaterial::Certificate {
        chain_pem: String::new(),
        private_key_pem: private_key_pem.clone(),
    };
    let error = server_config(&no_chain, Some(&bundle), &tls).unwrap_err();
    assert_eq!(
        error.to_string(),
        "sds secret default: certificate chain: no certificate"
    );

    let truncated = SecretMaterial::Certificate {
        chain_pem: chain_pem.replace("-----END CERTIFICATE-----", ""),
        private_key_pem: private_key_pem.clone(),
    };
    let error = server_config(&truncated, Some(&bundle), &tls).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("sds secret default: certificate chain: bad PEM"),
        "{error}"
    );

    let other_key = ca.leaf(WEB);
    let SecretMaterial::Certificate {
        private_key_pem: other_key,
        ..
    } = other_key
    else {
        unreachable!()
    };
    let mismatched = SecretMaterial::Certificate {
        chain_pem: chain_pem.clone(),
        private_key_pem: other_key,
    };
    let error = server_config(&mismatched, Some(&bundle), &tls).unwrap_err();
    assert!(
        matches!(error, TlsError::Certificate { ref name, .. } if name == "default"),
        "{error}"
    );

    let error = server_config(&bundle, Some(&bundle), &tls).unwrap_err();
    assert_eq!(
        error.to_string(),
        "sds secret default: is a trust bundle, expected a certificate"
    );
    let error = client_config(&leaf, &leaf, &upstream(&[])).unwrap_err();
    assert_eq!(
        error.to_string(),
        "sds secret ROOTCA: is a certificate, expected a trust bundle"
    );
    let empty = SecretMaterial::TrustBundle {
        ca_pem: "not pem".to_owned(),
    };
    let error = client_config(&leaf, &empty, &upstream(&[])).unwrap_err();
    assert_eq!(
        error.to_string(),
        "sds secret ROOTCA: trust bundle: no CA certificate"
    );
}

#[test]
fn peer_identity_needs_a_uri_san() {
    assert_eq!(peer_identity(&[]), None);
    let dns_only = rcgen::generate_simple_self_signed(vec!["web.demo".to_owned()]).unwrap();
    assert_eq!(peer_identity(&[dns_only.cert.der().clone()]), None);
    assert_eq!(peer_identity(&[CertificateDer::from(vec![1, 2, 3])]), None);
}

fn runtime(certificate: SecretMaterial, bundle: SecretMaterial) -> Runtime {
    let mut runtime = Runtime::default();
    runtime
        .secrets
        .insert("default".to_owned(), Arc::new(certificate));
    runtime
        .secrets
        .insert("ROOTCA".to_owned(), Arc::new(bundle));
    runtime
}

#[test]
fn cache_reuses_configs_until_a_secret_rotates() {
    let ca = TestCa::new("mesh");
    let cache = Cache::default();
    let first = runtime(ca.leaf(WEB), ca.bundle());
    let tls = downstream(true);

    let a = cache.server(&first, &tls).unwrap();
    let b = cache.server(&first, &tls).unwrap();
    assert!(Arc::ptr_eq(&a, &b));

    // Other settings with the same secrets get their own configuration.
    let optional = cache.server(&first, &downstream(false)).unwrap();
    assert!(!Arc::ptr_eq(&a, &optional));

    // A runtime cloned from the first shares its secrets: still the same configuration.
    let cloned = first.clone();
    assert!(Arc::ptr_eq(&a, &cache.server(&cloned, &tls).unwrap()));

    // A rotated certificate (a new secret object, even with other content) gives a new one.
    let mut rotated = first.clone();
    rotated.secrets.insert(
        "default".to_owned(),
        Arc::new(ca.leaf("spiffe://cluster.local/ns/demo/sa/new")),
    );
    let c = cache.server(&rotated, &tls).unwrap();
    assert!(!Arc::ptr_eq(&a, &c));
    let (_, server) = handshake(
        client_config(&ca.leaf(CLIENT), &ca.bundle(), &upstream(&[])).unwrap(),
        Arc::clone(&c),
    )
    .unwrap();
    assert_eq!(peer(&server).as_deref(), Some(CLIENT));

    let up = upstream(&["spiffe://cluster.local/ns/demo/sa/new"]);
    let client = cache.client(&rotated, &up).unwrap();
    assert!(Arc::ptr_eq(&client, &cache.client(&rotated, &up).unwrap()));
    let (client_conn, _) = handshake(client, c).unwrap();
    assert_eq!(
        peer(&client_conn).as_deref(),
        Some("spiffe://cluster.local/ns/demo/sa/new"),
        "new connections see the rotated certificate"
    );
}

#[test]
fn cache_reports_missing_secrets() {
    let cache = Cache::default();
    let error = cache
        .client(&Runtime::default(), &upstream(&[]))
        .unwrap_err();
    assert_eq!(error.to_string(), "sds secret default: not received");

    let ca = TestCa::new("mesh");
    let mut runtime = Runtime::default();
    runtime
        .secrets
        .insert("default".to_owned(), Arc::new(ca.leaf(WEB)));
    let error = cache.server(&runtime, &downstream(true)).unwrap_err();
    assert_eq!(error.to_string(), "sds secret ROOTCA: not received");
}
