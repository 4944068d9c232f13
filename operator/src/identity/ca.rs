//! The signing CA: a root it generates itself, or a CA the user supplies as PEM.

use std::{fmt, fs, path::PathBuf, time::SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, string::Ia5String,
};
use switchyard_adapters::model::Identity;
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use zeroize::Zeroizing;

use super::{
    BACKDATE, CaConfig, Error, SecretPem, WorkloadCert, from_unix_secs, input_name, unix_secs,
    validate_identity, validate_workload_lifetime,
};

const CERT_INPUT: &str = "ca certificate";
const KEY_INPUT: &str = "ca key";
const BUNDLE_INPUT: &str = "ca bundle";

/// A CA supplied by the user, as PEM text.
///
/// The CA may be a root or an intermediate. Proxies validate peers against the trust bundle,
/// so it must reach a root: either `cert_chain` ends with the self-signed root (which then is the
/// bundle), or the roots are given as `trust_bundle`. A chain that stops at an intermediate with
/// no bundle is rejected ([`Error::MissingTrustBundle`]).
#[derive(Clone, Copy)]
pub struct CaPem<'a> {
    /// The CA certificate first, then each certificate above it in order; may end with the root.
    pub cert_chain: &'a str,
    /// The CA's private key as unencrypted PKCS#8 (`-----BEGIN PRIVATE KEY-----`): ECDSA P-256 or
    /// P-384, Ed25519 or RSA. Convert a SEC1 (`EC PRIVATE KEY`) or PKCS#1 (`RSA PRIVATE KEY`) key
    /// with `openssl pkcs8 -topk8 -nocrypt`.
    pub key: &'a str,
    /// The roots proxies trust (`ca bundle`). Optional when `cert_chain` ends with its root.
    pub trust_bundle: Option<&'a str>,
}

/// A CA supplied by the user, as PEM files; see [`CaPem`] for what each holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaFiles {
    pub cert_chain: PathBuf,
    pub key: PathBuf,
    pub trust_bundle: Option<PathBuf>,
}

/// The mesh certificate authority. It signs workload certificates; its key never leaves it
/// (there is no accessor, and `Debug` leaves it out).
pub struct MeshCa {
    trust_domain: String,
    issuer: Issuer<'static, KeyPair>,
    subject: String,
    generated: bool,
    /// The CA certificate and the intermediates above it, not self-signed roots: appended to
    /// every leaf so that peers can build the path to the bundle.
    chain_pem: String,
    trust_bundle_pem: String,
    /// The CA certificate's validity, in seconds since 1970.
    not_before: u64,
    not_after: u64,
}

/// One CA input: its name for errors (`ca key /etc/ca/key.pem`) and its text.
struct Input<'a> {
    name: String,
    text: &'a str,
}

// === impl CaPem ===

impl fmt::Debug for CaPem<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaPem")
            .field("cert_chain", &self.cert_chain)
            .field("key", &"<redacted>")
            .field("trust_bundle", &self.trust_bundle)
            .finish()
    }
}

// === impl MeshCa ===

impl MeshCa {
    /// Generates a self-signed root (ECDSA P-256, valid from `now` minus [`BACKDATE`] for
    /// `config.root_lifetime`) that signs workload certificates directly. The root is the trust
    /// bundle and is not part of issued chains.
    pub fn generate(config: &CaConfig, now: SystemTime) -> Result<Self, Error> {
        config.validate()?;
        let now = unix_secs(now)?;
        let not_before = now.saturating_sub(BACKDATE.as_secs());
        let not_after = now.saturating_add(config.root_lifetime.as_secs());

        let params = ca_params(
            "Switchyard mesh root CA",
            to_offset(not_before)?,
            to_offset(not_after)?,
        );

        let key = KeyPair::generate().map_err(Error::rcgen("generate ca key"))?;
        let cert = params
            .self_signed(&key)
            .map_err(Error::rcgen("sign ca certificate"))?;
        let subject = subject_string(cert.der()).unwrap_or_default();
        Ok(MeshCa {
            trust_domain: config.trust_domain.clone(),
            issuer: Issuer::new(params, key),
            subject,
            generated: true,
            chain_pem: String::new(),
            trust_bundle_pem: cert.pem(),
            not_before,
            not_after,
        })
    }

