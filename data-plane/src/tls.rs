//! TLS for the data path: rustls server and client configurations built from SDS certificates
//! and trust bundles, SPIFFE peer verification, and the peer identity of a connection.
//!
//! Mesh certificates carry their identity as a single URI SAN
//! (`spiffe://<trust domain>/ns/<namespace>/sa/<service account>`) and no DNS name. So an
//! upstream's certificate is verified against the trust bundle and then matched on its URI SAN
//! against the cluster's `peer_sans`; the server name given to the connection is ignored
//! (connect with any [`ServerName`], e.g. the endpoint's IP address, which also sends no SNI).
//!
//! Everything uses rustls' `ring` provider. [`Cache`] keeps the configurations built for the
//! current certificates, so a connection fetches an `Arc` and a rotated certificate applies to
//! the next connection.

#[cfg(test)]
mod tests;

use std::sync::{Arc, PoisonError, RwLock};

use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, OtherError,
    RootCertStore, ServerConfig, SignatureScheme, SupportedProtocolVersion,
    client::{
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        verify_server_cert_signed_by_trust_anchor,
    },
    crypto::{CryptoProvider, WebPkiSupportedAlgorithms},
    pki_types::{
        CertificateDer, PrivateKeyDer, ServerName, UnixTime,
        pem::{self, PemObject},
    },
    server::{
        ParsedCertificate, VerifierBuilderError, WebPkiClientVerifier,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
};
use x509_parser::extensions::GeneralName;

use crate::config::{DownstreamTls, Runtime, SecretMaterial, UpstreamTls};

/// The most configurations [`Cache`] keeps per side; past it the oldest goes. Every distinct
/// TLS setting of the configuration has one, so this is far above what a proxy uses.
const CACHE_CAPACITY: usize = 128;

/// Why a TLS configuration could not be built. Each names the SDS secret at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("sds secret {name}: not received")]
    Missing { name: String },
    #[error("sds secret {name}: is a {found}, expected a {expected}")]
    WrongKind {
        name: String,
        found: &'static str,
        expected: &'static str,
    },
    #[error("sds secret {name}: {part}: bad PEM: {detail}")]
    BadPem {
        name: String,
        part: &'static str,
        detail: String,
    },
    #[error("sds secret {name}: certificate chain: no certificate")]
    NoCertificate { name: String },
    #[error("sds secret {name}: private key: no key (expected PKCS#8, SEC1 or PKCS#1 PEM)")]
    NoKey { name: String },
    #[error("sds secret {name}: trust bundle: no CA certificate")]
    EmptyBundle { name: String },
    #[error("sds secret {name}: trust bundle: certificate {index}: {source}")]
    BadCa {
        name: String,
        /// 1-based, in PEM order.
        index: usize,
        #[source]
        source: rustls::Error,
    },
    #[error("sds secret {name}: {source}")]
    Certificate {
        name: String,
        #[source]
        source: rustls::Error,
    },
    #[error(
        "downstream tls with certificate {certificate}: client certificates are required but \
         no trust bundle is configured"
    )]
    NoBundleForClientAuth { certificate: String },
    #[error("sds secret {name}: client certificate verifier: {source}")]
    Verifier {
        name: String,
        #[source]
        source: VerifierBuilderError,
    },
    #[error("tls protocol versions: {0}")]
    Versions(#[source] rustls::Error),
}

/// The server certificate's URI SANs include none of those the cluster expects.
#[derive(Debug, thiserror::Error)]
#[error("certificate URI SANs {presented:?} include none of {expected:?}")]
struct PeerSanMismatch {
    expected: Vec<String>,
    presented: Vec<String>,
}

/// Verifies a server certificate against a trust bundle and expected URI SANs, ignoring the
/// server name.
#[derive(Debug)]
struct PeerSanVerifier {
    roots: Arc<RootCertStore>,
    /// Empty accepts any certificate the bundle verifies.
    peer_sans: Vec<String>,
    algorithms: WebPkiSupportedAlgorithms,
}

