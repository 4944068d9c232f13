//! `grpc`: grpc.health.v1 Check, or Watch for a number of updates.

use std::time::Duration;

use tonic::transport::Endpoint;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use crate::{Error, SERVED_BY, say};

/// Prints `<STATUS> <x-served-by>` for the Check, or for each of `watch` updates; `ERR <error>`
/// and exit code 1 if the call fails or the stream ends early.
pub(crate) async fn grpc(
    addr: &str,
    service: &str,
    watch: Option<u32>,
    timeout: Duration,
) -> Result<u8, Error> {
    let uri = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    };
    let endpoint = Endpoint::from_shared(uri).map_err(|e| Error::Arg {
        flag: "ADDR",
        value: addr.to_owned(),
        reason: crate::chain(&e),
    })?;
    let request = HealthCheckRequest {
        service: service.to_owned(),
    };
    let call = async {
        let channel = endpoint
            .connect_timeout(timeout)
            .connect()
            .await
            .map_err(|e| crate::chain(&e))?;
        let mut client = HealthClient::new(channel);
        match watch {
            None => {
                let response = client.check(request).await.map_err(|s| status_error(&s))?;
                let served_by = served_by(response.metadata());
                say(format_args!("{} {served_by}", status(response.get_ref())));
            }
            Some(updates) => {
                let response = client.watch(request).await.map_err(|s| status_error(&s))?;
                let served_by = served_by(response.metadata());
                let mut stream = response.into_inner();
                for seen in 0..updates {
                    match stream.message().await.map_err(|s| status_error(&s))? {
                        Some(update) => say(format_args!("{} {served_by}", status(&update))),
                        None => return Err(format!("stream ended after {seen} updates")),
                    }
                }
            }
        }
        Ok::<_, String>(())
    };
    let result = tokio::time::timeout(timeout, call)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "timed out after {}",
                humantime::format_duration(timeout)
            ))
        });
    match result {
        Ok(()) => Ok(0),
        Err(error) => {
            say(format_args!("ERR {error}"));
            Ok(1)
        }
    }
}

fn status(response: &HealthCheckResponse) -> &'static str {
    ServingStatus::try_from(response.status).map_or("INVALID", |s| s.as_str_name())
}

fn served_by(metadata: &tonic::metadata::MetadataMap) -> String {
    metadata
        .get(SERVED_BY)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned()
}

/// `NotFound: service not registered`, rather than tonic's longer Display.
fn status_error(status: &tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}
