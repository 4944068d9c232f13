//! Listen addresses given as `PORT` or `HOST:PORT`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;

/// A socket address to listen on; a bare port means all IPv4 addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ListenAddr(pub(crate) SocketAddr);

/// Not a port and not an `IP:PORT`.
#[derive(Debug, thiserror::Error)]
#[error("{0}: expected PORT or IP:PORT (such as 8080, 127.0.0.1:8080, [::1]:8080)")]
pub(crate) struct BadListenAddr(String);

impl FromStr for ListenAddr {
    type Err = BadListenAddr;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(port) = s.parse::<u16>() {
            return Ok(ListenAddr(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                port,
            )));
        }
        s.parse()
            .map(ListenAddr)
            .map_err(|_| BadListenAddr(s.to_owned()))
    }
}

impl ListenAddr {
    pub(crate) fn port(port: u16) -> Self {
        ListenAddr(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port))
    }
}

#[cfg(test)]
mod tests;
