//! End-to-end InceptionXML+ runs of the `inceptionxml` binary on the bundled cooking data:
//! `train --plus` (clusters computed or read from a file), resume, the shortlist metrics,
//! `predict --score` on the validation rows `split` writes, ensembles, and bad cluster files.

use std::path::Path;

mod common;
use common::*;

fn train(model: &Path, extra: &[&str]) -> String {
    train_tiny(model, "800", extra)
}

fn predict(model: &[&Path], out: &Path, extra: &[&str]) {
    predict_texts(model, &data_dir().join("tst_X.txt"), out, extra)
}

fn predict_texts(model: &[&Path], tst: &Path, out: &Path, extra: &[&str]) {
    let mut args = vec!["predict"];
    for m in model {
        args.push("--model");
        args.push(m.to_str().unwrap());
    }
    args.extend_from_slice(&[
        "--texts",
        tst.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--top-k",
        "5",
    ]);
    args.extend_from_slice(extra);
    ok(&args);
}

fn p_at_1(pred: &Path) -> f64 {
    let truth = xmc::SparseMatrix::read(data_dir().join("tst_X_Y.txt")).unwrap();
    p_at_1_of(&truth, pred)
}

fn p_at_1_of(truth: &xmc::SparseMatrix, pred: &Path) -> f64 {
    let p = xmc::SparseMatrix::read(pred).unwrap();
    let m = xmc::metrics::evaluate(truth, &p, None, 5).unwrap();
    m.p[0] * 100.0
}

#[test]
fn plus_trains_resumes_predicts_and_ensembles() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("plus");
    train(
        &model,
        &[
            "--plus",
            "--clusters",
            "16",
            "--top-k",
            "4",
            "--epochs",
            "2",
            "--stop-after",
            "1",
        ],
    );
    let clusters = std::fs::read_to_string(model.join("clusters.txt")).unwrap();
    assert!(clusters.starts_with("736 16\n"), "{}", &clusters[..20]);
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["model"]["plus"]["n_clusters"], 16);
    assert_eq!(cfg["model"]["plus"]["top_k"], 4);
    assert_eq!(cfg["train"]["batch_size"], 64);

    // 2 epochs × 0.25 detached → the first epoch trains the encoder on the meta task only.
    let summary = train(&model, &["--resume"]);
    assert!(
        summary.contains("validation metrics (620 rows held out of training) after epoch 2"),
        "{summary}"
    );
    // The run's curves are drawn at its end.
    assert!(std::fs::read(model.join("curves.png"))
        .unwrap()
        .starts_with(b"\x89PNG"));
    let lines = metrics_lines(&model);
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["detached"], true);
    assert_eq!(lines[1]["detached"], false);
    for l in &lines {
        let r = l["shortlist_recall"].as_f64().unwrap();
        let m = l["meta_p1"].as_f64().unwrap();
        assert!(r > 0.0 && r <= 100.0, "{l}");
        assert!((0.0..=100.0).contains(&m), "{l}");
        // Each row scores 4 of 16 clusters: about a quarter of the 736 labels, never all.
        let c = l["candidates_per_row"].as_f64().unwrap();
        assert!(c > 46.0 && c < 736.0, "{l}");
    }
    // Both rankings were scored on the validation split (5 % of the training rows, seeded,
    // held out) after the last epoch; `split` writes those rows, and predict on them reproduces
    // each.
    let split_dir = dir.path().join("valid");
    let said = ok(&[
        "split",
        "--data",
        data_dir().to_str().unwrap(),
        "--out",
        split_dir.to_str().unwrap(),
        "--valid-fraction",
        "0.05",
    ]);
    assert!(said.contains("11784 training rows"), "{said}");
    let valid = xmc::dataset::XcDataset::open(&split_dir)
        .unwrap()
        .test
        .unwrap();
    assert_eq!(valid.len(), 620);
    let valid_x = split_dir.join("tst_X.txt");
    let valid_p1 = |pred: &Path| p_at_1_of(&valid.labels, pred);
    let by = &lines[1]["p1_by_score"];
    for mode in ["extreme", "combined"] {
        let out = dir.path().join(format!("pred_{mode}.txt"));
        predict_texts(&[&model], &valid_x, &out, &["--score", mode]);
        let want = by[mode].as_f64().unwrap();
        assert!(
            (valid_p1(&out) - want).abs() < 0.011,
            "{mode}: {} vs {want}",
            valid_p1(&out)
        );
    }
    // The saved default is the better of the two by the mean of P@1, P@3 and P@5.
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("config.json")).unwrap()).unwrap();
    let p = &lines[1]["p_by_score"];
    let mean = |mode: &str| -> f64 {
        let ps = ["P@1", "P@3", "P@5"].map(|k| p[mode][k].as_f64().unwrap());
        assert_eq!(ps[0], by[mode].as_f64().unwrap(), "{mode}");
        ps.iter().sum::<f64>() / 3.0
    };
    let best = if mean("combined") > mean("extreme") {
        "combined"
    } else {
        "extreme"
    };
    assert_eq!(cfg["model"]["plus"]["score"], best);
    // The last epoch reports the ranking the model was saved with: its validation metrics, and
    // test metrics that predict's default ranking reproduces.
    assert_eq!(lines[1]["score"], best);
    let reported = lines[1]["valid"]["P@1"].as_f64().unwrap();
    assert!(
        (reported - by[best].as_f64().unwrap()).abs() < 1e-9,
        "{reported} vs {by}"
    );
    let default_pred = dir.path().join("pred_default.txt");
    predict(&[&model], &default_pred, &[]);
    let test_p1 = lines[1]["metrics"]["P@1"].as_f64().unwrap();
    assert!((p_at_1(&default_pred) - test_p1).abs() < 0.011);

    // An ensemble of a model with itself ranks exactly like the model.
    let single = dir.path().join("single.txt");
    let twice = dir.path().join("twice.txt");
    predict(&[&model], &single, &[]);
    predict(&[&model, &model], &twice, &[]);
    let a = std::fs::read_to_string(&single).unwrap();
    let b = std::fs::read_to_string(&twice).unwrap();
    let labels = |s: &str| -> Vec<Vec<String>> {
        s.lines()
            .skip(1)
            .map(|l| {
                l.split_whitespace()
                    .map(|e| e.split_once(':').unwrap().0.to_string())
                    .collect()
            })
            .collect()
    };
    assert_eq!(labels(&a), labels(&b));

    // Batch-1 prediction (int8 meta index and label table, exact rescoring) ranks like the
    // exact batched path on (nearly) every row.
    let one = dir.path().join("one.txt");
    predict(&[&model], &one, &["--batch-size", "1"]);
    let c = std::fs::read_to_string(&one).unwrap();
    let (la, lc) = (labels(&a), labels(&c));
    let same = la.iter().zip(&lc).filter(|(x, y)| x == y).count();
    assert!(
        same * 100 >= la.len() * 99,
        "{same} of {} rows agree",
        la.len()
    );

    // A plain model and the InceptionXML+ model average into one ranking.
    let plain = dir.path().join("plain");
    train(&plain, &["--epochs", "1"]);
    let mixed = dir.path().join("mixed.txt");
    predict(&[&model, &plain], &mixed, &[]);
    let text = std::fs::read_to_string(&mixed).unwrap();
    assert!(text.starts_with("3000 736\n"));

    // Issue 27 D1: a clusters.txt with an empty cluster (the last cluster's labels moved to
    // cluster 0) is refused at load, naming the file, with and without --exact (it panicked).
    let orig = std::fs::read_to_string(model.join("clusters.txt")).unwrap();
    let mut lines: Vec<String> = orig.lines().map(String::from).collect();
    let c: usize = lines[0].split_whitespace().nth(1).unwrap().parse().unwrap();
    for l in lines.iter_mut().skip(1) {
        if l.trim() == (c - 1).to_string() {
            *l = "0".into();
        }
    }
    std::fs::write(model.join("clusters.txt"), lines.join("\n") + "\n").unwrap();
    let tst = data_dir().join("tst_X.txt");
    for extra in [&[][..], &["--exact"][..]] {
        let mut args = vec!["predict", "--model", model.to_str().unwrap()];
        args.extend_from_slice(&["--texts", tst.to_str().unwrap()]);
        args.extend_from_slice(extra);
        fails_with_one_line(&args, "clusters.txt:1: cluster");
        let err = String::from_utf8_lossy(&run(&args).stderr).to_string();
        assert!(
            err.contains("has no label") && !err.contains("panicked"),
            "{err}"
        );
    }
    std::fs::write(model.join("clusters.txt"), orig).unwrap();

    // A clusters.txt that does not fit the model is named.
    std::fs::write(
        model.join("clusters.txt"),
        "736 8\n".to_string() + &"0\n".repeat(736),
    )
    .unwrap();
    predict_fails(&model, "clusters.txt");
}

