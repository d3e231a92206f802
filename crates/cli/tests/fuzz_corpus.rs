//! Replays the saved fuzzing corpora (`fuzz/corpus/<target>/`, seeds and what the fuzzers kept)
//! through the same parsers the libFuzzer targets drive: every input must give a result or an
//! error, never a panic. CI runs this; `fuzz/README.md` says how to fuzz further.

#[path = "../../../fuzz/src/parsers.rs"]
mod parsers;

#[test]
fn every_saved_fuzz_input_is_handled() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    let mut n = 0;
    for target in parsers::TARGETS {
        let dir = root.join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            panic!("no corpus folder {}", dir.display());
        };
        for e in entries {
            let path = e.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            parsers::run(target, &data);
            n += 1;
        }
    }
    assert!(n >= parsers::TARGETS.len(), "{n} inputs");
    eprintln!("{n} saved fuzz inputs replayed");
}
