//! Who is on the other end of a stream: the seam between credentials and proxy keys.

use std::{collections::HashMap, fmt, future::Future, pin::Pin};

use envoy_types::pb::envoy::config::core::v3::Node;
use tonic::{Status, metadata::MetadataMap};

use super::store::ProxyKey;

#[cfg(test)]
mod tests;

/// Maps a stream's credentials to the proxy whose snapshot it may read, in two steps.
///
/// [`verify`](Authenticate::verify) runs before any message of the stream is read, on the gRPC
/// metadata alone: a missing, unknown or invalid credential is refused there, so a peer without
/// one never makes the server buffer a message (the first request can be megabytes).
/// [`authenticate`](Authenticate::authenticate) then runs with the node of the first request.
/// The node is there to be cross-checked against the credential (a pod name, say), never to be
/// trusted on its own: anyone can write any `node.id`. Errors go to the client as they are, so
/// use `Status::unauthenticated` / `Status::permission_denied`. Asynchronous because a cluster
/// asks the API server (a TokenReview); a stream waits for it before anything is sent.
pub trait Authenticate: Send + Sync + 'static {
    fn verify<'a>(&'a self, metadata: &'a MetadataMap) -> VerifyFuture<'a>;
    fn authenticate<'a>(&'a self, metadata: &'a MetadataMap, node: &'a Node) -> AuthFuture<'a>;
}

/// What [`Authenticate::authenticate`] returns.
pub type AuthFuture<'a> = Pin<Box<dyn Future<Output = Result<ProxyKey, Status>> + Send + 'a>>;

/// What [`Authenticate::verify`] returns.
pub type VerifyFuture<'a> = Pin<Box<dyn Future<Output = Result<(), Status>> + Send + 'a>>;

/// Bearer tokens known in advance (local mode, tests): `authorization: Bearer <token>`.
///
/// Lookups are not constant-time; that is acceptable for local mode, where the tokens are
/// random and the listener is local, and is why a cluster uses TokenReview instead.
#[derive(Clone, Default)]
pub struct StaticTokens {
    tokens: HashMap<String, ProxyKey>,
}

// === impl StaticTokens ===

impl StaticTokens {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, token: impl Into<String>, key: ProxyKey) -> &mut Self {
        self.tokens.insert(token.into(), key);
        self
    }

    pub fn with(mut self, token: impl Into<String>, key: ProxyKey) -> Self {
        self.insert(token, key);
        self
    }

    /// The proxy the request's bearer token belongs to.
    pub fn lookup(&self, metadata: &MetadataMap) -> Result<ProxyKey, Status> {
        let token = bearer_token(metadata)?;
        self.tokens
            .get(token)
            .cloned()
            .ok_or_else(|| Status::unauthenticated("unknown bearer token"))
    }
}

impl FromIterator<(String, ProxyKey)> for StaticTokens {
    fn from_iter<I: IntoIterator<Item = (String, ProxyKey)>>(iter: I) -> Self {
        StaticTokens {
            tokens: iter.into_iter().collect(),
        }
    }
}

impl fmt::Debug for StaticTokens {
    /// Never prints the tokens.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticTokens")
            .field("tokens", &self.tokens.len())
            .finish()
    }
}

impl Authenticate for StaticTokens {
    fn verify<'a>(&'a self, metadata: &'a MetadataMap) -> VerifyFuture<'a> {
        Box::pin(std::future::ready(self.lookup(metadata).map(drop)))
    }

    fn authenticate<'a>(&'a self, metadata: &'a MetadataMap, _node: &'a Node) -> AuthFuture<'a> {
        Box::pin(std::future::ready(self.lookup(metadata)))
    }
}

/// The token of an `authorization: Bearer <token>` header.
pub fn bearer_token(metadata: &MetadataMap) -> Result<&str, Status> {
    let value = metadata
        .get("authorization")
        .ok_or_else(|| Status::unauthenticated("missing authorization header"))?;
    let value = value
        .to_str()
        .map_err(|_| Status::unauthenticated("malformed authorization header"))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or_else(|| Status::unauthenticated("authorization header is not a bearer token"))?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(Status::unauthenticated(
            "authorization header is not a bearer token",
        ));
    }
    Ok(token)
}
