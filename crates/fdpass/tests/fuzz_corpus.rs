//! Replays the fuzz corpus (`fuzz/corpus/<target>/`, grown by `npm run fuzz`)
//! through the same harnesses the cargo-fuzz targets run, so every input the
//! fuzzer kept is checked on every `npm test`, on stable Rust.

use std::path::Path;
use std::sync::Mutex;

/// The harnesses check that descriptor numbers they handed out are closed
/// afterwards; another test opening descriptors meanwhile would reuse them.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn replay(target: &str, harness: fn(&[u8])) {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut inputs = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        harness(&std::fs::read(&path).unwrap());
        inputs += 1;
    }
    assert!(inputs > 0, "{} holds no inputs", dir.display());
}

#[test]
fn control_corpus() {
    replay("control", fdpass::fuzzing::control);
}

#[test]
fn stream_corpus() {
    replay("stream", fdpass::fuzzing::stream);
}

#[test]
fn records_corpus() {
    replay("records", fdpass::fuzzing::records);
}
