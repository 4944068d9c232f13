use super::*;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

fn held_by(holder: &str, renewed: i64) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(holder.into()),
        renew_time: Some(MicroTime(at(renewed))),
        acquire_time: Some(MicroTime(at(0))),
        lease_duration_seconds: Some(15),
        lease_transitions: Some(3),
        ..LeaseSpec::default()
    }
}

#[test]
fn a_live_claim_is_followed_an_expired_one_taken_our_own_renewed() {
    assert_eq!(decide(None, "a", at(0)), Decision::Acquire);
    let spec = held_by("b", 0);
    assert_eq!(
        decide(Some(&spec), "a", at(14)),
        Decision::Follow { holder: "b".into() }
    );
    assert_eq!(decide(Some(&spec), "a", at(15)), Decision::Acquire);
    assert_eq!(decide(Some(&spec), "b", at(100)), Decision::Renew);
    let released = LeaseSpec {
        holder_identity: None,
        ..spec
    };
    assert_eq!(decide(Some(&released), "a", at(1)), Decision::Acquire);
}

#[test]
fn taking_over_counts_a_transition_and_renewing_keeps_the_acquire_time() {
    let timing = LeaseTiming {
        duration: Duration::from_secs(4),
        retry: Duration::from_secs(1),
    };
    let spec = held_by("b", 0);
    let taken = next_spec(Some(&spec), &Decision::Acquire, "a", timing, at(20));
    assert_eq!(taken.holder_identity.as_deref(), Some("a"));
    assert_eq!(taken.lease_transitions, Some(4));
    assert_eq!(taken.lease_duration_seconds, Some(4));
    let renewed = next_spec(Some(&taken), &Decision::Renew, "a", timing, at(22));
    assert_eq!(renewed.acquire_time, taken.acquire_time);
    assert_eq!(renewed.renew_time, Some(MicroTime(at(22))));
    let first = next_spec(None, &Decision::Acquire, "a", timing, at(0));
    assert_eq!(first.lease_transitions, Some(0));
}
