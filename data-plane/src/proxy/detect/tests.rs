use std::time::Duration;

use tokio::{
    io::AsyncWriteExt,
    net::{TcpListener, TcpStream},
};

use super::*;

#[test]
fn http_is_told_from_its_first_line_as_envoys_inspector_tells_it() {
    use AppProtocol::{H2c, Http10, Http11};
    let cases: &[(&[u8], Http)] = &[
        (b"GET / HTTP/1.1\r\nHost: web\r\n\r\n", Http::Found(Http11)),
        (b"POST /api?x=1 HTTP/1.0\r\n", Http::Found(Http10)),
        // Any other version is HTTP/1.0 to Envoy.
        (b"GET / HTTP/0.9\r\n", Http::Found(Http10)),
        (b"M-SEARCH * HTTP/1.1\n", Http::Found(Http11)),
        (
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00",
            Http::Found(H2c),
        ),
        // On their way.
        (b"G", Http::Incomplete),
        (b"GE", Http::Incomplete),
        (b"GET", Http::Incomplete),
        (b"GET /index", Http::Incomplete),
        (b"GET / HTTP/1", Http::Incomplete),
        (b"GET / HTTP/1.1", Http::Incomplete),
        (b"PRI * HTTP/2.0\r\n", Http::Incomplete),
        (b"P", Http::Incomplete),
        // Something else.
        (b"PING\r\n", Http::Other),
        (b"+OK kv\r\n", Http::Other),
        (b"\x16\x03\x01\x02\x00\x01", Http::Other),
        (b"get / HTTP/1.1\r\n", Http::Other),
        (b"GETS / HTTP/1.1\r\n", Http::Other),
        (b"GET / HTTP/1.1x\r\n", Http::Other),
        (b"GET /\r\n", Http::Other),
        (b"GET  HTTP/1.1\r\n", Http::Other),
        (b"GET / FTP/1.1\r\n", Http::Other),
        (b"GET / HTTP/a", Http::Other),
        (b"\r\n", Http::Other),
        (b"hello", Http::Other),
    ];
    for (bytes, want) in cases {
        assert_eq!(http(bytes), *want, "{:?}", String::from_utf8_lossy(bytes));
    }
    // A request line that never ends is not HTTP once the inspector has read its fill.
    let mut long = b"GET /".to_vec();
    long.resize(MAX_INSPECT, b'a');
    assert_eq!(http(&long), Http::Other);
    assert!(is_tls(0x16) && !is_tls(b'G'));
}

async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    (client, server)
}

#[tokio::test]
async fn a_peek_waits_for_more_within_the_deadline_and_consumes_nothing() {
    let (mut client, server) = pair().await;
    let mut peek = Peek::new(&server, Some(Duration::from_secs(5)));
    client.write_all(b"GET /in").await.unwrap();
    assert_eq!(peek.first().await.unwrap(), b"GET /in");
    let writer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(30)).await;
        client.write_all(b"dex.html HTTP/1.1\r\n").await.unwrap();
        client
    });
    let mut seen = peek.more().await.unwrap().to_vec();
    while http(&seen) == Http::Incomplete {
        seen = peek.more().await.unwrap().to_vec();
    }
    assert_eq!(http(&seen), Http::Found(AppProtocol::Http11));
    let _client = writer.await.unwrap();
    // Everything is still there for the data path.
    let mut buf = [0u8; 64];
    let n = server.peek(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"GET /index.html HTTP/1.1\r\n");
}

#[tokio::test]
async fn a_silent_connection_times_out() {
    let (mut client, server) = pair().await;
    let mut peek = Peek::new(&server, Some(Duration::from_millis(50)));
    assert!(matches!(peek.first().await, Err(Silent::TimedOut)));
    // Part of a line, then nothing: the deadline ends the wait for more too.
    let (mut client2, server2) = pair().await;
    let mut peek = Peek::new(&server2, Some(Duration::from_millis(100)));
    client2.write_all(b"GET / HT").await.unwrap();
    assert_eq!(peek.first().await.unwrap(), b"GET / HT");
    let started = tokio::time::Instant::now();
    assert!(matches!(peek.more().await, Err(Silent::TimedOut)));
    assert!(started.elapsed() < Duration::from_secs(2));
    // A peer that leaves before saying anything.
    client.shutdown().await.unwrap();
    let mut peek = Peek::new(&server, None);
    assert!(matches!(peek.first().await, Err(Silent::Io(_))));
}

#[tokio::test]
async fn an_unredirected_connection_keeps_its_local_address() {
    let (_client, server) = pair().await;
    let local = server.local_addr().unwrap();
    assert_eq!(original_destination(&server, local), local);
}
