//! Access-log streams, as a tapped proxy that controls its bytes sends them, through the tap:
//! entries turned into events, published to a few open sessions with filters and rates, and
//! read back as the admin handler reads a session. Nothing may panic, and: an event says which
//! proxy saw it and which way, keeps its strings within their bounds (cut, never changed) and
//! fits one line a tap's reader takes; the credentials of an entry's headers (`authorization`,
//! `cookie`, `set-cookie`, `proxy-authorization`) change nothing in its event; a filter reads
//! back from its own query; a session gets only the events it selects, never more than its
//! rate allows since it opened nor more than its queue holds, in the order their requests
//! started, and every other is counted as dropped.
//!
//! Input: a mode byte, the sessions' filters, then either the raw bytes of one
//! `StreamAccessLogsMessage`, or real entries (an inbound mTLS request, outbound HTTP and gRPC
//! requests) mutated: paths, authorities, clusters, addresses, certificates, times, headers,
//! and their number.

#![no_main]

use std::{
    collections::HashMap,
    sync::{Arc, LazyLock},
    time::{Duration, Instant},
};

use envoy_types::pb::{
    envoy::{
        config::core::v3::{Address, Pipe, address},
        data::accesslog::v3::{
            HttpAccessLogEntry, TlsProperties,
            tls_properties::{
                CertificateProperties,
                certificate_properties::{SubjectAltName, subject_alt_name::San},
            },
        },
        service::accesslog::v3::{StreamAccessLogsMessage, stream_access_logs_message::LogEntries},
    },
    google::protobuf::{Duration as PbDuration, Timestamp, UInt32Value},
};
use libfuzzer_sys::{
    arbitrary::{Result, Unstructured},
    fuzz_target,
};
use prost::Message;
use switchyard::{
    edges::Peers,
    tap::{
        Direction, Hub, SESSION_QUEUE, Session, TapEvent, TapFilter,
        event::{MAX_FIELD_BYTES, MAX_PATH_BYTES},
        events_of,
        hub::{DEFAULT_MAX_RPS, MAX_RPS},
        stream::{Lines, MAX_LINE_BYTES},
    },
};
use switchyard_adapters::{envoy::inbound_port, model::ProxyId};
use switchyard_fuzz::{
    CANARY, SENSITIVE_HEADERS, access_log_entries, peers, proxies, socket, without_sensitive,
};
use tokio::runtime::Runtime;

struct Fixture {
    peers: Peers,
    entries: Vec<HttpAccessLogEntry>,
    proxies: [ProxyId; 2],
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| Fixture {
    peers: peers(),
    entries: access_log_entries(),
    proxies: proxies(),
});

thread_local! {
    /// Sessions are read on a runtime whose clock is paused: the reorder window passes as soon
    /// as nothing else is left to do.
    static RUNTIME: Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime builds");
}

/// Path pieces: the fixture's, separators, escapes, control and multi-byte characters.
const PIECES: [&str; 12] = [
    "/",
    "/api",
    "/api/books",
    "/healthz",
    "/demo.Books/",
    "?page=2",
    "%2F",
    "..",
    "\u{1}",
    "\"",
    "é",
    "\u{10348}",
];

const CLUSTERS: [&str; 8] = [
    "inbound|8080",
    "inbound|0",
    "inbound|65536",
    "inbound|08080",
    "demo/web-v1|80",
    "demo/web-v2|80",
    "demo/grpc|9000",
    "",
];

const IPS: [&str; 7] = [
    "10.0.0.1",
    "10.0.0.4",
    "10.0.0.5",
    "127.0.0.1",
    "::1",
    "fe80::1%eth0",
    "999.0.0.1",
];

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let fixture = &*FIXTURE;
    let mode = u.arbitrary::<u8>()?;
    let proxy = u.choose(&fixture.proxies)?.clone();
    let mut filters = Vec::new();
    for _ in 0..u.int_in_range(1..=3)? {
        if let Some(f) = filter(u, fixture)? {
            filters.push(f);
        }
    }
    let entries = if mode & 1 == 0 {
        let message = StreamAccessLogsMessage::decode(u.bytes(u.len())?);
        match message.ok().and_then(|m| m.log_entries) {
            Some(LogEntries::HttpLogs(logs)) => logs.log_entry,
            _ => return Ok(()),
        }
    } else {
        let mut entries = fixture.entries.clone();
        for _ in 0..u.int_in_range(0..=8)? {
            mutate(u, &mut entries)?;
        }
        entries
    };

    let events = events_of(&proxy, &entries, &fixture.peers);
    assert_eq!(events.len(), entries.len(), "one event an entry");
    for (entry, event) in entries.iter().zip(&events) {
        check_event(&proxy, entry, event, &fixture.peers);
    }
    check_sensitive(&proxy, &entries, &events, &fixture.peers);

    publish(u, &proxy, &filters, &events)
}