/// Verifies a client certificate as `inner` does, then requires one of `peer_sans` as a URI
/// SAN: the server side of `match_typed_subject_alt_names`, so an identity a port does not
/// admit fails the handshake, as it does on Envoy.
#[derive(Debug)]
struct ClientSanVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    /// Not empty (an empty list needs no wrapper).
    peer_sans: Vec<String>,
}

/// Built configurations for the current certificates; see [`Cache::server`]. Safe to share:
/// a lookup takes a read lock for a short scan.
#[derive(Debug, Default)]
pub struct Cache {
    server: RwLock<Vec<Entry<DownstreamTls, ServerConfig>>>,
    client: RwLock<Vec<Entry<UpstreamTls, ClientConfig>>>,
}

/// One built configuration and what it was built from. Holding the secrets keeps their
/// addresses from being reused, so pointer equality means "the same secret".
#[derive(Debug)]
struct Entry<S, C> {
    settings: S,
    certificate: Arc<SecretMaterial>,
    bundle: Option<Arc<SecretMaterial>>,
    config: Arc<C>,
}

/// The server side of TLS for a filter chain: the proxy's certificate, client certificates
/// verified against `bundle` (required when `tls.require_client_certificate`, else verified
/// when offered) and, when `tls.peer_sans` is not empty, required to carry one of them as a
/// URI SAN, and `tls.alpn`. `bundle` is the secret `tls.trust_bundle` names.
pub fn server_config(
    certificate: &SecretMaterial,
    bundle: Option<&SecretMaterial>,
    tls: &DownstreamTls,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let (chain, key) = certified_key(&tls.certificate, certificate)?;
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions(tls.tls13_only))
        .map_err(TlsError::Versions)?;
    let builder = match (&tls.trust_bundle, bundle) {
        (Some(name), Some(bundle)) => {
            let roots = trust_bundle(name, bundle)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider);
            let verifier = if tls.require_client_certificate {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier.build().map_err(|source| TlsError::Verifier {
                name: name.clone(),
                source,
            })?;
            if tls.peer_sans.is_empty() {
                builder.with_client_cert_verifier(verifier)
            } else {
                builder.with_client_cert_verifier(Arc::new(ClientSanVerifier {
                    inner: verifier,
                    peer_sans: tls.peer_sans.clone(),
                }))
            }
        }
        (Some(name), None) => return Err(TlsError::Missing { name: name.clone() }),
        (None, _) if tls.require_client_certificate => {
            return Err(TlsError::NoBundleForClientAuth {
                certificate: tls.certificate.clone(),
            });
        }
        (None, _) => builder.with_no_client_auth(),
    };
    let mut config =
        builder
            .with_single_cert(chain, key)
            .map_err(|source| TlsError::Certificate {
                name: tls.certificate.clone(),
                source,
            })?;
    config.alpn_protocols = alpn(&tls.alpn);
    Ok(Arc::new(config))
}

/// The client side of TLS to an upstream: the proxy's certificate for client authentication,
/// the server's chain verified against `bundle` and its leaf required to carry one of
/// `tls.peer_sans` as a URI SAN (any, when empty), and `tls.alpn`. The server name is not
/// checked. `bundle` is the secret `tls.trust_bundle` names.
pub fn client_config(
    certificate: &SecretMaterial,
    bundle: &SecretMaterial,
    tls: &UpstreamTls,
) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = provider();
    let (chain, key) = certified_key(&tls.certificate, certificate)?;
    let verifier = PeerSanVerifier {
        roots: trust_bundle(&tls.trust_bundle, bundle)?,
        peer_sans: tls.peer_sans.clone(),
        algorithms: provider.signature_verification_algorithms,
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions(tls.tls13_only))
        .map_err(TlsError::Versions)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(chain, key)
        .map_err(|source| TlsError::Certificate {
            name: tls.certificate.clone(),
            source,
        })?;
    config.alpn_protocols = alpn(&tls.alpn);
    Ok(Arc::new(config))
}

