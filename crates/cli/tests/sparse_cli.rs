//! End-to-end runs of the sparse lexical model: `train --sparse` alone, and the default
//! `train`, which fuses it with the network and chooses the weight on the validation split.

use std::path::Path;

mod common;
use common::*;

fn predict_file(model: &Path, out: &Path, k: &str) -> String {
    let tst = data_dir().join("tst_X.txt");
    ok(&[
        "predict",
        "--model",
        model.to_str().unwrap(),
        "--texts",
        tst.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--top-k",
        k,
    ]);
    std::fs::read_to_string(out).unwrap()
}

fn p_at_1(pred: &Path) -> f64 {
    let truth = data_dir().join("tst_X_Y.txt");
    let out = ok(&[
        "eval",
        "--pred",
        pred.to_str().unwrap(),
        "--truth",
        truth.to_str().unwrap(),
    ]);
    let line = out.lines().find(|l| l.starts_with("P ")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn the_sparse_model_alone_trains_predicts_and_refuses_misuse() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("sp");
    let data = data_dir();
    let (d, m) = (data.to_str().unwrap(), model.to_str().unwrap());
    let args = [
        "train",
        "--data",
        d,
        "--model",
        m,
        "--sparse",
        "--max-train",
        "3000",
    ];
    let out = ok(&args);
    assert!(
        out.contains("trained the sparse model on 3000 rows"),
        "{out}"
    );
    assert!(out.contains("test metrics of the saved model"), "{out}");
    for f in [
        "sparse.json",
        "sparse_terms.txt",
        "sparse.safetensors",
        "fusion.json",
        "labels.tsv",
    ] {
        assert!(model.join(f).is_file(), "{f} missing");
    }
    assert!(!model.join("config.json").exists());
    let fusion = std::fs::read_to_string(model.join("fusion.json")).unwrap();
    assert!(fusion.contains("\"sparse_weight\": 1.0"), "{fusion}");

    let pred = dir.path().join("pred.txt");
    let text = predict_file(&model, &pred, "5");
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("3000 736"));
    for l in lines {
        let scores: Vec<f32> = l
            .split_whitespace()
            .map(|t| t.split_once(':').unwrap().1.parse().unwrap())
            .collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{l}");
    }
    // A quarter of the training rows: far above the label prior (~8 P@1).
    let p1 = p_at_1(&pred);
    assert!(p1 > 50.0, "P@1 {p1}");

    // Neither resumable nor silently replaced.
    fails_with_one_line(&args, "already holds a model");
    let mut resume = args.to_vec();
    resume.push("--resume");
    let o = run(&resume);
    assert!(!o.status.success());
    let mut force = args.to_vec();
    force.push("--force");
    ok(&force);
}

#[test]
fn the_default_train_fuses_the_sparse_model_with_the_network() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("fused");
    let data = data_dir();
    let (d, m) = (data.to_str().unwrap(), model.to_str().unwrap());
    let out = ok(&[
        "train",
        "--data",
        d,
        "--model",
        m,
        "--max-train",
        "1500",
        "--epochs",
        "1",
        "--dim",
        "64",
        "--batch-size",
        "64",
        "--valid-fraction",
        "0.1",
        "--sparse-trees",
        "1",
        "--quiet",
    ]);
    assert!(out.contains("validation P@1: network"), "{out}");
    let fusion: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("fusion.json")).unwrap()).unwrap();
    let w = fusion["sparse_weight"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&w), "{w}");
    assert!(model.join("config.json").is_file() && model.join("sparse.json").is_file());

    // The fused ranking; then, with fusion.json moved away, the network alone (what an
    // interrupted sparse save leaves: a usable network).
    let fused = predict_file(&model, &dir.path().join("fused.txt"), "5");
    std::fs::rename(model.join("fusion.json"), dir.path().join("fusion.json")).unwrap();
    let network = predict_file(&model, &dir.path().join("net.txt"), "5");
    if w > 0.0 {
        assert_ne!(fused, network);
        // One epoch on 1,350 rows leaves the network weak: the fusion ranks better.
        let (pf, pn) = (
            p_at_1(&dir.path().join("fused.txt")),
            p_at_1(&dir.path().join("net.txt")),
        );
        assert!(pf > pn, "fused {pf} vs network {pn}");
    }

    // A damaged fusion.json is refused with its name.
    std::fs::write(model.join("fusion.json"), "{\"sparse_weight\": 2.0}\n").unwrap();
    predict_fails(&model, "fusion.json");
    std::fs::write(model.join("fusion.json"), "{\"sparse_weight\": 0.5}\n").unwrap();
    std::fs::write(model.join("sparse_terms.txt"), "just one term\n").unwrap();
    predict_fails(&model, "sparse_terms.txt");
}