// === events ===

fn check_event(proxy: &ProxyId, entry: &HttpAccessLogEntry, event: &TapEvent, peers: &Peers) {
    assert_eq!(event.proxy, proxy.to_string());
    let common = entry.common_properties.clone().unwrap_or_default();
    let request = entry.request.clone().unwrap_or_default();
    let inbound = inbound_port(&common.upstream_cluster).is_some();
    assert_eq!(event.direction == Direction::Inbound, inbound, "{event:?}");
    let own = peers.spiffe_id(proxy);
    match event.direction {
        Direction::Inbound => assert_eq!(event.destination_identity, own),
        Direction::Outbound => assert_eq!(event.source_identity, own),
    }

    // Strings are cut to their bounds, never changed otherwise.
    assert!(
        event.path.len() <= MAX_PATH_BYTES,
        "a path of {} bytes",
        event.path.len()
    );
    assert!(request.path.starts_with(&event.path));
    for (field, from) in [
        (&event.authority, &request.authority),
        (&event.scheme, &request.scheme),
        (&event.cluster, &common.upstream_cluster),
    ] {
        assert!(
            field.len() <= MAX_FIELD_BYTES,
            "a field of {} bytes",
            field.len()
        );
        assert!(from.starts_with(field.as_str()));
    }
    for s in [
        &event.grpc_status,
        &event.source_identity,
        &event.destination_identity,
    ]
    .into_iter()
    .flatten()
    {
        assert!(s.len() <= MAX_FIELD_BYTES, "a field of {} bytes", s.len());
    }

    // One line a reader takes, whole, however the bytes arrive.
    let json = serde_json::to_vec(event).expect("an event serializes");
    assert!(
        json.len() <= MAX_LINE_BYTES,
        "an event of {} bytes",
        json.len()
    );
    let back: TapEvent = serde_json::from_slice(&json).expect("an event reads back");
    assert_eq!(&back, event);
    let mut line = json.clone();
    line.push(b'\n');
    let mut lines = Lines::default();
    let mut read = Vec::new();
    for chunk in line.chunks(16 * 1024) {
        read.extend(lines.push(chunk).expect("a line within the reader's bound"));
    }
    assert_eq!(read, [json]);
    let _ = event.line();
}

/// The events of the entries without their credentials are the same events; and the canary
/// value the fixtures give credentials is in no event, unless the entry carries it elsewhere.
fn check_sensitive(
    proxy: &ProxyId,
    entries: &[HttpAccessLogEntry],
    events: &[TapEvent],
    peers: &Peers,
) {
    let stripped: Vec<HttpAccessLogEntry> = entries.iter().map(without_sensitive).collect();
    assert_eq!(
        events_of(proxy, &stripped, peers),
        events,
        "a credential header changed an event"
    );
    let elsewhere = stripped.iter().any(|e| {
        let bytes = e.encode_to_vec();
        bytes.windows(CANARY.len()).any(|w| w == CANARY.as_bytes())
    });
    if !elsewhere {
        for event in events {
            let json = serde_json::to_string(event).expect("an event serializes");
            assert!(!json.contains(CANARY), "a credential in {json}");
        }
    }
}

// === sessions ===

/// A filter as the tap API reads it from a query: normalized by its own query, which must read
/// back the same; `None` when the query is refused (no namespace).
fn filter(u: &mut Unstructured<'_>, fixture: &Fixture) -> Result<Option<TapFilter>> {
    let namespace = if u.ratio(7, 8)? {
        "demo".to_owned()
    } else {
        u.arbitrary()?
    };
    let pods: Vec<&str> = fixture.proxies.iter().map(|p| p.pod.as_str()).collect();
    let raw = TapFilter {
        namespace,
        pod: optional(u, &pods)?,
        method: optional(u, &["GET", "get", "POST", "-"])?,
        authority: optional(u, &["web.demo", "WEB.demo"])?,
        path_prefix: optional(u, &PIECES)?,
        max_rps: match u.choose_index(3)? {
            0 => u.int_in_range(1..=3)?,
            1 => u.int_in_range(1..=MAX_RPS)?,
            _ => DEFAULT_MAX_RPS,
        },
    };
    let Ok(f) = TapFilter::parse(Some(&raw.query())) else {
        assert!(raw.namespace.is_empty(), "{raw:?} refused");
        return Ok(None);
    };
    assert_eq!(
        TapFilter::parse(Some(&f.query())).as_ref(),
        Ok(&f),
        "a filter differs from its own query"
    );
    Ok(Some(f))
}

