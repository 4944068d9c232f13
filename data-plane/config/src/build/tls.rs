//! TLS: transport sockets (downstream and upstream contexts, whose certificates and trust
//! bundles come over SDS) and the SDS secrets themselves.

use envoy_types::pb::envoy::{
    config::core::v3::{TransportSocket, transport_socket},
    extensions::transport_sockets::{
        raw_buffer::v3::RawBuffer,
        tls::v3::{
            CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig,
            Secret, SubjectAltNameMatcher, TlsCertificate, TlsParameters, UpstreamTlsContext,
            common_tls_context::{CombinedCertificateValidationContext, ValidationContextType},
            secret,
            subject_alt_name_matcher::SanType,
            tls_parameters::TlsProtocol,
        },
    },
    r#type::matcher::v3::string_matcher::MatchPattern,
};

use super::{At, Invalid, data_source, decode, is, is_ads, unsupported};
use crate::{DownstreamTls, SecretMaterial, UpstreamTls};

/// What both sides of TLS share.
struct Common {
    certificate: String,
    trust_bundle: Option<String>,
    /// Exact URI SANs the peer must present one of.
    peer_sans: Vec<String>,
    alpn: Vec<String>,
    tls13_only: bool,
}

/// A listener's transport socket: `Some` TLS termination, or `None` for plaintext (a raw
/// buffer). Errors are relative to the socket.
pub(super) fn downstream(socket: &TransportSocket) -> Result<Option<DownstreamTls>, Invalid> {
    let Some(ctx) = typed::<DownstreamTlsContext>(socket)? else {
        return Ok(None);
    };
    let at = "typed_config.common_tls_context";
    let Some(common) = &ctx.common_tls_context else {
        return Err(unsupported(at, "is required"));
    };
    let common = self::common(common).at(at)?;
    let require_client_certificate = ctx
        .require_client_certificate
        .as_ref()
        .is_some_and(|b| b.value);
    if require_client_certificate && common.trust_bundle.is_none() {
        return Err(unsupported(
            "typed_config.require_client_certificate",
            "needs a trust bundle to verify client certificates against",
        ));
    }
    let classified = || {
        only!(&ctx => DownstreamTlsContext { common_tls_context, require_client_certificate } unset {
            require_sni, disable_stateful_session_resumption, session_timeout,
            ocsp_staple_policy, full_scan_certs_on_sni_mismatch, prefer_client_ciphers,
            session_ticket_keys_type,
        });
        Ok(())
    };
    classified().at("typed_config")?;
    Ok(Some(DownstreamTls {
        certificate: common.certificate,
        trust_bundle: common.trust_bundle,
        require_client_certificate,
        peer_sans: common.peer_sans,
        alpn: common.alpn,
        tls13_only: common.tls13_only,
    }))
}

/// A cluster's transport socket: `Some` TLS origination, or `None` for plaintext. Errors are
/// relative to the socket.
pub(super) fn upstream(socket: &TransportSocket) -> Result<Option<UpstreamTls>, Invalid> {
    let Some(ctx) = typed::<UpstreamTlsContext>(socket)? else {
        return Ok(None);
    };
    let at = "typed_config.common_tls_context";
    let Some(common) = &ctx.common_tls_context else {
        return Err(unsupported(at, "is required"));
    };
    let common = self::common(common).at(at)?;
    let Some(trust_bundle) = common.trust_bundle else {
        return Err(unsupported(
            format!("{at}.validation_context_type"),
            "a trust bundle is required to verify the server",
        ));
    };
    let classified = || {
        only!(&ctx => UpstreamTlsContext { common_tls_context } unset {
            sni, auto_host_sni, auto_sni_san_validation, allow_renegotiation, max_session_keys,
            enforce_rsa_key_usage,
        });
        Ok(())
    };
    classified().at("typed_config")?;
    Ok(Some(UpstreamTls {
        certificate: common.certificate,
        trust_bundle,
        peer_sans: common.peer_sans,
        alpn: common.alpn,
        tls13_only: common.tls13_only,
    }))
}

