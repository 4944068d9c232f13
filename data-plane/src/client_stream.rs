//! A client stream to the control plane (the metrics service, access logs): a channel of its
//! own to the ADS service's address, with its TLS and credentials, one stream at a time,
//! reopened with the ADS backoff when it ends.

use std::future::Future;

use crate::{
    ads::{self, Authorization, StreamError},
    bootstrap::Bootstrap,
};

/// Opens stream after stream: connects, then `call` opens and runs one stream on the channel
/// with the request metadata [`request`] puts on it, until it ends. Between two, the ADS
/// backoff, from its start again once `progress` says the last stream delivered something.
/// Returns when a stream ended and `keep_going` says no more.
pub(crate) async fn run<F, Fut>(
    what: &'static str,
    bootstrap: &Bootstrap,
    mut call: F,
    progress: impl Fn() -> bool,
    keep_going: impl Fn() -> bool,
) where
    F: FnMut(tonic::transport::Channel, Option<Authorization>) -> Fut,
    Fut: Future<Output = Result<(), tonic::Status>>,
{
    let mut failures: u32 = 0;
    loop {
        match once(what, bootstrap, &mut call).await {
            Ok(()) => tracing::info!(stream = what, "the control plane closed the stream"),
            Err(error) => tracing::warn!(stream = what, %error, "stream ended"),
        }
        if !keep_going() {
            return;
        }
        if progress() {
            failures = 0;
        }
        let wait = ads::backoff(failures, fastrand::f64());
        failures = failures.saturating_add(1);
        tokio::time::sleep(wait).await;
    }
}

async fn once<F, Fut>(
    what: &'static str,
    bootstrap: &Bootstrap,
    call: &mut F,
) -> Result<(), StreamError>
where
    F: FnMut(tonic::transport::Channel, Option<Authorization>) -> Fut,
    Fut: Future<Output = Result<(), tonic::Status>>,
{
    let (channel, uri) = ads::connect(bootstrap).await?;
    let authorization = ads::authorization(bootstrap)?;
    tracing::info!(stream = what, control_plane = %uri, "stream open");
    call(channel, authorization).await?;
    Ok(())
}

/// The request of a client stream of `messages`, with the proxy's credentials.
pub(crate) fn request<S>(messages: S, authorization: Option<Authorization>) -> tonic::Request<S> {
    let mut request = tonic::Request::new(messages);
    if let Some(value) = authorization {
        request.metadata_mut().insert("authorization", value);
    }
    request
}
