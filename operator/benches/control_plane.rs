//! Control-plane benchmarks: full mesh compile, recompute after one weight change, ADS fan-out.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "benchmark harness"
)]

use std::{
    collections::BTreeMap,
    hint::black_box,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use criterion::Criterion;
use envoy_types::pb::envoy::{
    config::core::v3::Node,
    service::discovery::v3::{
        DeltaDiscoveryRequest,
        aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
    },
};
use serde_json::json;
use switchyard::{
    index::{Index, Object},
    xds::{
        auth::StaticTokens,
        server::{XdsConfig, XdsServer, serve_listener},
        snapshot::{Snapshot, TypeUrl, VersionedResource},
        store::{ProxyKey, SnapshotStore},
    },
};
use switchyard_adapters::{
    envoy::{EnvoyAdapter, EnvoyOptions},
    model::{MeshSettings, ProxyId},
};
use switchyard_crds::{Kind, VersionedObject};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt},
    sync::mpsc,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, transport::Channel};

// === Mesh generation (deterministic) ===

/// Services per namespace; services `i` live in namespace `ns-{i / PER_NS}`.
const PER_NS: usize = 100;

struct MeshSize {
    services: usize,
    endpoints_per_service: usize,
    /// Per namespace; roots at local offsets 0, 3, 6, ... with backends the next two services.
    splits_per_ns: usize,
    /// Per namespace.
    targets_per_ns: usize,
}

const FULL: MeshSize = MeshSize {
    services: 10_000,
    endpoints_per_service: 5,
    splits_per_ns: 20,
    targets_per_ns: 50,
};

fn ns(i: usize) -> String {
    format!("ns-{}", i / PER_NS)
}

fn service(i: usize) -> Object {
    Object::Service(Box::new(
        serde_json::from_value(json!({
            "metadata": {"name": format!("svc-{i}"), "namespace": ns(i)},
            "spec": {
                "selector": {"app": format!("svc-{i}")},
                "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
            },
        }))
        .unwrap(),
    ))
}

