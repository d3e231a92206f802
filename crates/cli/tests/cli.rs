//! End-to-end runs of the `inceptionxml` binary on the bundled cooking data: a tiny training
//! run, prediction (file and interactive), resume, and bad input.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

mod common;
use common::*;

/// `predict --texts -` on `model`, its standard streams piped.
fn interactive_predict(model: &Path, top_k: &str) -> std::process::Child {
    let args = [
        "predict",
        "--model",
        model.to_str().unwrap(),
        "--texts",
        "-",
        "--top-k",
        top_k,
    ];
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn tiny_train(model: &Path, extra: &[&str]) -> String {
    train_tiny(model, "600", extra)
}

#[test]
fn train_predict_evaluate_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m");
    let out = tiny_train(&model, &["--epochs", "1"]);
    assert!(out.contains("P@1"), "{out}");
    for f in [
        "config.json",
        "weights.safetensors",
        "vocab.txt",
        "optimizer.safetensors",
        "trainer_state.json",
        "metrics.jsonl",
    ] {
        assert!(model.join(f).is_file(), "{f} missing");
    }
    let lines = metrics_lines(&model);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["epoch"], 1);
    let p1_train = lines[0]["metrics"]["P@1"].as_f64().unwrap();

    // Batch prediction to a file, read back and scored with the same metrics code.
    let pred = dir.path().join("pred.txt");
    let tst = data_dir().join("tst_X.txt");
    let predict_top5 = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "predict",
            "--model",
            model.to_str().unwrap(),
            "--texts",
            tst.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--top-k",
            "5",
        ];
        args.extend_from_slice(extra);
        ok(&args);
    };
    predict_top5(&pred, &[]);
    let text = std::fs::read_to_string(&pred).unwrap();
    let mut it = text.lines();
    assert_eq!(it.next(), Some("3000 736"));
    for line in it {
        let scores: Vec<f32> = line
            .split_whitespace()
            .map(|e| e.split_once(':').unwrap().1.parse().unwrap())
            .collect();
        assert_eq!(scores.len(), 5);
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{line}");
        assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)));
    }
    let predm = xmc::SparseMatrix::read(&pred).unwrap();
    let truth = xmc::SparseMatrix::read(data_dir().join("tst_X_Y.txt")).unwrap();
    let train_y = xmc::SparseMatrix::read(data_dir().join("trn_X_Y.txt")).unwrap();
    let w =
        xmc::metrics::inverse_propensity(&train_y, xmc::metrics::Propensity::default()).unwrap();
    let m = xmc::metrics::evaluate(&truth, &predm, Some(&w), 5).unwrap();
    assert!(
        (m.p[0] * 100.0 - p1_train).abs() < 0.011,
        "predict P@1 {} vs train {p1_train}",
        m.p[0] * 100.0
    );

    // Batch size 1 ranks through the int8 index of the output layer with exact rescoring: the
    // same top-5 as the exact batched pass on (nearly) every row, the same scores.
    let pred1 = dir.path().join("pred1.txt");
    predict_top5(&pred1, &["--batch-size", "1"]);
    let rows = |t: &str| -> Vec<Vec<(String, f32)>> {
        t.lines()
            .skip(1)
            .map(|l| {
                l.split_whitespace()
                    .map(|e| {
                        let (a, b) = e.split_once(':').unwrap();
                        (a.to_string(), b.parse().unwrap())
                    })
                    .collect()
            })
            .collect()
    };
    let (exact, one) = (rows(&text), rows(&std::fs::read_to_string(&pred1).unwrap()));
    assert_eq!(exact.len(), one.len());
    let same = exact
        .iter()
        .zip(&one)
        .filter(|(a, b)| a.iter().map(|e| &e.0).eq(b.iter().map(|e| &e.0)))
        .count();
    assert!(
        same * 100 >= exact.len() * 98,
        "{same} of {} rows agree",
        exact.len()
    );
    for (a, b) in exact.iter().zip(&one) {
        assert!((a[0].1 - b[0].1).abs() < 1e-4, "{a:?} vs {b:?}");
    }

    // Interactive: one answer per line, flushed before the next line is sent.
    let mut child = interactive_predict(&model, "3");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    for q in ["how to boil an egg", "sourdough starter smells"] {
        writeln!(stdin, "{q}").unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line.split_whitespace().count(), 3, "{line:?}");
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());

    // A corrupt weights file is named.
    std::fs::write(model.join("weights.safetensors"), b"not a safetensors file").unwrap();
    predict_fails(&model, "weights.safetensors");
}

