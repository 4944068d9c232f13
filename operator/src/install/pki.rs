//! The certificates `switchyard install` ships in Secrets: the mesh CA, and a small webhook CA
//! with the conversion webhook's serving certificate. Generated fresh, or kept in a directory
//! and reused so that installing again does not rotate the mesh CA.
//!
//! Directory layout (keys are written with mode 0600, the directory 0700):
//!
//! ```text
//! DIR/ca.crt  DIR/ca.key                     mesh CA (the operator's --ca-cert / --ca-key)
//! DIR/webhook/ca.crt  DIR/webhook/ca.key     webhook CA (its certificate is the CRDs' caBundle)
//! DIR/webhook/tls.crt DIR/webhook/tls.key    webhook serving certificate (--webhook-cert-dir)
//! ```

use std::{
    fmt, fs, io,
    net::IpAddr,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData, SanType, string::Ia5String,
};
use time::OffsetDateTime;
use x509_parser::{certificate::X509Certificate, extensions::GeneralName};
use zeroize::Zeroizing;

use crate::identity::{self, BACKDATE, CaConfig, CaPem, MeshCa};

/// The mesh CA certificate, relative to the pki directory.
pub const MESH_CA_CERT: &str = "ca.crt";
/// The mesh CA key (PKCS#8 PEM).
pub const MESH_CA_KEY: &str = "ca.key";
/// The directory of the webhook files, relative to the pki directory: the operator's
/// `--webhook-cert-dir` when it runs outside the cluster.
pub const WEBHOOK_DIR: &str = "webhook";
/// The webhook CA certificate and key, relative to [`WEBHOOK_DIR`].
pub const WEBHOOK_CA_CERT: &str = "ca.crt";
pub const WEBHOOK_CA_KEY: &str = "ca.key";
/// The webhook serving certificate (leaf first) and key, relative to [`WEBHOOK_DIR`].
pub const WEBHOOK_TLS_CERT: &str = "tls.crt";
pub const WEBHOOK_TLS_KEY: &str = "tls.key";

/// Validity of a generated CA (mesh or webhook): 10 years.
pub const CA_LIFETIME: Duration = Duration::from_secs(3650 * 24 * 60 * 60);
/// Validity of a webhook serving certificate: 1 year.
pub const SERVING_LIFETIME: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// A reused serving certificate with less than this left (30 days) is issued again.
pub const SERVING_RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// What the certificates are for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PkiConfig {
    /// SPIFFE trust domain of the mesh (default `cluster.local`); the mesh CA carries
    /// `spiffe://<trust domain>` as its URI SAN.
    pub trust_domain: String,
    /// DNS names and IP addresses the webhook serving certificate must hold.
    pub webhook_sans: Vec<Host>,
}

/// A name a serving certificate is valid for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Host {
    Dns(String),
    Ip(IpAddr),
}

/// A certificate and its private key, both PEM. `Debug` leaves the key out.
#[derive(Clone)]
pub struct CertKey {
    pub cert_pem: String,
    pub key_pem: Zeroizing<String>,
}

/// Every certificate the install needs.
#[derive(Clone, Debug)]
pub struct Pki {
    /// Signs workload certificates; self-signed, ECDSA P-256.
    pub mesh_ca: CertKey,
    /// Signs the webhook serving certificate; its certificate is the CRDs' `caBundle`.
    pub webhook_ca: CertKey,
    /// The conversion webhook's serving certificate.
    pub webhook_tls: CertKey,
}

