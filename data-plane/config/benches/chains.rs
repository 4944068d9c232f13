//! Filter chain selection on an intercepted outbound listener with thousands of chains: one
//! exact `/32` per service and port, two chains for HTTP-or-TCP ports, and the defaults.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark harness")]

use std::{
    hint::black_box,
    net::{IpAddr, Ipv4Addr, SocketAddr},
};

use criterion::Criterion;
use switchyard_proxy_config::{
    AppProtocol, ChainMatch, ChainSelector, CidrRange, TransportProtocol,
};

fn service(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a60_0000 + i))
}

/// `services` services, each with an HTTP-or-TCP port 80 (two chains), the loop guard.
fn listener(services: u32) -> ChainSelector {
    let mut matches = Vec::new();
    for i in 0..services {
        let exact = vec![CidrRange::new(service(i), 32).unwrap()];
        matches.push(ChainMatch {
            destination_port: Some(80),
            prefix_ranges: exact.clone(),
            application_protocols: AppProtocol::ALL.to_vec(),
            ..ChainMatch::ANY
        });
        matches.push(ChainMatch {
            destination_port: Some(80),
            prefix_ranges: exact,
            ..ChainMatch::ANY
        });
    }
    matches.push(ChainMatch {
        destination_port: Some(15001),
        ..ChainMatch::ANY
    });
    let default = matches.len();
    ChainSelector::build(&matches, Some(default)).unwrap()
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    for services in [10, 5_000] {
        let selector = listener(services);
        let mut i = 0;
        c.bench_function(&format!("select/{}_chains", 2 * services + 1), |b| {
            b.iter(|| {
                i = (i + 7) % services;
                let to = SocketAddr::new(service(i), 80);
                black_box(selector.select(
                    black_box(to),
                    TransportProtocol::RawBuffer,
                    Some(AppProtocol::Http11),
                ))
            })
        });
        c.bench_function(&format!("build/{}_chains", 2 * services + 1), |b| {
            b.iter(|| black_box(listener(services)))
        });
    }
    let passthrough = listener(5_000);
    c.bench_function("select/passthrough_of_10001", |b| {
        b.iter(|| {
            black_box(passthrough.select(
                black_box(SocketAddr::from(([192, 0, 2, 1], 443))),
                TransportProtocol::RawBuffer,
                None,
            ))
        })
    });
    c.final_summary();
}