#[test]
fn default_epochs_follow_the_training_rows() {
    // 600 cooking rows: far below 200,000, so the short schedules (20; 16 with --plus), not the
    // paper's 42 / 35. Stopped after one epoch: the saved schedule is what is checked.
    let dir = tempfile::tempdir().unwrap();
    for (name, extra, epochs) in [
        ("plain", &[][..], 20),
        ("plus", &["--plus", "--clusters", "16"][..], 16),
    ] {
        let model = dir.path().join(name);
        let mut args = vec!["--stop-after", "1"];
        args.extend_from_slice(extra);
        tiny_train(&model, &args);
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(model.join("config.json")).unwrap())
                .unwrap();
        assert_eq!(config["train"]["epochs"], epochs, "{name}");
        let state: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(model.join("trainer_state.json")).unwrap(),
        )
        .unwrap();
        let spe = state["steps_per_epoch"].as_u64().unwrap();
        assert_eq!(
            state["total_steps"].as_u64().unwrap(),
            epochs * spe,
            "{name}"
        );
    }
}

#[test]
fn resume_continues_the_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m");
    tiny_train(&model, &["--epochs", "2", "--stop-after", "1"]);
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("trainer_state.json")).unwrap())
            .unwrap();
    assert_eq!(state["epochs_done"], 1);
    let spe = state["steps_per_epoch"].as_u64().unwrap();
    assert_eq!(state["step"].as_u64().unwrap(), spe);
    assert_eq!(state["total_steps"].as_u64().unwrap(), 2 * spe);
    // Changing the schedule on resume is refused.
    let data = data_dir();
    fails_with_one_line(
        &[
            "train",
            "--data",
            data.to_str().unwrap(),
            "--model",
            model.to_str().unwrap(),
            "--resume",
            "--epochs",
            "5",
            "--quiet",
        ],
        "--resume",
    );
    // So is any other setting that differs from the saved run's, each named.
    let resume_with = |extra: &[&str]| {
        let mut a = vec![
            "train",
            "--data",
            data.to_str().unwrap(),
            "--model",
            model.to_str().unwrap(),
            "--resume",
            "--quiet",
        ];
        a.extend_from_slice(extra);
        run(&a)
    };
    let o = resume_with(&["--lr", "0.1", "--dim", "128", "--batch-size", "7"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    for flag in [
        "--lr 0.1 (saved 0.005)",
        "--dim 128 (saved 64)",
        "--batch-size 7 (saved 64)",
    ] {
        assert!(err.contains(flag), "{flag} not in {err}");
    }
    // Issue 27 D11: a trainer state whose step, epoch and schedule disagree is refused (it
    // resumed and ran past the schedule, or reported 99 epochs), and the model is untouched.
    let state_path = model.join("trainer_state.json");
    let saved = std::fs::read_to_string(&state_path).unwrap();
    for epochs_done in [0, 99] {
        let mut tampered = state.clone();
        tampered["epochs_done"] = epochs_done.into();
        std::fs::write(&state_path, tampered.to_string()).unwrap();
        let o = resume_with(&[]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success(),
            "epochs_done {epochs_done} resumed: {err}"
        );
        assert!(
            err.contains("trainer_state.json") && err.contains("disagree"),
            "{err}"
        );
        assert_eq!(metrics_lines(&model).len(), 1);
    }
    std::fs::write(&state_path, saved).unwrap();
    tiny_train(&model, &["--resume"]);
    let lines = metrics_lines(&model);
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["epoch"], 2);
    assert_eq!(lines[1]["step"].as_u64().unwrap(), 2 * spe);
}