fn slice(i: usize, n: usize) -> Object {
    let endpoints: Vec<_> = (0..n)
        .map(|j| {
            let e = i * n + j;
            let ip = format!("10.{}.{}.{}", (e >> 16) & 255, (e >> 8) & 255, e & 255);
            json!({"addresses": [ip], "conditions": {"ready": true},
                   "targetRef": {"kind": "Pod", "name": format!("svc-{i}-{j}")}})
        })
        .collect();
    Object::EndpointSlice(Box::new(
        serde_json::from_value(json!({
            "metadata": {"name": format!("svc-{i}-abc"), "namespace": ns(i),
                         "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": endpoints,
        }))
        .unwrap(),
    ))
}

fn client_pod(n: usize) -> Object {
    Object::Pod(Box::new(
        serde_json::from_value(json!({
            "metadata": {"name": "client-0", "namespace": format!("ns-{n}"), "labels": {"app": "client"}},
            "spec": {"serviceAccountName": "client", "containers": [{"name": "app"}]},
            "status": {"podIP": format!("10.255.{}.{}", n >> 8, n & 255)},
        }))
        .unwrap(),
    ))
}

fn smi(yaml: &str) -> Object {
    let doc: serde_json::Value = serde_yaml::from_str(yaml).unwrap();
    let api_version = doc["apiVersion"].as_str().unwrap().to_string();
    let (group, version) = api_version.split_once('/').unwrap();
    let kind = Kind::from_group_kind(group, doc["kind"].as_str().unwrap()).unwrap();
    Object::Smi(Box::new(
        VersionedObject::from_json(kind, version, doc)
            .unwrap()
            .into_canonical(),
    ))
}

/// The split rooted at service `root`, to `root + 1` and `root + 2` with weights `w` and `100 - w`.
fn split(root: usize, w: u32) -> Object {
    smi(&format!(
        "apiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\nmetadata: {{name: split-{root}, namespace: {}}}\nspec:\n  service: svc-{root}\n  backends: [{{service: svc-{}, weight: {w}}}, {{service: svc-{}, weight: {}}}]\n",
        ns(root),
        root + 1,
        root + 2,
        100 - w
    ))
}

fn route_group(n: usize) -> Object {
    smi(&format!(
        "apiVersion: specs.smi-spec.io/v1alpha4\nkind: HTTPRouteGroup\nmetadata: {{name: routes, namespace: ns-{n}}}\nspec:\n  matches:\n  - {{name: api, pathRegex: '/api/.*', methods: [GET]}}\n  - {{name: admin, pathRegex: '/admin'}}\n"
    ))
}

fn target(n: usize, k: usize) -> Object {
    smi(&format!(
        "apiVersion: access.smi-spec.io/v1alpha3\nkind: TrafficTarget\nmetadata: {{name: tt-{k}, namespace: ns-{n}}}\nspec:\n  destination: {{kind: ServiceAccount, name: sa-{k}, namespace: ns-{n}}}\n  rules: [{{kind: HTTPRouteGroup, name: routes, matches: [api]}}]\n  sources: [{{kind: ServiceAccount, name: client, namespace: ns-{n}}}]\n"
    ))
}

/// Every input object of a mesh, in apply order (services and slices, then pods, then SMI).
fn mesh_objects(size: &MeshSize) -> Vec<Object> {
    let namespaces = size.services.div_ceil(PER_NS);
    let mut objects = Vec::new();
    for i in 0..size.services {
        objects.push(service(i));
        objects.push(slice(i, size.endpoints_per_service));
    }
    for n in 0..namespaces {
        objects.push(client_pod(n));
        objects.push(route_group(n));
        for s in 0..size.splits_per_ns {
            let root = n * PER_NS + 3 * s;
            if root + 2 < size.services.min((n + 1) * PER_NS) {
                objects.push(split(root, 50));
            }
        }
        for k in 0..size.targets_per_ns {
            objects.push(target(n, k));
        }
    }
    objects
}

fn settings() -> MeshSettings {
    MeshSettings::default()
}

fn proxy0() -> ProxyId {
    ProxyId {
        namespace: "ns-0".into(),
        pod: "client-0".into(),
    }
}

fn options() -> EnvoyOptions {
    EnvoyOptions::default()
}

/// Index build from scratch plus one proxy's Envoy compile; returns the resource count.
/// `bulk`: one `apply_all` (an initial list); otherwise one `apply` per object (watch events).
fn full_compile(objects: Vec<Object>, bulk: bool) -> (Index, EnvoyAdapter, usize) {
    let mut index = Index::new(settings());
    if bulk {
        index.apply_all(objects);
    } else {
        for obj in objects {
            index.apply(obj);
        }
    }
    let _ = index.take_changes();
    let cfg = index.proxy_config(&proxy0()).expect("client-0");
    let mut adapter = EnvoyAdapter::new();
    let n = adapter
        .compile(&cfg, &settings(), &options())
        .resources
        .len();
    (index, adapter, n)
}

/// One weight change: apply, take the changes, recompile one proxy (sharing unchanged
/// resources, as the xDS server does). Returns the resource count and the time of each phase.
fn recompute(index: &mut Index, adapter: &mut EnvoyAdapter, w: u32) -> (usize, [Duration; 3]) {
    let t0 = Instant::now();
    index.apply(split(0, w));
    let changes = index.take_changes();
    assert!(changes.outbound, "a weight change changes outbound config");
    let t1 = Instant::now();
    let cfg = index.proxy_config(&proxy0()).expect("client-0");
    let t2 = Instant::now();
    let n = adapter
        .compile_shared(&cfg, &settings(), &options())
        .resources
        .len();
    let t3 = Instant::now();
    (n, [t1 - t0, t2 - t1, t3 - t2])
}

// === Timing records, for ratios within one run ===

static RECORDS: Mutex<BTreeMap<&'static str, Vec<f64>>> = Mutex::new(BTreeMap::new());

fn record(name: &'static str, per_iter: Duration) {
    RECORDS
        .lock()
        .unwrap()
        .entry(name)
        .or_default()
        .push(per_iter.as_secs_f64());
}

fn median(name: &str) -> f64 {
    let mut v = RECORDS
        .lock()
        .unwrap()
        .get(name)
        .cloned()
        .unwrap_or_default();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

fn ms(s: f64) -> String {
    format!("{:.3} ms", s * 1e3)
}

// === Criterion benches: compile ===

fn compile_benches(c: &mut Criterion) {
    let objects = mesh_objects(&FULL);
    let (mut index, mut adapter, resources) = full_compile(objects.clone(), false);
    println!(
        "mesh: {} services, {} endpoints, {} input objects; one proxy gets {} Envoy resources",
        FULL.services,
        FULL.services * FULL.endpoints_per_service,
        objects.len(),
        resources
    );

    let mut g = c.benchmark_group("compile");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8));

    // Baseline: merely clone and walk the input objects.
    g.bench_function("baseline_clone_inputs", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let copy = objects.clone();
                black_box(copy.iter().filter(|o| matches!(o, Object::Smi(_))).count());
                drop(black_box(copy));
            }
            let t = start.elapsed();
            record("baseline", t / iters as u32);
            t
        })
    });

    for (name, key, bulk) in [
        (
            "full_index_plus_one_proxy/one_apply_per_object",
            "full",
            false,
        ),
        ("full_index_plus_one_proxy/apply_all", "full_bulk", true),
    ] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let input = objects.clone();
                    let start = Instant::now();
                    let out = full_compile(input, bulk);
                    total += start.elapsed();
                    drop(black_box(out));
                }
                record(key, total / iters as u32);
                total
            })
        });
    }

    let mut w = 50;
    let mut phases = [Duration::ZERO; 3];
    let mut runs = 0u32;
    g.bench_function("recompute_after_one_weight_change", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                w = if w == 50 { 60 } else { 50 };
                let (n, p) = recompute(&mut index, &mut adapter, w);
                black_box(n);
                for (sum, d) in phases.iter_mut().zip(p) {
                    *sum += d;
                }
                runs += 1;
            }
            let t = start.elapsed();
            record("recompute", t / iters as u32);
            t
        })
    });
    g.finish();
    let [apply, config, compile] = phases.map(|d| d.as_secs_f64() / f64::from(runs.max(1)));

    let (base, full, bulk, re) = (
        median("baseline"),
        median("full"),
        median("full_bulk"),
        median("recompute"),
    );
    println!("\n=== compile (medians of criterion samples, this run) ===");
    println!("baseline clone+walk inputs : {}", ms(base));
    for (what, t) in [("one apply per object", full), ("one apply_all", bulk)] {
        println!(
            "full compile (index + 1 proxy), {what} : {}  = {:.1}x baseline  [target < 1 s: {}]",
            ms(t),
            t / base,
            if t < 1.0 { "met" } else { "NOT met" }
        );
    }
    println!(
        "recompute after 1 weight change : {}  = {:.4}x full ({:.1}x faster), {:.2}x baseline  [target < 10 ms: {}]",
        ms(re),
        re / full,
        full / re,
        re / base,
        if re < 0.010 { "met" } else { "NOT met" }
    );
    println!(
        "  of which (means): index apply {}, proxy config {}, Envoy compile (shared) {}",
        ms(apply),
        ms(config),
        ms(compile)
    );
}

