//! Tap end to end on the suite's data plane: `switchyard tap` shows each request of a known
//! sequence through a meshed Pod, in order, with method, path, status, identities and bytes;
//! never a header's value; only what its filter asks for; past its rate the proxy logs nothing
//! (the rate holds in the proxy, not only in the control plane); once it ends, the proxy's
//! configuration loses the access log within a second; and after tap cycles under load the
//! proxy's memory is back at its untapped level.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    io::{BufRead, BufReader},
    net::Ipv4Addr,
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use switchyard::tap::{Direction, TapEvent};
use switchyard_adapters::envoy::TAP_LOG_NAME;
use switchyard_e2e::{
    mesh::{
        Backend, DataPlane, Mesh, Sidecar, http_request, meshed_http_service, meshed_web, pod,
        wait_for,
    },
    switchyard_bin,
};

/// A running `switchyard tap … -o json` and the events it printed.
struct Tap {
    child: Child,
    events: mpsc::Receiver<String>,
}

impl Tap {
    fn start(mesh: &Mesh, args: &[&str]) -> Tap {
        let mut child = Command::new(switchyard_bin())
            .arg("tap")
            .args(args)
            .args(["-n", "demo", "-o", "json", "--duration", "60s", "--admin"])
            .arg(mesh.admin.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, events) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Tap { child, events }
    }

