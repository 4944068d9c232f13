//! The TCP proxy: authorize the connection, pick a backend and an endpoint, connect (with
//! mTLS to meshed endpoints) and copy bytes both ways until either side closes or no byte has
//! moved for the idle timeout; or, for an ORIGINAL_DST cluster, connect to where the
//! connection was going.

use std::time::Instant;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, copy_bidirectional};

use super::{
    ConnInfo, Context,
    counted::Counted,
    http, idle,
    routing::{self, Peer},
};
use crate::{
    balance::{self, Outcome},
    config::{ClusterConfig, TcpProxy},
    metrics::{TcpLabels, TcpStats, Timeout, UpstreamStats},
};

/// Endpoints tried before a connection is given up (Envoy's `max_connect_attempts` is 1; a
/// second and third endpoint keep a dead endpoint from failing a connection).
const CONNECT_ATTEMPTS: usize = 3;

pub(super) async fn proxy<I>(
    ctx: &Context,
    info: &ConnInfo,
    tcp: &TcpProxy,
    mut downstream: I,
) -> std::io::Result<()>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let runtime = ctx.state.runtime();
    let peer = Peer {
        identity: info.peer_identity.as_deref(),
        local: info.destination,
    };
    if let Some(rbac) = &tcp.rbac
        && !routing::allows(rbac, &peer, None)
    {
        ctx.metrics.denied(&info.listener);
        return Ok(());
    }
    let mut rng = fastrand::Rng::new();
    let Some(cluster_name) = balance::pick_weighted(&tcp.clusters, &mut rng) else {
        return Ok(());
    };
    let Some(cluster) = runtime.clusters.get(cluster_name).cloned() else {
        tracing::debug!(cluster = %cluster_name, "TCP proxy: no such cluster");
        return Ok(());
    };
    let balancer = ctx.balancers.get(&cluster);
    let labels = TcpLabels {
        direction: info.direction,
        listener: info.listener.clone(),
        backend: cluster.name.clone(),
        peer: info.peer_identity.clone().unwrap_or_default(),
    };
    let stats = ctx.metrics.tcp(&labels);
    let golden = ctx.metrics.upstream(&cluster.name);
    if cluster.original_dst {
        return passthrough(ctx, info, tcp, &cluster, &stats, &golden, downstream).await;
    }

    let mut tried = Vec::new();
    for _ in 0..CONNECT_ATTEMPTS {
        let started = Instant::now();
        let Some(pick) = balancer.pick(started, &tried) else {
            return Ok(());
        };
        tried.push(pick.index());
        let endpoint = pick.endpoint().clone();
        let transport = match ctx.upstream_transport(&runtime, &cluster, &endpoint) {
            Ok(t) => t,
            Err(error) => {
                tracing::warn!(cluster = %cluster.name, %error, "no TLS configuration for upstream");
                pick.complete(Instant::now(), Outcome::GatewayFailure);
                continue;
            }
        };
        // Counted from the attempt, as Envoy counts `upstream_cx_total`.
        let connection = golden.connecting();
        let connected = tokio::time::timeout(
            transport.connect_timeout,
            super::connect_tcp(endpoint.address, transport.source),
        )
        .await;
        let upstream = match connected {
            Ok(Ok(s)) => s,
            Ok(Err(_)) | Err(_) => {
                pick.complete(Instant::now(), Outcome::GatewayFailure);
                continue;
            }
        };
        let _ = upstream.set_nodelay(true);
        let _open = stats.open();
        let result = match transport.tls {
            None => {
                pick.complete(Instant::now(), Outcome::Success(started.elapsed()));
                let mut upstream = Counted::new(upstream, connection);
                pipe(ctx, info, tcp, &mut downstream, &mut upstream).await
            }
            Some(config) => {
                let connector = tokio_rustls::TlsConnector::from(config);
                let name = ServerName::IpAddress(endpoint.address.ip().into());
                match tokio::time::timeout(
                    transport.connect_timeout,
                    connector.connect(name, upstream),
                )
                .await
                {
                    Ok(Ok(tls)) => {
                        ctx.metrics.upstream_tls_handshake(&cluster.name);
                        pick.complete(Instant::now(), Outcome::Success(started.elapsed()));
                        let mut tls = Counted::new(tls, connection);
                        pipe(ctx, info, tcp, &mut downstream, &mut tls).await
                    }
                    _ => {
                        pick.complete(Instant::now(), Outcome::GatewayFailure);
                        continue;
                    }
                }
            }
        };
        if let Ok((received, sent)) = result {
            stats.bytes(received, sent);
        }
        return result.map(|_| ());
    }
    Ok(())
}

/// Copies bytes both ways until either side closes, or until none has moved either way for
/// the TCP proxy's idle timeout (then both are closed). Returns the bytes read from the
/// downstream peer and written to it.
async fn pipe<D, U>(
    ctx: &Context,
    info: &ConnInfo,
    tcp: &TcpProxy,
    downstream: &mut D,
    upstream: &mut U,
) -> std::io::Result<(u64, u64)>
where
    D: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let Some(idle_timeout) = tcp.idle_timeout else {
        return copy_bidirectional(downstream, upstream).await;
    };
    // Every byte either way crosses the downstream side: watching it sees all traffic.
    let activity = idle::Activity::new();
    let mut watched = idle::Watched::new(downstream, activity.clone(), None);
    tokio::select! {
        copied = copy_bidirectional(&mut watched, upstream) => copied,
        () = activity.quiet_for(idle_timeout) => {
            ctx.metrics.timeout(&info.listener, &tcp.stat_prefix, Timeout::TcpIdle);
            tracing::debug!(listener = %info.listener, ?idle_timeout, "TCP proxy: idle; closed");
            Ok(watched.bytes())
        }
    }
}

/// An ORIGINAL_DST cluster: connects to the connection's destination, in plaintext, once.
async fn passthrough<I>(
    ctx: &Context,
    info: &ConnInfo,
    tcp: &TcpProxy,
    cluster: &ClusterConfig,
    stats: &std::sync::Arc<TcpStats>,
    golden: &std::sync::Arc<UpstreamStats>,
    mut downstream: I,
) -> std::io::Result<()>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let to = info.destination;
    // A connection made straight to the listener (not redirected: its destination is the
    // listener itself) would come back here, and again, each time through a new connection;
    // Envoy would loop so, the proxy closes it.
    if to.ip().to_canonical() == info.local.ip().to_canonical() && to.port() == info.local.port() {
        tracing::debug!(listener = %info.listener, %to, "passthrough to the listener itself; closed");
        return Ok(());
    }
    let transport = http::transport(cluster, None);
    let connection = golden.connecting();
    let connect = super::connect_tcp(to, transport.source);
    let upstream = match tokio::time::timeout(transport.connect_timeout, connect).await {
        Ok(Ok(s)) => s,
        Ok(Err(error)) => {
            tracing::debug!(cluster = %cluster.name, %to, %error, "passthrough: cannot connect");
            return Ok(());
        }
        Err(_) => {
            tracing::debug!(cluster = %cluster.name, %to, "passthrough: connect timeout");
            return Ok(());
        }
    };
    let _ = upstream.set_nodelay(true);
    let _open = stats.open();
    let mut upstream = Counted::new(upstream, connection);
    let result = pipe(ctx, info, tcp, &mut downstream, &mut upstream).await;
    if let Ok((received, sent)) = result {
        stats.bytes(received, sent);
    }
    result.map(|_| ())
}
