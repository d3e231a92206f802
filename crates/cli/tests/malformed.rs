//! Every malformed-input class ends with a non-zero exit and one line naming the file (and the line
//! where there is one), through the binary.

use std::path::Path;
use std::process::Command;

/// Writes a dataset folder whose files are valid except `name`, which gets `content`.
fn dataset(dir: &Path, name: &str, content: &[u8]) {
    std::fs::write(dir.join("trn_X.txt"), "a b\nc d\n").unwrap();
    std::fs::write(dir.join("trn_X_Y.txt"), "2 3\n0:1\n1:1 2:1\n").unwrap();
    std::fs::write(dir.join(name), content).unwrap();
}

fn stats_error(dir: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_inceptionxml"))
        .args(["stats", "--data"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "stats should fail on {}",
        dir.display()
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    err
}

#[test]
fn each_malformed_class_names_file_and_line() {
    let cases: &[(&str, &[u8], &str)] = &[
        ("trn_X_Y.txt", b"2\n0:1\n1:1\n", "trn_X_Y.txt:1: bad header"),
        (
            "trn_X_Y.txt",
            b"two 3\n0:1\n1:1\n",
            "trn_X_Y.txt:1: bad header",
        ),
        ("trn_X_Y.txt", b"", "trn_X_Y.txt:1: empty file"),
        (
            "trn_X_Y.txt",
            b"3 3\n0:1\n1:1\n",
            "trn_X_Y.txt:3: header states 3 rows",
        ),
        (
            "trn_X_Y.txt",
            b"2 3\n0:1\n1:1\n2:1\n",
            "trn_X_Y.txt:4: more rows",
        ),
        (
            "trn_X_Y.txt",
            b"2 3\n0:1\n5:1\n",
            "trn_X_Y.txt:3: index 5 out of range",
        ),
        (
            "trn_X_Y.txt",
            b"2 3\n0:1\n1:x\n",
            "trn_X_Y.txt:3: unparsable value",
        ),
        (
            "trn_X_Y.txt",
            b"2 3\n0:1\nq:1\n",
            "trn_X_Y.txt:3: unparsable index",
        ),
        (
            "trn_X.txt",
            b"a b\nc \xff d\n",
            "trn_X.txt:2: invalid UTF-8",
        ),
        ("trn_X.txt", b"", "trn_X_Y.txt: 2 label rows but"),
    ];
    for (name, content, needle) in cases {
        let dir = tempfile::tempdir().unwrap();
        dataset(dir.path(), name, content);
        let err = stats_error(dir.path());
        assert!(
            err.contains(needle),
            "{name} {content:?}: expected {needle:?} in {err}"
        );
    }
}

#[test]
fn missing_file_and_folder_are_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("trn_X.txt"), "a\n").unwrap();
    let err = stats_error(dir.path());
    assert!(err.contains("trn_X_Y.txt"), "{err}");
    let err = stats_error(&dir.path().join("nope"));
    assert!(err.contains("nope") && err.contains("not found"), "{err}");
}
