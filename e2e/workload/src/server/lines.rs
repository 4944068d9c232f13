//! The line protocols on raw TCP: the client-first echo and the server-first banner.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{
    AsyncBufRead, AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use super::{Ctx, Drain, accept_failed, drained};
use crate::say;

/// Longest line read, newline included; a longer one closes the connection.
pub(crate) const MAX_LINE: u64 = 64 * 1024;

/// Which protocol a listener speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Protocol {
    /// Each line `L` is answered `NAME: L\n`.
    Echo,
    /// `+OK NAME\r\n` on accept; `PING` → `+PONG NAME\r\n`; anything else → `-ERR unknown\r\n`.
    Banner,
}

impl Protocol {
    fn label(self) -> &'static str {
        match self {
            Protocol::Echo => "tcp",
            Protocol::Banner => "banner",
        }
    }
}

/// Accepts until `drain`; each connection then ends after the line it is answering.
pub(super) async fn serve(
    listener: TcpListener,
    protocol: Protocol,
    ctx: Arc<Ctx>,
    mut drain: Drain,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let ctx = ctx.clone();
                    let drain = drain.clone();
                    connections.spawn(async move {
                        if let Err(error) = connection(stream, peer, protocol, &ctx, drain).await {
                            say(format_args!("{} {peer}: {error}", protocol.label()));
                        }
                    });
                }
                Err(error) => accept_failed(protocol.label(), &error).await,
            },
            // Reap finished connections so the set does not grow with every one ever accepted.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = drained(&mut drain) => break,
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    protocol: Protocol,
    ctx: &Ctx,
    mut drain: Drain,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let label = protocol.label();
    if protocol == Protocol::Banner {
        write
            .write_all(format!("+OK {}\r\n", ctx.name).as_bytes())
            .await?;
        say(format_args!("{label} {peer} greeted"));
    }
    let mut buf = Vec::new();
    loop {
        let line = tokio::select! {
            line = read_line(&mut read, &mut buf) => line?,
            () = drained(&mut drain) => return Ok(()),
        };
        let Some(line) = line else { return Ok(()) };
        let reply = match protocol {
            Protocol::Echo => format!("{}: {line}\n", ctx.name),
            Protocol::Banner if line == "PING" => format!("+PONG {}\r\n", ctx.name),
            Protocol::Banner => "-ERR unknown\r\n".to_owned(),
        };
        write.write_all(reply.as_bytes()).await?;
        match protocol {
            Protocol::Echo => say(format_args!("{label} {peer}")),
            Protocol::Banner => say(format_args!("{label} {peer} {}", reply.trim_end())),
        }
    }
}

/// The next line without its `\n` or `\r\n`, `None` at end of stream. Bytes that are not UTF-8
/// are replaced.
pub(crate) async fn read_line<R: AsyncBufRead + Unpin>(
    read: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<String>> {
    buf.clear();
    let n = (&mut *read).take(MAX_LINE).read_until(b'\n', buf).await?;
    if n == 0 {
        return Ok(None);
    }
    // Without a newline, either the line is too long or the peer closed after a last line
    // (which still counts).
    if buf.last() != Some(&b'\n') && n as u64 == MAX_LINE {
        return Err(std::io::Error::other(format!(
            "line longer than {MAX_LINE} bytes"
        )));
    }
    while matches!(buf.last(), Some(b'\n' | b'\r')) {
        buf.pop();
    }
    Ok(Some(String::from_utf8_lossy(buf).into_owned()))
}
