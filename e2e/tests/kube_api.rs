//! The Kubernetes harness against the real kube-apiserver and kubectl: the cluster starts, the
//! SMI CRDs take every SMI example and print their columns, ServiceAccount tokens pass a
//! TokenReview, and loopback addresses are accepted where the mesh tests need them.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: a panic is the failure report"
)]

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, TcpListener},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use switchyard_e2e::{
    kube::{KubeCluster, base64, cluster},
    workspace_root,
};

const HOUR: Duration = Duration::from_secs(3600);

#[test]
fn cluster_starts_and_namespaces_are_labelled() {
    let c = cluster();
    eprintln!(
        "cluster started in {:?}; kube-harness RSS {:?} KiB",
        c.started_in(),
        c.harness_rss_kib()
    );
    assert!(c.harness_rss_kib().is_some_and(|kib| kib > 10_000));

    let version: Value = serde_json::from_str(&c.kubectl_ok(&["version", "-o", "json"])).unwrap();
    assert_eq!(
        version["serverVersion"]["gitVersion"], "v1.34.2",
        "{version}"
    );
    let client = version["clientVersion"]["gitVersion"]
        .as_str()
        .unwrap_or("");
    assert!(client.starts_with("v1.34."), "{version}");

    // The accessors agree with the kubeconfig the harness wrote.
    let config: Value =
        serde_json::from_str(&c.kubectl_ok(&["config", "view", "--raw", "-o", "json"])).unwrap();
    assert_eq!(config["clusters"][0]["cluster"]["server"], c.server());
    assert_eq!(config["users"][0]["user"]["token"], c.admin_token());
    assert!(c.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(c.kubeconfig().starts_with(c.dir()));

    let ns = c.namespace("Smoke_Test");
    let name = ns.name().to_owned();
    assert!(name.starts_with("smoke-test-"), "{name}");
    let got = c.get_json(&["namespace", &ns]);
    assert_eq!(got["metadata"]["labels"]["switchyard.dev/e2e"], "kube_api");
    assert_eq!(got["status"]["phase"], "Active");
    let other = c.namespace("smoke-test");
    assert_ne!(other.name(), name);

    drop(ns);
    // No namespace controller: the namespace stays Terminating, but it is being deleted.
    let got = c.get_json(&["namespace", &name]);
    assert!(got["metadata"]["deletionTimestamp"].is_string(), "{got}");
    assert_eq!(got["status"]["phase"], "Terminating");
}

/// Printer columns of one CRD version, in order, as (header, JSONPath, type); priority 0 only.
type Columns = Vec<(String, String, String)>;

/// kind → (group, version → columns), read from `manifests/crds/*.yaml`.
fn crd_columns(c: &KubeCluster) -> BTreeMap<String, (String, BTreeMap<String, Columns>)> {
    let dir = workspace_root().join("manifests/crds");
    let mut yaml = String::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            yaml.push_str(&std::fs::read_to_string(&path).unwrap());
            yaml.push_str("\n---\n");
        }
    }
    let mut out = BTreeMap::new();
    for crd in c.yaml_to_json(&yaml) {
        let spec = &crd["spec"];
        let mut versions = BTreeMap::new();
        for v in spec["versions"].as_array().unwrap() {
            let columns = v["additionalPrinterColumns"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .filter(|col| col["priority"].as_i64().unwrap_or(0) == 0)
                .map(|col| {
                    (
                        col["name"].as_str().unwrap().to_uppercase(),
                        col["jsonPath"].as_str().unwrap().to_owned(),
                        col["type"].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
            versions.insert(v["name"].as_str().unwrap().to_owned(), columns);
        }
        out.insert(
            spec["names"]["kind"].as_str().unwrap().to_owned(),
            (spec["group"].as_str().unwrap().to_owned(), versions),
        );
    }
    out
}

/// The cell the API server's CRD table convertor prints for a simple JSONPath (`.a.b`,
/// `.a[*].b`): only the FIRST value it selects (so a `[*]` column shows one array element),
/// an empty cell when it selects nothing.
fn json_path(object: &Value, path: &str) -> String {
    let mut values = vec![object];
    for segment in path.strip_prefix('.').unwrap().split('.') {
        let (field, all) = match segment.strip_suffix("[*]") {
            Some(field) => (field, true),
            None => (segment, false),
        };
        assert!(!field.contains('['), "unsupported JSONPath {path}");
        values = values
            .into_iter()
            .filter_map(|v| v.get(field))
            .flat_map(|v| match (all, v.as_array()) {
                (true, Some(items)) => items.iter().collect(),
                _ => vec![v],
            })
            .collect();
    }
    match values.into_iter().find(|v| !v.is_null()) {
        None => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// Every `namespace:` value in `yaml` (object metadata and ServiceAccount references alike)
/// replaced with `ns`, so that the example's objects and what they refer to move together.
fn rewrite_namespaces(yaml: &str, ns: &str) -> String {
    yaml.lines()
        .map(|line| {
            let body = line.trim_start();
            match body.strip_prefix("namespace:") {
                Some(_) => format!("{}namespace: {ns}", &line[..line.len() - body.len()]),
                None => line.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The tables of `kubectl get a,b,c`: one per resource type, each a header and rows of
/// cells. Cells are cut at the header's column offsets (kubectl aligns them there), since an
/// empty cell leaves only spaces.
fn tables(text: &str) -> Vec<(Vec<String>, Vec<Vec<String>>)> {
    text.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            let mut lines = block.lines();
            let header = lines.next().unwrap();
            let starts: Vec<usize> = header
                .char_indices()
                .filter(|&(i, c)| c != ' ' && (i == 0 || header.as_bytes()[i - 1] == b' '))
                .map(|(i, _)| i)
                .collect();
            let cut = |line: &str| -> Vec<String> {
                starts
                    .iter()
                    .enumerate()
                    .map(|(k, &start)| {
                        let end = starts
                            .get(k + 1)
                            .copied()
                            .unwrap_or(line.len())
                            .min(line.len());
                        line.get(start.min(end)..end)
                            .unwrap_or("")
                            .trim()
                            .to_owned()
                    })
                    .collect()
            };
            (cut(header), lines.map(cut).collect())
        })
        .collect()
}

#[test]
fn smi_examples_apply_and_print_their_columns() {
    let c = cluster();
    c.install_crds();
    let again = Instant::now();
    c.install_crds();
    assert!(
        again.elapsed() < Duration::from_millis(50),
        "install_crds is not memoised"
    );
    let columns = crd_columns(c);
    assert_eq!(columns.len(), 5, "{:?}", columns.keys());

    let dir = workspace_root().join("../shared/reference/smi-examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (the checkout needs shared/ next to main/)",
                dir.display()
            )
        })
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 9, "{files:?}");

    let mut rows_seen = 0;
    for file in &files {
        let file_name = file.file_name().unwrap().to_string_lossy().into_owned();
        // One namespace per file: several files reuse a name (foobar-rollout in two
        // TrafficSplit versions, the-routes in two HTTPRouteGroup shapes).
        let ns = c.namespace("smi-example");
        let yaml = rewrite_namespaces(&std::fs::read_to_string(file).unwrap(), &ns);
        let documents = yaml
            .lines()
            .filter(|l| l.starts_with("apiVersion:"))
            .count();
        let applied: Value = serde_json::from_str(
            &c.kubectl_stdin_ok(&["apply", "-n", &ns, "-f", "-", "-o", "json"], &yaml),
        )
        .unwrap();
        let applied: Vec<Value> = match applied["items"].as_array() {
            Some(items) => items.clone(),
            None => vec![applied],
        };
        assert_eq!(applied.len(), documents, "{file_name}: {applied:?}");

        let output = c.kubectl_ok(&["get", "ts,tt,htr,tr,ur", "-n", &ns]);
        let tables = tables(&output);
        // The same objects in the versions `kubectl get` shows (the preferred ones).
        let shown = c.get_json(&["ts,tt,htr,tr,ur", "-n", &ns]);
        for object in &applied {
            let kind = object["kind"].as_str().unwrap();
            let name = object["metadata"]["name"].as_str().unwrap();
            assert_eq!(object["metadata"]["namespace"], ns.name(), "{file_name}");
            let (group, versions) = &columns[kind];
            let resource = format!("{}.{group}", kind.to_lowercase());
            let shown = shown["items"]
                .as_array()
                .unwrap()
                .iter()
                .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
                .unwrap_or_else(|| panic!("{file_name}: kubectl get -o json lacks {kind} {name}"));
            let version = shown["apiVersion"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap();
            let cols = &versions[version];
            let want_header: Vec<String> = std::iter::once("NAME".to_owned())
                .chain(cols.iter().map(|(h, _, _)| h.clone()))
                .chain(cols.is_empty().then(|| "AGE".to_owned()))
                .collect();
            let row_name = format!("{resource}/{name}");
            let (header, rows) = tables
                .iter()
                .find(|(_, rows)| rows.iter().any(|r| r[0] == row_name))
                .unwrap_or_else(|| panic!("{file_name}: no row {row_name} in\n{output}"));
            assert_eq!(header, &want_header, "{file_name}: {kind}\n{output}");
            let row = rows.iter().find(|r| r[0] == row_name).unwrap();
            assert_eq!(row.len(), header.len(), "{file_name}: {row:?}");
            for ((h, path, ty), cell) in cols.iter().zip(&row[1..]) {
                if ty == "date" {
                    assert!(cell.ends_with('s') || cell.ends_with('m'), "{h}: {cell}");
                } else {
                    assert_eq!(
                        cell,
                        &json_path(shown, path),
                        "{file_name}: {kind} {name} {h}"
                    );
                }
            }
            rows_seen += 1;
        }
        let rows_total: usize = tables.iter().map(|(_, rows)| rows.len()).sum();
        assert_eq!(
            rows_total,
            applied.len(),
            "{file_name}: extra rows\n{output}"
        );
    }
    assert_eq!(rows_seen, 18);
}

fn token_review(c: &KubeCluster, token: &str, audiences: Option<&[&str]>) -> Value {
    let mut review = json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": token},
    });
    if let Some(audiences) = audiences {
        review["spec"]["audiences"] = json!(audiences);
    }
    let out = c.kubectl_stdin_ok(&["create", "-f", "-", "-o", "json"], &review.to_string());
    serde_json::from_str::<Value>(&out).unwrap()["status"].clone()
}

#[test]
fn service_account_tokens_pass_token_review() {
    let c = cluster();
    let ns = c.namespace("tokens");
    c.create_service_account(&ns, "client");
    let subject = format!("system:serviceaccount:{ns}:client");

    let token = c.create_token(&ns, "client", "switchyard", None, HOUR);
    let status = token_review(c, &token, Some(&["switchyard"]));
    assert_eq!(status["authenticated"], true, "{status}");
    assert_eq!(status["user"]["username"], subject.as_str());
    assert_eq!(status["audiences"], json!(["switchyard"]));
    let groups = status["user"]["groups"].as_array().unwrap();
    assert!(
        groups.contains(&json!(format!("system:serviceaccounts:{ns}"))),
        "{status}"
    );

    // The audience binds: the API server's own audience does not accept it.
    let status = token_review(c, &token, None);
    assert_ne!(status["authenticated"], true, "{status}");

    // Bound to a Pod, the token names it.
    c.create_pod(
        &ns,
        "client-0",
        "client",
        &[("app", "client")],
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 21)),
    );
    let bound = c.create_token(&ns, "client", "switchyard", Some("client-0"), HOUR);
    let status = token_review(c, &bound, Some(&["switchyard"]));
    assert_eq!(status["authenticated"], true, "{status}");
    assert_eq!(
        status["user"]["extra"]["authentication.kubernetes.io/pod-name"],
        json!(["client-0"]),
        "{status}"
    );

    // A kubeconfig with the account's token acts as the account, with none of its rights.
    let api = c.create_token(
        &ns,
        "client",
        "https://kubernetes.default.svc.cluster.local",
        None,
        HOUR,
    );
    let kubeconfig = c.dir().join(format!("{ns}.kubeconfig"));
    c.kubeconfig_for_token(&api, &kubeconfig);
    let whoami = c
        .kubectl_as(&kubeconfig)
        .args(["auth", "whoami", "-o", "json"])
        .output()
        .unwrap();
    assert!(
        whoami.status.success(),
        "{}",
        String::from_utf8_lossy(&whoami.stderr)
    );
    let whoami: Value = serde_json::from_slice(&whoami.stdout).unwrap();
    assert_eq!(whoami["status"]["userInfo"]["username"], subject.as_str());
    let pods = c
        .kubectl_as(&kubeconfig)
        .args(["get", "pods", "-n", &ns])
        .output()
        .unwrap();
    assert!(!pods.status.success());
    assert!(String::from_utf8_lossy(&pods.stderr).contains("forbidden"));
}

/// A one-rule validating webhook on `addr` (TLS 1.3, certificate for `server_name`) that
/// denies every request with `message`; returns how many reviews it answered so far.
fn deny_webhook(
    listener: TcpListener,
    server_name: &str,
    message: &'static str,
) -> (String, Arc<AtomicUsize>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![server_name.to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    let config = Arc::new(config);
    let answered = Arc::new(AtomicUsize::new(0));
    let count = answered.clone();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(tcp) = conn else { continue };
            let (config, count) = (config.clone(), count.clone());
            thread::spawn(move || {
                let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
                let Ok(server) = rustls::ServerConnection::new(config) else {
                    return;
                };
                let mut tls = rustls::StreamOwned::new(server, tcp);
                let Some(review) = read_http_json(&mut tls) else {
                    return;
                };
                let answer = json!({
                    "apiVersion": "admission.k8s.io/v1",
                    "kind": "AdmissionReview",
                    "response": {
                        "uid": review["request"]["uid"],
                        "allowed": false,
                        "status": {"code": 403, "message": message},
                    },
                })
                .to_string();
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                    answer.len()
                );
                if tls
                    .write_all(response.as_bytes())
                    .and_then(|()| tls.flush())
                    .is_ok()
                {
                    count.fetch_add(1, Ordering::SeqCst);
                }
                tls.conn.send_close_notify();
                let _ = tls.flush();
            });
        }
    });
    (cert.pem(), answered)
}

