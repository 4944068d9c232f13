//! Tests of the install manifests, the RBAC they grant, the certificates and their reuse, and
//! the `switchyard install` command.

use std::{
    collections::BTreeSet,
    env, fs,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use clap::Parser;
use k8s_openapi::ByteString;
use serde_json::{Value, json};
use x509_parser::certificate::X509Certificate;

use super::{
    pki::{Origin, hosts},
    *,
};
use crate::{
    cli::install::{InstallArgs, run},
    identity::{CaConfig, CaFiles, MeshCa},
    json_lookup::{named, strings},
};

// === Utils ===

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_760_000_000)
}

fn all_objects(config: &InstallConfig, pki: Option<&Pki>) -> Vec<Value> {
    manifests(config, pki)
        .unwrap()
        .into_iter()
        .flat_map(|m| m.objects)
        .collect()
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn url_config(url: &str) -> InstallConfig {
    InstallConfig {
        webhook: WebhookClient::Url(WebhookUrl::parse(url).unwrap()),
        ..InstallConfig::default()
    }
}

/// `config` with a PKI generated for it now.
fn with_pki(config: InstallConfig) -> (InstallConfig, Pki) {
    let pki = Pki::generate(&config.pki_config(), now()).unwrap();
    (config, pki)
}

fn der_of(pem_text: &str) -> Vec<u8> {
    pem::parse_many(pem_text)
        .unwrap()
        .into_iter()
        .find(|b| b.tag() == "CERTIFICATE")
        .unwrap()
        .into_contents()
}

fn parse(der: &[u8]) -> X509Certificate<'_> {
    x509_parser::parse_x509_certificate(der).unwrap().1
}

/// A base64 `data`/`caBundle` field of the JSON form, decoded.
fn bytes(value: &Value) -> String {
    let ByteString(b) = serde_json::from_value(value.clone()).unwrap();
    String::from_utf8(b).unwrap()
}

/// Parses `switchyard install` arguments as the CLI would.
#[derive(Debug, Parser)]
struct Cmd {
    #[command(flatten)]
    args: InstallArgs,
}

fn install(args: &[&str]) -> String {
    let cmd = Cmd::try_parse_from(std::iter::once("install").chain(args.iter().copied())).unwrap();
    let mut out = Vec::new();
    run(&cmd.args, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

fn docs(yaml: &str) -> Vec<Value> {
    use serde::Deserialize as _;
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| serde_json::to_value(serde_yaml::Value::deserialize(doc).unwrap()).unwrap())
        .collect()
}

// === Objects ===

#[test]
fn every_object_has_api_version_kind_and_name_and_a_namespace_when_namespaced() {
    let pki = Pki::generate(&InstallConfig::default().pki_config(), now()).unwrap();
    let objects = all_objects(&InstallConfig::default(), Some(&pki));
    let cluster_scoped = [
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "MutatingWebhookConfiguration",
    ];
    for o in &objects {
        assert!(
            o["apiVersion"].as_str().is_some_and(|v| !v.is_empty()),
            "{o}"
        );
        assert!(o["kind"].as_str().is_some_and(|v| !v.is_empty()), "{o}");
        assert!(
            o["metadata"]["name"]
                .as_str()
                .is_some_and(|v| !v.is_empty()),
            "{o}"
        );
        let kind = o["kind"].as_str().unwrap();
        if cluster_scoped.contains(&kind) {
            assert!(o["metadata"].get("namespace").is_none(), "{o}");
        } else if o["roleRef"]["name"] == AUTH_READER_ROLE {
            // The one object outside the operator's namespace: where the Role is.
            assert_eq!(o["metadata"]["namespace"], "kube-system", "{o}");
        } else {
            assert_eq!(o["metadata"]["namespace"], DEFAULT_NAMESPACE, "{kind}");
        }
    }
    let kinds: Vec<&str> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds[0], "Namespace", "the namespace is applied first");
    for kind in [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Secret",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
    ] {
        assert!(kinds.contains(&kind), "{kind} missing: {kinds:?}");
    }
    assert_eq!(
        kinds.last(),
        Some(&"MutatingWebhookConfiguration"),
        "the injector is applied after the Deployment that serves it"
    );
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == "CustomResourceDefinition")
            .count(),
        5
    );
}

#[test]
fn without_pki_there_are_no_secrets_and_no_crds() {
    let parts: Vec<Part> = manifests(&InstallConfig::default(), None)
        .unwrap()
        .iter()
        .map(|m| m.part)
        .collect();
    assert_eq!(
        parts,
        [Part::Namespace, Part::Rbac, Part::Service, Part::Deployment]
    );
}

