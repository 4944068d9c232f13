use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData,
};
use switchyard_adapters::model::Identity;
use x509_parser::{
    certificate::X509Certificate,
    extensions::GeneralName,
    oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY},
};

use super::*;

// === Utils ===

/// 2027-01-15T08:00:00Z: whole seconds, so certificate times match exactly.
fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn web() -> Identity {
    Identity::new("shop", "web")
}

fn db() -> Identity {
    Identity::new("shop", "db")
}

fn generated() -> MeshCa {
    MeshCa::generate(&CaConfig::default(), t0()).unwrap()
}

/// The DER of each CERTIFICATE block.
fn ders(pem: &str) -> Vec<Vec<u8>> {
    pem::parse_many(pem)
        .unwrap()
        .into_iter()
        .map(|block| {
            assert_eq!(block.tag(), "CERTIFICATE");
            block.into_contents()
        })
        .collect()
}

fn x509(der: &[u8]) -> X509Certificate<'_> {
    let (rest, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    assert!(rest.is_empty());
    cert
}

fn timestamp(t: SystemTime) -> i64 {
    i64::try_from(t.duration_since(UNIX_EPOCH).unwrap().as_secs()).unwrap()
}

/// A CA made in the test, as a user would bring it.
struct TestCa {
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca_params(cn: &str, is_ca: IsCa) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, cn);
    params.distinguished_name = name;
    params.key_usages = match is_ca {
        IsCa::Ca(_) => vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign],
        _ => vec![KeyUsagePurpose::DigitalSignature],
    };
    params.is_ca = is_ca;
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2040, 1, 1);
    params
}

fn test_root(cn: &str) -> TestCa {
    let params = ca_params(cn, IsCa::Ca(BasicConstraints::Unconstrained));
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    TestCa {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        issuer: Issuer::new(params, key),
    }
}

fn test_signed(parent: &TestCa, cn: &str, is_ca: IsCa) -> TestCa {
    let params = ca_params(cn, is_ca);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &parent.issuer).unwrap();
    TestCa {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        issuer: Issuer::new(params, key),
    }
}

fn test_intermediate(root: &TestCa) -> TestCa {
    test_signed(
        root,
        "Test intermediate",
        IsCa::Ca(BasicConstraints::Constrained(0)),
    )
}

fn from_pem(cert_chain: &str, key: &str, trust_bundle: Option<&str>) -> Result<MeshCa, Error> {
    MeshCa::from_pem(
        &CaConfig::default(),
        &CaPem {
            cert_chain,
            key,
            trust_bundle,
        },
    )
}

/// Checks everything a workload certificate must be, and returns the parsed leaf's DER.
fn check_leaf(cert: &WorkloadCert, spiffe_id: &str) -> Vec<u8> {
    let chain = ders(cert.cert_chain_pem());
    let leaf = x509(&chain[0]);

    let san = leaf.subject_alternative_name().unwrap().unwrap();
    assert_eq!(san.value.general_names, vec![GeneralName::URI(spiffe_id)]);
    assert!(san.critical, "empty subject: the SAN must be critical");
    assert_eq!(leaf.subject().iter().count(), 0);

    let bc = leaf.basic_constraints().unwrap().unwrap();
    assert!(!bc.value.ca);
    assert!(!leaf.is_ca());
    let ku = leaf.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature());
    assert!(!ku.key_cert_sign());
    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);

    let spki = leaf.public_key();
    assert_eq!(spki.algorithm.algorithm, OID_KEY_TYPE_EC_PUBLIC_KEY);
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .unwrap()
        .as_oid()
        .unwrap();
    assert_eq!(curve, OID_EC_P256);

    assert_eq!(
        leaf.validity().not_before.timestamp(),
        timestamp(cert.not_before())
    );
    assert_eq!(
        leaf.validity().not_after.timestamp(),
        timestamp(cert.not_after())
    );
    assert_eq!(
        leaf.raw_serial()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
        cert.serial()
    );

    // The private key is PKCS#8 P-256 and belongs to the leaf.
    let key = KeyPair::from_pem(cert.private_key_pem().expose()).unwrap();
    assert_eq!(key.algorithm(), &rcgen::PKCS_ECDSA_P256_SHA256);
    assert_eq!(key.der_bytes(), spki.subject_public_key.data.as_ref());

    chain[0].clone()
}