/// The TLS context of type `T` in a transport socket, or `None` for a raw buffer.
fn typed<T: prost::Message + prost::Name + Default>(
    socket: &TransportSocket,
) -> Result<Option<T>, Invalid> {
    let Some(transport_socket::ConfigType::TypedConfig(any)) = &socket.config_type else {
        return Err(unsupported(
            "typed_config",
            "a transport socket needs a typed config",
        ));
    };
    only!(socket => TransportSocket { name, config_type } unset {});
    if is::<T>(any) {
        decode(any).map(Some).at("typed_config")
    } else if is::<RawBuffer>(any) {
        let raw: RawBuffer = decode(any).at("typed_config")?;
        only!(&raw => RawBuffer {} unset {});
        Ok(None)
    } else {
        Err(unsupported(
            "typed_config",
            "only TLS and raw buffer transport sockets are supported",
        ))
    }
}

const PROVIDERS: &str = "certificate providers are not supported";

fn common(c: &CommonTlsContext) -> Result<Common, Invalid> {
    if !c.tls_certificates.is_empty() {
        return Err(unsupported(
            "tls_certificates",
            "certificates must come from SDS",
        ));
    }
    if c.tls_certificate_provider_instance.is_some() {
        return Err(unsupported("tls_certificate_provider_instance", PROVIDERS));
    }
    #[allow(deprecated)]
    let deprecated_providers = c.tls_certificate_certificate_provider.is_some()
        || c.tls_certificate_certificate_provider_instance.is_some();
    if deprecated_providers {
        return Err(unsupported(
            "tls_certificate_certificate_provider",
            PROVIDERS,
        ));
    }
    if c.custom_tls_certificate_selector.is_some() {
        return Err(unsupported(
            "custom_tls_certificate_selector",
            "certificate selectors are not supported",
        ));
    }
    if c.custom_handshaker.is_some() {
        return Err(unsupported("custom_handshaker", "is not supported"));
    }
    let certificate = match c.tls_certificate_sds_secret_configs.as_slice() {
        [one] => sds(one).at("tls_certificate_sds_secret_configs[0]")?,
        _ => {
            return Err(unsupported(
                "tls_certificate_sds_secret_configs",
                "exactly one certificate is required",
            ));
        }
    };
    let (trust_bundle, peer_sans) = match &c.validation_context_type {
        None => (None, Vec::new()),
        Some(ValidationContextType::ValidationContextSdsSecretConfig(s)) => (
            Some(sds(s).at("validation_context_sds_secret_config")?),
            Vec::new(),
        ),
        Some(ValidationContextType::CombinedValidationContext(combined)) => {
            let at = "combined_validation_context";
            #[allow(deprecated)]
            let providers = combined.validation_context_certificate_provider.is_some()
                || combined
                    .validation_context_certificate_provider_instance
                    .is_some();
            if providers {
                return Err(unsupported(
                    format!("{at}.validation_context_certificate_provider"),
                    PROVIDERS,
                ));
            }
            let Some(bundle) = &combined.validation_context_sds_secret_config else {
                return Err(unsupported(
                    format!("{at}.validation_context_sds_secret_config"),
                    "is required",
                ));
            };
            let bundle =
                sds(bundle).at(format_args!("{at}.validation_context_sds_secret_config"))?;
            let classified = || {
                only!(combined => CombinedCertificateValidationContext {
                    default_validation_context, validation_context_sds_secret_config,
                    validation_context_certificate_provider,
                    validation_context_certificate_provider_instance,
                } unset {});
                Ok(())
            };
            classified().at(at)?;
            let sans = match &combined.default_validation_context {
                Some(v) => {
                    default_validation(v).at(format_args!("{at}.default_validation_context"))?
                }
                None => Vec::new(),
            };
            (Some(bundle), sans)
        }
        Some(ValidationContextType::ValidationContext(_)) => {
            return Err(unsupported(
                "validation_context",
                "the trust bundle must come from SDS",
            ));
        }
        // The (deprecated) certificate providers.
        Some(_) => return Err(unsupported("validation_context_type", PROVIDERS)),
    };
    let tls13_only = match &c.tls_params {
        Some(p) => tls_params(p).at("tls_params")?,
        None => false,
    };
    only!(c => CommonTlsContext {
        tls_params, tls_certificate_sds_secret_configs, alpn_protocols, validation_context_type,
        tls_certificates, tls_certificate_provider_instance, custom_tls_certificate_selector,
        tls_certificate_certificate_provider, tls_certificate_certificate_provider_instance,
        custom_handshaker,
    } unset {
        key_log,
    });
    Ok(Common {
        certificate,
        trust_bundle,
        peer_sans,
        alpn: c.alpn_protocols.clone(),
        tls13_only,
    })
}

