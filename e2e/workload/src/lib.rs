//! The end-to-end test workload: echo servers that answer with their own name, and clients whose
//! standard output the end-to-end suites parse.
//!
//! # Server: `switchyard-echo serve`
//!
//! `--name` defaults to `$POD_NAME`, else the host name. An address that is only a port listens
//! on `0.0.0.0:<port>`. With no listener flag at all, every listener starts on its default port
//! (HTTP [`DEFAULT_HTTP_PORT`], gRPC [`DEFAULT_GRPC_PORT`], TCP [`DEFAULT_TCP_PORT`], banner
//! [`DEFAULT_BANNER_PORT`]); with any, only those given.
//!
//! - HTTP (`--http`, repeatable; HTTP/1.1 and h2c on the same port): every path answers 200 with
//!   the body NAME (no newline) and `x-served-by: NAME`, except `/headers` (a JSON
//!   [`HeadersEcho`]), `/status/<code>` (that status, body NAME) and `/delay/<ms>` (sleeps, at
//!   most 30 s, then 200 NAME). Request bodies are read and discarded; one over 1 MiB gets 413.
//! - gRPC (`--grpc`, h2c): `grpc.health.v1.Health` reports SERVING for `""` and for NAME; every
//!   response carries `x-served-by: NAME` in its metadata.
//! - TCP (`--tcp`, client-first): each line received is answered with `NAME: <line>\n`.
//! - Banner (`--banner`, server-first, Redis-like): `+OK NAME\r\n` on accept, then `+PONG NAME\r\n`
//!   for each `PING` line and `-ERR unknown\r\n` for anything else.
//!
//! Standard output gets one start-up line with the bound addresses,
//! `serving name=NAME http=ADDR… grpc=ADDR tcp=ADDR banner=ADDR` (only the listeners started), then
//! one line per request: `http METHOD PATH STATUS PEER`, `grpc PATH PEER`, `tcp PEER`,
//! `banner PEER LINE`. On SIGTERM or SIGINT the server keeps serving for `--shutdown-delay`
//! (default 0), then stops accepting, lets requests in flight finish (at most 10 s), and exits 0.
//!
//! # Clients
//!
//! - `get URL [--count N] [--interval DUR] [--header K:V]... [--new-connection] [--http2]
//!   [--timeout DUR] [-o text|json]`: text prints one line per request, `<status> <body>` or
//!   `ERR <error>`; json prints one [`GetSummary`] (and each error as `ERR <error>` on standard
//!   error). Exits 0 if every request got an HTTP response (any status), 1 otherwise.
//! - `load URL --rate R --duration DUR [--timeout DUR] [-o text|json]`: R requests a second
//!   (at most 1000) for DUR (at most 300 s), each sent on schedule however slow the earlier ones
//!   are, latency measured from the scheduled time; prints one [`LoadSummary`] (json) or
//!   `sent=N ok=N failed=N p50_ms=X p99_ms=Y` (text). Exits 0 if none failed.
//! - `grpc ADDR [--service NAME] [--watch N] [--timeout DUR]`: a unary Check prints
//!   `<STATUS> <x-served-by>` (STATUS as in the proto, e.g. `SERVING`); with `--watch N`, Watch
//!   prints that line for each of N updates. Exits 1 with `ERR <status>` when the call fails.
//! - `tcp ADDR --send LINE` prints the reply line; `banner ADDR [--ping]` prints the greeting and,
//!   with `--ping`, the reply to `PING` (without their `\r`).
//! - `sleep` waits for SIGTERM or SIGINT and exits 0.

#![forbid(unsafe_code)]

mod cli;
mod client;
mod listen;
mod server;

use std::net::SocketAddr;

pub use cli::{Args, run};
pub use client::{GetSummary, LoadSummary};
pub use server::HeadersEcho;

/// Default HTTP port of `serve`.
pub const DEFAULT_HTTP_PORT: u16 = 8080;
/// Default gRPC port of `serve`.
pub const DEFAULT_GRPC_PORT: u16 = 9090;
/// Default line-echo TCP port of `serve`.
pub const DEFAULT_TCP_PORT: u16 = 9000;
/// Default banner port of `serve` (Redis's, as the protocol imitates it).
pub const DEFAULT_BANNER_PORT: u16 = 6379;

/// The response header (and gRPC metadata key) naming the server.
pub const SERVED_BY: &str = "x-served-by";

/// Why a command could not run at all (failed requests are reported on standard output instead).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listener could not be bound.
    #[error("{what} listener {addr}: cannot listen: {source}")]
    Listen {
        /// Which listener: `http`, `grpc`, `tcp` or `banner`.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// SIGTERM and SIGINT handlers could not be installed.
    #[error("cannot handle SIGTERM and SIGINT: {0}")]
    Signal(#[source] std::io::Error),
    /// Neither `--name` nor `$POD_NAME` is set and the host name cannot be read.
    #[error("no --name or $POD_NAME, and the host name cannot be read: {0}")]
    Hostname(#[source] std::io::Error),
    /// A flag's value is unusable.
    #[error("{flag} {value}: {reason}")]
    Arg {
        /// The flag.
        flag: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        reason: String,
    },
}

/// Writes one line to standard output. A closed standard output does not stop a server.
pub(crate) fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// An error and its causes, `outer: inner: innermost`, on one line.
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // hyper and tonic often repeat the cause in the outer message.
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