    /// Loads a user-supplied CA (see [`CaPem`]). Checks that the first certificate is a CA that
    /// may sign certificates, that the key belongs to it, that each certificate of the chain is
    /// signed by the next, and that the chain reaches the trust bundle. Errors name the input:
    /// `ca certificate`, `ca key` or `ca bundle`.
    pub fn from_pem(config: &CaConfig, pem: &CaPem<'_>) -> Result<Self, Error> {
        Self::load(
            config,
            Input {
                name: CERT_INPUT.to_string(),
                text: pem.cert_chain,
            },
            Input {
                name: KEY_INPUT.to_string(),
                text: pem.key,
            },
            pem.trust_bundle.map(|text| Input {
                name: BUNDLE_INPUT.to_string(),
                text,
            }),
        )
    }

    /// Reads the files, then loads them as [`MeshCa::from_pem`] does; errors name the input and
    /// its path (`ca key /etc/switchyard/ca/key.pem: …`).
    pub fn from_files(config: &CaConfig, files: &CaFiles) -> Result<Self, Error> {
        let read = |what: &str, path: &PathBuf| {
            let name = input_name(what, path);
            match fs::read_to_string(path) {
                Ok(text) => Ok((name, Zeroizing::new(text))),
                Err(source) => Err(Error::Read {
                    input: name,
                    source,
                }),
            }
        };
        let (cert_name, cert) = read(CERT_INPUT, &files.cert_chain)?;
        let (key_name, key) = read(KEY_INPUT, &files.key)?;
        let bundle = match &files.trust_bundle {
            Some(path) => Some(read(BUNDLE_INPUT, path)?),
            None => None,
        };
        Self::load(
            config,
            Input {
                name: cert_name,
                text: &cert,
            },
            Input {
                name: key_name,
                text: &key,
            },
            bundle.as_ref().map(|(name, text)| Input {
                name: name.clone(),
                text,
            }),
        )
    }

    fn load(
        config: &CaConfig,
        cert_input: Input<'_>,
        key_input: Input<'_>,
        bundle_input: Option<Input<'_>>,
    ) -> Result<Self, Error> {
        config.validate()?;
        let chain_der = parse_pem_certs(&cert_input)?;
        let chain = parse_x509(&cert_input, &chain_der)?;
        let (ca, top) = match (chain.first(), chain.last()) {
            (Some(ca), Some(top)) => (ca, top),
            _ => return Err(Error::invalid(&cert_input.name, "no certificate found")),
        };

        match ca.basic_constraints() {
            Ok(Some(bc)) if bc.value.ca => {}
            Ok(_) => {
                return Err(Error::NotCa {
                    input: cert_input.name,
                    detail: "",
                });
            }
            Err(e) => return Err(Error::invalid(&cert_input.name, e.to_string())),
        }
        match ca.key_usage() {
            Ok(Some(ku)) if !ku.value.key_cert_sign() => {
                return Err(Error::NotCa {
                    input: cert_input.name,
                    detail: " (its key usage does not include keyCertSign)",
                });
            }
            Ok(_) => {}
            Err(e) => return Err(Error::invalid(&cert_input.name, e.to_string())),
        }
        for (i, pair) in chain.windows(2).enumerate() {
            if !issued_by(&pair[0], &pair[1]) {
                return Err(Error::invalid(
                    &cert_input.name,
                    format!(
                        "certificate {} is not issued by certificate {}",
                        i + 1,
                        i + 2
                    ),
                ));
            }
        }

        let key = parse_key(&key_input)?;
        if key.der_bytes() != ca.public_key().subject_public_key.data.as_ref() {
            return Err(Error::KeyMismatch);
        }

        let trust_bundle_pem = match bundle_input {
            Some(bundle_input) => {
                let roots_der = parse_pem_certs(&bundle_input)?;
                let roots = parse_x509(&bundle_input, &roots_der)?;
                if let Some(i) = roots.iter().position(|root| !root.is_ca()) {
                    return Err(Error::invalid(
                        &bundle_input.name,
                        format!("certificate {}: not a CA certificate", i + 1),
                    ));
                }
                let anchored = roots
                    .iter()
                    .any(|root| root.as_raw() == top.as_raw() || issued_by(top, root));
                if !anchored {
                    return Err(Error::invalid(
                        &bundle_input.name,
                        format!(
                            "no certificate in it issued {:?}, the last certificate of the {}",
                            top.subject().to_string(),
                            cert_input.name
                        ),
                    ));
                }
                encode_certs(roots_der.iter().map(Vec::as_slice))
            }
            None if is_self_signed(top) => encode_certs([top.as_raw()]),
            None => {
                return Err(Error::MissingTrustBundle {
                    input: cert_input.name,
                    subject: top.subject().to_string(),
                });
            }
        };

        let chain_pem = encode_certs(
            chain
                .iter()
                .filter(|cert| !is_self_signed(cert))
                .map(|cert| cert.as_raw()),
        );
        let not_before = u64::try_from(ca.validity().not_before.timestamp()).unwrap_or(0);
        let not_after = u64::try_from(ca.validity().not_after.timestamp()).unwrap_or(0);
        let subject = ca.subject().to_string();
        let issuer = Issuer::from_ca_cert_der(&ca.as_raw().into(), key)
            .map_err(Error::rcgen(cert_input.name))?;
        Ok(MeshCa {
            trust_domain: config.trust_domain.clone(),
            issuer,
            subject,
            generated: false,
            chain_pem,
            trust_bundle_pem,
            not_before,
            not_after,
        })
    }