/// Where each part of a [`Pki`] came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PkiReport {
    pub mesh_ca: Origin,
    pub webhook_ca: Origin,
    pub webhook_tls: Origin,
    /// Files written (created or changed).
    pub written: Vec<PathBuf>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Read from the directory and still fit for use.
    Reused,
    /// Newly generated: the directory had none.
    Generated,
    /// Issued again; the reason says what was wrong with the one in the directory.
    Reissued(String),
}

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A file that is reused as it is (a CA) does not hold what it should.
    #[error("{}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    /// One half of a CA is present, the other not. Generating a new CA here would silently
    /// rotate it, so this is an error.
    #[error(
        "{}: found without {}; restore it, or remove both to generate a new {what}",
        present.display(),
        missing.display()
    )]
    Incomplete {
        what: &'static str,
        present: PathBuf,
        missing: PathBuf,
    },
    #[error(
        "{}: the mesh CA is for trust domain {found:?}, not {wanted:?}",
        path.display()
    )]
    TrustDomain {
        path: PathBuf,
        found: String,
        wanted: String,
    },
    #[error("{what}: {source}")]
    Rcgen {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("time {0} s after 1970 does not fit in a certificate")]
    Time(u64),
    #[error("the clock is before 1970")]
    Clock,
}

// === impl Host ===

