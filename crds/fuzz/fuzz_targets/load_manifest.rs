//! Feeds arbitrary bytes to the manifest loader, then validates whatever it read.

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_crds::manifest;

fuzz_target!(|data: &[u8]| {
    let m = manifest::load_bytes("fuzz.yaml", data);
    // Lines as YAML counts them: `\r\n`, `\r` and `\n` each end one.
    let crlf = data.windows(2).filter(|w| w == b"\r\n").count();
    let lines = 1 + data.iter().filter(|&&b| b == b'\n' || b == b'\r').count() - crlf;
    for e in &m.errors {
        // Every reported line must exist in the input.
        assert!(
            e.line >= 1 && e.line <= lines,
            "line {} of {lines}: {e}",
            e.line
        );
        let _ = e.to_string();
    }
    for p in m.problems() {
        assert!(
            p.line >= 1 && p.line <= lines,
            "line {} of {lines}: {p}",
            p.line
        );
    }
    for o in &m.others {
        let _ = o.to_string();
    }
});