    /// Issues a workload certificate for `identity`, valid from `now` minus [`BACKDATE`] until
    /// `now + lifetime` (cut to the CA's own expiry), with a fresh ECDSA P-256 key.
    pub fn issue(
        &self,
        identity: &Identity,
        lifetime: std::time::Duration,
        now: SystemTime,
    ) -> Result<WorkloadCert, Error> {
        validate_workload_lifetime(lifetime)?;
        validate_identity(identity)?;
        let now_secs = unix_secs(now)?;
        if now_secs < self.not_before || now_secs >= self.not_after {
            return Err(Error::CaNotValid {
                not_before: from_unix_secs(self.not_before),
                not_after: from_unix_secs(self.not_after),
                now,
            });
        }
        let not_before = now_secs
            .saturating_sub(BACKDATE.as_secs())
            .max(self.not_before);
        let not_after = now_secs
            .saturating_add(lifetime.as_secs())
            .min(self.not_after);
        // `not_after` is at least a second past `now_secs`, so strictly after `now`.
        let remaining = from_unix_secs(not_after)
            .duration_since(now)
            .unwrap_or_default();
        let renew_at = now + (remaining * 2 / 3).max(std::time::Duration::from_nanos(1));

        let spiffe_id = identity.spiffe_id(&self.trust_domain);
        let failed = |source| Error::Rcgen {
            what: format!("issue certificate for {spiffe_id}"),
            source,
        };
        let mut params = CertificateParams::default();
        // An empty subject makes rcgen mark the SAN extension critical, as RFC 5280 requires.
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(
            Ia5String::try_from(spiffe_id.as_str()).map_err(failed)?,
        )];
        params.is_ca = IsCa::ExplicitNoCa;
        // keyEncipherment only means something for RSA keys; these are ECDSA.
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = to_offset(not_before)?;
        params.not_after = to_offset(not_after)?;

        let key = KeyPair::generate().map_err(failed)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(failed)?;
        let serial = match x509_parser::parse_x509_certificate(cert.der()) {
            Ok((_, x509)) => x509
                .raw_serial()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
            Err(e) => return Err(Error::invalid("issued certificate", e.to_string())),
        };
        let mut cert_chain_pem = cert.pem();
        cert_chain_pem.push_str(&self.chain_pem);

        Ok(WorkloadCert {
            identity: identity.clone(),
            spiffe_id,
            cert_chain_pem,
            private_key_pem: SecretPem::new(key.serialize_pem()),
            serial,
            lifetime,
            not_before: from_unix_secs(not_before),
            not_after: from_unix_secs(not_after),
            renew_at,
        })
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The roots peers validate workload certificates against, as PEM: publish this to proxies
    /// as the validation context. For a generated root, that root; for a supplied CA, the `ca
    /// bundle`, or else the root that ends the supplied chain.
    pub fn trust_bundle_pem(&self) -> &str {
        &self.trust_bundle_pem
    }

    /// Whether the CA is a root generated by [`MeshCa::generate`] (it dies with the process).
    pub fn is_generated(&self) -> bool {
        self.generated
    }

    /// The CA certificate's subject, e.g. `O=Switchyard, CN=Switchyard mesh root CA`.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// Start of the CA certificate's validity.
    pub fn not_before(&self) -> SystemTime {
        from_unix_secs(self.not_before)
    }

    /// End of the CA certificate's validity; no workload certificate outlives it.
    pub fn not_after(&self) -> SystemTime {
        from_unix_secs(self.not_after)
    }
}