#[test]
fn bad_input_gives_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    fails_with_one_line(
        &[
            "train",
            "--data",
            "/nonexistent/data",
            "--model",
            dir.path().join("m").to_str().unwrap(),
        ],
        "/nonexistent/data",
    );
    fails_with_one_line(
        &["predict", "--model", "/nonexistent/model", "--texts", "-"],
        "/nonexistent/model",
    );
    // A dataset whose label file disagrees with its texts.
    let bad = dir.path().join("bad");
    std::fs::create_dir(&bad).unwrap();
    std::fs::write(bad.join("trn_X.txt"), "a b\nc d\n").unwrap();
    std::fs::write(bad.join("trn_X_Y.txt"), "2 3\n0:1\n7:1\n").unwrap();
    fails_with_one_line(
        &[
            "train",
            "--data",
            bad.to_str().unwrap(),
            "--model",
            dir.path().join("m2").to_str().unwrap(),
        ],
        "trn_X_Y.txt:3",
    );
}

/// `--device cuda` in a build without the `cuda` feature says how to get one, in one line.
#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_device_without_the_feature_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir();
    fails_with_one_line(
        &[
            "train",
            "--data",
            data.to_str().unwrap(),
            "--model",
            dir.path().join("m").to_str().unwrap(),
            "--device",
            "cuda:1",
        ],
        "--features cuda",
    );
    assert!(!dir.path().join("m").exists(), "nothing written");
}

/// Absurd sizes are parameter errors before any allocation, and a run that fails its checks
/// leaves no model directory behind.
#[test]
fn absurd_sizes_fail_before_anything_is_allocated_or_written() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir();
    let model = dir.path().join("m");
    let args = |extra: &[&'static str]| {
        let mut a = vec![
            "train".to_string(),
            "--data".into(),
            data.to_str().unwrap().into(),
            "--model".into(),
            model.to_str().unwrap().into(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    for (extra, needle) in [
        (&["--dim", "100000"][..], "embed_dim 100000"),
        (&["--plus", "--clusters", "3"][..], "clusters 3"),
        (&["--plus", "--top-k", "0"][..], "top_k"),
    ] {
        let a = args(extra);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        fails_with_one_line(&a, needle);
        assert!(!model.exists(), "{extra:?} left a model directory");
    }
}

/// A command whose standard output is closed early ends without a panic (no "Broken pipe"
/// message, no exit 101).
#[test]
fn closed_stdout_is_not_a_panic() {
    use std::os::unix::process::ExitStatusExt;
    let data = data_dir();
    for args in [
        vec!["stats", "--data", data.to_str().unwrap()],
        vec!["help"],
    ] {
        let mut child = Command::new(BIN)
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take()); // the reader goes away before anything is written
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "{args:?}: {err}"
        );
        assert!(
            out.status.success() || out.status.signal() == Some(13),
            "{args:?}: {:?}",
            out.status
        );
    }
}

/// Issue 27 D2: standard output that cannot be written (a full disk: `/dev/full`) is a one-line
/// error in every command that prints, never a panic (stats, eval, split, synth, plot, cluster,
/// import and train panicked with "failed printing to stdout").
#[test]
fn a_full_stdout_is_an_error_not_a_panic() {
    let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
        return; // no /dev/full on this system
    };
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir();
    let d = data.to_str().unwrap();
    let model = dir.path().join("m");
    let m = model.to_str().unwrap();
    let truth = data.join("tst_X_Y.txt");
    let tmp = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    let (split_out, synth_out, clusters, ft) =
        (tmp("split"), tmp("synth"), tmp("c.txt"), tmp("ft"));
    let ft_file = dir.path().join("ft.txt");
    std::fs::write(&ft_file, "__label__a one text\n__label__b another text\n").unwrap();
    let train_args = tiny_train_args(&data, &model, &["--max-train", "200", "--epochs", "1"]);
    let train: Vec<&str> = strs(&train_args)
        .into_iter()
        .filter(|a| *a != "--quiet")
        .collect();
    let commands: Vec<Vec<&str>> = vec![
        train,
        vec!["stats", "--data", d],
        vec![
            "eval",
            "--truth",
            truth.to_str().unwrap(),
            "--pred",
            truth.to_str().unwrap(),
        ],
        vec!["split", "--data", d, "--out", &split_out],
        vec![
            "synth", "--out", &synth_out, "--labels", "20", "--texts", "50",
        ],
        vec!["plot", "--metrics", m, "--out", &clusters],
        vec![
            "cluster",
            "--data",
            d,
            "--out",
            &clusters,
            "--clusters",
            "8",
        ],
        vec![
            "import",
            "fasttext",
            "--input",
            ft_file.to_str().unwrap(),
            "--out",
            &ft,
        ],
    ];
    for args in commands {
        let o = Command::new(BIN)
            .args(&args)
            .stdout(full.try_clone().unwrap())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(
            err.contains("error: writing to standard output"),
            "{args:?}: {err}"
        );
    }
}

