//! The gRPC server: `grpc.health.v1.Health`, with `x-served-by` on every response.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::server::TcpConnectInfo;
use tonic_health::ServingStatus;

use super::{Ctx, Drain, drained};
use crate::{SERVED_BY, say};

/// Serves until `drain`; tonic then lets calls in flight finish (open Watch streams never do,
/// so the caller's drain limit ends them).
pub(super) async fn serve(listener: TcpListener, ctx: Arc<Ctx>, mut drain: Drain) {
    let (reporter, health) = tonic_health::server::health_reporter();
    // "" (the server as a whole) is SERVING from the start.
    reporter
        .set_service_status(&ctx.name, ServingStatus::Serving)
        .await;
    let served_by = ctx.served_by.clone();
    let layer = tower::ServiceBuilder::new()
        .map_request(|request: http::Request<tonic::body::Body>| {
            let peer = request
                .extensions()
                .get::<TcpConnectInfo>()
                .and_then(TcpConnectInfo::remote_addr);
            match peer {
                Some(peer) => say(format_args!("grpc {} {peer}", request.uri().path())),
                None => say(format_args!("grpc {} -", request.uri().path())),
            }
            request
        })
        .map_response(move |mut response: http::Response<tonic::body::Body>| {
            response.headers_mut().insert(SERVED_BY, served_by.clone());
            response
        });
    let served = tonic::transport::Server::builder()
        .layer(layer)
        .add_service(health)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
            drained(&mut drain).await;
        })
        .await;
    if let Err(error) = served {
        say(format_args!("grpc server failed: {}", crate::chain(&error)));
    }
}
