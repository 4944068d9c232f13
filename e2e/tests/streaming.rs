//! HTTP/2 and gRPC-style streaming through a pair of sidecars with mTLS between them: a
//! bidirectional stream is relayed message by message (not buffered), and trailers and
//! `te: trailers` cross both proxies. Runs on the data plane `SWITCHYARD_DATA_PLANE` selects.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    convert::Infallible,
    net::{Ipv4Addr, SocketAddr},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{BodyExt, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use switchyard_e2e::mesh::{AccessMode, Mesh, free_port, pod, wait_for};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

type Body = BoxBody<Bytes, Infallible>;

/// An h2c server that echoes every request DATA frame as a response DATA frame as soon as it
/// arrives, then ends with gRPC trailers. It says whether the request carried `te: trailers`.
async fn echo(request: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let saw_te = request
        .headers()
        .get("te")
        .map_or("none".to_owned(), |v| v.to_str().unwrap_or("?").to_owned());
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(16);
    let mut body = request.into_body();
    tokio::spawn(async move {
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            if let Ok(data) = frame.into_data()
                && tx.send(Ok(Frame::data(data))).await.is_err()
            {
                return;
            }
        }
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        trailers.insert("grpc-message", HeaderValue::from_static("done"));
        let _ = tx.send(Ok(Frame::trailers(trailers))).await;
    });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(ReceiverStream::new(rx))));
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static("application/grpc"));
    response
        .headers_mut()
        .insert("x-saw-te", HeaderValue::from_str(&saw_te).unwrap());
    Ok(response)
}

async fn serve_echo(listener: tokio::net::TcpListener) {
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        tokio::spawn(async move {
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), hyper::service::service_fn(echo))
                .await;
        });
    }
}

fn grpc_service(name: &str, pod_name: &str, pod_ip: Ipv4Addr, app_port: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: demo}}\nspec:\n  selector: {{app: {name}}}\n  ports: [{{name: grpc, port: 80, targetPort: {app_port}, appProtocol: grpc}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-1, namespace: demo, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nports: [{{name: grpc, port: {app_port}}}]\nendpoints:\n- addresses: ['{pod_ip}']\n  conditions: {{ready: true}}\n  targetRef: {{kind: Pod, name: {pod_name}, namespace: demo}}\n"
    )
}

#[test]
fn a_bidirectional_stream_crosses_two_sidecars_message_by_message() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let app_port = free_port();
    let app = runtime
        .block_on(tokio::net::TcpListener::bind(("127.0.0.1", app_port)))
        .unwrap();
    runtime.spawn(serve_echo(app));

    let client_ip = Ipv4Addr::new(127, 0, 81, 1);
    let server_ip = Ipv4Addr::new(127, 0, 81, 2);
    let mut mesh = Mesh::builder(client_ip)
        .access_mode(AccessMode::Permissive)
        .file(
            "echo.yaml",
            grpc_service("echo", "echo-0", server_ip, app_port),
        )
        .file(
            "echo-pod.yaml",
            pod("echo-0", "echo", &[("app", "echo")], server_ip),
        )
        .start();
    let server = mesh.sidecar("echo-0");
    let outbound = mesh.client().outbound();
    let inbound = SocketAddr::from((server_ip, app_port));
    wait_for(
        Duration::from_secs(20),
        || std::net::TcpStream::connect(inbound).is_ok(),
        "echo-0's inbound listener",
    );

    runtime.block_on(async {
        let tcp = tokio::net::TcpStream::connect(outbound).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake::<_, Body>(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);

        // The route may take a moment to reach the client sidecar: retry a unary call first.
        let mut ready = false;
        for _ in 0..100 {
            let request = Request::post("http://echo/echo.Echo/Unary")
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(BodyExt::boxed(http_body_util::Full::new(
                    Bytes::from_static(b"ping"),
                )))
                .unwrap();
            if let Ok(r) = sender.send_request(request).await
                && r.status() == 200
            {
                let collected = r.into_body().collect().await.unwrap();
                let trailers = collected.trailers().cloned();
                assert_eq!(collected.to_bytes(), Bytes::from_static(b"ping"));
                assert_eq!(
                    trailers.as_ref().and_then(|t| t.get("grpc-status")),
                    Some(&HeaderValue::from_static("0")),
                    "trailers lost: {trailers:?}"
                );
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            ready,
            "the echo service never answered through the sidecars"
        );

        let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
        let request = Request::post("http://echo/echo.Echo/Stream")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(BodyExt::boxed(StreamBody::new(ReceiverStream::new(rx))))
            .unwrap();
        tx.send(Ok(Frame::data(Bytes::from_static(b"one"))))
            .await
            .unwrap();
        let response = tokio::time::timeout(Duration::from_secs(5), sender.send_request(request))
            .await
            .expect("response headers while the request stream is still open")
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers().get("x-saw-te"),
            Some(&HeaderValue::from_static("trailers")),
            "te: trailers must reach the server"
        );
        let mut body = response.into_body();
        let mut next_data = async || {
            let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
                .await
                .expect("a frame within 5 s: the stream was buffered")
                .expect("the stream ended early")
                .unwrap();
            frame.into_data().ok()
        };
        // Each message comes back before the next is sent: nothing waits for the end.
        assert_eq!(next_data().await, Some(Bytes::from_static(b"one")));
        tx.send(Ok(Frame::data(Bytes::from_static(b"two"))))
            .await
            .unwrap();
        assert_eq!(next_data().await, Some(Bytes::from_static(b"two")));
        tx.send(Ok(Frame::data(Bytes::from_static(b"three"))))
            .await
            .unwrap();
        assert_eq!(next_data().await, Some(Bytes::from_static(b"three")));
        drop(tx);
        let trailers = loop {
            let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
                .await
                .expect("trailers within 5 s")
                .expect("trailers before the end")
                .unwrap();
            if let Ok(t) = frame.into_trailers() {
                break t;
            }
        };
        assert_eq!(
            trailers.get("grpc-status"),
            Some(&HeaderValue::from_static("0"))
        );
        assert_eq!(
            trailers.get("grpc-message"),
            Some(&HeaderValue::from_static("done"))
        );
    });
    // The hop between the sidecars was mTLS (both Pods are in the mesh).
    mesh.client().wait_for_stat(
        "cluster.demo/echo|80.",
        "ssl.handshake",
        Duration::from_secs(5),
    );
    drop(server);
}
