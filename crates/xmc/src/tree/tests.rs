use std::path::Path;

use super::*;
use crate::dataset::XcDataset;
use crate::metrics::evaluate;

fn cooking() -> XcDataset {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/cooking");
    XcDataset::open(dir).expect("the bundled cooking data")
}

fn small_params() -> SparseParams {
    SparseParams {
        n_trees: 2,
        max_leaf: 40,
        ..SparseParams::DEFAULT
    }
}

#[test]
fn learns_cooking_and_round_trips_through_its_files() {
    let data = cooking();
    let n = 4000;
    let texts = &data.train.texts[..n];
    let labels = data.train.labels.select_rows(&(0..n).collect::<Vec<_>>());
    let model = train(texts, &labels, &small_params(), &|_| {}).unwrap();
    assert_eq!(model.n_trees(), 2);
    assert!(
        model.trees.iter().all(|t| t.shape.depth() >= 4),
        "736 labels, leaves of <= 40"
    );
    let test = data.test.as_ref().unwrap();
    let tt = &test.texts[..1000];
    let pred = model.predict(tt, 5);
    for row in &pred {
        assert!(row.len() <= 5 && !row.is_empty());
        assert!(row.windows(2).all(|w| w[0].1 >= w[1].1));
        assert!(row.iter().all(|e| e.1 > 0.0 && e.1 <= 1.0));
    }
    let truth = test.labels.select_rows(&(0..1000).collect::<Vec<_>>());
    let pm = SparseMatrix::from_rows(736, pred.clone()).unwrap();
    let p1 = evaluate(&truth, &pm, None, 1).unwrap().p[0];
    // A fifth of the training rows: well above the label prior's ~0.08 P@1, below the full data's 0.71.
    assert!(p1 > 0.45, "P@1 {p1}");
    let dir = tempfile::tempdir().unwrap();
    model.save(dir.path()).unwrap();
    let back = SparseModel::load(dir.path()).unwrap();
    assert_eq!(back.trees, model.trees);
    assert_eq!(back.tfidf.terms(), model.tfidf.terms());
    assert_eq!(back.predict(tt, 5), pred);

    // Exact label scores equal the ranked scores when the beam reaches every leaf, and a label
    // no beam reaches still gets its (small) path score.
    let mut wide = model.clone();
    wide.set_beam(100_000);
    let x = model.features(&tt[..50]);
    let ranked = wide.predict_features(&x, 10);
    for (r, row) in ranked.iter().enumerate() {
        let labels: Vec<u32> = row.iter().map(|e| e.0).collect();
        let exact = model.label_scores(&x.select_rows(&[r]), &labels);
        for (e, s) in row.iter().zip(&exact[0]) {
            assert!(
                (e.1 - s).abs() < 1e-6,
                "row {r} label {}: {} vs {s}",
                e.0,
                e.1
            );
        }
    }
    let far = model.label_scores(&x, &[0, 735]);
    assert!(far
        .iter()
        .flatten()
        .all(|s| s.is_finite() && *s >= 0.0 && *s <= 1.0));
    // Tokens in, the same features as the text.
    let toks: Vec<Vec<String>> = tt[..5].iter().map(|t| crate::text::tokenize(t)).collect();
    assert_eq!(model.token_features(&toks), model.features(&tt[..5]));

    // Occlusions scored from the rows' differences: the scores of the occluded rows.
    for (r, row) in ranked.iter().enumerate() {
        let words = crate::text::tokenize(&tt[r]);
        let mut labels: Vec<u32> = row.iter().map(|e| e.0).collect();
        labels.extend([0, 735]);
        let want = model.label_scores(&model.occlusion_features(&words), &labels);
        let got = model.occlusion_scores(&words, &labels);
        assert_eq!(got.len(), words.len() + 1);
        for (g, w) in got.iter().flatten().zip(want.iter().flatten()) {
            assert!((g - w).abs() < 1e-5, "text {r}: {g} vs {w}");
        }
    }
}

#[test]
fn same_result_whatever_the_thread_count() {
    let data = cooking();
    let texts = &data.train.texts[..1500];
    let labels = data
        .train
        .labels
        .select_rows(&(0..1500).collect::<Vec<_>>());
    let run = |threads| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| train(texts, &labels, &small_params(), &|_| {}).unwrap())
    };
    assert_eq!(run(1).trees, run(2).trees);
}