/// Whether the parameters ask for TLS 1.3 only. rustls speaks TLS 1.2 and 1.3 only, and
/// cannot be capped below 1.3.
fn tls_params(p: &TlsParameters) -> Result<bool, Invalid> {
    let version = |v: i32| TlsProtocol::try_from(v).unwrap_or(TlsProtocol::TlSv10);
    if !matches!(
        version(p.tls_minimum_protocol_version),
        TlsProtocol::TlsAuto | TlsProtocol::TlSv12 | TlsProtocol::TlSv13
    ) {
        return Err(unsupported(
            "tls_minimum_protocol_version",
            "only TLSv1_2 and TLSv1_3 are supported",
        ));
    }
    if !matches!(
        version(p.tls_maximum_protocol_version),
        TlsProtocol::TlsAuto | TlsProtocol::TlSv13
    ) {
        return Err(unsupported(
            "tls_maximum_protocol_version",
            "only TLSv1_3 is supported",
        ));
    }
    only!(p => TlsParameters { tls_minimum_protocol_version, tls_maximum_protocol_version } unset {
        cipher_suites, ecdh_curves, signature_algorithms, compliance_policies,
    });
    Ok(p.tls_minimum_protocol_version == TlsProtocol::TlSv13 as i32)
}

/// The SDS name of a secret, which must come over ADS.
fn sds(s: &SdsSecretConfig) -> Result<String, Invalid> {
    only!(s => SdsSecretConfig { name, sds_config } unset {});
    if s.name.is_empty() {
        return Err(unsupported("name", "must not be empty"));
    }
    if !is_ads(s.sds_config.as_ref()) {
        return Err(unsupported("sds_config", "only ADS is supported"));
    }
    Ok(s.name.clone())
}

/// The exact URI SANs of a combined context's default part, which may hold nothing else (the
/// trust bundle comes from SDS).
fn default_validation(v: &CertificateValidationContext) -> Result<Vec<String>, Invalid> {
    if v.trusted_ca.is_some() {
        return Err(unsupported(
            "trusted_ca",
            "the trust bundle must come from SDS",
        ));
    }
    no_extras(v)?;
    v.match_typed_subject_alt_names
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let exact = match m.matcher.as_ref() {
                Some(s) if !s.ignore_case => match &s.match_pattern {
                    Some(MatchPattern::Exact(id)) => Some(id),
                    _ => None,
                },
                _ => None,
            };
            let classified = || {
                only!(m => SubjectAltNameMatcher { san_type, matcher } unset { oid });
                Ok(())
            };
            classified().at(format_args!("match_typed_subject_alt_names[{i}]"))?;
            match exact {
                Some(id) if m.san_type == SanType::Uri as i32 => Ok(id.clone()),
                _ => Err(unsupported(
                    format!("match_typed_subject_alt_names[{i}]"),
                    "only exact URI SAN matches are supported",
                )),
            }
        })
        .collect()
}

/// Refuses the validation features the proxy does not implement; ignoring any of them would
/// accept certificates Envoy refuses.
fn no_extras(v: &CertificateValidationContext) -> Result<(), Invalid> {
    if v.ca_certificate_provider_instance.is_some() {
        return Err(unsupported("ca_certificate_provider_instance", PROVIDERS));
    }
    if v.system_root_certs.is_some() {
        return Err(unsupported(
            "system_root_certs",
            "only the mesh trust bundle is supported",
        ));
    }
    if v.watched_directory.is_some() {
        return Err(unsupported("watched_directory", "is not supported"));
    }
    if !v.verify_certificate_spki.is_empty() {
        return Err(unsupported(
            "verify_certificate_spki",
            "pinning is not supported",
        ));
    }
    if !v.verify_certificate_hash.is_empty() {
        return Err(unsupported(
            "verify_certificate_hash",
            "pinning is not supported",
        ));
    }
    #[allow(deprecated)]
    let untyped_sans = !v.match_subject_alt_names.is_empty();
    if untyped_sans {
        return Err(unsupported(
            "match_subject_alt_names",
            "use match_typed_subject_alt_names",
        ));
    }
    if v.crl.is_some() {
        return Err(unsupported("crl", "revocation lists are not supported"));
    }
    if v.allow_expired_certificate {
        return Err(unsupported("allow_expired_certificate", "is not supported"));
    }
    if v.trust_chain_verification != 0 {
        return Err(unsupported("trust_chain_verification", "is not supported"));
    }
    if v.custom_validator_config.is_some() {
        return Err(unsupported("custom_validator_config", "is not supported"));
    }
    only!(v => CertificateValidationContext {
        trusted_ca, match_typed_subject_alt_names, ca_certificate_provider_instance,
        system_root_certs, watched_directory, verify_certificate_spki, verify_certificate_hash,
        match_subject_alt_names, crl, allow_expired_certificate, trust_chain_verification,
        custom_validator_config,
    } unset {
        require_signed_certificate_timestamp, only_verify_leaf_cert_crl, max_verify_depth,
        suppress_client_ca_list,
    });
    Ok(())
}

