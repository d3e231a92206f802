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

    explanations_follow_the_words_and_leave_the_ranking_alone(&model);

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

/// `predict --explain`: every result of `--format json` carries an `explanation` with one
/// finite weight per word of the text (the models' tokens, in text order), and the ranking is
/// the one `predict` gives without it; `tsv` gets a fifth column; `xc` is refused.
fn explanations_follow_the_words_and_leave_the_ranking_alone(model: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let texts: Vec<String> = std::fs::read_to_string(data_dir().join("tst_X.txt"))
        .unwrap()
        .lines()
        .take(30)
        .map(str::to_string)
        .collect();
    let f = dir.path().join("t.txt");
    std::fs::write(&f, texts.join("\n") + "\n").unwrap();
    let (m, t) = (model.to_str().unwrap(), f.to_str().unwrap());
    let run = |extra: &[&str]| {
        let mut a = vec!["predict", "--model", m, "--texts", t, "--top-k", "4"];
        a.extend_from_slice(extra);
        ok(&a)
    };
    let plain = run(&["--format", "json"]);
    let explained = run(&["--format", "json", "--explain"]);
    assert!(!plain.contains("explanation"));
    for ((p, e), text) in plain.lines().zip(explained.lines()).zip(&texts) {
        let (p, e): (serde_json::Value, serde_json::Value) = (
            serde_json::from_str(p).unwrap(),
            serde_json::from_str(e).unwrap(),
        );
        let (pr, er) = (
            p["results"].as_array().unwrap(),
            e["results"].as_array().unwrap(),
        );
        assert_eq!(pr.len(), er.len());
        let words = xmc::text::tokenize(text);
        for (a, b) in pr.iter().zip(er) {
            assert_eq!(a["uri"], b["uri"]);
            assert_eq!(a["score"], b["score"]);
            let ex = b["explanation"].as_array().unwrap();
            let got: Vec<&str> = ex.iter().map(|x| x["word"].as_str().unwrap()).collect();
            assert_eq!(got, words, "{text}");
            for x in ex {
                let w = x["weight"].as_f64().unwrap();
                assert!(w.is_finite() && w.abs() <= 1.0, "{x}");
            }
        }
        // The top label of a text with words owes its score to some of them.
        if let Some(first) = er.first().filter(|_| !words.is_empty()) {
            let ex = first["explanation"].as_array().unwrap();
            assert!(
                ex.iter().any(|x| x["weight"].as_f64().unwrap() != 0.0),
                "{e}"
            );
        }
    }
    let tsv = run(&["--format", "tsv", "--explain"]);
    let first = tsv.lines().next().unwrap();
    let cols: Vec<&str> = first.split('\t').collect();
    assert_eq!(cols.len(), 5, "{first}");
    assert_eq!(
        cols[4].split(' ').count(),
        xmc::text::tokenize(&texts[0]).len()
    );
    fails_with_one_line(
        &["predict", "--model", m, "--texts", t, "--explain"],
        "--explain needs --format json or tsv",
    );
}
