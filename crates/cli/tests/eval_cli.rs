//! End-to-end runs of `inceptionxml eval`.

use std::path::Path;
use std::process::Command;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write temp file");
    p.to_string_lossy().into_owned()
}

fn eval(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_inceptionxml"))
        .arg("eval")
        .args(args)
        .output()
        .expect("run inceptionxml")
}

#[test]
fn json_has_ordered_keys_and_hand_computed_values() {
    let dir = tempfile::tempdir().unwrap();
    // Row 0: truth {0, 2}, ranked 1, 0, 2 (0 and 2 tie, lower index first); row 1: no truth;
    // row 2: truth {3}, a single prediction.
    let truth = write(dir.path(), "tst.txt", "3 4\n0:1 2:1\n\n3:1\n");
    let pred = write(
        dir.path(),
        "pred.txt",
        "3 4\n1:0.9 2:0.5 0:0.5 3:0.1\n0:1\n3:0.2\n",
    );
    let train = write(dir.path(), "trn.txt", "4 4\n0:1 1:1\n0:1\n0:1 3:1\n2:1\n");
    let out = eval(&[
        "--truth",
        &truth,
        "--pred",
        &pred,
        "--train-labels",
        &train,
        "--k",
        "2",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let obj = v.as_object().unwrap();
    let keys: Vec<&str> = text
        .trim_matches(|c| c == '{' || c == '}' || c == '\n')
        .split(',')
        .map(|kv| kv.split(':').next().unwrap().trim_matches('"'))
        .collect();
    assert_eq!(
        keys,
        [
            "P@1", "P@2", "nDCG@1", "nDCG@2", "PSP@1", "PSP@2", "PSnDCG@1", "PSnDCG@2", "R@1",
            "R@2"
        ]
    );
    // The empty row stays in the denominator: P@1 = 1/3, P@2 = (1/2 + 0 + 1/2)/3, R@2 = 1.5/3.
    let get = |k: &str| obj[k].as_f64().unwrap();
    assert!((get("P@1") - 100.0 / 3.0).abs() < 1e-9);
    assert!((get("P@2") - 100.0 / 3.0).abs() < 1e-9);
    assert!((get("R@2") - 50.0).abs() < 1e-9);
    assert!(get("PSP@1") > 0.0 && get("PSP@1") < 100.0);
}

#[test]
fn without_train_labels_only_p_ndcg_r() {
    let dir = tempfile::tempdir().unwrap();
    let truth = write(dir.path(), "tst.txt", "2 3\n0:1\n1:1\n");
    let pred = write(dir.path(), "pred.txt", "2 3\n0:0.5\n2:0.5\n");
    let out = eval(&["--truth", &truth, "--pred", &pred]);
    assert!(out.status.success());
    let table = String::from_utf8(out.stdout).unwrap();
    let names: Vec<&str> = table
        .lines()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(names, ["k", "P", "nDCG", "R"]);
    assert!(table.contains("50.00"), "{table}");
}

#[test]
fn malformed_and_mismatched_inputs_fail_on_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let truth = write(dir.path(), "tst.txt", "2 3\n0:1\n1:1\n");
    let bad = write(dir.path(), "bad.txt", "2 3\n0:0.5\n1:x\n");
    let out = eval(&["--truth", &truth, "--pred", &bad]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("bad.txt:3:"), "{err}");

    let short = write(dir.path(), "short.txt", "1 3\n0:0.5\n");
    let out = eval(&["--truth", &truth, "--pred", &short]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("tst.txt") && err.contains("short.txt"),
        "{err}"
    );
}

/// Predictions with equal (rounded) scores are ranked in the file's order, as the tool that
/// wrote them ranked them, not by label id.
#[test]
fn ties_keep_the_order_of_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let truth = dir.path().join("truth.txt");
    let pred = dir.path().join("pred.txt");
    std::fs::write(&truth, "2 10\n7:1\n2:1 3:0\n").unwrap();
    std::fs::write(&pred, "2 10\n7:0.5 2:0.5\n3:0.9 2:0.9\n").unwrap();
    let o = eval(&[
        "--truth",
        truth.to_str().unwrap(),
        "--pred",
        pred.to_str().unwrap(),
        "--k",
        "1",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    // Row 1: 7 first (file order) is a hit. Row 2: 3 first is no hit, since `3:0` in the
    // truth is not a positive.
    assert_eq!(v["P@1"].as_f64().unwrap(), 50.0, "{out}");
}
