//! The listener filters' side of the data path: where a connection was going
//! (`SO_ORIGINAL_DST`), and what its first bytes are (a TLS ClientHello, an HTTP/1 request
//! line, the HTTP/2 preface), read as Envoy's TLS and HTTP inspectors read them and without
//! consuming them, within the listener's timeout.

#[cfg(test)]
mod tests;

use std::{net::SocketAddr, time::Duration};

use socket2::SockRef;
use tokio::{net::TcpStream, time::Instant};

use crate::config::AppProtocol;

/// The HTTP/2 connection preface a prior-knowledge (h2c) client opens with.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// How much of a connection the HTTP inspector reads at most: a request line longer than
/// this is not taken for HTTP (Envoy's inspector reads 8 KiB too).
const MAX_INSPECT: usize = 8 * 1024;
/// The methods Envoy's HTTP/1 parser (llhttp) knows; a request line must start with one.
const METHODS: &[&str] = &[
    "ACL",
    "BIND",
    "CHECKOUT",
    "CONNECT",
    "COPY",
    "DELETE",
    "GET",
    "HEAD",
    "LINK",
    "LOCK",
    "M-SEARCH",
    "MERGE",
    "MKACTIVITY",
    "MKCALENDAR",
    "MKCOL",
    "MOVE",
    "NOTIFY",
    "OPTIONS",
    "PATCH",
    "POST",
    "PROPFIND",
    "PROPPATCH",
    "PURGE",
    "PUT",
    "QUERY",
    "REBIND",
    "REPORT",
    "SEARCH",
    "SOURCE",
    "SUBSCRIBE",
    "TRACE",
    "UNBIND",
    "UNLINK",
    "UNLOCK",
    "UNSUBSCRIBE",
];

/// What the first bytes say about HTTP so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Http {
    /// A prefix of a request line or of the preface: more bytes decide.
    Incomplete,
    /// A whole request line or preface.
    Found(AppProtocol),
    /// Not HTTP: a connection without application protocol.
    Other,
}

/// Why inspecting a connection's first bytes ended without an answer.
#[derive(Debug)]
pub(crate) enum Silent {
    /// The listener's timeout passed first: a server-first protocol, or a slow client.
    TimedOut,
    Io(std::io::Error),
}

/// A connection's first bytes as far as they have arrived, peeked (the data path reads them
/// again), until the listener's deadline.
pub(crate) struct Peek<'a> {
    stream: &'a TcpStream,
    buf: Vec<u8>,
    len: usize,
    deadline: Option<Instant>,
}

/// The connection's destination before an iptables REDIRECT (or DNAT) rewrote it; the local
/// address when it was not redirected, as Envoy's `original_dst` filter has it.
pub(crate) fn original_destination(stream: &TcpStream, local: SocketAddr) -> SocketAddr {
    let socket = SockRef::from(stream);
    // An IPv4 connection on a dual-stack socket has an IPv4-mapped local address; its
    // conntrack entry is IPv4's.
    let original = if local.ip().to_canonical().is_ipv4() {
        socket.original_dst_v4()
    } else {
        socket.original_dst_v6()
    };
    match original.ok().and_then(|a| a.as_socket()) {
        Some(a) => SocketAddr::new(a.ip().to_canonical(), a.port()),
        None => SocketAddr::new(local.ip().to_canonical(), local.port()),
    }
}

/// Whether a connection's first byte starts a TLS handshake record, as every ClientHello
/// does.
pub(crate) fn is_tls(first: u8) -> bool {
    first == 0x16
}

/// Reads the start of a connection as Envoy's HTTP inspector does: the HTTP/2 preface is
/// `h2c`; an HTTP/1 request line (a method llhttp knows, a target, `HTTP/<d>.<d>`) up to its
/// first CR or LF is `http/1.1` for version 1.1 and `http/1.0` for any other.
pub(crate) fn http(bytes: &[u8]) -> Http {
    let n = bytes.len().min(H2_PREFACE.len());
    if !bytes.is_empty() && bytes[..n] == H2_PREFACE[..n] {
        return if n == H2_PREFACE.len() {
            Http::Found(AppProtocol::H2c)
        } else {
            Http::Incomplete
        };
    }
    let (line, complete) = match bytes.iter().position(|b| *b == b'\r' || *b == b'\n') {
        Some(end) => (&bytes[..end], true),
        None => (bytes, false),
    };
    match request_line(line, complete) {
        Http::Incomplete if bytes.len() >= MAX_INSPECT => Http::Other,
        answer => answer,
    }
}