// === MeshCa::generate ===

#[test]
fn generated_root_issues_a_spiffe_leaf() {
    let ca = generated();
    let now = t0() + secs(10);
    let cert = ca.issue(&web(), DEFAULT_WORKLOAD_LIFETIME, now).unwrap();

    assert_eq!(cert.identity(), &web());
    assert_eq!(cert.spiffe_id(), "spiffe://cluster.local/ns/shop/sa/web");
    let leaf_der = check_leaf(&cert, "spiffe://cluster.local/ns/shop/sa/web");
    assert_eq!(
        ders(cert.cert_chain_pem()).len(),
        1,
        "a generated root is not part of the chain"
    );

    // Validity: the lifetime, plus five minutes back-dated.
    assert_eq!(cert.not_before(), now - BACKDATE);
    assert_eq!(cert.not_after(), now + DEFAULT_WORKLOAD_LIFETIME);
    assert_eq!(cert.renew_at(), now + secs(16 * 60 * 60));

    // The leaf verifies against the trust bundle, which is the root.
    let bundle = ders(ca.trust_bundle_pem());
    assert_eq!(bundle.len(), 1);
    let root = x509(&bundle[0]);
    let leaf = x509(&leaf_der);
    assert_eq!(leaf.issuer().as_raw(), root.subject().as_raw());
    leaf.verify_signature(Some(root.public_key())).unwrap();
    assert!(
        leaf.verify_signature(Some(leaf.public_key())).is_err(),
        "sanity: verification can fail"
    );
}

#[test]
fn generated_root_is_a_ca() {
    let ca = generated();
    assert!(ca.is_generated());
    assert_eq!(ca.trust_domain(), "cluster.local");
    assert_eq!(ca.subject(), "O=Switchyard, CN=Switchyard mesh root CA");

    let bundle = ders(ca.trust_bundle_pem());
    let root = x509(&bundle[0]);
    assert!(root.basic_constraints().unwrap().unwrap().value.ca);
    assert!(root.key_usage().unwrap().unwrap().value.key_cert_sign());
    root.verify_signature(None).unwrap();
    assert_eq!(ca.not_before(), t0() - BACKDATE);
    assert_eq!(ca.not_after(), t0() + DEFAULT_ROOT_LIFETIME);
    assert_eq!(
        root.validity().not_before.timestamp(),
        timestamp(t0() - BACKDATE)
    );
    assert_eq!(
        root.validity().not_after.timestamp(),
        timestamp(t0() + DEFAULT_ROOT_LIFETIME)
    );
}

#[test]
fn trust_domain_goes_into_the_spiffe_id() {
    let config = CaConfig {
        trust_domain: "prod.example.org".to_string(),
        ..CaConfig::default()
    };
    let ca = MeshCa::generate(&config, t0()).unwrap();
    let cert = ca.issue(&web(), secs(60), t0()).unwrap();
    check_leaf(&cert, "spiffe://prod.example.org/ns/shop/sa/web");
}