#[test]
fn a_bad_namespace_or_replica_count_is_refused() {
    for ns in ["", "Upper", "-x", "x-", "a.b", &"a".repeat(64)] {
        let config = InstallConfig {
            namespace: ns.to_string(),
            ..InstallConfig::default()
        };
        assert!(
            matches!(manifests(&config, None), Err(InstallError::Namespace(_))),
            "{ns:?}"
        );
    }
    let config = InstallConfig {
        replicas: -1,
        ..InstallConfig::default()
    };
    assert!(matches!(config.validate(), Err(InstallError::Replicas(-1))));
}

// === RBAC ===

/// Every (apiGroup, resource, verb) a rule list grants.
fn grants(rules: &Value) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for rule in rules.as_array().unwrap() {
        assert!(rule.get("resourceNames").is_none(), "{rule}");
        assert!(rule.get("nonResourceURLs").is_none(), "{rule}");
        for group in rule["apiGroups"].as_array().unwrap() {
            for resource in rule["resources"].as_array().unwrap() {
                for verb in rule["verbs"].as_array().unwrap() {
                    out.insert((
                        group.as_str().unwrap().to_string(),
                        resource.as_str().unwrap().to_string(),
                        verb.as_str().unwrap().to_string(),
                    ));
                }
            }
        }
    }
    out
}

fn expect(list: &[(&str, &[&str], &[&str])]) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for (group, resources, verbs) in list {
        for r in *resources {
            for v in *verbs {
                out.insert((group.to_string(), r.to_string(), v.to_string()));
            }
        }
    }
    out
}

#[test]
fn rbac_grants_exactly_what_the_operator_needs() {
    let objects = rbac(&InstallConfig::default()).unwrap();
    let read: &[&str] = &["get", "list", "watch"];
    let status: &[&str] = &["get", "patch", "update"];
    // The one rule limited to names: the aggregated APIs' APIServices, which the operator
    // registers while it serves.
    let (named, rules): (Vec<Value>, Vec<Value>) = find(&objects, "ClusterRole", NAME)["rules"]
        .as_array()
        .unwrap()
        .iter()
        .cloned()
        .partition(|r| r.get("resourceNames").is_some());
    assert_eq!(
        named,
        [json!({
            "apiGroups": ["apiregistration.k8s.io"],
            "resources": ["apiservices"],
            "resourceNames": ["v1alpha1.metrics.smi-spec.io", "v1alpha1.tap.switchyard.dev"],
            "verbs": ["create", "patch", "delete"],
        })]
    );
    let cluster = grants(&Value::Array(rules));
    assert_eq!(
        cluster,
        expect(&[
            ("split.smi-spec.io", &["trafficsplits"], read),
            ("access.smi-spec.io", &["traffictargets"], read),
            (
                "specs.smi-spec.io",
                &["httproutegroups", "tcproutes", "udproutes"],
                read
            ),
            ("split.smi-spec.io", &["trafficsplits/status"], status),
            ("access.smi-spec.io", &["traffictargets/status"], status),
            (
                "specs.smi-spec.io",
                &[
                    "httproutegroups/status",
                    "tcproutes/status",
                    "udproutes/status"
                ],
                status
            ),
            ("", &["services", "pods", "serviceaccounts"], read),
            ("", &["namespaces"], read),
            ("discovery.k8s.io", &["endpointslices"], read),
            ("apiextensions.k8s.io", &["customresourcedefinitions"], read),
            ("", &["events"], &["create", "patch"]),
            ("events.k8s.io", &["events"], &["create", "patch"]),
            ("authentication.k8s.io", &["tokenreviews"], &["create"]),
            (
                "authorization.k8s.io",
                &["subjectaccessreviews"],
                &["create"]
            ),
        ])
    );
    let role = grants(&find(&objects, "Role", NAME)["rules"]);
    assert_eq!(
        role,
        expect(&[(
            "coordination.k8s.io",
            &["leases"],
            &["get", "create", "update"]
        )])
    );
    for (group, resource, verb) in cluster.iter().chain(&role) {
        assert!(!group.contains('*') && !resource.contains('*') && !verb.contains('*'));
        assert_ne!(resource, "secrets", "no Secrets access");
    }

    for (kind, role_kind) in [
        ("ClusterRoleBinding", "ClusterRole"),
        ("RoleBinding", "Role"),
    ] {
        let binding = find(&objects, kind, NAME);
        assert_eq!(binding["roleRef"]["kind"], role_kind);
        assert_eq!(binding["roleRef"]["name"], NAME);
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": NAME, "namespace": DEFAULT_NAMESPACE}])
        );
    }
    assert_eq!(
        find(&objects, "Role", NAME)["metadata"]["namespace"],
        DEFAULT_NAMESPACE
    );

    // The Traffic Metrics API reads the front proxy's CA in kube-system.
    let reader = find(
        &objects,
        "RoleBinding",
        &format!("{NAME}-{AUTH_READER_ROLE}"),
    );
    assert_eq!(reader["metadata"]["namespace"], "kube-system");
    assert_eq!(
        reader["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": AUTH_READER_ROLE})
    );
    assert_eq!(
        reader["subjects"],
        json!([{"kind": "ServiceAccount", "name": NAME, "namespace": DEFAULT_NAMESPACE}])
    );
    // Users are granted reading it by binding this role; nothing binds it.
    let metrics_reader = find(&objects, "ClusterRole", METRICS_READER_ROLE);
    assert_eq!(
        grants(&metrics_reader["rules"]),
        expect(&[("metrics.smi-spec.io", &["*"], &["get", "list"])])
    );
    assert!(
        !objects
            .iter()
            .any(|o| o["roleRef"]["name"] == METRICS_READER_ROLE)
    );
    // Likewise for tapping: watch on one Pod's tap and a namespace's, nothing else.
    let tap = find(&objects, "ClusterRole", TAP_ROLE);
    assert_eq!(
        grants(&tap["rules"]),
        expect(&[("tap.switchyard.dev", &["pods/tap", "tap"], &["watch"])])
    );
    assert!(!objects.iter().any(|o| o["roleRef"]["name"] == TAP_ROLE));
}

