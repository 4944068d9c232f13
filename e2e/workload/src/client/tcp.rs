//! `tcp` and `banner`: one exchange with a line server.

use std::time::Duration;

use tokio::io::{AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

use crate::server::read_line;
use crate::{Error, say};

/// Sends `line` and prints the reply line.
pub(crate) async fn tcp(addr: &str, line: &str, timeout: Duration) -> Result<u8, Error> {
    exchange(timeout, async {
        let mut stream = BufReader::new(TcpStream::connect(addr).await?);
        stream.write_all(format!("{line}\n").as_bytes()).await?;
        print_reply(&mut stream).await
    })
    .await
}

/// Prints the greeting, then with `ping` the reply to `PING`.
pub(crate) async fn banner(addr: &str, ping: bool, timeout: Duration) -> Result<u8, Error> {
    exchange(timeout, async {
        let mut stream = BufReader::new(TcpStream::connect(addr).await?);
        print_reply(&mut stream).await?;
        if ping {
            stream.write_all(b"PING\r\n").await?;
            print_reply(&mut stream).await?;
        }
        Ok(())
    })
    .await
}

async fn print_reply(stream: &mut BufReader<TcpStream>) -> std::io::Result<()> {
    match read_line(stream, &mut Vec::new()).await? {
        Some(reply) => {
            say(format_args!("{reply}"));
            Ok(())
        }
        None => Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed before a reply",
        )),
    }
}

/// Runs the exchange within `timeout`: exit code 0, or 1 after printing `ERR <error>`.
async fn exchange(
    timeout: Duration,
    exchange: impl Future<Output = std::io::Result<()>>,
) -> Result<u8, Error> {
    let error = match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(())) => return Ok(0),
        Ok(Err(error)) => error.to_string(),
        Err(_) => format!("timed out after {}", humantime::format_duration(timeout)),
    };
    say(format_args!("ERR {error}"));
    Ok(1)
}
