//! `get`: sequential HTTP requests, each one's outcome printed.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};

use crate::cli::Output;
use crate::{Error, say};

/// Largest response body read; a larger one is an error.
const MAX_BODY: usize = 1024 * 1024;

/// The JSON output of `get -o json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetSummary {
    /// Requests sent.
    pub total: u64,
    /// Requests that got no HTTP response (connect errors, resets, timeouts).
    pub errors: u64,
    /// Responses per status code.
    pub by_status: BTreeMap<u16, u64>,
    /// Responses per body.
    pub by_body: BTreeMap<String, u64>,
}

/// The request every iteration sends: an `http://` URL and extra headers.
#[derive(Clone, Debug)]
pub(crate) struct RequestTemplate {
    uri: Uri,
    headers: HeaderMap,
}

/// How the HTTP client connects.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ClientOptions {
    /// A fresh connection per request (no pooling).
    pub(crate) new_connection: bool,
    /// HTTP/2 with prior knowledge.
    pub(crate) http2: bool,
    /// Per request, connecting included.
    pub(crate) timeout: Duration,
}

pub(crate) type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// What one request came to: a status and body, or why there was none.
pub(crate) type Outcome = Result<(StatusCode, String), String>;

// === impl RequestTemplate ===

impl RequestTemplate {
    /// `url` must be `http://HOST[:PORT]/…`; each header is `NAME:VALUE`.
    pub(crate) fn new(url: Uri, headers: &[String]) -> Result<Self, Error> {
        let bad_url = |reason: &str| Error::Arg {
            flag: "URL",
            value: url.to_string(),
            reason: reason.to_owned(),
        };
        if url.scheme_str() != Some("http") {
            return Err(bad_url("only http:// URLs are supported"));
        }
        if url.authority().is_none() {
            return Err(bad_url("needs a host"));
        }
        let mut map = HeaderMap::new();
        for header in headers {
            let bad = |reason: &str| Error::Arg {
                flag: "--header",
                value: header.clone(),
                reason: reason.to_owned(),
            };
            let (name, value) = header.split_once(':').ok_or_else(|| bad("expected K:V"))?;
            let name = HeaderName::try_from(name.trim()).map_err(|_| bad("invalid header name"))?;
            let value =
                HeaderValue::try_from(value.trim()).map_err(|_| bad("invalid header value"))?;
            map.append(name, value);
        }
        Ok(RequestTemplate {
            uri: url,
            headers: map,
        })
    }

    fn request(&self) -> Request<Empty<Bytes>> {
        let mut request = Request::new(Empty::new());
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = self.headers.clone();
        request
    }
}

/// A client per the options; the resolver is getaddrinfo (so `/etc/hosts` and the Pod's
/// `resolv.conf` search domains apply).
pub(crate) fn client(options: &ClientOptions) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(options.timeout));
    connector.set_nodelay(true);
    let mut builder = Client::builder(TokioExecutor::new());
    if options.new_connection {
        builder.pool_max_idle_per_host(0);
    }
    if options.http2 {
        builder.http2_only(true);
    }
    builder.build(connector)
}

/// Sends one request and reads its body, all within `timeout`.
pub(crate) async fn send(
    client: &HttpClient,
    template: &RequestTemplate,
    timeout: Duration,
) -> Outcome {
    let exchange = async {
        let response = client
            .request(template.request())
            .await
            .map_err(|e| crate::chain(&e))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| format!("reading the body: {}", crate::chain(e.as_ref())))?;
        Ok((
            status,
            String::from_utf8_lossy(&body.to_bytes()).into_owned(),
        ))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "timed out after {}",
                humantime::format_duration(timeout)
            ))
        })
}

/// Sends `count` requests one after another, `interval` apart.
pub(crate) async fn get(
    template: &RequestTemplate,
    options: &ClientOptions,
    count: u64,
    interval: Duration,
    output: Output,
) -> Result<u8, Error> {
    let client = client(options);
    let mut summary = GetSummary::default();
    for i in 0..count {
        if i > 0 {
            tokio::time::sleep(interval).await;
        }
        let outcome = send(&client, template, options.timeout).await;
        summary.total += 1;
        match &outcome {
            Ok((status, body)) => {
                *summary.by_status.entry(status.as_u16()).or_default() += 1;
                *summary.by_body.entry(body.clone()).or_default() += 1;
            }
            Err(_) => summary.errors += 1,
        }
        match (output, outcome) {
            (Output::Text, Ok((status, body))) => say(format_args!("{} {body}", status.as_u16())),
            (Output::Text, Err(error)) => say(format_args!("ERR {error}")),
            (Output::Json, Ok(_)) => {}
            (Output::Json, Err(error)) => eprintln_err(&error),
        }
    }
    if output == Output::Json {
        say(format_args!("{}", json(&summary)));
    }
    Ok(u8::from(summary.errors > 0))
}

/// Errors go to standard error in JSON mode, keeping standard output one JSON document.
fn eprintln_err(error: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "ERR {error}");
}

/// Compact JSON of a summary (whose maps have string-convertible keys, so this cannot fail).
pub(crate) fn json(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}