// === Fan-out over real gRPC (plain timed function) ===

const PROXIES: usize = 1_000;
const STREAMS_PER_CHANNEL: usize = 50;
const ROUNDS: usize = 20;
/// A small mesh: 50 services in one namespace, so every proxy gets ~50 clusters.
const SMALL: MeshSize = MeshSize {
    services: 50,
    endpoints_per_service: 5,
    splits_per_ns: 5,
    targets_per_ns: 5,
};

/// Compiles the small mesh's proxy into one shared snapshot.
fn small_snapshot(index: &Index, adapter: &mut EnvoyAdapter) -> Arc<Snapshot> {
    let cfg = index.proxy_config(&proxy0()).expect("client-0");
    let out = adapter.compile(&cfg, &settings(), &options());
    let mut builder = Snapshot::builder();
    for r in out.resources {
        let t = TypeUrl::from_type_url(r.type_url).expect("known type");
        builder
            .add_shared(VersionedResource::new(t, r.name, r.resource, r.references).unwrap())
            .unwrap();
    }
    Arc::new(builder.build())
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn delta(type_url: TypeUrl, id: &str, subscribe: &[String], nonce: &str) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        node: Some(Node {
            id: id.to_string(),
            cluster: "bench".to_string(),
            ..Default::default()
        }),
        type_url: type_url.type_url().to_string(),
        resource_names_subscribe: subscribe.to_vec(),
        response_nonce: nonce.to_string(),
        ..Default::default()
    }
}

/// What the client process reports, one line each on stdout.
enum Event {
    Synced,
    /// A route push ACKed, at this wall-clock time (comparable across the two processes).
    Ack(SystemTime),
}