#[test]
fn plus_reads_a_cluster_file_and_rejects_a_wrong_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir();
    let cfile = dir.path().join("c.txt");
    ok(&[
        "cluster",
        "--data",
        data.to_str().unwrap(),
        "--out",
        cfile.to_str().unwrap(),
        "--clusters",
        "32",
    ]);
    let model = dir.path().join("m");
    let out = train(
        &model,
        &[
            "--plus",
            "--clusters",
            cfile.to_str().unwrap(),
            "--epochs",
            "1",
        ],
    );
    // The default K for 32 clusters.
    let k = xmc::shortlist::default_top_k(32);
    assert!(out.contains(&format!("shortlist recall@{k}")), "{out}");
    assert_eq!(
        std::fs::read_to_string(model.join("clusters.txt")).unwrap(),
        std::fs::read_to_string(&cfile).unwrap()
    );

    let bad = dir.path().join("bad.txt");
    std::fs::write(&bad, "10 2\n0\n1\n0\n1\n0\n1\n0\n1\n0\n1\n").unwrap();
    fails_with_one_line(
        &[
            "train",
            "--data",
            data.to_str().unwrap(),
            "--model",
            dir.path().join("m2").to_str().unwrap(),
            "--plus",
            "--clusters",
            bad.to_str().unwrap(),
            "--quiet",
        ],
        "bad.txt",
    );
    // --top-k without --plus is a usage error.
    let o = run(&[
        "train",
        "--data",
        data.to_str().unwrap(),
        "--model",
        dir.path().join("m3").to_str().unwrap(),
        "--top-k",
        "4",
    ]);
    assert!(!o.status.success());
}