#[test]
fn the_api_service_points_at_the_operator_service_with_the_webhook_ca() {
    let services = api_services("mesh", "-----BEGIN CERTIFICATE-----\nx\n");
    let names: Vec<&Value> = services.iter().map(|s| &s["metadata"]["name"]).collect();
    assert_eq!(
        names,
        [
            "v1alpha1.metrics.smi-spec.io",
            "v1alpha1.tap.switchyard.dev"
        ]
    );
    assert_eq!(services[1]["spec"]["group"], "tap.switchyard.dev");
    assert_eq!(
        services[1]["spec"]["service"],
        services[0]["spec"]["service"]
    );
    let service = &services[0];
    let spec = &service["spec"];
    assert_eq!(spec["group"], "metrics.smi-spec.io");
    assert_eq!(spec["version"], "v1alpha1");
    assert_eq!(
        spec["service"],
        json!({"namespace": "mesh", "name": NAME, "port": 443})
    );
    assert_eq!(spec["caBundle"], "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCngK");
    assert_eq!(spec["groupPriorityMinimum"], 100);
    assert_eq!(spec["versionPriority"], 100);
    // The Service's port 443 is the webhook port, where the operator serves the API.
    let svc = find(&service_objects("mesh"), "Service", NAME).clone();
    assert!(
        svc["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["port"] == 443 && p["targetPort"] == WEBHOOK_PORT)
    );
}

fn service_objects(namespace: &str) -> Vec<Value> {
    service(&InstallConfig {
        namespace: namespace.into(),
        ..InstallConfig::default()
    })
    .unwrap()
}

// === Deployment and Service ===

#[test]
fn the_deployment_runs_the_controller_locked_down() {
    let config = InstallConfig {
        namespace: "mesh".into(),
        image: "example.com/switchyard:dev".into(),
        replicas: 3,
        data_plane: DataPlane::Bundled,
        trust_domain: "example.org".into(),
        webhook: WebhookClient::Service,
        proxy_image: "example.com/switchyard-proxy:dev".into(),
        envoy_image: "example.com/switchyard-envoy:dev".into(),
        injector_failure_policy: FailurePolicy::Fail,
    };
    let objects = deployment(&config).unwrap();
    let d = find(&objects, "Deployment", NAME);
    assert_eq!(d["spec"]["replicas"], 3);
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], NAME);
    let c = &pod["containers"][0];
    assert_eq!(c["image"], "example.com/switchyard:dev");
    let args = strings(&c["args"]);
    assert_eq!(
        args,
        [
            "controller",
            "--namespace",
            "mesh",
            "--xds-addr",
            "0.0.0.0:15010",
            "--webhook-addr",
            "0.0.0.0:9443",
            "--webhook-cert-dir",
            "/etc/switchyard/webhook",
            "--xds-cert-dir",
            "/etc/switchyard/webhook",
            "--admin-addr",
            "0.0.0.0:9090",
            "--ca-cert",
            "/etc/switchyard/ca/ca.crt",
            "--ca-key",
            "/etc/switchyard/ca/ca.key",
            "--trust-domain",
            "example.org",
            "--data-plane",
            "bundled",
            "--proxy-image",
            "example.com/switchyard-proxy:dev",
            "--envoy-image",
            "example.com/switchyard-envoy:dev",
            "--init-image",
            "example.com/switchyard:dev",
            "--xds-host",
            "switchyard.mesh.svc",
            "--metrics-apiservice",
        ]
    );
    assert_eq!(c["env"][0]["name"], "POD_NAME");
    assert_eq!(
        c["env"][0]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_eq!(c["env"][1]["name"], "POD_NAMESPACE");
    assert_eq!(
        c["env"][1]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    let admin = named(&c["ports"], "http-admin");
    assert_eq!(admin["containerPort"], 9090);
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], "http-admin");

    let sc = &c["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert!(c["resources"]["requests"]["cpu"].is_string());
    assert!(c["resources"]["requests"]["memory"].is_string());

    for mount in c["volumeMounts"].as_array().unwrap() {
        if mount["name"] != "tmp" {
            assert_eq!(mount["readOnly"], true, "{mount}");
        }
    }
    let volumes = pod["volumes"].as_array().unwrap();
    let secret_of = |name: &str| {
        volumes.iter().find(|v| v["name"] == name).unwrap()["secret"]["secretName"].clone()
    };
    assert_eq!(secret_of("mesh-ca"), MESH_CA_SECRET);
    assert_eq!(secret_of("webhook-tls"), WEBHOOK_TLS_SECRET);

    let selector = &d["spec"]["selector"]["matchLabels"];
    let pod_labels = d["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .unwrap();
    for (k, v) in selector.as_object().unwrap() {
        assert_eq!(&pod_labels[k], v, "the selector matches the pods");
    }
    let pdb = find(&objects, "PodDisruptionBudget", NAME);
    assert_eq!(pdb["apiVersion"], "policy/v1");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(&pdb["spec"]["selector"]["matchLabels"], selector);

    let svc = &service(&config).unwrap()[0];
    assert_eq!(&svc["spec"]["selector"], selector);
    let ports: Vec<(String, i64, i64)> = svc["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["port"].as_i64().unwrap(),
                p["targetPort"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ports,
        [
            ("grpc-xds".to_string(), 15010, 15010),
            ("https-webhook".to_string(), 443, 9443),
            ("http-admin".to_string(), 9090, 9090),
        ]
    );
}

// === CRDs and certificates ===

#[test]
fn crds_convert_through_the_service_with_a_ca_bundle_that_verifies_the_serving_cert() {
    let (config, pki) = with_pki(InstallConfig {
        namespace: "mesh".into(),
        ..InstallConfig::default()
    });
    let crds = crds(&config, &pki).unwrap();
    assert_eq!(crds.len(), 5);
    let serving_der = der_of(&pki.webhook_tls.cert_pem);
    let serving = parse(&serving_der);
    for crd in &crds {
        let name = crd["metadata"]["name"].as_str().unwrap();
        let conversion = &crd["spec"]["conversion"];
        if name == "udproutes.specs.smi-spec.io" {
            assert_eq!(conversion, &json!({"strategy": "None"}));
            continue;
        }
        assert_eq!(conversion["strategy"], "Webhook", "{name}");
        let webhook = &conversion["webhook"];
        assert_eq!(webhook["conversionReviewVersions"], json!(["v1"]));
        let client = &webhook["clientConfig"];
        assert_eq!(
            client["service"],
            json!({"namespace": "mesh", "name": "switchyard", "path": "/convert", "port": 443})
        );
        assert!(client.get("url").is_none());
        let bundle = bytes(&client["caBundle"]);
        let ca_der = der_of(&bundle);
        let ca = parse(&ca_der);
        assert!(ca.is_ca());
        assert_eq!(serving.issuer().as_raw(), ca.subject().as_raw());
        serving.verify_signature(Some(ca.public_key())).unwrap();
        // The CRD is the generated one, with only the conversion replaced.
        let kind = Kind::ALL
            .into_iter()
            .find(|k| crdgen::crd_name(*k) == name)
            .unwrap();
        let mut generated = serde_json::to_value(crdgen::crd(kind)).unwrap();
        generated["spec"]["conversion"] = conversion.clone();
        assert_eq!(crd, &generated);
    }

    assert!(!serving.is_ca());
    let mut sans = hosts(&serving);
    sans.sort();
    assert_eq!(
        sans,
        [
            Host::Dns("switchyard.mesh.svc".into()),
            Host::Dns("switchyard.mesh.svc.cluster.local".into()),
        ]
    );
    let eku = serving.extended_key_usage().unwrap().unwrap();
    assert!(eku.value.server_auth);
}

#[test]
fn a_webhook_url_replaces_the_service_and_becomes_a_san() {
    for (url, host) in [
        (
            "https://127.0.0.1:9443/convert",
            Host::Ip("127.0.0.1".parse().unwrap()),
        ),
        (
            "https://[::1]:9443/convert",
            Host::Ip("::1".parse().unwrap()),
        ),
        (
            "https://Webhook.Example.com/convert",
            Host::Dns("webhook.example.com".into()),
        ),
    ] {
        let (config, pki) = with_pki(url_config(url));
        let crd = &crds(&config, &pki).unwrap()[0];
        let client = &crd["spec"]["conversion"]["webhook"]["clientConfig"];
        assert_eq!(client["url"], url);
        assert!(client.get("service").is_none());
        assert!(client["caBundle"].is_string());
        let der = der_of(&pki.webhook_tls.cert_pem);
        let sans = hosts(&parse(&der));
        assert!(sans.contains(&host), "{url}: {sans:?}");
        assert!(sans.contains(&Host::Dns("switchyard.switchyard-system.svc".into())));
    }
    for bad in [
        "http://127.0.0.1/convert",
        "127.0.0.1:9443",
        "https://user@host/convert",
        "https://host/convert?x=1",
        "not a url",
    ] {
        assert!(
            matches!(WebhookUrl::parse(bad), Err(InstallError::WebhookUrl { .. })),
            "{bad}"
        );
    }
}

#[test]
fn the_injector_calls_the_service_for_pod_creations_outside_the_exempt_namespaces() {
    let (config, pki) = with_pki(InstallConfig {
        namespace: "mesh".into(),
        ..InstallConfig::default()
    });
    let objects = injector(&config, &pki).unwrap();
    let mwc = find(
        &objects,
        "MutatingWebhookConfiguration",
        INJECTOR_CONFIGURATION,
    );
    assert_eq!(mwc["apiVersion"], "admissionregistration.k8s.io/v1");
    let webhooks = mwc["webhooks"].as_array().unwrap();
    assert_eq!(webhooks.len(), 1);
    let w = &webhooks[0];
    assert_eq!(w["name"], "inject.switchyard.dev");
    assert_eq!(
        w["clientConfig"]["service"],
        json!({"namespace": "mesh", "name": "switchyard", "path": "/inject", "port": 443})
    );
    // The same CA as the conversion webhook's: it verifies the one serving certificate.
    let crd = &crds(&config, &pki).unwrap()[0];
    assert_eq!(
        w["clientConfig"]["caBundle"],
        crd["spec"]["conversion"]["webhook"]["clientConfig"]["caBundle"]
    );
    assert_eq!(
        bytes(&w["clientConfig"]["caBundle"]),
        pki.webhook_ca.cert_pem
    );
    assert_eq!(
        w["rules"],
        json!([{
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "operations": ["CREATE"],
            "resources": ["pods"],
            "scope": "Namespaced",
        }])
    );
    assert_eq!(
        w["namespaceSelector"],
        json!({"matchExpressions": [{
            "key": "kubernetes.io/metadata.name",
            "operator": "NotIn",
            "values": ["kube-system", "kube-public", "kube-node-lease", "mesh"],
        }]})
    );
    assert_eq!(w["sideEffects"], "NoneOnDryRun");
    assert_eq!(w["timeoutSeconds"], 10);
    assert_eq!(w["reinvocationPolicy"], "IfNeeded");
    assert_eq!(w["admissionReviewVersions"], json!(["v1"]));
    assert_eq!(w["failurePolicy"], "Fail");

    let ignore = InstallConfig {
        injector_failure_policy: FailurePolicy::Ignore,
        ..config.clone()
    };
    let objects = injector(&ignore, &pki).unwrap();
    assert_eq!(objects[0]["webhooks"][0]["failurePolicy"], "Ignore");

    // An operator outside the cluster: the same host and port, path /inject.
    let (config, pki) = with_pki(url_config("https://10.0.0.7:9443/convert"));
    let client = &injector(&config, &pki).unwrap()[0]["webhooks"][0]["clientConfig"];
    assert_eq!(client["url"], "https://10.0.0.7:9443/inject");
    assert!(client.get("service").is_none());
    let config = url_config("https://[::1]/convert");
    assert_eq!(
        injector(&config, &pki).unwrap()[0]["webhooks"][0]["clientConfig"]["url"],
        "https://[::1]/inject"
    );
}

#[test]
fn install_takes_the_proxy_images_from_registry_and_tag_and_the_failure_policy_flag() {
    let objects = docs(&install(&[
        "--no-pki",
        "--registry",
        "reg.example/mesh",
        "--tag",
        "v2",
    ]));
    let args =
        find(&objects, "Deployment", NAME)["spec"]["template"]["spec"]["containers"][0]["args"]
            .to_string();
    for expected in [
        r#""--proxy-image","reg.example/mesh/switchyard-proxy:v2""#,
        r#""--envoy-image","reg.example/mesh/switchyard-envoy:v2""#,
        r#""--init-image","reg.example/mesh/switchyard:v2""#,
    ] {
        assert!(args.contains(expected), "{expected} not in {args}");
    }
    // `--image` names the operator, and so the init container's image too.
    let objects = docs(&install(&["--no-pki", "--image", "mine/op:1"]));
    let args =
        find(&objects, "Deployment", NAME)["spec"]["template"]["spec"]["containers"][0]["args"]
            .to_string();
    assert!(args.contains(r#""--init-image","mine/op:1""#), "{args}");

    let dir = tempfile::tempdir().unwrap();
    let pki_dir = dir.path().to_str().unwrap();
    for (flag, expected) in [("Ignore", "Ignore"), ("ignore", "Ignore"), ("Fail", "Fail")] {
        let objects = docs(&install(&[
            "--pki-dir",
            pki_dir,
            "--injector-failure-policy",
            flag,
        ]));
        let mwc = find(
            &objects,
            "MutatingWebhookConfiguration",
            INJECTOR_CONFIGURATION,
        );
        assert_eq!(mwc["webhooks"][0]["failurePolicy"], expected, "{flag}");
    }
    assert!(Cmd::try_parse_from(["install", "--injector-failure-policy", "Maybe"]).is_err());
}

#[test]
fn secrets_hold_the_certificates() {
    let (config, pki) = with_pki(InstallConfig::default());
    let secrets = secrets(&config, &pki).unwrap();
    let mesh = find(&secrets, "Secret", MESH_CA_SECRET);
    assert_eq!(mesh["type"], "Opaque");
    assert_eq!(bytes(&mesh["data"]["ca.crt"]), pki.mesh_ca.cert_pem);
    assert_eq!(bytes(&mesh["data"]["ca.key"]), *pki.mesh_ca.key_pem);
    let tls = find(&secrets, "Secret", WEBHOOK_TLS_SECRET);
    assert_eq!(tls["type"], "kubernetes.io/tls");
    assert_eq!(bytes(&tls["data"]["tls.crt"]), pki.webhook_tls.cert_pem);
    assert_eq!(bytes(&tls["data"]["tls.key"]), *pki.webhook_tls.key_pem);
    assert_eq!(bytes(&tls["data"]["ca.crt"]), pki.webhook_ca.cert_pem);
    assert_eq!(
        mesh.as_object().unwrap().len(),
        5,
        "no stringData or extra fields: {mesh}"
    );
}

#[test]
fn the_mesh_ca_loads_in_the_operator_and_issues() {
    let dir = tempfile::tempdir().unwrap();
    let config = InstallConfig {
        trust_domain: "example.org".into(),
        ..InstallConfig::default()
    };
    Pki::load_or_generate(dir.path(), &config.pki_config(), now()).unwrap();
    let ca_config = CaConfig {
        trust_domain: "example.org".into(),
        ..CaConfig::default()
    };
    let files = CaFiles {
        cert_chain: dir.path().join("ca.crt"),
        key: dir.path().join("ca.key"),
        trust_bundle: None,
    };
    let ca = MeshCa::from_files(&ca_config, &files).unwrap();
    assert!(
        ca.subject().contains("Switchyard mesh CA"),
        "{}",
        ca.subject()
    );
    let identity = switchyard_adapters::model::Identity {
        namespace: "shop".into(),
        service_account: "web".into(),
    };
    let cert = ca
        .issue(&identity, Duration::from_secs(3600), now())
        .unwrap();
    assert_eq!(cert.spiffe_id(), "spiffe://example.org/ns/shop/sa/web");
    // The workload certificate verifies against the installed CA certificate.
    let leaf_der = der_of(cert.cert_chain_pem());
    let root_der = der_of(&fs::read_to_string(&files.cert_chain).unwrap());
    parse(&leaf_der)
        .verify_signature(Some(parse(&root_der).public_key()))
        .unwrap();
    assert_eq!(der_of(ca.trust_bundle_pem()), root_der);

    let ca_der = der_of(&fs::read_to_string(&files.cert_chain).unwrap());
    let ca_cert = parse(&ca_der);
    let uris: Vec<String> = ca_cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(uris, ["URI(spiffe://example.org)"]);
}

// === PKI directory ===

fn read(dir: &Path, name: &str) -> String {
    fs::read_to_string(dir.join(name)).unwrap()
}

#[test]
fn a_pki_dir_is_filled_once_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let config = InstallConfig::default().pki_config();
    let (first, report) = Pki::load_or_generate(dir.path(), &config, now()).unwrap();
    assert_eq!(report.mesh_ca, Origin::Generated);
    assert_eq!(report.webhook_ca, Origin::Generated);
    assert_eq!(report.webhook_tls, Origin::Generated);
    assert_eq!(report.written.len(), 6);
    for name in [
        "ca.crt",
        "ca.key",
        "webhook/ca.crt",
        "webhook/ca.key",
        "webhook/tls.crt",
        "webhook/tls.key",
    ] {
        assert!(dir.path().join(name).is_file(), "{name}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |name: &str| {
            fs::metadata(dir.path().join(name))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        for key in ["ca.key", "webhook/ca.key", "webhook/tls.key"] {
            assert_eq!(mode(key), 0o600, "{key}");
        }
        assert_eq!(mode("webhook"), 0o700);
    }
    assert_eq!(read(dir.path(), "ca.crt"), first.mesh_ca.cert_pem);

    let later = now() + Duration::from_secs(86_400);
    let (second, report) = Pki::load_or_generate(dir.path(), &config, later).unwrap();
    assert_eq!(report.mesh_ca, Origin::Reused);
    assert_eq!(report.webhook_ca, Origin::Reused);
    assert_eq!(report.webhook_tls, Origin::Reused);
    assert!(report.written.is_empty(), "{:?}", report.written);
    assert_eq!(second.mesh_ca.cert_pem, first.mesh_ca.cert_pem);
    assert_eq!(*second.mesh_ca.key_pem, *first.mesh_ca.key_pem);
    assert_eq!(second.webhook_tls.cert_pem, first.webhook_tls.cert_pem);
}

#[test]
fn the_serving_cert_is_reissued_from_the_same_ca_when_it_no_longer_fits() {
    let dir = tempfile::tempdir().unwrap();
    let (first, _) =
        Pki::load_or_generate(dir.path(), &InstallConfig::default().pki_config(), now()).unwrap();

    // A new webhook URL needs a new SAN; the CAs stay.
    let config = url_config("https://10.1.2.3:9443/convert").pki_config();
    let (second, report) = Pki::load_or_generate(dir.path(), &config, now()).unwrap();
    assert_eq!(report.mesh_ca, Origin::Reused);
    assert_eq!(report.webhook_ca, Origin::Reused);
    assert!(
        matches!(&report.webhook_tls, Origin::Reissued(r) if r.contains("10.1.2.3")),
        "{report:?}"
    );
    assert_eq!(second.mesh_ca.cert_pem, first.mesh_ca.cert_pem);
    assert_eq!(second.webhook_ca.cert_pem, first.webhook_ca.cert_pem);
    assert_ne!(second.webhook_tls.cert_pem, first.webhook_tls.cert_pem);
    assert_eq!(
        read(dir.path(), "webhook/tls.crt"),
        second.webhook_tls.cert_pem
    );
    let ca_der = der_of(&second.webhook_ca.cert_pem);
    let tls_der = der_of(&second.webhook_tls.cert_pem);
    parse(&tls_der)
        .verify_signature(Some(parse(&ca_der).public_key()))
        .unwrap();

    // Close to expiry.
    let late = now() + pki::SERVING_LIFETIME - Duration::from_secs(86_400);
    let (_, report) = Pki::load_or_generate(dir.path(), &config, late).unwrap();
    assert!(
        matches!(&report.webhook_tls, Origin::Reissued(r) if r.contains("expires")),
        "{report:?}"
    );

    // A missing key.
    fs::remove_file(dir.path().join("webhook/tls.key")).unwrap();
    let (_, report) = Pki::load_or_generate(dir.path(), &config, late).unwrap();
    assert_eq!(report.webhook_tls, Origin::Generated);
    assert_eq!(report.mesh_ca, Origin::Reused);
}

#[test]
fn a_broken_or_half_ca_is_an_error_not_a_silent_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let config = InstallConfig::default().pki_config();
    Pki::load_or_generate(dir.path(), &config, now()).unwrap();
    let key = read(dir.path(), "ca.key");

    fs::remove_file(dir.path().join("ca.key")).unwrap();
    let err = Pki::load_or_generate(dir.path(), &config, now()).unwrap_err();
    assert!(
        matches!(
            err,
            PkiError::Incomplete {
                what: "mesh CA",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("ca.key"), "{err}");
    assert!(
        dir.path().join("ca.crt").is_file(),
        "the certificate is left alone"
    );

    // Another CA's key.
    let other = tempfile::tempdir().unwrap();
    Pki::load_or_generate(other.path(), &config, now()).unwrap();
    fs::copy(other.path().join("ca.key"), dir.path().join("ca.key")).unwrap();
    let err = Pki::load_or_generate(dir.path(), &config, now()).unwrap_err();
    assert!(matches!(err, PkiError::Invalid { .. }), "{err}");
    assert!(err.to_string().contains("ca.crt"), "{err}");

    fs::write(dir.path().join("ca.key"), &key).unwrap();
    let other_domain = PkiConfig {
        trust_domain: "example.org".into(),
        ..config.clone()
    };
    let err = Pki::load_or_generate(dir.path(), &other_domain, now()).unwrap_err();
    match err {
        PkiError::TrustDomain { found, wanted, .. } => {
            assert_eq!(
                (found.as_str(), wanted.as_str()),
                ("cluster.local", "example.org")
            );
        }
        other => panic!("{other}"),
    }

    fs::write(dir.path().join("webhook/ca.key"), "garbage").unwrap();
    let err = Pki::load_or_generate(dir.path(), &config, now()).unwrap_err();
    assert!(err.to_string().contains("webhook/ca.crt"), "{err}");
}

// === The command ===

#[test]
fn install_prints_multi_document_yaml_that_parses_back() {
    let dir = tempfile::tempdir().unwrap();
    let pki_dir = dir.path().join("pki");
    let pki_arg = pki_dir.to_str().unwrap();
    let yaml = install(&[
        "--pki-dir",
        pki_arg,
        "--namespace",
        "mesh",
        "--replicas",
        "1",
    ]);
    assert!(yaml.starts_with(HEADER));
    let objects = docs(&yaml);
    assert_eq!(objects.len(), 1 + 8 + 5 + 2 + 1 + 2 + 1, "{yaml}");
    assert_eq!(objects[0]["kind"], "Namespace");
    assert_eq!(objects[0]["metadata"]["name"], "mesh");
    assert_eq!(find(&objects, "Deployment", NAME)["spec"]["replicas"], 1);
    let mesh = find(&objects, "Secret", MESH_CA_SECRET);
    assert_eq!(bytes(&mesh["data"]["ca.crt"]), read(&pki_dir, "ca.crt"));

    // The YAML is the JSON objects, exactly.
    let config = InstallConfig {
        namespace: "mesh".into(),
        replicas: 1,
        ..InstallConfig::default()
    };
    let (pki, _) =
        Pki::load_or_generate(&pki_dir, &config.pki_config(), SystemTime::now()).unwrap();
    assert_eq!(objects, all_objects(&config, Some(&pki)));

    // Installing again keeps the mesh CA.
    let again = docs(&install(&[
        "--pki-dir",
        pki_arg,
        "--namespace",
        "mesh",
        "--replicas",
        "1",
    ]));
    assert_eq!(again, objects);
}

#[test]
fn install_out_no_pki_writes_the_checked_in_parts() {
    let dir = tempfile::tempdir().unwrap();
    let out = install(&["--no-pki", "--out", dir.path().to_str().unwrap()]);
    let mut names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "deployment.yaml",
            "namespace.yaml",
            "rbac.yaml",
            "service.yaml"
        ]
    );
    assert_eq!(out.lines().count(), 4, "{out}");
    for name in &names {
        let text = read(dir.path(), name);
        assert!(text.starts_with(HEADER), "{name}");
        for doc in docs(&text) {
            assert!(doc["kind"].is_string(), "{name}: {doc}");
            assert_ne!(doc["kind"], "Secret");
        }
    }
    let cmd = Cmd::try_parse_from(["install", "--no-pki", "--pki-dir", "x"]);
    assert!(cmd.is_err(), "--no-pki with --pki-dir is a usage error");
}

fn checked_in_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/install")
}

/// `manifests/install/` is what `switchyard install --no-pki --out manifests/install` writes.
/// `SWITCHYARD_BLESS=1 cargo test -p switchyard --lib install` rewrites it instead.
#[test]
fn checked_in_manifests_are_up_to_date() {
    let dir = checked_in_dir();
    let manifests = manifests(&InstallConfig::default(), None).unwrap();
    if env::var("SWITCHYARD_BLESS").as_deref() == Ok("1") {
        write_dir(&dir, &manifests).unwrap();
        return;
    }
    for m in &manifests {
        let path = dir.join(m.part.file_name());
        let on_disk = fs::read_to_string(&path)
            .unwrap_or_default()
            .replace("\r\n", "\n");
        assert!(
            on_disk == to_yaml(&m.objects).unwrap(),
            "{} is out of date: run `switchyard install --no-pki --out manifests/install` (or \
             `SWITCHYARD_BLESS=1 cargo test -p switchyard --lib install`)",
            path.display()
        );
    }
}

#[test]
fn the_deployment_args_parse_as_the_controller_command() {
    use clap::Parser as _;
    let objects = deployment(&InstallConfig::default()).unwrap();
    let container =
        &find(&objects, "Deployment", NAME)["spec"]["template"]["spec"]["containers"][0];
    let args = strings(&container["args"]);
    let cli = crate::cli::Cli::try_parse_from(std::iter::once("switchyard").chain(args));
    match cli {
        Ok(crate::cli::Cli {
            command: crate::cli::Command::Controller(_),
        }) => {}
        Ok(other) => panic!("not the controller command: {other:?}"),
        Err(e) => panic!("the Deployment's args do not parse: {e}"),
    }
}