/// Issue 27 D6: an endless line (`/dev/zero`) is a one-line error naming the file and line in
/// every reader (they aborted on a 32 GB allocation): texts to predict, a metrics file to plot,
/// a fastText corpus to import, and interactive input.
#[test]
fn an_endless_line_is_an_error_not_an_abort() {
    if !std::path::Path::new("/dev/zero").exists() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m");
    train_tiny(&model, "200", &["--epochs", "1"]);
    let m = model.to_str().unwrap();
    let png = dir.path().join("p.png");
    let ft = dir.path().join("ft");
    for args in [
        vec!["predict", "--model", m, "--texts", "/dev/zero"],
        vec![
            "plot",
            "--metrics",
            "/dev/zero",
            "--out",
            png.to_str().unwrap(),
        ],
        vec![
            "import",
            "fasttext",
            "--input",
            "/dev/zero",
            "--out",
            ft.to_str().unwrap(),
        ],
    ] {
        fails_with_one_line(&args, "/dev/zero:1: line longer than");
    }
    let o = Command::new(BIN)
        .args(["predict", "--model", m, "--texts", "-"])
        .stdin(std::fs::File::open("/dev/zero").unwrap())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("<stdin>:1: line longer than"),
        "{err}"
    );
}

/// `--threads` beyond what the machine can use is an error, not minutes of thread churn.
#[test]
fn absurd_thread_counts_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("c.txt");
    fails_with_one_line(
        &[
            "cluster",
            "--data",
            data_dir().to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--clusters",
            "4",
            "--threads",
            "100000",
        ],
        "--threads 100000",
    );
}

/// A model with NaN weights is refused at load, naming the file and tensor.
#[test]
fn non_finite_weights_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m");
    tiny_train(&model, &["--epochs", "1"]);
    let path = model.join("weights.safetensors");
    let mut tensors = candle_core::safetensors::load(&path, &candle_core::Device::Cpu).unwrap();
    let (name, t) = tensors
        .iter()
        .find(|(n, _)| n.contains("head.hidden.weight"))
        .map(|(n, t)| (n.clone(), t.clone()))
        .unwrap();
    let mut v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
    v[3] = f32::NAN;
    let bad = candle_core::Tensor::from_vec(v, t.shape(), &candle_core::Device::Cpu).unwrap();
    tensors.insert(name.clone(), bad);
    candle_core::safetensors::save(&tensors, &path).unwrap();
    predict_fails(&model, "NaN or infinite");
    predict_fails(&model, &name);
}

/// `--out /dev/null` writes to the device and leaves it a device (run as root, renaming over it
/// would replace the system's /dev/null).
#[test]
fn special_output_paths_are_written_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m");
    tiny_train(&model, &["--epochs", "1"]);
    let tst = data_dir().join("tst_X.txt");
    ok(&[
        "predict",
        "--model",
        model.to_str().unwrap(),
        "--texts",
        tst.to_str().unwrap(),
        "--out",
        "/dev/null",
    ]);
    assert!(!std::fs::metadata("/dev/null").unwrap().is_file());
    // Through a symbolic link: the target is written, the link stays.
    let target = dir.path().join("pred.txt");
    let link = dir.path().join("link.txt");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    ok(&[
        "predict",
        "--model",
        model.to_str().unwrap(),
        "--texts",
        tst.to_str().unwrap(),
        "--out",
        link.to_str().unwrap(),
    ]);
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(std::fs::read_to_string(&target)
        .unwrap()
        .starts_with("3000 736"));
}

