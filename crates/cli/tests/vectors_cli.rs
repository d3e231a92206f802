//! `inceptionxml vectors` end to end: vectors trained on the bundled cooking texts, read back by
//! `train --embeddings`.

mod common;
use common::*;

#[test]
fn vectors_from_the_corpus_initialise_training() {
    let dir = tempfile::tempdir().unwrap();
    let vec = dir.path().join("cooking.vec");
    let extra = dir.path().join("more.txt");
    std::fs::write(&extra, "sourdough starter hydration\nsourdough crumb\n").unwrap();
    let data = data_dir();
    let out = ok(&[
        "vectors",
        "--data",
        data.to_str().unwrap(),
        "--texts",
        extra.to_str().unwrap(),
        "--out",
        vec.to_str().unwrap(),
        "--dim",
        "64",
        "--epochs",
        "1",
        "--buckets",
        "5000",
        "--threads",
        "1",
        "--quiet",
    ]);
    assert!(out.contains("12406 texts"), "{out}");
    let text = std::fs::read_to_string(&vec).unwrap();
    let mut lines = text.lines();
    let header: Vec<usize> = lines
        .next()
        .unwrap()
        .split(' ')
        .map(|x| x.parse().unwrap())
        .collect();
    assert_eq!(header[1], 64);
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), header[0]);
    assert!(rows.iter().all(|l| l.split(' ').count() == 65));
    // The extra file's words are there too.
    assert!(rows.iter().any(|l| l.starts_with("sourdough ")));

    // Every word of the training texts has a vector: full coverage of the vocabulary.
    let model = dir.path().join("m");
    let out = train_tiny(
        &model,
        "500",
        &["--embeddings", vec.to_str().unwrap(), "--epochs", "1"],
    );
    let cov = out
        .lines()
        .find(|l| l.starts_with("embeddings: coverage"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(cov.contains("(100.0%)") || cov.contains("(99."), "{cov}");

    // `train --corpus-vectors` trains them itself first, at the table's dimension.
    let model = dir.path().join("m2");
    let out = train_tiny(&model, "500", &["--corpus-vectors", "--epochs", "1"]);
    let cov = out
        .lines()
        .find(|l| l.starts_with("embeddings: coverage"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(cov.contains("(100.0%)"), "{cov}");
    let config = std::fs::read_to_string(model.join("config.json")).unwrap();
    assert!(config.contains("\"corpus_vectors\": true"), "{config}");
    // Not with --embeddings.
    let both = run(&strs(&tiny_train_args(
        &data,
        &dir.path().join("m3"),
        &["--corpus-vectors", "--embeddings", vec.to_str().unwrap()],
    )));
    assert!(!both.status.success());
}

#[test]
fn vectors_refuses_bad_input_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("v.vec");
    let o = out.to_str().unwrap();
    let missing = dir.path().join("nope");
    fails_with_one_line(
        &["vectors", "--data", missing.to_str().unwrap(), "--out", o],
        "trn_X.txt",
    );
    let data = data_dir();
    fails_with_one_line(
        &[
            "vectors",
            "--data",
            data.to_str().unwrap(),
            "--out",
            o,
            "--dim",
            "0",
        ],
        "dim 0",
    );
    fails_with_one_line(
        &[
            "vectors",
            "--data",
            data.to_str().unwrap(),
            "--out",
            o,
            "--minn",
            "5",
            "--maxn",
            "4",
        ],
        "maxn",
    );
    assert!(!out.exists());
    // Neither --data nor --texts: clap's usage error.
    assert!(!run(&["vectors", "--out", o]).status.success());
}