impl SecretMaterial {
    /// Translates one SDS secret: a certificate with its key, or a trust bundle.
    pub fn from_xds(s: &Secret) -> Result<SecretMaterial, Invalid> {
        only!(s => Secret { name, r#type } unset {});
        match &s.r#type {
            Some(secret::Type::TlsCertificate(t)) => {
                let at = "tls_certificate";
                if t.pkcs12.is_some() {
                    return Err(unsupported(format!("{at}.pkcs12"), "only PEM is supported"));
                }
                if t.password.is_some() {
                    return Err(unsupported(
                        format!("{at}.password"),
                        "encrypted keys are not supported",
                    ));
                }
                if t.private_key_provider.is_some() {
                    return Err(unsupported(
                        format!("{at}.private_key_provider"),
                        "is not supported",
                    ));
                }
                if t.watched_directory.is_some() {
                    return Err(unsupported(
                        format!("{at}.watched_directory"),
                        "only inline data sources are supported",
                    ));
                }
                let pem = |source: Option<&_>, field: &'static str| match source {
                    Some(source) => {
                        let text = data_source(source).at(format_args!("{at}.{field}"))?;
                        if text.trim().is_empty() {
                            Err(unsupported(format!("{at}.{field}"), "must not be empty"))
                        } else {
                            Ok(text)
                        }
                    }
                    None => Err(unsupported(format!("{at}.{field}"), "is required")),
                };
                let chain_pem = pem(t.certificate_chain.as_ref(), "certificate_chain")?;
                let private_key_pem = pem(t.private_key.as_ref(), "private_key")?;
                let classified = || {
                    only!(t => TlsCertificate {
                        certificate_chain, private_key, pkcs12, password, private_key_provider,
                        watched_directory,
                    } unset {
                        ocsp_staple, signed_certificate_timestamp, tls_params,
                    });
                    Ok(())
                };
                classified().at(at)?;
                Ok(SecretMaterial::Certificate {
                    chain_pem,
                    private_key_pem,
                })
            }
            Some(secret::Type::ValidationContext(v)) => {
                let at = "validation_context";
                no_extras(v).at(at)?;
                if !v.match_typed_subject_alt_names.is_empty() {
                    return Err(unsupported(
                        format!("{at}.match_typed_subject_alt_names"),
                        "SAN checks belong in the transport socket",
                    ));
                }
                let Some(ca) = &v.trusted_ca else {
                    return Err(unsupported(format!("{at}.trusted_ca"), "is required"));
                };
                let ca_pem = data_source(ca).at(format_args!("{at}.trusted_ca"))?;
                if ca_pem.trim().is_empty() {
                    return Err(unsupported(format!("{at}.trusted_ca"), "must not be empty"));
                }
                Ok(SecretMaterial::TrustBundle { ca_pem })
            }
            Some(secret::Type::SessionTicketKeys(_)) => Err(unsupported(
                "session_ticket_keys",
                "only certificates and trust bundles are supported",
            )),
            Some(secret::Type::GenericSecret(_)) => Err(unsupported(
                "generic_secret",
                "only certificates and trust bundles are supported",
            )),
            None => Err(unsupported("type", "a secret type is required")),
        }
    }
}
