//! Tests of how replicas find and trust each other.

use std::sync::{Arc, Mutex};

use rustls::{pki_types::CertificateDer, sign::CertifiedKey};

use super::*;
use crate::{
    controller::metrics_api::tests::{Ca, chain, pod},
    webhook::CertReloader,
};

/// A [`PeerSource`] that answers the peers a test sets.
#[derive(Debug, Default)]
pub(crate) struct FixedPeers(pub(crate) Mutex<Vec<Peer>>);

impl PeerSource for FixedPeers {
    fn peers(&self) -> BoxFuture<'_, Result<Vec<Peer>, String>> {
        let peers = self.0.lock().unwrap().clone();
        Box::pin(async move { Ok(peers) })
    }
}

fn own_key(dir: &std::path::Path) -> Arc<CertifiedKey> {
    CertReloader::load(dir).unwrap().current()
}

#[test]
fn a_replica_is_a_client_with_the_served_certificates_key() {
    let ca = Ca::new("webhook CA");
    let dir = tempfile::tempdir().unwrap();
    ca.write_serving(dir.path());
    let own = own_key(dir.path());
    // The same certificate (every replica mounts the same Secret).
    let served: Vec<CertificateDer<'static>> = own.cert.clone();
    assert_eq!(same_key(Some(&served), &own), Ok(()));
    // Another certificate of the same CA.
    let other = tempfile::tempdir().unwrap();
    ca.write_serving(other.path());
    assert_eq!(
        same_key(Some(&own_key(other.path()).cert), &own),
        Err(PeerAuthError::NotAReplica)
    );
    // The front proxy's certificate.
    let front = Ca::new("front-proxy-ca");
    let (cert, _) = front.client("front-proxy-client");
    assert_eq!(
        same_key(Some(&chain(&cert)), &own),
        Err(PeerAuthError::NotAReplica)
    );
    // None at all.
    assert_eq!(same_key(None, &own), Err(PeerAuthError::NoCertificate));
    assert_eq!(same_key(Some(&[]), &own), Err(PeerAuthError::NoCertificate));
}

#[test]
fn peers_are_the_other_serving_replicas_with_an_ip() {
    let with_ip = |name: &str, ready, deleting, ip: Option<&str>| {
        let mut p = pod(name, ready, deleting);
        if let Some(status) = p.status.as_mut() {
            status.pod_ip = ip.map(str::to_owned);
        }
        p
    };
    let pods = [
        with_ip("me", true, false, Some("10.0.0.1")),
        with_ip("b", true, false, Some("10.0.0.2")),
        with_ip("starting", false, false, Some("10.0.0.3")),
        with_ip("going", true, true, Some("10.0.0.4")),
        with_ip("no-ip", true, false, None),
    ];
    assert_eq!(
        serving_peers(&pods, "me", 9443),
        [Peer {
            name: "b".into(),
            addr: "10.0.0.2:9443".parse().unwrap(),
        }]
    );
}