/// The JSON body of one HTTP/1.1 request with a `content-length`.
fn read_http_json(stream: &mut impl Read) -> Option<Value> {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).ok()?;
        raw.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&raw);
    let length: usize = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse().ok())?
    })?;
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).ok()?;
    serde_json::from_slice(&body).ok()
}

#[test]
fn loopback_addresses_where_the_api_server_takes_them() {
    let c = cluster();
    let ns = c.namespace("loopback");
    let loopback = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 31));

    // Pod status: a loopback podIP is accepted, as written by `set_pod_ip`…
    c.create_service_account(&ns, "web");
    c.create_pod(&ns, "web-0", "web", &[("app", "web")], loopback);
    let pod = c.get_json(&["pod", "web-0", "-n", &ns]);
    assert_eq!(pod["status"]["podIP"], "127.0.0.31", "{pod}");
    assert_eq!(pod["status"]["podIPs"], json!([{"ip": "127.0.0.31"}]));
    assert_eq!(pod["status"]["phase"], "Running");
    let ready = pod["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["type"] == "Ready" && c["status"] == "True");
    assert!(ready, "{pod}");
    // …and by `apply_yaml` from a manifest that carries it (the create itself drops status).
    c.apply_yaml(
        &ns,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web-1, labels: {app: web}}\nspec: {serviceAccountName: web, containers: [{name: app, image: pause}]}\nstatus: {podIP: 127.0.0.32}\n",
    );
    assert_eq!(
        c.get_json(&["pod", "web-1", "-n", &ns])["status"]["podIP"],
        "127.0.0.32"
    );
    c.set_pod_ip(&ns, "web-1", IpAddr::V6(std::net::Ipv6Addr::LOCALHOST));
    assert_eq!(
        c.get_json(&["pod", "web-1", "-n", &ns])["status"]["podIP"],
        "::1"
    );

    // EndpointSlices: IPv4 and IPv6 slices refuse loopback addresses…
    c.create_service(&ns, "web", &[("https", 443, 9443)], &[("app", "web")]);
    let svc = c.get_json(&["service", "web", "-n", &ns]);
    assert!(
        svc["spec"]["clusterIP"]
            .as_str()
            .unwrap()
            .starts_with("10.96."),
        "{svc}"
    );
    for (family, address) in [("IPv4", "127.0.0.31"), ("IPv6", "::1")] {
        let slice = json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": format!("web-{}", family.to_lowercase()), "namespace": ns.name(),
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": family,
            "ports": [{"name": "https", "port": 9443}],
            "endpoints": [{"addresses": [address], "conditions": {"ready": true}}],
        });
        let out = c.kubectl_stdin(&["create", "-f", "-"], &slice.to_string());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{family} slice with {address} was accepted"
        );
        assert!(
            stderr.contains("may not be in the loopback range"),
            "{stderr}"
        );
    }
    // …so is the deprecated v1 Endpoints.
    let endpoints = json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "web", "namespace": ns.name()},
        "subsets": [{"addresses": [{"ip": "127.0.0.31"}], "ports": [{"name": "https", "port": 9443}]}],
    });
    let out = c.kubectl_stdin(&["create", "-f", "-"], &endpoints.to_string());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("may not be in the loopback range"));

    // An FQDN slice takes `127.0.0.x` as a name, and the API server's service resolver
    // (aggregator routing) dials it: a webhook named by Service reaches a loopback server.
    let listener = TcpListener::bind((Ipv4Addr::new(127, 0, 0, 33), 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    let (ca, answered) = deny_webhook(
        listener,
        &format!("web.{ns}.svc"),
        "denied by the loopback webhook",
    );
    c.apply_endpoint_slice(
        &ns,
        "web",
        ("https", addr.port()),
        &[(addr.ip(), Some("web-0"))],
    );
    let slice = c.get_json(&["endpointslice", "web-e2e", "-n", &ns]);
    assert_eq!(slice["addressType"], "FQDN");
    assert_eq!(slice["endpoints"][0]["addresses"], json!(["127.0.0.33"]));
    let webhook_name = format!("{ns}-loopback");
    let webhook = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": webhook_name},
        "webhooks": [{
            "name": "loopback.e2e.switchyard.dev",
            "clientConfig": {
                "service": {"namespace": ns.name(), "name": "web", "port": 443},
                "caBundle": base64(ca.as_bytes()),
            },
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["configmaps"]}],
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns.name()}},
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 5,
        }],
    });
    c.kubectl_stdin_ok(&["create", "-f", "-"], &webhook.to_string());
    // The API server picks the configuration up from its informer, within about a second.
    let deadline = Instant::now() + Duration::from_secs(20);
    let stderr = loop {
        let out = c
            .kubectl()
            .args(["create", "configmap", "probe", "-n", &ns])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.success() {
            c.kubectl_ok(&["delete", "configmap", "probe", "-n", &ns]);
        } else if stderr.contains("denied by the loopback webhook") || Instant::now() > deadline {
            break stderr;
        }
        assert!(Instant::now() < deadline, "the webhook never took effect");
        thread::sleep(Duration::from_millis(200));
    };
    c.kubectl_ok(&["delete", "validatingwebhookconfiguration", &webhook_name]);
    assert!(
        stderr.contains("denied by the loopback webhook"),
        "{stderr}"
    );
    assert!(answered.load(Ordering::SeqCst) >= 1);
}