    /// The next event within `within`.
    fn next(&self, within: Duration) -> Option<(String, TapEvent)> {
        let line = self.events.recv_timeout(within).ok()?;
        let event = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        Some((line, event))
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `method path` to web through the client's sidecar, with `headers` and `body`; the status.
fn call(client: &Sidecar, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> u16 {
    http_request(client.outbound(), method, "web.demo", path, headers, body).map_or(0, |r| r.status)
}

/// Until the tap shows a request (the client's sidecar may still be starting).
fn warm_up(tap: &Tap, client: &Sidecar) {
    wait_for(
        Duration::from_secs(20),
        || {
            call(client, "GET", "/warm-up", &[], "");
            tap.next(Duration::from_millis(1_500)).is_some()
        },
        "the tap to show a request",
    );
    // Whatever else the warm-up sent.
    while tap.next(Duration::from_millis(1_000)).is_some() {}
}

/// Whether `sidecar`'s proxy has applied listeners, and whether they have the tap's access log,
/// per the proxy's own `/config_dump` (Envoy: its active listeners, not warming ones).
fn applied_access_log(sidecar: &Sidecar) -> Option<bool> {
    let dump: serde_json::Value =
        serde_json::from_str(&sidecar.admin_get("/config_dump").ok()?.body).ok()?;
    let listeners = match sidecar.data_plane {
        DataPlane::Envoy => dump["configs"]
            .as_array()?
            .iter()
            .flat_map(|c| c["dynamic_listeners"].as_array().into_iter().flatten())
            .map(|l| l["active_state"].to_string())
            .filter(|l| l != "null")
            .collect::<Vec<_>>(),
        DataPlane::Bundled => dump["listeners"]
            .as_array()?
            .iter()
            .map(ToString::to_string)
            .collect(),
    };
    (!listeners.is_empty()).then(|| listeners.iter().any(|l| l.contains(TAP_LOG_NAME)))
}

/// Whether `pod`'s proxy has the tap's access log in its listeners, per `switchyard proxy-config`.
fn has_access_log(mesh: &Mesh, pod: &str) -> bool {
    let out = Command::new(switchyard_bin())
        .args([
            "proxy-config",
            pod,
            "-n",
            "demo",
            "--type",
            "lds",
            "-o",
            "json",
            "--admin",
        ])
        .arg(mesh.admin.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).contains("envoy.access_loggers.http_grpc")
}

#[test]
fn tap_shows_a_known_sequence_in_order_and_nothing_secret() {
    let ip = |host| Ipv4Addr::new(127, 0, 63, host);
    let web = Backend::http("web");
    let vault = Backend::http("vault");
    // vault-0 opts out of tapping: its proxy is never tapped, whatever a tap selects.
    let vault_yaml = meshed_http_service("vault", "vault-0", ip(3), vault.addr.port());
    let vault_pod = pod("vault-0", "vault", &[("app", "vault")], ip(3)).replace(
        "namespace: demo,",
        "namespace: demo, annotations: {switchyard.dev/tap: disabled},",
    );
    let mut mesh = Mesh::builder(ip(1))
        .file("web.yaml", meshed_web(ip(2), &web))
        .file("vault.yaml", format!("{vault_pod}---\n{vault_yaml}"))
        .start();
    let server = mesh.sidecar("web-0");
    let _vault = mesh.sidecar("vault-0");
    let client = mesh.client();
    wait_for(
        Duration::from_secs(15),
        || applied_access_log(&server).is_some(),
        "web-0's proxy to have its listeners",
    );
    assert_eq!(applied_access_log(&server), Some(false), "untapped");
    assert!(!has_access_log(&mesh, "web-0"), "untapped, no access log");

    // No request reaches web-0 before its proxy has the tap's access log: Envoy gives a
    // listener's new configuration to new connections only (and drains the others, closing each
    // after its next response), so a request on a connection opened before would not be shown.
    let tap = Tap::start(&mesh, &["pod/web-0"]);
    wait_for(
        Duration::from_secs(15),
        || applied_access_log(&server) == Some(true),
        "web-0's proxy to have the tap's access log",
    );
    warm_up(&tap, &client);
    assert!(has_access_log(&mesh, "web-0"));
    assert!(
        !has_access_log(&mesh, "client-0"),
        "only the selected Pod is tapped"
    );

    let secret = "Bearer tap-must-never-show-this";
    let sequence = [
        ("GET", "/one", "", 200),
        ("POST", "/two", "twelve bytes", 200),
        ("GET", "/status/500", "", 500),
        ("GET", "/three", "", 200),
    ];
    for (method, path, body, status) in sequence {
        let headers = [("authorization", secret), ("cookie", "session=tap-secret")];
        assert_eq!(
            call(&client, method, path, &headers, body),
            status,
            "{method} {path}"
        );
    }
    let mut seen = Vec::new();
    while seen.len() < sequence.len() {
        let (line, event) = tap.next(Duration::from_secs(10)).unwrap_or_else(|| {
            panic!(
                "the tap showed only {seen:?}; web-0's access-log stats: {:?} {:?}",
                server.stats("access_logs."),
                server.stats("grpc.tap.")
            )
        });
        assert!(
            !line.contains("tap-must-never-show-this") && !line.contains("tap-secret"),
            "a header's value in the tap: {line}"
        );
        seen.push(event);
    }
    let client_id = "spiffe://cluster.local/ns/demo/sa/client";
    let web_id = "spiffe://cluster.local/ns/demo/sa/web";
    for ((method, path, body, status), event) in sequence.iter().zip(&seen) {
        assert_eq!(
            (
                event.method.as_str(),
                event.path.as_str(),
                event.status,
                event.direction,
                event.proxy.as_str(),
            ),
            (
                *method,
                *path,
                u32::from(*status),
                Direction::Inbound,
                "demo/web-0"
            ),
            "{event:?}"
        );
        assert_eq!(
            event.source_identity.as_deref(),
            Some(client_id),
            "{event:?}"
        );
        assert_eq!(
            event.destination_identity.as_deref(),
            Some(web_id),
            "{event:?}"
        );
        assert!(event.tls(), "{event:?}");
        assert_eq!(event.request_bytes, body.len() as u64, "{event:?}");
        assert!(event.response_bytes > 0, "{event:?}");
        assert!(event.latency_micros > 0, "{event:?}");
    }

    // A second tap that asks for POSTs only, beside the first.
    let posts = Tap::start(&mesh, &["pod/web-0", "--method", "POST"]);
    wait_for(
        Duration::from_secs(20),
        || {
            call(&client, "POST", "/warm-up", &[], "x");
            posts.next(Duration::from_millis(1_500)).is_some()
        },
        "the POST tap to show a request",
    );
    while posts.next(Duration::from_millis(1_000)).is_some() {}
    call(&client, "GET", "/not-a-post", &[], "");
    call(&client, "POST", "/a-post", &[], "y");
    let (_, event) = posts.next(Duration::from_secs(10)).expect("the POST");
    assert_eq!(
        (event.method.as_str(), event.path.as_str()),
        ("POST", "/a-post")
    );
    drop(posts);

    // `switchyard top` over the same stream, while the first tap keeps web-0 tapped.
    let top = Command::new(switchyard_bin())
        .args([
            "top",
            "pod/web-0",
            "-n",
            "demo",
            "--duration",
            "4s",
            "--admin",
        ])
        .arg(mesh.admin.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    thread::sleep(Duration::from_millis(1_000));
    for _ in 0..5 {
        assert_eq!(call(&client, "GET", "/top-a", &[], ""), 200);
    }
    for _ in 0..2 {
        assert_eq!(call(&client, "GET", "/status/500", &[], ""), 500);
    }
    let out = top.wait_with_output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}");
    eprintln!("switchyard top pod/web-0 -n demo:\n{table}");
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        [
            "SOURCE",
            "DESTINATION",
            "METHOD",
            "PATH",
            "COUNT",
            "BEST",
            "WORST",
            "LAST",
            "SUCCESS_RATE"
        ]
    );
    let row = |path: &str| {
        rows.iter()
            .find(|r| r.get(3) == Some(&path))
            .unwrap_or_else(|| panic!("no {path} in\n{table}"))
    };
    assert_eq!(
        row("/top-a")[..5],
        ["demo/sa/client", "demo/web-0", "GET", "/top-a", "5"],
        "{table}"
    );
    assert_eq!(row("/top-a")[8], "100.00%", "{table}");
    let failed = row("/status/500");
    assert_eq!((failed[4], failed[8]), ("2", "0.00%"), "{table}");

    // A tap of the whole namespace taps every proxy in it but the one that opted out.
    let everyone = Tap::start(&mesh, &[]);
    wait_for(
        Duration::from_secs(20),
        || has_access_log(&mesh, "client-0"),
        "the namespace's tap to reach client-0",
    );
    assert!(has_access_log(&mesh, "web-0"));
    assert!(!has_access_log(&mesh, "vault-0"), "vault-0 opted out");
    drop(everyone);

    // Cancelled: the control plane notices at its next heartbeat (500 ms) and untaps the proxy
    // within the second.
    drop(tap);
    let cancelled = Instant::now();
    wait_for(
        Duration::from_secs(1),
        || !has_access_log(&mesh, "web-0"),
        "web-0's access log to go once no tap selects it",
    );
    eprintln!("untapped {:?} after the tap ended", cancelled.elapsed());

    // A tap's rate holds in the proxy: past it, requests are not even logged, so a busy proxy
    // does the work of what its taps can show, not of what it serves.
    let slow = Tap::start(&mesh, &["pod/web-0", "--max-rps", "2"]);
    wait_for(
        Duration::from_secs(15),
        || applied_access_log(&server) == Some(true),
        "web-0's proxy to have the rate-limited access log",
    );
    warm_up(&slow, &client);
    let written = || server.stats("access_logs.grpc_access_log.")["logs_written"];
    let before = written();
    let burst = Instant::now();
    for i in 0..BURST {
        assert_eq!(call(&client, "GET", &format!("/burst/{i}"), &[], ""), 200);
    }
    let elapsed = burst.elapsed();
    // The bucket holds 2 tokens and gets one every 500 ms.
    let allowed = 2 + (elapsed.as_millis() / 500) as u64 + 1;
    let mut shown = 0;
    while slow.next(Duration::from_millis(1_500)).is_some() {
        shown += 1;
    }
    let logged = written() - before;
    eprintln!(
        "rate-limited tap: {BURST} requests in {elapsed:?}, web-0's proxy logged {logged}, the tap showed {shown}"
    );
    assert!(
        (1..=allowed).contains(&logged),
        "{logged} of {BURST} requests logged in {elapsed:?} at 2 a second (at most {allowed})"
    );
    assert!(
        shown >= 1 && shown as u64 <= logged,
        "{shown} shown, {logged} logged"
    );
    drop(slow);
    wait_for(
        Duration::from_secs(15),
        || applied_access_log(&server) == Some(false),
        "web-0's proxy to lose the rate-limited access log",
    );

    // A tap that shows only some requests holds its rate in the proxy as well, on a bucket of
    // its own that requests it does not show never draw on: the proxy logs its matches only,
    // at most at its rate, however many other requests it serves.
    let matching = Tap::start(&mesh, &["pod/web-0", "--path", "/match/", "--max-rps", "3"]);
    wait_for(
        Duration::from_secs(15),
        || applied_access_log(&server) == Some(true),
        "web-0's proxy to have the matching tap's access log",
    );
    wait_for(
        Duration::from_secs(20),
        || {
            call(&client, "GET", "/match/warm-up", &[], "");
            matching.next(Duration::from_millis(1_500)).is_some()
        },
        "the matching tap to show a request",
    );
    while matching.next(Duration::from_millis(1_000)).is_some() {}
    let before = written();
    let burst = Instant::now();
    for i in 0..BURST {
        assert_eq!(call(&client, "GET", &format!("/other/{i}"), &[], ""), 200);
        assert_eq!(call(&client, "GET", &format!("/match/{i}"), &[], ""), 200);
    }
    let elapsed = burst.elapsed();
    // Its bucket holds 3 tokens and gets one every 333 ms (3 every second).
    let allowed = 3 + (elapsed.as_millis() * 3 / 1_000) as u64 + 1;
    let mut shown = Vec::new();
    while let Some((_, event)) = matching.next(Duration::from_millis(1_500)) {
        shown.push(event.path);
    }
    let logged = written() - before;
    eprintln!(
        "matching tap: {} requests ({BURST} matching) in {elapsed:?}, web-0's proxy logged {logged}, the tap showed {shown:?}",
        2 * BURST
    );
    assert!(
        (1..=allowed).contains(&logged),
        "{logged} of {} requests logged in {elapsed:?}, {BURST} of them matching, at 3 a second (at most {allowed})",
        2 * BURST
    );
    assert!(
        !shown.is_empty()
            && shown.len() as u64 <= logged
            && shown.iter().all(|p| p.starts_with("/match/")),
        "{shown:?} shown, {logged} logged"
    );
    drop(matching);
    wait_for(
        Duration::from_secs(15),
        || applied_access_log(&server) == Some(false),
        "web-0's proxy to lose the matching tap's access log",
    );

    // The proxy's memory over tap cycles (tapped under load, then untapped): after each it is
    // back at its untapped level.
    let pid = mesh.sidecar_pid("web-0").expect("web-0's proxy");
    let memory = || memory_kib(&server, pid);
    let load = |n: usize| {
        for i in 0..n {
            assert_eq!(call(&client, "GET", &format!("/load/{i}"), &[], ""), 200);
        }
    };
    load(LOAD);
    thread::sleep(SETTLE);
    let idle = memory();
    for cycle in 1..=CYCLES {
        let tap = Tap::start(&mesh, &["pod/web-0", "--max-rps", "1000"]);
        wait_for(
            Duration::from_secs(15),
            || applied_access_log(&server) == Some(true),
            "web-0's proxy to have the tap's access log again",
        );
        warm_up(&tap, &client);
        load(LOAD);
        let tapped = memory();
        let mut shown = 0;
        while tap.next(Duration::from_millis(1_000)).is_some() {
            shown += 1;
        }
        drop(tap);
        wait_for(
            Duration::from_secs(15),
            || applied_access_log(&server) == Some(false),
            "web-0's proxy to lose the access log",
        );
        // The drain closes the connections of the tapped chain after their next response.
        load(LOAD);
        thread::sleep(SETTLE);
        let after = memory();
        eprintln!(
            "tap cycle {cycle}: web-0's proxy memory {idle} KiB untapped before any tap, {tapped} KiB tapped ({shown} of {LOAD} requests shown), {after} KiB untapped again (VmRSS {:?} KiB)",
            switchyard_e2e::proc_status_kib(pid, "VmRSS:")
        );
        assert!(
            shown >= LOAD * 9 / 10,
            "{shown} of {LOAD} shown; web-0's proxy's access-log counters since it started: {:?}",
            server.stats("access_logs.grpc_access_log.")
        );
        let slack = match server.data_plane {
            DataPlane::Envoy => ENVOY_SLACK_KIB,
            DataPlane::Bundled => BUNDLED_SLACK_KIB,
        };
        assert!(
            after <= idle + slack,
            "web-0's proxy kept {} KiB after tap cycle {cycle} ({idle} KiB before any tap, {after} KiB after)",
            after.saturating_sub(idle)
        );
    }
}

/// The memory a proxy holds, in KiB. Envoy: `server.memory_allocated`, what tcmalloc has handed
/// out; its RSS also counts pages of its fixed heap that tcmalloc touched once and keeps
/// (measured: RSS up 0.2–0.6 MiB a tap cycle with `memory_allocated` and `memory_heap_size`
/// flat). The bundled proxy: anonymous resident memory, which jemalloc gives back after 1 s.
fn memory_kib(sidecar: &Sidecar, pid: u32) -> u64 {
    match sidecar.data_plane {
        DataPlane::Envoy => sidecar.stats("server.")["memory_allocated"] / 1024,
        DataPlane::Bundled => {
            switchyard_e2e::proc_status_kib(pid, "RssAnon:").expect("the proxy runs")
        }
    }
}

/// Requests per phase of the memory check.
const LOAD: usize = 500;
/// Requests sent at once to a proxy tapped at 2 a second.
const BURST: usize = 40;
/// Tap cycles of the memory check.
const CYCLES: usize = 3;
/// How long a proxy gets to give back freed memory (the bundled proxy's jemalloc returns pages
/// after 1 s).
const SETTLE: Duration = Duration::from_secs(3);
/// What a tap cycle may leave in Envoy's allocator: 2 MiB. Measured: 0.2–0.9 MiB more after
/// each cycle than before any tap, not growing over the cycles (its tap's gRPC client and
/// stats, and buffers of the drained connections).
const ENVOY_SLACK_KIB: u64 = 2_048;
/// What a tap cycle may leave in the bundled proxy: 1 MiB. Measured: 0.03–0.4 MiB.
const BUNDLED_SLACK_KIB: u64 = 1_024;
