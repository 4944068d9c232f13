use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

use super::*;

const HEADERS: Duration = Duration::from_millis(200);

/// Reads from `watched` until it fails or `within` passes; the error and when it came.
async fn read_until_error<I: AsyncRead + AsyncWrite + Unpin>(
    watched: &mut Watched<I>,
    within: Duration,
) -> Option<(io::ErrorKind, Duration)> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    let read = async {
        loop {
            match watched.read(&mut buf).await {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => return Some(e.kind()),
            }
        }
    };
    match tokio::time::timeout(within, read).await {
        Ok(Some(kind)) => Some((kind, started.elapsed())),
        Ok(None) | Err(_) => None,
    }
}

#[tokio::test]
async fn a_slow_http1_head_gets_a_408_and_the_connection_ends() {
    let (mut client, server) = duplex(4096);
    let activity = Activity::new();
    let mut watched = Watched::new(server, activity.clone(), Some(HEADERS));
    client.write_all(b"GET / HTTP/1.1\r\nho").await.unwrap();
    let (kind, after) = read_until_error(&mut watched, Duration::from_secs(2))
        .await
        .expect("the head timed out");
    assert_eq!(kind, io::ErrorKind::TimedOut);
    assert!(after >= HEADERS - Duration::from_millis(20), "{after:?}");
    assert!(activity.headers_timed_out());
    let mut answer = vec![0u8; HEADER_TIMEOUT_RESPONSE.len()];
    client.read_exact(&mut answer).await.unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 408 Request Timeout\r\n"));
    assert!(answer.ends_with(b"\r\n\r\nrequest header timeout"));
}

#[tokio::test]
async fn a_silent_peer_or_one_mid_request_is_not_held_to_the_header_timeout() {
    // Silent: the idle timeout's business, not this one's.
    let (mut client, server) = duplex(4096);
    let activity = Activity::new();
    let mut watched = Watched::new(server, activity.clone(), Some(HEADERS));
    assert_eq!(read_until_error(&mut watched, 3 * HEADERS).await, None);

    // A head that completed (the request is in flight) while its body trickles.
    client
        .write_all(b"POST / HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(watched.read(&mut buf).await.unwrap() > 0);
    let request = activity.start_request();
    client.write_all(b"x").await.unwrap();
    assert_eq!(read_until_error(&mut watched, 3 * HEADERS).await, None);

    // Once answered, the next head gets its own full timeout.
    drop(request);
    client.write_all(b"GET / HT").await.unwrap();
    let (kind, _) = read_until_error(&mut watched, 3 * HEADERS)
        .await
        .expect("the second head timed out");
    assert_eq!(kind, io::ErrorKind::TimedOut);
}

#[tokio::test]
async fn http2_is_not_timed_by_the_http1_header_timeout() {
    let (mut client, server) = duplex(4096);
    let activity = Activity::new();
    let mut watched = Watched::new(server, activity.clone(), Some(HEADERS));
    client.write_all(H2_PREFACE).await.unwrap();
    assert_eq!(read_until_error(&mut watched, 3 * HEADERS).await, None);
    assert!(!activity.headers_timed_out());

    // A preface trickled byte by byte is timed, though: it could be anything so far.
    let (mut client, server) = duplex(4096);
    let mut watched = Watched::new(server, Activity::new(), Some(HEADERS));
    client.write_all(&H2_PREFACE[..5]).await.unwrap();
    assert!(read_until_error(&mut watched, 3 * HEADERS).await.is_some());
}

#[tokio::test]
async fn the_watchdog_is_told_when_a_connection_is_idle_or_its_requests_are_stuck() {
    let idle = Some(Duration::from_millis(100));
    let stream_idle = Some(Duration::from_millis(150));
    let activity = Activity::new();
    let (_client, server) = duplex(64);
    let mut watched = Watched::new(server, activity.clone(), None);
    let started = Instant::now();
    let Check::Wait(Some(deadline)) = activity.check(started, idle, stream_idle) else {
        panic!("a fresh connection waits for its idle timeout");
    };
    assert!(deadline > started && deadline <= started + Duration::from_millis(100));
    assert_eq!(
        activity.check(started + Duration::from_millis(101), idle, stream_idle),
        Check::Idle
    );
    assert_eq!(
        activity.check(started + Duration::from_secs(3600), None, stream_idle),
        Check::Wait(None),
        "no idle timeout"
    );

    // A request in flight: not idle. While it waits for its response it times itself.
    let mut request = activity.start_request();
    let later = Instant::now() + Duration::from_secs(1);
    assert_eq!(activity.check(later, idle, stream_idle), Check::Wait(None));
    // Answering: the watchdog's stream idle timeout runs from the last byte.
    request.responded();
    assert_eq!(activity.check(later, idle, stream_idle), Check::StreamIdle);
    watched.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
    assert!(matches!(
        activity.check(Instant::now(), idle, stream_idle),
        Check::Wait(Some(_))
    ));
    tokio::time::timeout(
        Duration::from_secs(1),
        activity.quiet_for(Duration::from_millis(50)),
    )
    .await
    .expect("quiet after 50 ms");

    // Done: idle again, from now.
    drop(request);
    tokio::time::timeout(Duration::from_millis(100), activity.changed())
        .await
        .expect("the watchdog is woken");
    let now = Instant::now();
    assert!(matches!(
        activity.check(now, idle, stream_idle),
        Check::Wait(Some(d)) if d > now
    ));
}