/// The identity of a peer: the first URI SAN (for mesh peers, its SPIFFE ID) of the leaf of
/// its certificate chain, as rustls' `peer_certificates()` gives it. `None` without a
/// certificate or URI SAN. Only meaningful for a chain the handshake verified.
pub fn peer_identity(certificates: &[CertificateDer<'_>]) -> Option<String> {
    uri_sans(certificates.first()?).into_iter().next()
}

/// The proxy's own identity under a certificate secret: the first URI SAN of the chain's leaf
/// (what Envoy calls `uriSanLocalCertificate`). `None` for a trust bundle, or without one.
pub fn certificate_identity(secret: &SecretMaterial) -> Option<String> {
    let SecretMaterial::Certificate { chain_pem, .. } = secret else {
        return None;
    };
    let leaf = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .next()?
        .ok()?;
    uri_sans(&leaf).into_iter().next()
}

/// The URI SANs of a certificate; empty when it does not parse or has none.
fn uri_sans(certificate: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(certificate.as_ref()) else {
        return Vec::new();
    };
    let Ok(Some(san)) = parsed.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some((*uri).to_owned()),
            _ => None,
        })
        .collect()
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn versions(tls13_only: bool) -> &'static [&'static SupportedProtocolVersion] {
    static TLS13_ONLY: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
    if tls13_only {
        &TLS13_ONLY
    } else {
        rustls::DEFAULT_VERSIONS
    }
}

fn alpn(protocols: &[String]) -> Vec<Vec<u8>> {
    protocols.iter().map(|p| p.as_bytes().to_vec()).collect()
}

fn kind(secret: &SecretMaterial) -> &'static str {
    match secret {
        SecretMaterial::Certificate { .. } => "certificate",
        SecretMaterial::TrustBundle { .. } => "trust bundle",
    }
}

fn bad_pem(name: &str, part: &'static str) -> impl Fn(pem::Error) -> TlsError {
    move |error| TlsError::BadPem {
        name: name.to_owned(),
        part,
        detail: error.to_string(),
    }
}

/// The chain and key of a certificate secret.
fn certified_key(
    name: &str,
    secret: &SecretMaterial,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let SecretMaterial::Certificate {
        chain_pem,
        private_key_pem,
    } = secret
    else {
        return Err(TlsError::WrongKind {
            name: name.to_owned(),
            found: kind(secret),
            expected: "certificate",
        });
    };
    let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(bad_pem(name, "certificate chain"))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            name: name.to_owned(),
        });
    }
    let key = match PrivateKeyDer::from_pem_slice(private_key_pem.as_bytes()) {
        Ok(key) => key,
        Err(pem::Error::NoItemsFound) => {
            return Err(TlsError::NoKey {
                name: name.to_owned(),
            });
        }
        Err(error) => return Err(bad_pem(name, "private key")(error)),
    };
    Ok((chain, key))
}

/// The CA certificates of a trust bundle secret.
fn trust_bundle(name: &str, secret: &SecretMaterial) -> Result<Arc<RootCertStore>, TlsError> {
    let SecretMaterial::TrustBundle { ca_pem } = secret else {
        return Err(TlsError::WrongKind {
            name: name.to_owned(),
            found: kind(secret),
            expected: "trust bundle",
        });
    };
    let mut roots = RootCertStore::empty();
    for (i, ca) in CertificateDer::pem_slice_iter(ca_pem.as_bytes()).enumerate() {
        let ca = ca.map_err(bad_pem(name, "trust bundle"))?;
        roots.add(ca).map_err(|source| TlsError::BadCa {
            name: name.to_owned(),
            index: i + 1,
            source,
        })?;
    }
    if roots.is_empty() {
        return Err(TlsError::EmptyBundle {
            name: name.to_owned(),
        });
    }
    Ok(Arc::new(roots))
}

