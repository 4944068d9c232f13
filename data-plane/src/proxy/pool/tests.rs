use std::{
    io::{BufRead, BufReader, Write},
    net::TcpListener,
    thread,
};

use http_body_util::{BodyExt, Empty};

use super::*;

/// Reads one request head (no body) from `reader`; false at end of stream.
fn read_head(reader: &mut impl BufRead) -> bool {
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return false,
            Ok(_) if line == "\r\n" => return true,
            Ok(_) => {}
        }
    }
}

fn request() -> Request<UpstreamBody> {
    Request::get("/")
        .header(http::header::HOST, "upstream")
        .body(Empty::new().map_err(|never| match never {}).boxed())
        .unwrap()
}

fn plaintext() -> Transport {
    Transport {
        tls: None,
        http2: false,
        connect_timeout: Duration::from_secs(2),
        source: None,
    }
}

/// A server that answers the first request of its first connection, then reads the second
/// and closes without a word (a server closing an idle connection just as a request arrives,
/// without the timing); its second connection is closed the same way after one request.
#[test]
fn only_a_reused_connection_closed_before_answering_is_closed_while_idle() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let server = thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        let mut out = conn.try_clone().unwrap();
        let mut reader = BufReader::new(conn);
        assert!(read_head(&mut reader));
        out.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .unwrap();
        assert!(
            read_head(&mut reader),
            "the second request, on the same connection"
        );
        drop((out, reader));
        let (conn, _) = listener.accept().unwrap();
        assert!(read_head(&mut BufReader::new(conn)));
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pool = Pool::default();
    let stats = std::sync::Arc::new(crate::metrics::UpstreamStats::default());
    let (first, reused, fresh) = runtime.block_on(async {
        let response = pool
            .send(address, &plaintext(), &stats, request(), || {})
            .await;
        let body = match response {
            Ok(r) => r.into_body().collect().await.unwrap().to_bytes(),
            Err(e) => panic!("first request: {e}"),
        };
        let reused = pool
            .send(address, &plaintext(), &stats, request(), || {})
            .await;
        let fresh = pool
            .send(address, &plaintext(), &stats, request(), || {})
            .await;
        (body, reused, fresh)
    });
    server.join().unwrap();
    assert_eq!(&first[..], b"ok");
    assert!(
        matches!(reused, Err(SendError::ClosedWhileIdle(_))),
        "reused: {:?}",
        reused.map(|r| r.status())
    );
    assert!(
        matches!(fresh, Err(SendError::Other(_))),
        "a new connection closed before answering may have been processed: {:?}",
        fresh.map(|r| r.status())
    );
    // Two connections, in the cluster's golden stats, with what went over them.
    let values = stats.values();
    assert_eq!(values.cx_opened, 2);
    assert!(values.rx_bytes > 0 && values.tx_bytes > 0, "{values:?}");
}