#[test]
fn leaf_never_outlives_the_ca() {
    let config = CaConfig {
        root_lifetime: secs(60),
        ..CaConfig::default()
    };
    let ca = MeshCa::generate(&config, t0()).unwrap();
    let cert = ca.issue(&web(), DEFAULT_WORKLOAD_LIFETIME, t0()).unwrap();
    assert_eq!(cert.not_after(), ca.not_after());
    assert_eq!(cert.renew_at(), t0() + secs(40));

    let err = ca.issue(&web(), secs(10), t0() + secs(60)).unwrap_err();
    assert!(matches!(err, Error::CaNotValid { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "ca certificate is valid from 2027-01-15T07:55:00Z to 2027-01-15T08:01:00Z, not at \
         2027-01-15T08:01:00Z"
    );
}

#[test]
fn each_issue_has_a_new_key_and_serial() {
    let ca = generated();
    let a = ca.issue(&web(), secs(60), t0()).unwrap();
    let b = ca.issue(&web(), secs(60), t0()).unwrap();
    assert_ne!(a.serial(), b.serial());
    assert_ne!(a.private_key_pem().expose(), b.private_key_pem().expose());
}

#[test]
fn invalid_identity_is_rejected() {
    let ca = generated();
    for identity in [
        Identity::new("", "web"),
        Identity::new("shop", ".."),
        Identity::new("shop", "we/b"),
        Identity::new("shöp", "web"),
    ] {
        let err = ca.issue(&identity, secs(60), t0()).unwrap_err();
        assert!(matches!(err, Error::InvalidIdentity { .. }), "{err}");
    }
}

// === CaConfig ===

#[test]
fn config_bounds() {
    assert_eq!(CaConfig::default().workload_lifetime, secs(24 * 60 * 60));
    CaConfig::default().validate().unwrap();

    let with = |workload_lifetime| CaConfig {
        workload_lifetime,
        ..CaConfig::default()
    };
    with(secs(1)).validate().unwrap();
    with(MAX_WORKLOAD_LIFETIME).validate().unwrap();
    for bad in [
        Duration::ZERO,
        Duration::from_millis(1500),
        MAX_WORKLOAD_LIFETIME + secs(1),
    ] {
        let err = with(bad).validate().unwrap_err();
        assert!(matches!(err, Error::InvalidLifetime { .. }), "{err}");
    }
    assert_eq!(
        with(Duration::ZERO).validate().unwrap_err().to_string(),
        "workload certificate lifetime 0ns: too short"
    );

    for bad in ["", "Cluster.Local", "a/b", "spiffe://x"] {
        let config = CaConfig {
            trust_domain: bad.to_string(),
            ..CaConfig::default()
        };
        let err = MeshCa::generate(&config, t0()).unwrap_err();
        assert!(matches!(err, Error::InvalidTrustDomain { .. }), "{err}");
    }
    let config = CaConfig {
        trust_domain: "Cluster.Local".to_string(),
        ..CaConfig::default()
    };
    assert_eq!(
        config.validate().unwrap_err().to_string(),
        "trust domain \"Cluster.Local\": must contain only lowercase letters, digits, '.', '-' \
         and '_'"
    );
}

// === MeshCa::from_pem ===

#[test]
fn user_intermediate_with_bundle() {
    let root = test_root("Test root");
    let inter = test_intermediate(&root);
    let ca = from_pem(&inter.cert_pem, &inter.key_pem, Some(&root.cert_pem)).unwrap();
    assert!(!ca.is_generated());
    assert_eq!(ca.subject(), "CN=Test intermediate");

    let cert = ca.issue(&web(), secs(3600), t0()).unwrap();
    check_leaf(&cert, "spiffe://cluster.local/ns/shop/sa/web");

    // leaf + intermediate; the leaf verifies against the intermediate, which verifies against
    // the bundle, which is the root.
    let chain = ders(cert.cert_chain_pem());
    assert_eq!(chain.len(), 2);
    assert_eq!(chain[1], ders(&inter.cert_pem)[0]);
    let (leaf, inter_x509) = (x509(&chain[0]), x509(&chain[1]));
    leaf.verify_signature(Some(inter_x509.public_key()))
        .unwrap();
    assert_eq!(leaf.issuer().as_raw(), inter_x509.subject().as_raw());
    let bundle = ders(ca.trust_bundle_pem());
    assert_eq!(bundle, ders(&root.cert_pem));
    inter_x509
        .verify_signature(Some(x509(&bundle[0]).public_key()))
        .unwrap();
}

#[test]
fn user_chain_ending_at_the_root_needs_no_bundle() {
    let root = test_root("Test root");
    let inter = test_intermediate(&root);
    let chain_pem = format!("{}{}", inter.cert_pem, root.cert_pem);
    let ca = from_pem(&chain_pem, &inter.key_pem, None).unwrap();
    assert_eq!(ders(ca.trust_bundle_pem()), ders(&root.cert_pem));

    let cert = ca.issue(&web(), secs(3600), t0()).unwrap();
    let chain = ders(cert.cert_chain_pem());
    assert_eq!(chain.len(), 2, "the root is not sent with the leaf");
    assert_eq!(chain[1], ders(&inter.cert_pem)[0]);
}

#[test]
fn user_root_signs_leaves_directly() {
    let root = test_root("Test root");
    let ca = from_pem(&root.cert_pem, &root.key_pem, None).unwrap();
    assert_eq!(ders(ca.trust_bundle_pem()), ders(&root.cert_pem));
    let cert = ca.issue(&web(), secs(3600), t0()).unwrap();
    let chain = ders(cert.cert_chain_pem());
    assert_eq!(chain.len(), 1);
    x509(&chain[0])
        .verify_signature(Some(x509(&ders(&root.cert_pem)[0]).public_key()))
        .unwrap();
}

#[test]
fn user_intermediate_without_root_is_rejected() {
    let root = test_root("Test root");
    let inter = test_intermediate(&root);
    let err = from_pem(&inter.cert_pem, &inter.key_pem, None).unwrap_err();
    assert!(matches!(err, Error::MissingTrustBundle { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "ca certificate: the chain ends at \"CN=Test intermediate\", which is not a self-signed \
         root; supply the root as the ca bundle"
    );
}

#[test]
fn bundle_must_anchor_the_chain() {
    let root = test_root("Test root");
    let other = test_root("Other root");
    let inter = test_intermediate(&root);
    let err = from_pem(&inter.cert_pem, &inter.key_pem, Some(&other.cert_pem)).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("ca bundle: no certificate in it issued"),
        "{err}"
    );
}

#[test]
fn chain_must_be_in_order() {
    let root = test_root("Test root");
    let inter = test_intermediate(&root);
    let other = test_root("Other root");
    let chain_pem = format!("{}{}", inter.cert_pem, other.cert_pem);
    let err = from_pem(&chain_pem, &inter.key_pem, None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "ca certificate: certificate 1 is not issued by certificate 2"
    );
}

#[test]
fn mismatched_key_is_rejected() {
    let root = test_root("Test root");
    let inter = test_intermediate(&root);
    let err = from_pem(&inter.cert_pem, &root.key_pem, Some(&root.cert_pem)).unwrap_err();
    assert!(matches!(err, Error::KeyMismatch), "{err}");
    assert_eq!(err.to_string(), "ca key does not match ca certificate");
}

#[test]
fn non_ca_certificate_is_rejected() {
    let root = test_root("Test root");
    let leaf = test_signed(&root, "Not a CA", IsCa::ExplicitNoCa);
    let err = from_pem(&leaf.cert_pem, &leaf.key_pem, Some(&root.cert_pem)).unwrap_err();
    assert!(matches!(err, Error::NotCa { .. }), "{err}");
    assert_eq!(err.to_string(), "ca certificate: not a CA certificate");

    // No basic constraints at all is not a CA either.
    let leaf = test_signed(&root, "Not a CA", IsCa::NoCa);
    let err = from_pem(&leaf.cert_pem, &leaf.key_pem, Some(&root.cert_pem)).unwrap_err();
    assert!(matches!(err, Error::NotCa { .. }), "{err}");

    // A leaf in the bundle is not a trust anchor.
    let inter = test_intermediate(&root);
    let err = from_pem(&inter.cert_pem, &inter.key_pem, Some(&leaf.cert_pem)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "ca bundle: certificate 1: not a CA certificate"
    );
}

#[test]
fn garbage_input_names_the_input() {
    let root = test_root("Test root");
    let cases = [
        (
            from_pem("garbage", &root.key_pem, None),
            "ca certificate: no PEM certificate",
        ),
        (
            from_pem(
                "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
                &root.key_pem,
                None,
            ),
            "ca certificate: ",
        ),
        (
            from_pem(
                "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n",
                &root.key_pem,
                None,
            ),
            "ca certificate: certificate 1: ",
        ),
        (
            from_pem(&root.key_pem, &root.key_pem, None),
            "ca certificate: unexpected PEM block \"PRIVATE KEY\"; expected CERTIFICATE",
        ),
        (
            from_pem(&root.cert_pem, "garbage", None),
            "ca key: no PEM private key",
        ),
        (
            from_pem(&root.cert_pem, &root.cert_pem, None),
            "ca key: unexpected PEM block \"CERTIFICATE\"; expected PRIVATE KEY",
        ),
        (
            from_pem(
                &root.cert_pem,
                "-----BEGIN PRIVATE KEY-----\naGVsbG8=\n-----END PRIVATE KEY-----\n",
                None,
            ),
            "ca key: not a supported PKCS#8 private key",
        ),
        (
            from_pem(
                &root.cert_pem,
                "-----BEGIN EC PRIVATE KEY-----\naGVsbG8=\n-----END EC PRIVATE KEY-----\n",
                None,
            ),
            "ca key: \"EC PRIVATE KEY\" keys are not supported; convert to PKCS#8 with `openssl \
             pkcs8 -topk8 -nocrypt`",
        ),
        (
            from_pem(&root.cert_pem, &root.key_pem, Some("garbage")),
            "ca bundle: no PEM certificate",
        ),
    ];
    for (result, expected) in cases {
        let err = result.unwrap_err();
        assert!(
            err.to_string().starts_with(expected),
            "{err:?} should start with {expected:?}"
        );
    }
}

#[test]
fn from_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = test_root("Test root");
    let inter = test_intermediate(&root);
    let files = CaFiles {
        cert_chain: dir.path().join("cert.pem"),
        key: dir.path().join("key.pem"),
        trust_bundle: Some(dir.path().join("bundle.pem")),
    };
    std::fs::write(&files.cert_chain, &inter.cert_pem).unwrap();
    std::fs::write(&files.key, &inter.key_pem).unwrap();
    std::fs::write(files.trust_bundle.as_ref().unwrap(), &root.cert_pem).unwrap();

    let ca = MeshCa::from_files(&CaConfig::default(), &files).unwrap();
    assert_eq!(ders(ca.trust_bundle_pem()), ders(&root.cert_pem));
    ca.issue(&web(), secs(60), t0()).unwrap();

    // Errors name the input and its path.
    std::fs::write(&files.key, "garbage").unwrap();
    let err = MeshCa::from_files(&CaConfig::default(), &files).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "ca key {}: no PEM private key found (expected -----BEGIN PRIVATE KEY-----)",
            files.key.display()
        )
    );
    let missing = CaFiles {
        key: dir.path().join("missing.pem"),
        ..files.clone()
    };
    let err = MeshCa::from_files(&CaConfig::default(), &missing).unwrap_err();
    assert!(matches!(err, Error::Read { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with(&format!("ca key {}: ", missing.key.display())),
        "{err}"
    );
}

// === Certificates ===

#[test]
fn store_issues_rotates_and_drops() {
    let mut store = Certificates::new(generated());
    let lifetime = secs(30);
    assert_eq!(store.next_renewal(), None);

    // New identities get certificates.
    let changes = store.sync([&web(), &db()], lifetime, t0()).unwrap();
    assert_eq!(changes.issued, [web(), db()].into());
    assert!(changes.removed.is_empty() && changes.failed.is_empty());
    assert_eq!(changes.changed(), [&web(), &db()].into());
    assert_eq!(store.len(), 2);
    let first = store.get(&web()).unwrap().clone();
    assert_eq!(first.renew_at(), t0() + secs(20));
    assert_eq!(store.next_renewal(), Some(t0() + secs(20)));

    // Nothing changes before renew_at.
    let changes = store
        .sync([&web(), &db()], lifetime, t0() + secs(19))
        .unwrap();
    assert!(changes.is_empty(), "{changes:?}");
    assert_eq!(store.get(&web()).unwrap().serial(), first.serial());

    // At renew_at (two thirds of the lifetime), both are rotated with a new key and serial.
    let now = t0() + secs(20);
    let changes = store.sync([&web(), &db()], lifetime, now).unwrap();
    assert_eq!(changes.issued, [web(), db()].into());
    let second = store.get(&web()).unwrap().clone();
    assert_ne!(second.serial(), first.serial());
    assert_ne!(
        second.private_key_pem().expose(),
        first.private_key_pem().expose()
    );
    assert_eq!(second.not_before(), now - BACKDATE);
    assert_eq!(store.next_renewal(), Some(now + secs(20)));

    // Identities no longer needed are dropped.
    let changes = store.sync([&web()], lifetime, now + secs(1)).unwrap();
    assert!(changes.issued.is_empty());
    assert_eq!(changes.removed, [db()].into());
    assert!(store.get(&db()).is_none());
    assert_eq!(store.len(), 1);

    let changes = store.sync([], lifetime, now + secs(2)).unwrap();
    assert_eq!(changes.removed, [web()].into());
    assert!(store.is_empty());
    assert_eq!(store.next_renewal(), None);
}

#[test]
fn store_next_renewal_is_the_earliest() {
    let mut store = Certificates::new(generated());
    store.sync([&web()], secs(30), t0()).unwrap();
    let changes = store
        .sync([&web(), &db()], secs(30), t0() + secs(9))
        .unwrap();
    assert_eq!(changes.issued, [db()].into(), "web is not due yet");
    assert_eq!(store.get(&db()).unwrap().renew_at(), t0() + secs(29));
    assert_eq!(store.next_renewal(), Some(t0() + secs(20)));

    // Only web is due at its renew_at.
    let changes = store
        .sync([&web(), &db()], secs(30), t0() + secs(20))
        .unwrap();
    assert_eq!(changes.issued, [web()].into());
    assert_eq!(store.next_renewal(), Some(t0() + secs(29)));
}

#[test]
fn store_reissues_on_a_new_lifetime() {
    let mut store = Certificates::new(generated());
    store.sync([&web()], secs(3600), t0()).unwrap();
    let changes = store.sync([&web()], secs(60), t0() + secs(1)).unwrap();
    assert_eq!(changes.issued, [web()].into());
    assert_eq!(store.get(&web()).unwrap().lifetime(), secs(60));
}

#[test]
fn store_rejects_a_bad_lifetime_and_reports_bad_identities() {
    let mut store = Certificates::new(generated());
    let err = store.sync([&web()], Duration::ZERO, t0()).unwrap_err();
    assert!(matches!(err, Error::InvalidLifetime { .. }), "{err}");
    assert!(store.is_empty());

    let bad = Identity::new("shop", "we/b");
    let changes = store.sync([&web(), &bad], secs(60), t0()).unwrap();
    assert_eq!(changes.issued, [web()].into());
    assert_eq!(changes.failed.keys().collect::<Vec<_>>(), [&bad]);
    assert!(store.get(&bad).is_none());
}

#[test]
fn store_drops_expired_certificates_it_cannot_renew() {
    let config = CaConfig {
        root_lifetime: secs(60),
        ..CaConfig::default()
    };
    let mut store = Certificates::new(MeshCa::generate(&config, t0()).unwrap());
    store.sync([&web()], secs(30), t0()).unwrap();
    // Renewed at t0+50 s: cut to the CA's expiry at t0+60 s.
    store.sync([&web()], secs(30), t0() + secs(50)).unwrap();
    assert_eq!(store.get(&web()).unwrap().not_after(), t0() + secs(60));

    // After the CA expired, renewal fails and the expired certificate goes.
    let changes = store.sync([&web()], secs(30), t0() + secs(60)).unwrap();
    assert!(changes.issued.is_empty());
    assert_eq!(changes.removed, [web()].into());
    assert!(matches!(changes.failed[&web()], Error::CaNotValid { .. }));
    assert!(store.is_empty());
}

#[test]
fn store_can_be_shared_across_tasks() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Certificates>();
    send_sync::<MeshCa>();
    send_sync::<WorkloadCert>();
}

// === Debug ===

#[test]
fn debug_never_prints_keys() {
    let root = test_root("Test root");
    let inter = test_intermediate(&root);
    let user_ca = from_pem(&inter.cert_pem, &inter.key_pem, Some(&root.cert_pem)).unwrap();
    let mut store = Certificates::new(generated());
    store.sync([&web()], secs(60), t0()).unwrap();
    let cert = store.get(&web()).unwrap();
    let key_body = cert.private_key_pem().expose().lines().nth(1).unwrap();
    let pem = CaPem {
        cert_chain: &inter.cert_pem,
        key: &inter.key_pem,
        trust_bundle: None,
    };

    for debug in [
        format!("{user_ca:?}"),
        format!("{:?}", store.ca()),
        format!("{cert:?}"),
        format!("{:#?}", cert.private_key_pem()),
        format!("{store:?}"),
        format!("{pem:?}"),
    ] {
        assert!(!debug.contains("PRIVATE KEY"), "{debug}");
        assert!(!debug.contains(key_body), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
    }
    assert!(!format!("{pem:?}").contains(inter.key_pem.lines().nth(1).unwrap()));
}