impl fmt::Debug for MeshCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeshCa")
            .field("trust_domain", &self.trust_domain)
            .field("subject", &self.subject)
            .field("generated", &self.generated)
            .field("not_before", &super::fmt_time(self.not_before()))
            .field("not_after", &super::fmt_time(self.not_after()))
            .field("key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

// === Utils ===

/// The parameters of a signing CA, valid from `not_before` to `not_after`: path length 0 (it
/// signs leaves only) and a CA's key usages. The generated mesh root and the CAs of
/// `switchyard install` are all built from it.
pub(crate) fn ca_params(
    common_name: &str,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "Switchyard");
    name.push(DnType::CommonName, common_name);
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = not_before;
    params.not_after = not_after;
    params
}

fn to_offset(secs: u64) -> Result<OffsetDateTime, Error> {
    i64::try_from(secs)
        .ok()
        .and_then(|secs| OffsetDateTime::from_unix_timestamp(secs).ok())
        .ok_or(Error::TimeOutOfRange(secs))
}

/// The DER of every `CERTIFICATE` block of `input`; any other block is an error.
fn parse_pem_certs(input: &Input<'_>) -> Result<Vec<Vec<u8>>, Error> {
    let blocks = pem::parse_many(input.text)
        .map_err(|e| Error::invalid(&input.name, format!("not PEM: {e}")))?;
    if blocks.is_empty() {
        return Err(Error::invalid(
            &input.name,
            "no PEM certificate found (expected -----BEGIN CERTIFICATE-----)",
        ));
    }
    blocks
        .into_iter()
        .map(|block| match block.tag() {
            "CERTIFICATE" => Ok(block.into_contents()),
            tag => Err(Error::invalid(
                &input.name,
                format!("unexpected PEM block {tag:?}; expected CERTIFICATE"),
            )),
        })
        .collect()
}

fn parse_x509<'a>(
    input: &Input<'_>,
    ders: &'a [Vec<u8>],
) -> Result<Vec<X509Certificate<'a>>, Error> {
    ders.iter()
        .enumerate()
        .map(|(i, der)| match x509_parser::parse_x509_certificate(der) {
            Ok(([], cert)) => Ok(cert),
            Ok(_) => Err(Error::invalid(
                &input.name,
                format!("certificate {}: trailing data after the certificate", i + 1),
            )),
            Err(e) => Err(Error::invalid(
                &input.name,
                format!("certificate {}: {e}", i + 1),
            )),
        })
        .collect()
}

/// The single PKCS#8 `PRIVATE KEY` block of `input`.
fn parse_key(input: &Input<'_>) -> Result<KeyPair, Error> {
    let mut blocks = pem::parse_many(input.text)
        .map_err(|e| Error::invalid(&input.name, format!("not PEM: {e}")))?;
    let block = match blocks.len() {
        0 => {
            return Err(Error::invalid(
                &input.name,
                "no PEM private key found (expected -----BEGIN PRIVATE KEY-----)",
            ));
        }
        1 => blocks.remove(0),
        n => {
            return Err(Error::invalid(
                &input.name,
                format!("expected one PEM block, found {n}"),
            ));
        }
    };
    let reason = match block.tag() {
        "PRIVATE KEY" => {
            let der = Zeroizing::new(block.into_contents());
            return KeyPair::try_from(der.as_slice()).map_err(|_| {
                Error::invalid(
                    &input.name,
                    "not a supported PKCS#8 private key (ECDSA P-256 or P-384, Ed25519, or RSA)",
                )
            });
        }
        tag @ ("EC PRIVATE KEY" | "RSA PRIVATE KEY") => format!(
            "{tag:?} keys are not supported; convert to PKCS#8 with `openssl pkcs8 -topk8 -nocrypt`"
        ),
        "ENCRYPTED PRIVATE KEY" => "encrypted private keys are not supported".to_string(),
        tag => format!("unexpected PEM block {tag:?}; expected PRIVATE KEY"),
    };
    Err(Error::invalid(&input.name, reason))
}

/// Whether `issuer` signed `cert`: the names chain and the signature verifies.
fn issued_by(cert: &X509Certificate<'_>, issuer: &X509Certificate<'_>) -> bool {
    cert.issuer().as_raw() == issuer.subject().as_raw()
        && cert.verify_signature(Some(issuer.public_key())).is_ok()
}

fn is_self_signed(cert: &X509Certificate<'_>) -> bool {
    issued_by(cert, cert)
}

/// PEM `CERTIFICATE` blocks, one after the other (LF line endings, no blank lines).
fn encode_certs<'a>(ders: impl IntoIterator<Item = &'a [u8]>) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    ders.into_iter()
        .map(|der| pem::encode_config(&pem::Pem::new("CERTIFICATE", der), config))
        .collect()
}

fn subject_string(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.subject().to_string())
}