/// Half the time nothing, else a known value or anything.
fn optional(u: &mut Unstructured<'_>, known: &[&str]) -> Result<Option<String>> {
    Ok(match u.choose_index(4)? {
        0 | 1 => None,
        2 => Some((*u.choose(known)?).to_owned()),
        _ => Some(u.arbitrary()?),
    })
}

/// Publishes `events` in batches at times going forward, then reads every session.
fn publish(
    u: &mut Unstructured<'_>,
    proxy: &ProxyId,
    filters: &[TapFilter],
    events: &[TapEvent],
) -> Result<()> {
    let hub = Arc::new(Hub::default());
    let opened = Instant::now();
    let mut sessions: Vec<Session> = Vec::new();
    for f in filters {
        sessions.push(hub.open(f.clone()).expect("fewer sessions than the bound"));
    }
    let base = Instant::now();
    let late = (base - opened).as_secs_f64();
    assert_eq!(hub.sessions(), filters.len());
    let other = ProxyId {
        namespace: "other".to_owned(),
        pod: proxy.pod.clone(),
    };
    for p in [proxy, &other] {
        assert_eq!(hub.selects(p), filters.iter().any(|f| f.selects(p)));
        assert_eq!(hub.tap(p).is_some(), hub.selects(p));
    }

    let mut matched = vec![0usize; filters.len()];
    let mut dropped = 0;
    let mut offset = Duration::ZERO;
    let mut rest = events;
    while !rest.is_empty() {
        let take = if u.is_empty() {
            rest.len()
        } else {
            u.int_in_range(1..=rest.len())?
        };
        let (batch, left) = rest.split_at(take);
        rest = left;
        offset += Duration::from_millis(u.int_in_range(0..=1_500)?);
        // Now and then the same events as another proxy's, which these sessions may not select.
        let from = if !u.is_empty() && u.ratio(1, 8)? {
            &other
        } else {
            proxy
        };
        for (f, m) in filters.iter().zip(&mut matched) {
            if f.selects(from) {
                *m += batch.iter().filter(|e| f.matches(e)).count();
            }
        }
        dropped += hub.publish(from, batch, base + offset);
    }

    let read: Vec<Vec<TapEvent>> = RUNTIME.with(|rt| {
        rt.block_on(async {
            let mut read = Vec::new();
            for session in &mut sessions {
                let mut got = Vec::new();
                // Paused: the timeout passes once the session has nothing left to give.
                while let Ok(Some(event)) =
                    tokio::time::timeout(Duration::from_secs(5), session.next()).await
                {
                    got.push(event);
                    assert!(got.len() <= SESSION_QUEUE, "past the queue");
                }
                read.push(got);
            }
            read
        })
    });

    let mut kept = 0;
    for ((f, got), m) in filters.iter().zip(&read).zip(&matched) {
        assert!(got.len() <= *m, "{} events of {m} matched", got.len());
        assert!(got.len() <= SESSION_QUEUE);
        let allowed = f64::from(f.max_rps) * (1.0 + offset.as_secs_f64() + late) + 1e-6;
        assert!(
            got.len() as f64 <= allowed,
            "{} events at {} a second over {offset:?}",
            got.len(),
            f.max_rps
        );
        for (i, event) in got.iter().enumerate() {
            assert!(f.matches(event), "{f:?} shows {event:?}");
            // A linear search: the first few are enough to catch an event made up.
            if i < 16 {
                assert!(events.contains(event), "{event:?} was never published");
            }
        }
        assert!(
            got.windows(2)
                .all(|w| w[0].start_micros <= w[1].start_micros),
            "out of order"
        );
        kept += got.len();
    }
    assert_eq!(
        dropped,
        matched.iter().sum::<usize>() - kept,
        "every event not shown is counted as dropped"
    );
    drop(sessions);
    assert_eq!(hub.sessions(), 0);
    assert!(!hub.selects(proxy));
    Ok(())
}

// === mutations ===

fn text(u: &mut Unstructured<'_>, known: &[&str]) -> Result<String> {
    Ok(match u.choose_index(4)? {
        0 | 1 => (*u.choose(known)?).to_owned(),
        // Long: one piece many times, past every bound (12,000 control characters are 72,000
        // bytes of JSON).
        2 => u.choose(&PIECES)?.repeat(u.int_in_range(0..=12_000)?),
        _ => u.arbitrary()?,
    })
}

fn path(u: &mut Unstructured<'_>) -> Result<String> {
    if u.ratio(1, 4)? {
        return text(u, &PIECES);
    }
    let mut path = String::new();
    for _ in 0..u.int_in_range(0..=8)? {
        path.push_str(u.choose(&PIECES)?);
    }
    Ok(path)
}