/// Every file of a model directory gets the same permissions (the umask's), weights included.
#[test]
fn model_files_follow_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m");
    tiny_train(&model, &["--epochs", "1"]);
    let mode = |f: &str| {
        std::fs::metadata(model.join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    for f in ["weights.safetensors", "optimizer.safetensors", "vocab.txt"] {
        assert_eq!(mode(f), mode("config.json"), "{f}");
    }
}

/// A run interrupted at epoch boundaries and resumed ends with the same bytes as the same seeded
/// run uninterrupted (weights and optimiser state), for both models: every random stream (data
/// order, dropout) continues where it stopped.
#[test]
fn interrupted_and_resumed_runs_are_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    for (name, extra) in [
        ("plain", vec![]),
        ("plus", vec!["--plus", "--clusters", "8", "--top-k", "2"]),
    ] {
        let whole = dir.path().join(format!("{name}-whole"));
        let parts = dir.path().join(format!("{name}-parts"));
        let mut args = vec!["--epochs", "3", "--seed", "5"];
        args.extend(&extra);
        tiny_train(&whole, &args);
        let mut first = args.clone();
        first.extend(["--stop-after", "1"]);
        tiny_train(&parts, &first);
        tiny_train(&parts, &["--resume", "--stop-after", "1"]);
        tiny_train(&parts, &["--resume"]);
        for f in ["weights.safetensors", "optimizer.safetensors"] {
            let (a, b) = (
                std::fs::read(whole.join(f)).unwrap(),
                std::fs::read(parts.join(f)).unwrap(),
            );
            assert!(a == b, "{name}: {f} differs after resuming");
        }
    }
}

/// An OS error is printed once, not once by the file's message and again by its cause.
#[test]
fn os_errors_are_printed_once() {
    let o = run(&["stats", "--data", "/nonexistent/data"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.matches("not found").count(), 1, "{err}");
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m");
    tiny_train(&model, &["--epochs", "1"]);
    let o = run(&[
        "predict",
        "--model",
        model.to_str().unwrap(),
        "--texts",
        "/nonexistent/texts.txt",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.matches("os error 2").count(), 1, "{err}");
    assert!(err.contains("/nonexistent/texts.txt"), "{err}");

    // Interactive prediction answers a line that is not UTF-8 with an error and goes on.
    let mut child = interactive_predict(&model, "2");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"bread\n\xff\xfe bad\nknife\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines[1].is_empty() && !lines[2].is_empty(), "{lines:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("<stdin>:2"));

    // Issue 27 D12: in JSON Lines every input line gets a JSON object, the non-UTF-8 one an
    // empty result; D8: a byte-order mark opening the input is not part of the first text.
    let mut child = Command::new(BIN)
        .args(["predict", "--model", model.to_str().unwrap()])
        .args(["--texts", "-", "--top-k", "2", "--format", "json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"\xEF\xBB\xBFbread\n\xff\xfe bad\nbread\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let objs: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    assert_eq!(objs.len(), 3, "{objs:?}");
    assert_eq!(objs[1], serde_json::json!({"results": []}));
    assert_eq!(
        objs[0], objs[2],
        "the mark changed the first text's suggestions"
    );
    assert!(!objs[0]["results"].as_array().unwrap().is_empty());
}

/// An empty test split skips evaluation with a warning; the last epoch is still saved.
#[test]
fn an_empty_test_split_skips_evaluation() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    std::fs::create_dir(&data).unwrap();
    for f in ["trn_X.txt", "trn_X_Y.txt"] {
        std::fs::copy(data_dir().join(f), data.join(f)).unwrap();
    }
    std::fs::write(data.join("tst_X.txt"), "").unwrap();
    std::fs::write(data.join("tst_X_Y.txt"), "0 736\n").unwrap();
    let model = dir.path().join("m");
    let args = tiny_train_args(
        &data,
        &model,
        &["--max-train", "300", "--epochs", "2", "--eval-every", "0"],
    );
    let o = run(&strs(&args));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("warning: the test split is empty"));
    assert_eq!(metrics_lines(&model).len(), 2);
}

/// `synth --out` never writes into an existing dataset.
#[test]
fn synth_refuses_an_existing_folder() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("syn");
    let args = [
        "synth",
        "--out",
        out.to_str().unwrap(),
        "--labels",
        "50",
        "--texts",
        "200",
    ];
    ok(&args);
    let before = std::fs::read(out.join("trn_X.txt")).unwrap();
    let mut again = args.to_vec();
    again.extend(["--seed", "9"]);
    fails_with_one_line(&again, "already exists");
    assert_eq!(std::fs::read(out.join("trn_X.txt")).unwrap(), before);
}

/// A run whose loss explodes (`--lr 100`) stops with an error instead of saving nonsense.
#[test]
fn divergence_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m");
    let data = data_dir();
    let args = ["--max-train", "600", "--epochs", "2", "--lr", "100"];
    fails_with_one_line(&strs(&tiny_train_args(&data, &model, &args)), "diverged");
}