impl Event {
    fn line(&self) -> String {
        match self {
            Event::Synced => "synced".into(),
            Event::Ack(at) => format!(
                "ack {}",
                at.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos()
            ),
        }
    }

    fn parse(line: &str) -> Option<Event> {
        match line.split_once(' ') {
            None if line == "synced" => Some(Event::Synced),
            Some(("ack", nanos)) => Some(Event::Ack(
                UNIX_EPOCH + Duration::from_nanos(nanos.parse().ok()?),
            )),
            _ => None,
        }
    }
}

/// One fake delta client: subscribes to every type in the snapshot, ACKs every response, and
/// reports its first full sync and every later route push.
async fn fake_proxy(
    channel: Channel,
    i: usize,
    subs: Arc<Vec<(TypeUrl, Vec<String>)>>,
    events: mpsc::UnboundedSender<Event>,
) {
    let id = format!("p-{i}");
    let (tx, rx) = mpsc::channel(16);
    for (t, names) in subs.iter() {
        tx.send(delta(*t, &id, names, "")).await.unwrap();
    }
    let mut req = Request::new(ReceiverStream::new(rx));
    req.metadata_mut()
        .insert("authorization", format!("Bearer tok-{i}").parse().unwrap());
    let mut responses = AggregatedDiscoveryServiceClient::new(channel)
        .delta_aggregated_resources(req)
        .await
        .expect("stream opens")
        .into_inner();
    let mut seen = vec![false; subs.len()];
    let mut synced = false;
    while let Ok(Some(r)) = responses.message().await {
        let t = TypeUrl::from_type_url(&r.type_url).expect("known type");
        if tx.send(delta(t, &id, &[], &r.nonce)).await.is_err() {
            return;
        }
        let at = SystemTime::now();
        if synced {
            if t == TypeUrl::RouteConfiguration {
                let _ = events.send(Event::Ack(at));
            }
        } else {
            if let Some(k) = subs.iter().position(|(s, _)| *s == t) {
                seen[k] = true;
            }
            if seen.iter().all(|s| *s) {
                synced = true;
                let _ = events.send(Event::Synced);
            }
        }
    }
}

/// The small mesh's index and its shared snapshot.
fn small_mesh() -> (Index, EnvoyAdapter, Arc<Snapshot>) {
    let mut index = Index::new(settings());
    index.apply_all(mesh_objects(&SMALL));
    let _ = index.take_changes();
    let mut adapter = EnvoyAdapter::new();
    let snapshot = small_snapshot(&index, &mut adapter);
    (index, adapter, snapshot)
}

/// What every client subscribes to: each type, by name for EDS and RDS.
fn subscriptions(snapshot: &Snapshot) -> Vec<(TypeUrl, Vec<String>)> {
    TypeUrl::ALL
        .into_iter()
        .filter(|t| !snapshot.resources(*t).is_empty())
        .map(|t| {
            let names = match t {
                TypeUrl::Cluster | TypeUrl::Listener => Vec::new(),
                _ => snapshot
                    .resources(t)
                    .iter()
                    .map(|r| r.name().to_string())
                    .collect(),
            };
            (t, names)
        })
        .collect()
}

const CLIENTS_ENV: &str = "SWITCHYARD_BENCH_CLIENTS";

/// The client process: `PROXIES` delta streams to the server at `addr`, events on stdout.
async fn clients(addr: String) {
    let (_, _, snapshot) = small_mesh();
    let subs = Arc::new(subscriptions(&snapshot));
    let mut channels = Vec::new();
    for _ in 0..PROXIES.div_ceil(STREAMS_PER_CHANNEL) {
        channels.push(
            Channel::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
                .unwrap(),
        );
    }
    let (events_tx, mut events) = mpsc::unbounded_channel();
    for i in 0..PROXIES {
        tokio::spawn(fake_proxy(
            channels[i / STREAMS_PER_CHANNEL].clone(),
            i,
            subs.clone(),
            events_tx.clone(),
        ));
    }
    drop(events_tx);
    let mut out = tokio::io::stdout();
    while let Some(e) = events.recv().await {
        let line = format!("{}\n", e.line());
        if out.write_all(line.as_bytes()).await.is_err() {
            return;
        }
        let _ = out.flush().await;
    }
}

