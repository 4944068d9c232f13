use super::*;

#[test]
fn a_chain_admits_up_to_its_limit_and_frees_slots_as_connections_close() {
    let slots = ConnectionSlots::default();
    let a: Vec<Slot> = (0..3)
        .map(|_| slots.acquire("inbound", "web", 3).unwrap())
        .collect();
    assert!(slots.acquire("inbound", "web", 3).is_none());
    // Other chains, of this listener or another, count apart, as Envoy's filters do.
    assert!(slots.acquire("inbound", "db", 3).is_some());
    assert!(slots.acquire("outbound", "web", 3).is_some());
    drop(a);
    let mut again: Vec<Slot> = (0..3)
        .map(|_| slots.acquire("inbound", "web", 3).unwrap())
        .collect();
    // A refused attempt takes nothing.
    assert!(slots.acquire("inbound", "web", 3).is_none());
    again.pop();
    let last = slots.acquire("inbound", "web", 3);
    assert!(last.is_some());
    assert!(slots.acquire("inbound", "web", 3).is_none());
}
