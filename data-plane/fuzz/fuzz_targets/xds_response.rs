//! Feeds arbitrary delta ADS responses to the proxy's xDS client, preloaded with a real mesh
//! configuration, then translates whatever it holds. Nothing may panic; a rejected response
//! must be NACKed (code 3, the nonce echoed) and change nothing; and whatever the client
//! accepted must link into a runtime (the client translates every resource it accepts).
//!
//! Input: a mode byte, then either the raw bytes of one `DeltaDiscoveryResponse`, or a few
//! structured responses whose resources are arbitrary bytes, real resources (of any type), or
//! real resources truncated, with a byte changed, or with arbitrary bytes appended (which
//! protobuf decodes as a merge: well-formed variations of real resources).

#![no_main]

use std::{collections::HashMap, sync::LazyLock};

use envoy_types::pb::{
    envoy::service::discovery::v3::{DeltaDiscoveryResponse, Resource as WireResource},
    google::protobuf::Any,
};
use libfuzzer_sys::{
    arbitrary::{Result, Unstructured},
    fuzz_target,
};
use prost::Message;
use switchyard_proxy::xds::{DeltaClient, TypeUrl};
use switchyard_proxy_fuzz::{accepted_client, resources, responses};

struct Fixture {
    /// A client that accepted the whole real configuration.
    preloaded: DeltaClient,
    /// Every real resource, as `(name, Any)`.
    resources: Vec<(String, Any)>,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let preloaded = accepted_client(&responses());
    let runtime = preloaded.config().runtime();
    assert!(!runtime.listeners.is_empty(), "the fixture has listeners");
    Fixture {
        preloaded,
        resources: resources()
            .into_iter()
            .map(|r| (r.name, r.resource))
            .collect(),
    }
});

fuzz_target!(|data: &[u8]| {
    let fixture = &*FIXTURE;
    let mut u = Unstructured::new(data);
    let Ok(mode) = u.arbitrary::<u8>() else {
        return;
    };
    // Half the inputs start from nothing, half from the whole real configuration (so that
    // EDS, RDS and SDS names are subscribed and updates and removals meet held resources).
    let mut client = if mode & 2 == 0 {
        fixture.preloaded.clone()
    } else {
        accepted_client(&[])
    };
    if mode & 1 == 0 {
        if let Ok(response) = DeltaDiscoveryResponse::decode(u.take_rest()) {
            feed(&mut client, response);
        }
        return;
    }
    for _ in 0..4 {
        match response(&mut u, fixture) {
            Ok(response) => feed(&mut client, response),
            Err(_) => break,
        }
    }
});

/// Hands one response to the client and checks what it answered.
fn feed(client: &mut DeltaClient, response: DeltaDiscoveryResponse) {
    let before = versions(client);
    let nonce = response.nonce.clone();
    let type_url = response.type_url.clone();
    let outcome = client.handle_response(response);
    match &outcome.rejected {
        Some(error) => {
            let [nack] = outcome.requests.as_slice() else {
                panic!("a NACK and nothing else: {:?}", outcome.requests);
            };
            let status = nack.error_detail.as_ref().expect("a NACK has a status");
            assert_eq!(status.code, 3);
            assert_eq!(status.message, error.to_string());
            assert_eq!(nack.response_nonce, nonce);
            assert_eq!(nack.type_url, type_url);
            assert!(!outcome.changed);
            assert_eq!(
                versions(client),
                before,
                "a rejected response changed the config"
            );
        }
        None => {
            let ack = outcome.requests.last().expect("an ACK");
            assert!(ack.error_detail.is_none());
            assert_eq!(ack.response_nonce, nonce);
        }
    }
    // A rejection changes nothing: only a change needs linking again.
    if outcome.changed {
        client.config().runtime();
    }
}

fn versions(client: &DeltaClient) -> Vec<HashMap<String, String>> {
    TypeUrl::ALL
        .into_iter()
        .map(|ty| client.config().versions(ty))
        .collect()
}

/// A structured response: one of the six types (or an arbitrary type URL), a few resources
/// and removals.
fn response(u: &mut Unstructured<'_>, fixture: &Fixture) -> Result<DeltaDiscoveryResponse> {
    let type_url = match u.choose_index(TypeUrl::ALL.len() + 1)? {
        i if i < TypeUrl::ALL.len() => TypeUrl::ALL[i].type_url().to_owned(),
        _ => u.arbitrary::<String>()?,
    };
    let nonce = u.arbitrary::<String>()?;
    let mut resources = Vec::new();
    for _ in 0..u.int_in_range(0..=3u8)? {
        resources.push(resource(u, fixture, &type_url)?);
    }
    let mut removed_resources = Vec::new();
    for _ in 0..u.int_in_range(0..=2u8)? {
        removed_resources.push(name(u, fixture)?);
    }
    Ok(DeltaDiscoveryResponse {
        type_url,
        nonce,
        resources,
        removed_resources,
        ..Default::default()
    })
}

/// A real resource name (of any type) or an arbitrary one.
fn name(u: &mut Unstructured<'_>, fixture: &Fixture) -> Result<String> {
    if u.ratio(3, 4)? {
        Ok(u.choose(&fixture.resources)?.0.clone())
    } else {
        u.arbitrary()
    }
}

fn resource(u: &mut Unstructured<'_>, fixture: &Fixture, type_url: &str) -> Result<WireResource> {
    let name = name(u, fixture)?;
    let version = match u.choose_index(3)? {
        0 => "1".to_owned(),
        1 => "2".to_owned(),
        _ => u.arbitrary()?,
    };
    if u.ratio(1, 32)? {
        return Ok(WireResource {
            name,
            version,
            ..Default::default()
        });
    }
    let (_, real) = u.choose(&fixture.resources)?;
    let mut value = real.value.clone();
    match u.choose_index(5)? {
        0 => value = u.arbitrary::<Vec<u8>>()?,
        1 => {}
        2 => value.extend_from_slice(u.arbitrary::<&[u8]>()?),
        3 => value.truncate(u.choose_index(value.len().max(1))?),
        _ => {
            if !value.is_empty() {
                let at = u.choose_index(value.len())?;
                value[at] = u.arbitrary()?;
            }
        }
    }
    let any_type_url = match u.choose_index(4)? {
        0 => real.type_url.clone(),
        1 => u.arbitrary()?,
        _ => type_url.to_owned(),
    };
    Ok(WireResource {
        name,
        version,
        resource: Some(Any {
            type_url: any_type_url,
            value,
        }),
        ..Default::default()
    })
}