fn address(u: &mut Unstructured<'_>) -> Result<Option<Address>> {
    Ok(match u.choose_index(6)? {
        0 => None,
        1 => Some(Address {
            address: Some(address::Address::Pipe(Pipe {
                path: u.arbitrary()?,
                mode: 0,
            })),
        }),
        2 => socket(&u.arbitrary::<String>()?, u.arbitrary()?),
        _ => socket(
            u.choose(&IPS)?,
            *u.choose(&[8080, 9000, 0, 65_535, 65_536, u32::MAX])?,
        ),
    })
}

fn headers(u: &mut Unstructured<'_>, map: &mut HashMap<String, String>) -> Result<()> {
    let name = match u.choose_index(4)? {
        0 | 1 => (*u.choose(&SENSITIVE_HEADERS)?).to_owned(),
        2 => (*u.choose(&["Authorization", "COOKIE", "Set-Cookie", "grpc-status"])?).to_owned(),
        _ => u.arbitrary()?,
    };
    let value = if u.ratio(1, 2)? {
        CANARY.to_owned()
    } else {
        text(u, &["0", "14", CANARY])?
    };
    map.insert(name, value);
    Ok(())
}

fn mutate(u: &mut Unstructured<'_>, entries: &mut Vec<HttpAccessLogEntry>) -> Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let i = u.choose_index(entries.len())?;
    let entry = &mut entries[i];
    let common = entry.common_properties.get_or_insert_default();
    match u.choose_index(12)? {
        0 => entry.request.get_or_insert_default().path = path(u)?,
        1 => {
            entry.request.get_or_insert_default().authority = text(u, &["web.demo", "web.demo:80"])?
        }
        2 => {
            let request = entry.request.get_or_insert_default();
            request.scheme = text(u, &["http", "https"])?;
            request.request_method = if u.ratio(3, 4)? {
                u.int_in_range(-1..=12)?
            } else {
                u.arbitrary()?
            };
        }
        3 => {
            common.upstream_cluster = text(u, &CLUSTERS)?;
        }
        4 => {
            if u.arbitrary()? {
                common.upstream_remote_address = address(u)?;
            } else {
                common.downstream_remote_address = address(u)?;
            }
        }
        5 => {
            let mut sans = Vec::new();
            for _ in 0..u.int_in_range(0..=3)? {
                let value = text(u, &["spiffe://cluster.local/ns/demo/sa/client", ""])?;
                sans.push(SubjectAltName {
                    san: Some(if u.arbitrary()? {
                        San::Uri(value)
                    } else {
                        San::Dns(value)
                    }),
                });
            }
            common.tls_properties = Some(TlsProperties {
                peer_certificate_properties: Some(CertificateProperties {
                    subject_alt_name: sans,
                    ..CertificateProperties::default()
                }),
                ..TlsProperties::default()
            });
        }
        6 => {
            let any = u.arbitrary()?;
            let seconds = *u.choose(&[i64::MIN, -1, 0, 1_800_000_000, i64::MAX, any])?;
            let nanos = *u.choose(&[i32::MIN, -1, 0, 999_999_999, 1_000_000_000, i32::MAX])?;
            if u.arbitrary()? {
                common.start_time = Some(Timestamp { seconds, nanos });
            } else {
                common.time_to_last_downstream_tx_byte = Some(PbDuration { seconds, nanos });
            }
        }
        7 => headers(
            u,
            &mut entry.request.get_or_insert_default().request_headers,
        )?,
        8 => {
            let response = entry.response.get_or_insert_default();
            if u.arbitrary()? {
                headers(u, &mut response.response_headers)?;
            } else {
                headers(u, &mut response.response_trailers)?;
            }
        }
        9 => {
            let response = entry.response.get_or_insert_default();
            response.response_code = if u.ratio(1, 4)? {
                None
            } else {
                Some(UInt32Value {
                    value: u.arbitrary()?,
                })
            };
            response.response_body_bytes = u.arbitrary()?;
        }
        10 => match u.choose_index(3)? {
            0 => entry.common_properties = None,
            1 => entry.request = None,
            _ => entry.response = None,
        },
        _ => {
            // More entries than a session's queue holds, now and then.
            let n = if u.ratio(1, 4)? {
                u.int_in_range(1..=SESSION_QUEUE + 64)?
            } else {
                u.int_in_range(1..=32)?
            };
            let template = entries.clone();
            entries.clear();
            entries.extend(template.iter().cycle().take(n).cloned());
        }
    }
    Ok(())
}
