//! The upstream app of `scripts/bench-proxy.sh`: a keep-alive HTTP/1.1 server that answers
//! every request with `200` and a fixed body, on one thread, so that the app costs a few
//! microseconds per request and the sidecars are what the benchmark measures.
//!
//! `bench_upstream <ADDR> [BODY_BYTES]` (body size default 1024 bytes, as in Istio's
//! published setup). Prints `listening on <ADDR>` once it accepts connections. Request
//! bodies (`content-length` only; the benchmark sends none) are read and dropped;
//! `connection: close` is honoured; pipelined requests are answered in order.

#![allow(clippy::print_stdout, reason = "the readiness line is the interface")]

use std::{io, net::SocketAddr};

use tokio::net::{TcpListener, TcpStream};

/// Default response body size, in bytes.
const DEFAULT_BODY: usize = 1024;
/// Largest request head accepted, in bytes; a larger one closes the connection.
const MAX_HEAD: usize = 64 * 1024;

fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args
        .next()
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| invalid("usage: bench_upstream <ADDR> [BODY_BYTES]"))?;
    let body = match args.next() {
        Some(n) => n
            .parse()
            .map_err(|_| invalid("BODY_BYTES must be a number"))?,
        None => DEFAULT_BODY,
    };
    let mut response =
        format!("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {body}\r\n\r\n")
            .into_bytes();
    response.resize(response.len() + body, b'x');
    // Leaked once: every connection task borrows the same bytes for the life of the process.
    let response: &'static [u8] = Vec::leak(response);

    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?
        .block_on(async move {
            let listener = TcpListener::bind(addr).await?;
            println!("listening on {}", listener.local_addr()?);
            loop {
                let (stream, _) = listener.accept().await?;
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let _ = serve(stream, response).await;
                });
            }
        })
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message.to_owned())
}

/// Answers the requests of one connection until the client closes it.
async fn serve(stream: TcpStream, response: &'static [u8]) -> io::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(8 * 1024);
    let mut chunk = [0u8; 16 * 1024];
    let mut out: Vec<u8> = Vec::with_capacity(response.len());
    loop {
        stream.readable().await?;
        let n = match stream.try_read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut close = false;
        let mut consumed = 0;
        while let Some(request) = parse(&buf[consumed..]) {
            consumed += request.len;
            out.extend_from_slice(response);
            if request.close {
                close = true;
                break;
            }
        }
        buf.drain(..consumed);
        if buf.len() > MAX_HEAD {
            return Ok(());
        }
        write_all(&stream, &out).await?;
        out.clear();
        if close {
            return Ok(());
        }
    }
}

/// One complete request at the start of a buffer.
struct Parsed {
    /// Bytes of head and body.
    len: usize,
    /// The client sent `connection: close`.
    close: bool,
}

/// The first request in `buf`, once its head and body are all there.
fn parse(buf: &[u8]) -> Option<Parsed> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..head_end]).ok()?;
    let mut content_length = 0usize;
    let mut close = false;
    for line in head.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = value.parse().ok()?;
        } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close") {
            close = true;
        }
    }
    let len = head_end + content_length;
    (buf.len() >= len).then_some(Parsed { len, close })
}

async fn write_all(stream: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        stream.writable().await?;
        match stream.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
