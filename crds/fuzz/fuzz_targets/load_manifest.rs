//! Feeds arbitrary bytes to the manifest loader, then validates whatever it read.

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_crds::manifest;

fuzz_target!(|data: &[u8]| {
    let m = manifest::load_bytes("fuzz.yaml", data);
    let lines = 1 + data.iter().filter(|&&b| b == b'\n').count();
    for e in &m.errors {
        // Every reported line must exist in the input (plus the one past a final newline).
        assert!(
            e.line >= 1 && e.line <= lines + 1,
            "line {} of {lines}: {e}",
            e.line
        );
        let _ = e.to_string();
    }
    for p in m.problems() {
        assert!(
            p.line >= 1 && p.line <= lines + 1,
            "line {} of {lines}: {p}",
            p.line
        );
    }
    for o in &m.others {
        let _ = o.to_string();
    }
});