/// An HTTP/1 request line without its line ending; `complete` when the ending followed.
fn request_line(line: &[u8], complete: bool) -> Http {
    let undecided = if complete {
        Http::Other
    } else {
        Http::Incomplete
    };
    let mut parts = line.splitn(3, |b| *b == b' ');
    let method = parts.next().unwrap_or_default();
    let Some(target) = parts.next() else {
        // Still in the method: it must be on its way to one llhttp knows.
        let prefix = METHODS.iter().any(|m| m.as_bytes().starts_with(method));
        return if prefix && !method.is_empty() {
            undecided
        } else {
            Http::Other
        };
    };
    if !METHODS.iter().any(|m| m.as_bytes() == method) {
        return Http::Other;
    }
    let target_ok = |t: &[u8]| t.iter().all(|b| b.is_ascii_graphic() || *b >= 0x80);
    let Some(version) = parts.next() else {
        return if target_ok(target) {
            undecided
        } else {
            Http::Other
        };
    };
    if target.is_empty() || !target_ok(target) {
        return Http::Other;
    }
    // `HTTP/d.d`, exactly; a prefix of it while the line goes on.
    let pattern = b"HTTP/0.0";
    let fits = version.len() <= pattern.len()
        && version.iter().zip(pattern).all(|(b, p)| match p {
            b'0' => b.is_ascii_digit(),
            p => b == p,
        });
    match (fits, version.len() == pattern.len()) {
        (false, _) => Http::Other,
        (true, false) => undecided,
        (true, true) if !complete => Http::Incomplete,
        (true, true) if version == b"HTTP/1.1" => Http::Found(AppProtocol::Http11),
        (true, true) => Http::Found(AppProtocol::Http10),
    }
}

// === impl Peek ===

impl<'a> Peek<'a> {
    /// Peeks at `stream`, for up to `timeout` from now (`None`: no limit).
    pub(crate) fn new(stream: &'a TcpStream, timeout: Option<Duration>) -> Self {
        Peek {
            stream,
            buf: Vec::new(),
            len: 0,
            deadline: timeout.map(|t| Instant::now() + t),
        }
    }

    /// What has arrived so far.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Waits for the first bytes; at once when some are there already.
    pub(crate) async fn first(&mut self) -> Result<&[u8], Silent> {
        if self.len == 0 {
            self.buf.resize(MAX_INSPECT, 0);
            let peek = self.stream.peek(&mut self.buf);
            let n = match self.deadline {
                Some(deadline) => tokio::time::timeout_at(deadline, peek)
                    .await
                    .map_err(|_| Silent::TimedOut)?,
                None => peek.await,
            }
            .map_err(Silent::Io)?;
            if n == 0 {
                return Err(Silent::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
            self.len = n;
        }
        Ok(self.bytes())
    }

    /// Waits for more bytes than have arrived. A peek returns at once while anything is
    /// unread, so this polls, briefly: a request line rarely comes in pieces.
    pub(crate) async fn more(&mut self) -> Result<&[u8], Silent> {
        if self.len == 0 {
            return self.first().await;
        }
        let mut pause = Duration::from_millis(1);
        loop {
            if self.len >= self.buf.len() {
                return Ok(self.bytes());
            }
            let now = Instant::now();
            let last = self.deadline.is_some_and(|d| d <= now);
            let n = self.stream.peek(&mut self.buf).await.map_err(Silent::Io)?;
            if n > self.len {
                self.len = n;
                return Ok(self.bytes());
            }
            if last {
                return Err(Silent::TimedOut);
            }
            let wake = now + pause;
            tokio::time::sleep_until(self.deadline.map_or(wake, |d| d.min(wake))).await;
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }
}
