//! Leader election for the status writer over a `coordination.k8s.io/v1` Lease: all replicas
//! serve xDS, one writes status and Events.

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};
use tokio::sync::watch;

#[cfg(test)]
mod tests;

/// Lease timing: how long a holder's claim lasts without renewal (default 15 s, as
/// client-go's), and how often every replica looks (default 2 s).
#[derive(Clone, Copy, Debug)]
pub struct LeaseTiming {
    pub duration: Duration,
    pub retry: Duration,
}

impl Default for LeaseTiming {
    fn default() -> Self {
        LeaseTiming {
            duration: Duration::from_secs(15),
            retry: Duration::from_secs(2),
        }
    }
}

/// What a replica should do with the lease it read.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Nobody holds it, or the holder's claim expired: take it (a transition).
    Acquire,
    /// We hold it: renew.
    Renew,
    /// Someone else holds a live claim.
    Follow { holder: String },
}

/// Decides from the lease's spec (`None` when there is no lease) at `now`.
pub fn decide(spec: Option<&LeaseSpec>, me: &str, now: Timestamp) -> Decision {
    let Some(spec) = spec else {
        return Decision::Acquire;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder == me {
        return Decision::Renew;
    }
    if holder.is_empty() {
        return Decision::Acquire;
    }
    let seconds = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    let renewed = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0);
    match renewed {
        Some(at) if at.as_second() + seconds > now.as_second() => Decision::Follow {
            holder: holder.to_string(),
        },
        _ => Decision::Acquire,
    }
}

/// The spec to write for `decision` (not for `Follow`).
pub fn next_spec(
    current: Option<&LeaseSpec>,
    decision: &Decision,
    me: &str,
    timing: LeaseTiming,
    now: Timestamp,
) -> LeaseSpec {
    let transitions = current.and_then(|s| s.lease_transitions).unwrap_or(0);
    let seconds = i32::try_from(timing.duration.as_secs())
        .unwrap_or(i32::MAX)
        .max(1);
    match decision {
        Decision::Renew => LeaseSpec {
            renew_time: Some(MicroTime(now)),
            lease_duration_seconds: Some(seconds),
            ..current.cloned().unwrap_or_default()
        },
        _ => LeaseSpec {
            holder_identity: Some(me.to_string()),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_duration_seconds: Some(seconds),
            lease_transitions: Some(if current.is_some() {
                transitions + 1
            } else {
                0
            }),
            ..LeaseSpec::default()
        },
    }
}

/// Runs the election until `shutdown` fires, publishing whether this replica leads. A lost
/// update (someone else wrote first) or an API error counts as not leading; on shutdown a held
/// lease is released so another replica takes over at once.
pub async fn run(
    client: Client,
    namespace: String,
    name: String,
    me: String,
    timing: LeaseTiming,
    leading: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let api: Api<Lease> = Api::namespaced(client, &namespace);
    loop {
        let is_leader = match step(&api, &name, &me, timing).await {
            Ok(lead) => lead,
            Err(e) => {
                tracing::warn!(lease = %name, error = %e, "leader election step failed");
                false
            }
        };
        leading.send_if_modified(|l| std::mem::replace(l, is_leader) != is_leader);
        tokio::select! {
            _ = tokio::time::sleep(timing.retry) => {}
            _ = shutdown.changed() => break,
        }
    }
    if *leading.borrow() {
        leading.send_replace(false);
        if let Err(e) = release(&api, &name, &me).await {
            tracing::warn!(lease = %name, error = %e, "could not release the lease");
        }
    }
}

async fn step(
    api: &Api<Lease>,
    name: &str,
    me: &str,
    timing: LeaseTiming,
) -> Result<bool, kube::Error> {
    let current = api.get_opt(name).await?;
    let now = Timestamp::now();
    let spec = current.as_ref().and_then(|l| l.spec.as_ref());
    let decision = decide(spec, me, now);
    if let Decision::Follow { .. } = decision {
        return Ok(false);
    }
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            resource_version: current
                .as_ref()
                .and_then(|l| l.metadata.resource_version.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(next_spec(spec, &decision, me, timing, now)),
    };
    // The resourceVersion makes the write conditional: of two replicas acquiring at once, one
    // gets a conflict and follows.
    let written = match current {
        None => api.create(&PostParams::default(), &lease).await,
        Some(_) => api.replace(name, &PostParams::default(), &lease).await,
    };
    match written {
        Ok(_) => {
            if decision == Decision::Acquire {
                tracing::info!(lease = %name, holder = %me, "acquired the status-writer lease");
            }
            Ok(true)
        }
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

async fn release(api: &Api<Lease>, name: &str, me: &str) -> Result<(), kube::Error> {
    let Some(mut lease) = api.get_opt(name).await? else {
        return Ok(());
    };
    let Some(spec) = lease.spec.as_mut() else {
        return Ok(());
    };
    if spec.holder_identity.as_deref() != Some(me) {
        return Ok(());
    }
    spec.holder_identity = None;
    spec.acquire_time = None;
    spec.renew_time = None;
    api.replace(name, &PostParams::default(), &lease)
        .await
        .map(|_| ())
}
