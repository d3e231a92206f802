//! `train --subwords` end to end: the n-gram rows in the model directory, prediction of words
//! the vocabulary never saw, and the options a resumed run may not change.

mod common;
use common::*;

#[test]
fn subwords_train_predict_and_resume_with_the_same_settings() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("sw");
    let out = train_tiny(
        &model,
        "600",
        &["--epochs", "2", "--stop-after", "1", "--subwords", "3000"],
    );
    assert!(!out.is_empty());
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        config["model"]["subwords"],
        serde_json::json!({"buckets": 3000, "minn": 4, "maxn": 4})
    );
    // Unseen words still reach the network through their n-grams: a different ranking from
    // the same text with those words left out.
    let texts = dir.path().join("t.txt");
    std::fs::write(&texts, "sourdoughbreads\nzzzz\n").unwrap();
    let pred = ok(&[
        "predict",
        "--model",
        model.to_str().unwrap(),
        "--texts",
        texts.to_str().unwrap(),
        "--out",
        "-",
        "--top-k",
        "3",
        "--exact",
    ]);
    let rows: Vec<&str> = pred.lines().skip(1).collect();
    assert_eq!(rows.len(), 2);
    assert_ne!(rows[0], rows[1], "{pred}");
    // Resuming with other subword settings is refused; with the same ones it continues.
    let m = model.to_str().unwrap();
    let resume = |extra: &[&str]| {
        let mut a = tiny_train_args(&data_dir(), &model, &["--resume", "--max-train", "600"]);
        a.extend(extra.iter().map(|s| s.to_string()));
        run(&strs(&a))
    };
    let refused = resume(&["--subwords", "5000"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("subwords 5000 (saved 3000)"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let again = resume(&["--epochs", "2", "--subwords", "3000"]);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(metrics_lines(&model).len(), 2, "{m}");
    // --subword-ngrams needs --subwords.
    let lone = run(&strs(&tiny_train_args(
        &data_dir(),
        &dir.path().join("x"),
        &["--subword-ngrams", "3"],
    )));
    assert!(!lone.status.success());
}