async fn fan_out() {
    // Server side, in this process: the small mesh, compiled once and shared by every proxy.
    let (mut index, mut adapter, snapshot) = small_mesh();
    let clusters = snapshot.resources(TypeUrl::Cluster).len();
    let resources: usize = subscriptions(&snapshot)
        .iter()
        .map(|(t, _)| snapshot.resources(*t).len())
        .sum();

    let store = SnapshotStore::new();
    let mut auth = StaticTokens::new();
    let keys: Vec<ProxyKey> = (0..PROXIES)
        .map(|i| ProxyKey::from(format!("ns-0/p-{i}").as_str()))
        .collect();
    for (i, key) in keys.iter().enumerate() {
        auth.insert(format!("tok-{i}"), key.clone());
        store.set(key.clone(), snapshot.clone());
    }
    let config = XdsConfig::default();
    let debounce = config.debounce;
    let server = XdsServer::new(store.clone(), Arc::new(auth), config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(serve_listener(listener, server, async {
        let _ = stopped.await;
    }));

    // The clients run in a child process, so this process's RSS is the server's alone.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_before = rss_bytes();
    let connect_start = Instant::now();
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .env(CLIENTS_ENV, addr.to_string())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("client process starts");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = async || -> Event {
        match tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await {
            Ok(Ok(Some(line))) => Event::parse(&line).expect("a client event"),
            other => panic!("client process: {other:?}"),
        }
    };
    let mut synced = 0;
    while synced < PROXIES {
        if let Event::Synced = next().await {
            synced += 1;
        }
    }
    let connect_time = connect_start.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = rss_bytes();

    // Weight changes: apply, recompile, republish for every key; wait for every ACK.
    let mut last_ack = Vec::new();
    let mut per_proxy = Vec::new();
    for r in 1..=ROUNDS {
        let start = SystemTime::now();
        index.apply(split(0, if r % 2 == 1 { 70 } else { 50 }));
        let _ = index.take_changes();
        let snapshot = small_snapshot(&index, &mut adapter);
        for key in &keys {
            store.set(key.clone(), snapshot.clone());
        }
        // Every proxy gets one route push per change; its ACK ends the round for it.
        let mut last = Duration::ZERO;
        for _ in 0..PROXIES {
            let Event::Ack(at) = next().await else {
                panic!("round {r}: a sync event instead of an ACK");
            };
            let d = at.duration_since(start).unwrap_or_default();
            last = last.max(d);
            per_proxy.push(d.as_secs_f64());
        }
        last_ack.push(last.as_secs_f64());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut sorted = last_ack.clone();
    println!(
        "\n=== fan-out: {PROXIES} delta ADS streams over {} loopback HTTP/2 connections from a client process, {clusters} clusters / {resources} resources per proxy, server debounce {} ms ===",
        PROXIES.div_ceil(STREAMS_PER_CHANNEL),
        debounce.as_millis()
    );
    println!(
        "initial connect + full sync of all proxies: {}",
        ms(connect_time.as_secs_f64())
    );
    let p50 = percentile(&mut sorted, 0.50);
    let p99 = percentile(&mut sorted, 0.99);
    println!(
        "weight change -> last ACK, over {ROUNDS} rounds: p50 {}  p99 {}  [target p99 < 1 s: {}]",
        ms(p50),
        ms(p99),
        if p99 < 1.0 { "met" } else { "NOT met" }
    );
    println!(
        "  ratio p99 / debounce floor: {:.2}x",
        p99 / debounce.as_secs_f64()
    );
    println!(
        "weight change -> one proxy's ACK, all {} samples: p50 {}  p99 {}",
        per_proxy.len(),
        ms(percentile(&mut per_proxy, 0.50)),
        ms(percentile(&mut per_proxy, 0.99))
    );
    let per = rss_after.saturating_sub(rss_before) as f64 / PROXIES as f64;
    println!(
        "server RSS {:.1} MB -> {:.1} MB with {PROXIES} streams: {:.1} KB per proxy [target < 100 KB: {}]",
        rss_before as f64 / 1e6,
        rss_after as f64 / 1e6,
        per / 1e3,
        if per < 100e3 { "met" } else { "NOT met" }
    );

    let _ = child.kill().await;
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), serving).await;
}

fn main() {
    if let Ok(addr) = std::env::var(CLIENTS_ENV) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(clients(addr));
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    compile_benches(&mut c);
    c.final_summary();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(fan_out());
}