impl Host {
    /// An IP address when `host` parses as one (with or without `[]`), else a DNS name.
    pub fn parse(host: &str) -> Self {
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        match bare.parse::<IpAddr>() {
            Ok(ip) => Host::Ip(ip),
            Err(_) => Host::Dns(host.to_ascii_lowercase()),
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Dns(name) => f.write_str(name),
            Host::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

// === impl CertKey ===

impl fmt::Debug for CertKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertKey")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

// === impl Pki ===

impl Pki {
    /// Generates everything fresh, valid from `now` minus [`BACKDATE`].
    pub fn generate(config: &PkiConfig, now: SystemTime) -> Result<Self, PkiError> {
        let now = unix_secs(now)?;
        let mesh_ca = generate_mesh_ca(&config.trust_domain, now)?;
        let (webhook_ca, issuer) = generate_webhook_ca(now)?;
        let webhook_tls = issue_serving(&config.webhook_sans, &issuer, now)?;
        Ok(Pki {
            mesh_ca,
            webhook_ca,
            webhook_tls,
        })
    }

    /// Reads the pki directory `dir` and reuses what it holds; generates what it lacks, issues
    /// the serving certificate again when it does not fit (a missing SAN, another CA, less
    /// than [`SERVING_RENEW_BEFORE`] left), and writes every new file back.
    ///
    /// A CA found in the directory must load (the mesh CA as the operator loads it) and must
    /// match the trust domain; otherwise this fails rather than replace it.
    pub fn load_or_generate(
        dir: &Path,
        config: &PkiConfig,
        now: SystemTime,
    ) -> Result<(Self, PkiReport), PkiError> {
        let now_secs = unix_secs(now)?;
        let webhook_dir = dir.join(WEBHOOK_DIR);

        let mesh_paths = (dir.join(MESH_CA_CERT), dir.join(MESH_CA_KEY));
        let (mesh_ca, mesh_origin) = match read_pair("mesh CA", &mesh_paths)? {
            Some(pair) => {
                check_mesh_ca(&mesh_paths.0, &pair, &config.trust_domain)?;
                (pair, Origin::Reused)
            }
            None => (
                generate_mesh_ca(&config.trust_domain, now_secs)?,
                Origin::Generated,
            ),
        };

        let ca_paths = (
            webhook_dir.join(WEBHOOK_CA_CERT),
            webhook_dir.join(WEBHOOK_CA_KEY),
        );
        let (webhook_ca, issuer, ca_origin) = match read_pair("webhook CA", &ca_paths)? {
            Some(pair) => {
                let issuer = load_webhook_ca(&ca_paths.0, &pair)?;
                (pair, issuer, Origin::Reused)
            }
            None => {
                let (pair, issuer) = generate_webhook_ca(now_secs)?;
                (pair, issuer, Origin::Generated)
            }
        };

        let tls_paths = (
            webhook_dir.join(WEBHOOK_TLS_CERT),
            webhook_dir.join(WEBHOOK_TLS_KEY),
        );
        // The serving certificate is cheap to replace, so anything wrong with it (even half of
        // it missing) means issuing a new one rather than failing.
        let existing = match (read_optional(&tls_paths.0)?, read_optional(&tls_paths.1)?) {
            (Some(cert_pem), Some(key_pem)) => Some(CertKey {
                cert_pem,
                key_pem: Zeroizing::new(key_pem),
            }),
            _ => None,
        };
        let (webhook_tls, tls_origin) = match existing {
            Some(pair) => match serving_unfit(&pair, &webhook_ca, &config.webhook_sans, now_secs) {
                None => (pair, Origin::Reused),
                Some(reason) => (
                    issue_serving(&config.webhook_sans, &issuer, now_secs)?,
                    Origin::Reissued(reason),
                ),
            },
            None => (
                issue_serving(&config.webhook_sans, &issuer, now_secs)?,
                Origin::Generated,
            ),
        };

        let pki = Pki {
            mesh_ca,
            webhook_ca,
            webhook_tls,
        };
        let written = pki.write(dir)?;
        Ok((
            pki,
            PkiReport {
                mesh_ca: mesh_origin,
                webhook_ca: ca_origin,
                webhook_tls: tls_origin,
                written,
            },
        ))
    }

    /// Writes every file into `dir` (keys 0600, directories 0700), leaving files whose content
    /// is unchanged alone. Returns the files written.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>, PkiError> {
        let webhook_dir = dir.join(WEBHOOK_DIR);
        create_private_dir(&webhook_dir)?;
        let files: [(PathBuf, &str, bool); 6] = [
            (dir.join(MESH_CA_CERT), &self.mesh_ca.cert_pem, false),
            (dir.join(MESH_CA_KEY), &self.mesh_ca.key_pem, true),
            (
                webhook_dir.join(WEBHOOK_CA_CERT),
                &self.webhook_ca.cert_pem,
                false,
            ),
            (
                webhook_dir.join(WEBHOOK_CA_KEY),
                &self.webhook_ca.key_pem,
                true,
            ),
            (
                webhook_dir.join(WEBHOOK_TLS_CERT),
                &self.webhook_tls.cert_pem,
                false,
            ),
            (
                webhook_dir.join(WEBHOOK_TLS_KEY),
                &self.webhook_tls.key_pem,
                true,
            ),
        ];
        let mut written = Vec::new();
        for (path, text, secret) in files {
            let same =
                fs::read(&path).is_ok_and(|old| Zeroizing::new(old).as_slice() == text.as_bytes());
            if !same {
                write_file(&path, text.as_bytes(), secret)?;
                written.push(path);
            }
        }
        Ok(written)
    }

    /// Loads the mesh CA the way the operator does (`--ca-cert`/`--ca-key`).
    pub fn mesh_ca_loads(&self, trust_domain: &str) -> Result<MeshCa, crate::identity::Error> {
        let config = CaConfig {
            trust_domain: trust_domain.to_string(),
            ..CaConfig::default()
        };
        MeshCa::from_pem(
            &config,
            &CaPem {
                cert_chain: &self.mesh_ca.cert_pem,
                key: &self.mesh_ca.key_pem,
                trust_bundle: None,
            },
        )
    }
}

// === Generation ===

fn ca_params(common_name: &str, now: u64) -> Result<CertificateParams, PkiError> {
    Ok(identity::ca_params(
        common_name,
        to_offset(now.saturating_sub(BACKDATE.as_secs()))?,
        to_offset(now.saturating_add(CA_LIFETIME.as_secs()))?,
    ))
}

fn generate_mesh_ca(trust_domain: &str, now: u64) -> Result<CertKey, PkiError> {
    let rcgen = |what| move |source| PkiError::Rcgen { what, source };
    let mut params = ca_params("Switchyard mesh CA", now)?;
    // A SPIFFE signing certificate names its trust domain (X.509-SVID spec, section 4.1); it
    // also lets a later install notice a different --trust-domain.
    let uri = Ia5String::try_from(format!("spiffe://{trust_domain}"))
        .map_err(rcgen("mesh CA trust domain"))?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    let key = KeyPair::generate().map_err(rcgen("generate mesh CA key"))?;
    let cert = params
        .self_signed(&key)
        .map_err(rcgen("sign mesh CA certificate"))?;
    Ok(CertKey {
        cert_pem: cert.pem(),
        key_pem: Zeroizing::new(key.serialize_pem()),
    })
}

fn generate_webhook_ca(now: u64) -> Result<(CertKey, Issuer<'static, KeyPair>), PkiError> {
    generate_serving_ca("Switchyard webhook CA", now)
}

fn generate_serving_ca(
    common_name: &str,
    now: u64,
) -> Result<(CertKey, Issuer<'static, KeyPair>), PkiError> {
    let rcgen = |what| move |source| PkiError::Rcgen { what, source };
    let params = ca_params(common_name, now)?;
    let key = KeyPair::generate().map_err(rcgen("generate webhook CA key"))?;
    let cert = params
        .self_signed(&key)
        .map_err(rcgen("sign webhook CA certificate"))?;
    let pair = CertKey {
        cert_pem: cert.pem(),
        key_pem: Zeroizing::new(key.serialize_pem()),
    };
    Ok((pair, Issuer::new(params, key)))
}

fn issue_serving(
    sans: &[Host],
    issuer: &Issuer<'static, KeyPair>,
    now: u64,
) -> Result<CertKey, PkiError> {
    let rcgen = |what| move |source| PkiError::Rcgen { what, source };
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "Switchyard");
    if let Some(first) = sans.first() {
        name.push(DnType::CommonName, first.to_string());
    }
    params.distinguished_name = name;
    params.subject_alt_names = sans
        .iter()
        .map(|host| match host {
            Host::Dns(dns) => Ia5String::try_from(dns.as_str()).map(SanType::DnsName),
            Host::Ip(ip) => Ok(SanType::IpAddress(*ip)),
        })
        .collect::<Result<_, _>>()
        .map_err(rcgen("webhook serving certificate name"))?;
    params.is_ca = IsCa::ExplicitNoCa;
    // keyEncipherment only means something for RSA keys; these are ECDSA.
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = to_offset(now.saturating_sub(BACKDATE.as_secs()))?;
    params.not_after = to_offset(now.saturating_add(SERVING_LIFETIME.as_secs()))?;
    let key = KeyPair::generate().map_err(rcgen("generate webhook serving key"))?;
    let cert = params
        .signed_by(&key, issuer)
        .map_err(rcgen("sign webhook serving certificate"))?;
    Ok(CertKey {
        cert_pem: cert.pem(),
        key_pem: Zeroizing::new(key.serialize_pem()),
    })
}

/// A CA of its own and a serving certificate it signed for `sans`, in `dir` as `ca.crt`,
/// `ca.key`, `tls.crt` and `tls.key` (keys 0600, the directory 0700): what is there is reused
/// while it fits, the rest is generated. Local mode's xDS server serves with it; its proxies
/// verify it with `ca.crt`, so a restarted control plane keeps the CA its running proxies trust.
pub fn serving_dir(
    dir: &Path,
    common_name: &str,
    sans: &[Host],
    now: SystemTime,
) -> Result<(), PkiError> {
    let now = unix_secs(now)?;
    create_private_dir(dir)?;
    let ca_paths = (dir.join(WEBHOOK_CA_CERT), dir.join(WEBHOOK_CA_KEY));
    let kept = read_pair("serving CA", &ca_paths)?
        .and_then(|pair| Some((load_webhook_ca(&ca_paths.0, &pair).ok()?, pair)));
    let (ca, issuer) = match kept {
        Some((issuer, pair)) => (pair, issuer),
        None => generate_serving_ca(common_name, now)?,
    };
    let tls_paths = (dir.join(WEBHOOK_TLS_CERT), dir.join(WEBHOOK_TLS_KEY));
    let tls = match read_pair("serving certificate", &tls_paths) {
        Ok(Some(pair)) if serving_unfit(&pair, &ca, sans, now).is_none() => pair,
        _ => issue_serving(sans, &issuer, now)?,
    };
    for (path, text, secret) in [
        (&ca_paths.0, &ca.cert_pem, false),
        (&ca_paths.1, &*ca.key_pem, true),
        (&tls_paths.0, &tls.cert_pem, false),
        (&tls_paths.1, &*tls.key_pem, true),
    ] {
        let same =
            fs::read(path).is_ok_and(|old| Zeroizing::new(old).as_slice() == text.as_bytes());
        if !same {
            write_file(path, text.as_bytes(), secret)?;
        }
    }
    Ok(())
}

// === Reuse ===

/// Both files of a CA, `None` when neither exists, an error when only one does.
fn read_pair(
    what: &'static str,
    (cert, key): &(PathBuf, PathBuf),
) -> Result<Option<CertKey>, PkiError> {
    match (read_optional(cert)?, read_optional(key)?) {
        (Some(cert_pem), Some(key_pem)) => Ok(Some(CertKey {
            cert_pem,
            key_pem: Zeroizing::new(key_pem),
        })),
        (None, None) => Ok(None),
        (Some(_), None) => Err(PkiError::Incomplete {
            what,
            present: cert.clone(),
            missing: key.clone(),
        }),
        (None, Some(_)) => Err(PkiError::Incomplete {
            what,
            present: key.clone(),
            missing: cert.clone(),
        }),
    }
}

fn read_optional(path: &Path) -> Result<Option<String>, PkiError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PkiError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The mesh CA must load as the operator loads it, and be for `trust_domain`.
fn check_mesh_ca(path: &Path, pair: &CertKey, trust_domain: &str) -> Result<(), PkiError> {
    let config = CaConfig {
        trust_domain: trust_domain.to_string(),
        ..CaConfig::default()
    };
    let pem = CaPem {
        cert_chain: &pair.cert_pem,
        key: &pair.key_pem,
        trust_bundle: None,
    };
    MeshCa::from_pem(&config, &pem).map_err(|e| PkiError::Invalid {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let der = first_cert_der(path, &pair.cert_pem)?;
    let cert = parse_cert(path, &der)?;
    let wanted = format!("spiffe://{trust_domain}");
    // A CA the user put there may name no SPIFFE ID; only a different one is a conflict.
    if let Some(found) = uri_sans(&cert)
        .into_iter()
        .find(|u| u.starts_with("spiffe://"))
        && found.trim_end_matches('/') != wanted
    {
        return Err(PkiError::TrustDomain {
            path: path.to_path_buf(),
            found: found.trim_start_matches("spiffe://").to_string(),
            wanted: trust_domain.to_string(),
        });
    }
    Ok(())
}

/// The webhook CA as an issuer; the certificate must be a CA and the key must be its own.
fn load_webhook_ca(path: &Path, pair: &CertKey) -> Result<Issuer<'static, KeyPair>, PkiError> {
    let invalid = |reason: String| PkiError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let der = first_cert_der(path, &pair.cert_pem)?;
    let cert = parse_cert(path, &der)?;
    if !cert.is_ca() {
        return Err(invalid("not a CA certificate".into()));
    }
    let key = KeyPair::from_pem(&pair.key_pem)
        .map_err(|e| invalid(format!("its key does not load: {e}")))?;
    if key.der_bytes() != cert.public_key().subject_public_key.data.as_ref() {
        return Err(invalid("the key does not belong to the certificate".into()));
    }
    Issuer::from_ca_cert_der(&der.into(), key).map_err(|e| invalid(e.to_string()))
}

/// Why a serving certificate cannot be kept, or `None` when it can.
fn serving_unfit(pair: &CertKey, ca: &CertKey, sans: &[Host], now: u64) -> Option<String> {
    let Ok(der) = first_cert_der(Path::new(""), &pair.cert_pem) else {
        return Some("it holds no PEM certificate".into());
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(&der) else {
        return Some("its certificate does not parse".into());
    };
    let Ok(ca_der) = first_cert_der(Path::new(""), &ca.cert_pem) else {
        return Some("the webhook CA holds no PEM certificate".into());
    };
    let Ok((_, ca_cert)) = x509_parser::parse_x509_certificate(&ca_der) else {
        return Some("the webhook CA certificate does not parse".into());
    };
    if cert.issuer().as_raw() != ca_cert.subject().as_raw()
        || cert.verify_signature(Some(ca_cert.public_key())).is_err()
    {
        return Some("it is not signed by the webhook CA".into());
    }
    match KeyPair::from_pem(&pair.key_pem) {
        Ok(key) if key.der_bytes() == cert.public_key().subject_public_key.data.as_ref() => {}
        Ok(_) => return Some("its key does not belong to it".into()),
        Err(_) => return Some("its key does not load".into()),
    }
    let held = hosts(&cert);
    if let Some(missing) = sans.iter().find(|h| !held.contains(h)) {
        return Some(format!("it is not valid for {missing}"));
    }
    let not_before = u64::try_from(cert.validity().not_before.timestamp()).unwrap_or(0);
    let not_after = u64::try_from(cert.validity().not_after.timestamp()).unwrap_or(0);
    if now < not_before {
        return Some("it is not valid yet".into());
    }
    if not_after < now.saturating_add(SERVING_RENEW_BEFORE.as_secs()) {
        return Some("it expires within 30 days".into());
    }
    None
}

// === Utils ===

fn first_cert_der(path: &Path, text: &str) -> Result<Vec<u8>, PkiError> {
    let invalid = |reason: String| PkiError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let blocks = pem::parse_many(text).map_err(|e| invalid(format!("not PEM: {e}")))?;
    blocks
        .into_iter()
        .find(|b| b.tag() == "CERTIFICATE")
        .map(pem::Pem::into_contents)
        .ok_or_else(|| invalid("no PEM certificate found".into()))
}

fn parse_cert<'a>(path: &Path, der: &'a [u8]) -> Result<X509Certificate<'a>, PkiError> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, cert)| cert)
        .map_err(|e| PkiError::Invalid {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

fn uri_sans(cert: &X509Certificate<'_>) -> Vec<String> {
    general_names(cert)
        .into_iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(uri.to_string()),
            _ => None,
        })
        .collect()
}

/// The DNS and IP SANs of a certificate.
pub(crate) fn hosts(cert: &X509Certificate<'_>) -> Vec<Host> {
    general_names(cert)
        .into_iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some(Host::Dns(dns.to_ascii_lowercase())),
            GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => <[u8; 4]>::try_from(bytes)
                    .ok()
                    .map(|b| Host::Ip(IpAddr::from(b))),
                16 => <[u8; 16]>::try_from(bytes)
                    .ok()
                    .map(|b| Host::Ip(IpAddr::from(b))),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

fn general_names<'a>(cert: &'a X509Certificate<'_>) -> Vec<GeneralName<'a>> {
    match cert.subject_alternative_name() {
        Ok(Some(san)) => san.value.general_names.clone(),
        _ => Vec::new(),
    }
}

fn unix_secs(now: SystemTime) -> Result<u64, PkiError> {
    now.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .map_err(|_| PkiError::Clock)
}

fn to_offset(secs: u64) -> Result<OffsetDateTime, PkiError> {
    i64::try_from(secs)
        .ok()
        .and_then(|secs| OffsetDateTime::from_unix_timestamp(secs).ok())
        .ok_or(PkiError::Time(secs))
}

fn create_private_dir(dir: &Path) -> Result<(), PkiError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|source| PkiError::Io {
        path: dir.to_path_buf(),
        source,
    })
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a reader never sees half
/// a key; `secret` files are created with mode 0600.
fn write_file(path: &Path, bytes: &[u8], secret: bool) -> Result<(), PkiError> {
    let io_err = |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp"));
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, if secret { 0o600 } else { 0o644 });
    let result = (|| {
        use io::Write as _;
        let mut file = options.open(&tmp)?;
        // A leftover temporary file keeps its old mode; set it explicitly.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            file.set_permissions(fs::Permissions::from_mode(if secret {
                0o600
            } else {
                0o644
            }))?;
        }
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io_err)
}