/// A model folder is always a complete model: a fresh run over it is refused without
/// `--force`, and a `--force` run killed before its first checkpoint leaves the old model as it
/// was; a finished one replaces it whole and leaves nothing beside it.
#[test]
fn a_model_folder_is_never_half_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m");
    tiny_train(&model, &["--epochs", "1"]);
    let snapshot = |p: &Path| -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<_> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let before = snapshot(&model);
    let data = data_dir();
    let args = |extra: &[&str]| {
        let mut e = vec!["--seed", "3"];
        e.extend_from_slice(extra);
        tiny_train_args(&data, &model, &e)
    };
    fails_with_one_line(&strs(&args(&["--max-train", "600"])), "--force");
    assert_eq!(snapshot(&model), before);

    // Killed (SIGKILL) while the replacement trains its first epoch.
    let mut child = Command::new(BIN)
        .args(args(&["--force", "--epochs", "3"]))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stage = dir.path().join(".m.partial");
    let t0 = std::time::Instant::now();
    while !stage.join("config.json").exists() && t0.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(snapshot(&model), before, "the old model changed");
    predict_ok(&model);

    // Finished: the new model replaces the old one whole.
    ok(&strs(&args(&[
        "--force",
        "--epochs",
        "1",
        "--max-train",
        "600",
    ])));
    assert_ne!(snapshot(&model), before);
    predict_ok(&model);
    let left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        left,
        vec!["m".to_string()],
        "left beside the model: {left:?}"
    );
}

fn predict_ok(model: &Path) {
    let tst = data_dir().join("tst_X.txt");
    ok(&[
        "predict",
        "--model",
        model.to_str().unwrap(),
        "--texts",
        tst.to_str().unwrap(),
        "--out",
        "/dev/null",
    ]);
}

/// kill -9 at several points of a seeded run, each time resumed from what is on disk: the run
/// ends byte-identical to the uninterrupted one (a kill during a checkpoint save included: the
/// save is one unit with a commit point).
#[test]
fn killed_and_resumed_runs_end_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir();
    let args = |model: &Path, extra: &[&str]| {
        let mut e = vec!["--max-train", "3000", "--epochs", "4", "--seed", "4"];
        e.extend_from_slice(extra);
        tiny_train_args(&data, model, &e)
    };
    let whole = dir.path().join("whole");
    let t0 = std::time::Instant::now();
    let o = Command::new(BIN).args(args(&whole, &[])).output().unwrap();
    assert!(o.status.success());
    let full = t0.elapsed();

    let parts = dir.path().join("parts");
    let mut kills = 0;
    for frac in [0.3, 0.25, 0.2, 0.35] {
        let extra: &[&str] = if parts.join("trainer_state.json").exists() {
            &["--resume"]
        } else {
            &["--force"]
        };
        let mut child = Command::new(BIN)
            .args(args(&parts, extra))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(full.mul_f64(frac));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            kills += 1;
        }
        child.wait().unwrap();
    }
    let extra: &[&str] = if parts.join("trainer_state.json").exists() {
        &["--resume"]
    } else {
        &["--force"]
    };
    let o = Command::new(BIN)
        .args(args(&parts, extra))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(kills > 0, "no run was killed");
    for f in ["weights.safetensors", "optimizer.safetensors"] {
        let same = std::fs::read(whole.join(f)).unwrap() == std::fs::read(parts.join(f)).unwrap();
        assert!(same, "{f} differs after {kills} kills");
    }
    let lines = metrics_lines(&parts);
    assert_eq!(lines.len(), 4, "one metrics line per epoch");
}

/// A `config.json` with an absurd size is refused at load, before any allocation.
#[test]
fn absurd_sizes_in_config_json_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m");
    tiny_train(&model, &["--epochs", "1"]);
    let path = model.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cfg["model"]["seq_len"] = serde_json::json!(1u64 << 40);
    std::fs::write(&path, cfg.to_string()).unwrap();
    predict_fails(&model, "seq_len");
}
