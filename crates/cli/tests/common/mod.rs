//! Helpers shared by the end-to-end tests: run the binary, expect success or a one-line error,
//! train a tiny model on the bundled cooking data, read `metrics.jsonl`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_inceptionxml");

pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/cooking")
}

pub fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("the binary runs")
}

/// Runs and expects success; returns standard output.
pub fn ok(args: &[&str]) -> String {
    let o = run(args);
    assert!(
        o.status.success(),
        "{args:?} failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs and expects failure with exactly one `error: ...` line containing `needle`.
pub fn fails_with_one_line(args: &[&str], needle: &str) {
    let o = run(args);
    assert!(!o.status.success(), "{args:?} should fail");
    let err = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one-line message expected, got:\n{err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    assert!(lines[0].contains(needle), "{needle:?} not in {err}");
}

/// The arguments of `train` on `data` into `model` with d = 64 and batch 64, the network
/// alone (`--no-sparse`: these tests check the network), quietly, then `extra`.
pub fn tiny_train_args(data: &Path, model: &Path, extra: &[&str]) -> Vec<String> {
    let head = [
        "train",
        "--data",
        data.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--dim",
        "64",
        "--batch-size",
        "64",
        "--no-sparse",
        "--quiet",
    ];
    head.iter().chain(extra).map(|s| s.to_string()).collect()
}

/// Borrowed views of owned arguments.
pub fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// `train` on the first `max_train` cooking rows with d = 64 and batch 64, quietly.
pub fn train_tiny(model: &Path, max_train: &str, extra: &[&str]) -> String {
    let mut e = vec!["--max-train", max_train];
    e.extend_from_slice(extra);
    ok(&strs(&tiny_train_args(&data_dir(), model, &e)))
}

pub fn metrics_lines(model: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(model.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `predict` on the cooking test texts with `model` fails with one line naming `needle`.
pub fn predict_fails(model: &Path, needle: &str) {
    let tst = data_dir().join("tst_X.txt");
    fails_with_one_line(
        &[
            "predict",
            "--model",
            model.to_str().unwrap(),
            "--texts",
            tst.to_str().unwrap(),
        ],
        needle,
    );
}

/// The port a `serve` child prints on its first line of standard output (`listening on
/// http://127.0.0.1:PORT`); the child's stdout must be piped.
pub fn listening_port(child: &mut std::process::Child) -> u16 {
    use std::io::BufRead;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("a piped stdout"))
        .read_line(&mut line)
        .unwrap();
    line.trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"))
}