#[test]
fn damaged_files_are_refused() {
    let data = cooking();
    let texts = &data.train.texts[..600];
    let labels = data.train.labels.select_rows(&(0..600).collect::<Vec<_>>());
    let model = train(texts, &labels, &small_params(), &|_| {}).unwrap();
    let dir = tempfile::tempdir().unwrap();
    model.save(dir.path()).unwrap();
    // A label twice in the leaves, a node id out of range, a feature pointer past the end.
    for damage in 0..3 {
        let mut m = model.clone();
        let t = &mut m.trees[0];
        match damage {
            0 => t.leaf_labels[1] = t.leaf_labels[0],
            1 => t.post_groups[0] = 1 << 20,
            _ => *t.feat_ptr.last_mut().unwrap() += 1,
        }
        let d = tempfile::tempdir().unwrap();
        m.save(d.path()).unwrap();
        let e = SparseModel::load(d.path()).unwrap_err().to_string();
        assert!(
            e.contains("sparse.safetensors") && e.contains("tree 0"),
            "{e}"
        );
    }
    // A terms file one line short.
    let terms = dir.path().join(TERMS_FILE);
    let text = std::fs::read_to_string(&terms).unwrap();
    let cut = text
        .lines()
        .skip(1)
        .map(|l| format!("{l}\n"))
        .collect::<String>();
    std::fs::write(&terms, cut).unwrap();
    let e = SparseModel::load(dir.path()).unwrap_err().to_string();
    assert!(e.contains(TERMS_FILE), "{e}");
}

#[test]
fn a_model_with_fewer_labels_than_a_leaf_is_one_leaf() {
    let texts: Vec<String> = ["red apple", "green apple", "red car", "blue car"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let labels = SparseMatrix::from_index_rows(2, &[vec![0], vec![0], vec![1], vec![1]]).unwrap();
    let m = train(&texts, &labels, &SparseParams::DEFAULT, &|_| {}).unwrap();
    assert_eq!(m.trees[0].shape.depth(), 0);
    let p = m.predict(&["apple"], 2);
    assert_eq!(p[0][0].0, 0);
    let p = m.predict(&["car"], 2);
    assert_eq!(p[0][0].0, 1);
}

#[test]
fn shapes_merge_levels_into_wider_nodes() {
    let s = Shape::new(8, 4);
    assert_eq!(s.shifts, vec![8, 4, 0]);
    assert_eq!((s.n_groups(), s.first_leaf()), (1 + 16 + 256, 17));
    assert_eq!(
        (s.level_of(0), s.level_of(1), s.level_of(16), s.level_of(17)),
        (0, 1, 1, 2)
    );
    assert_eq!(Shape::new(9, 4).shifts, vec![9, 8, 4, 0]);
    assert_eq!(Shape::new(3, 4).shifts, vec![3, 0]);
    assert_eq!(Shape::new(3, 1).shifts, vec![3, 2, 1, 0]);
    assert_eq!(Shape::new(0, 4).shifts, vec![0]);
    assert!(Shape::from_shifts(vec![4, 4, 0]).is_err());
    assert!(Shape::from_shifts(vec![4, 2]).is_err());
}

#[test]
fn a_wide_tree_learns_as_well_and_round_trips() {
    let data = cooking();
    let n = 3000;
    let texts = &data.train.texts[..n];
    let labels = data.train.labels.select_rows(&(0..n).collect::<Vec<_>>());
    let test = data.test.as_ref().unwrap();
    let truth = test.labels.select_rows(&(0..1000).collect::<Vec<_>>());
    let p1 = |branching| {
        let p = SparseParams {
            branching,
            n_trees: 1,
            max_leaf: 20,
            ..SparseParams::DEFAULT
        };
        let m = train(texts, &labels, &p, &|_| {}).unwrap();
        let pred = m.predict(&test.texts[..1000], 5);
        let dir = tempfile::tempdir().unwrap();
        m.save(dir.path()).unwrap();
        let back = SparseModel::load(dir.path()).unwrap();
        assert_eq!(back.trees, m.trees);
        assert_eq!(back.predict(&test.texts[..1000], 5), pred);
        let pm = SparseMatrix::from_rows(736, pred).unwrap();
        (
            evaluate(&truth, &pm, None, 1).unwrap().p[0],
            m.trees[0].shape.levels(),
        )
    };
    let (binary, deep) = p1(2);
    let (wide, shallow) = p1(8);
    assert!(shallow < deep, "{shallow} levels vs {deep}");
    assert!(wide > 0.4 && binary > 0.4, "{wide} {binary}");
}