/// Whether `certificate` carries one of `peer_sans` as a URI SAN; the error names both sides.
fn carries_one_of(
    peer_sans: &[String],
    certificate: &CertificateDer<'_>,
) -> Result<(), rustls::Error> {
    let presented = uri_sans(certificate);
    if presented.iter().any(|san| peer_sans.contains(san)) {
        return Ok(());
    }
    let mismatch = PeerSanMismatch {
        expected: peer_sans.to_vec(),
        presented,
    };
    Err(rustls::Error::InvalidCertificate(CertificateError::Other(
        OtherError(Arc::new(mismatch)),
    )))
}

// === impl PeerSanVerifier ===

impl ServerCertVerifier for PeerSanVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        if self.peer_sans.is_empty() {
            return Ok(ServerCertVerified::assertion());
        }
        carries_one_of(&self.peer_sans, end_entity)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

// === impl ClientSanVerifier ===

impl ClientCertVerifier for ClientSanVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        carries_one_of(&self.peer_sans, end_entity)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

// === impl Cache ===

impl Cache {
    /// The server configuration for `tls` with the secrets `runtime` has now; built on first
    /// use and again whenever a secret it uses was replaced (a rotation).
    pub fn server(
        &self,
        runtime: &Runtime,
        tls: &DownstreamTls,
    ) -> Result<Arc<ServerConfig>, TlsError> {
        let certificate = secret(runtime, &tls.certificate)?;
        let bundle = match &tls.trust_bundle {
            Some(name) => Some(secret(runtime, name)?),
            None => None,
        };
        lookup_or_build(&self.server, tls, certificate, bundle, |cert, bundle| {
            server_config(cert, bundle, tls)
        })
    }

    /// The client configuration for `tls`, as [`Cache::server`].
    pub fn client(
        &self,
        runtime: &Runtime,
        tls: &UpstreamTls,
    ) -> Result<Arc<ClientConfig>, TlsError> {
        let certificate = secret(runtime, &tls.certificate)?;
        let bundle = secret(runtime, &tls.trust_bundle)?;
        let build = |cert: &SecretMaterial, bundle: Option<&SecretMaterial>| match bundle {
            Some(bundle) => client_config(cert, bundle, tls),
            None => Err(TlsError::Missing {
                name: tls.trust_bundle.clone(),
            }),
        };
        lookup_or_build(&self.client, tls, certificate, Some(bundle), build)
    }
}

fn secret(runtime: &Runtime, name: &str) -> Result<Arc<SecretMaterial>, TlsError> {
    runtime
        .secrets
        .get(name)
        .cloned()
        .ok_or_else(|| TlsError::Missing {
            name: name.to_owned(),
        })
}

fn same(a: Option<&Arc<SecretMaterial>>, b: Option<&Arc<SecretMaterial>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

fn lookup_or_build<S, C>(
    entries: &RwLock<Vec<Entry<S, C>>>,
    settings: &S,
    certificate: Arc<SecretMaterial>,
    bundle: Option<Arc<SecretMaterial>>,
    build: impl FnOnce(&SecretMaterial, Option<&SecretMaterial>) -> Result<Arc<C>, TlsError>,
) -> Result<Arc<C>, TlsError>
where
    S: PartialEq + Clone,
{
    let matches = |entry: &Entry<S, C>| {
        entry.settings == *settings
            && Arc::ptr_eq(&entry.certificate, &certificate)
            && same(entry.bundle.as_ref(), bundle.as_ref())
    };
    {
        let entries = entries.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = entries.iter().find(|entry| matches(entry)) {
            return Ok(Arc::clone(&entry.config));
        }
    }
    // Built without the lock: parsing and key checks are the slow part, and two connections
    // racing here merely build the same configuration twice.
    let config = build(&certificate, bundle.as_deref())?;
    let mut entries = entries.write().unwrap_or_else(PoisonError::into_inner);
    // A rotation replaces the entry of the same settings, so old secrets are let go.
    entries.retain(|entry| entry.settings != *settings);
    if entries.len() >= CACHE_CAPACITY {
        entries.remove(0);
    }
    entries.push(Entry {
        settings: settings.clone(),
        certificate,
        bundle,
        config: Arc::clone(&config),
    });
    Ok(config)
}
