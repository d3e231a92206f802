//! Every parser and loader a user's file reaches, driven by arbitrary bytes. Shared by the
//! libFuzzer targets (`fuzz/fuzz_targets/`) and by the replay test of the saved corpora
//! (`crates/cli/tests/fuzz_corpus.rs`), which runs in CI.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::Device;
use candle_nn::VarMap;
use inceptionxml::config::ModelConfig;
use inceptionxml::model::InceptionXml;
use inceptionxml::model_dir;

/// Every target, named as its folder under `fuzz/corpus/`.
pub const TARGETS: &[&str] = &[
    "sparse",
    "bow",
    "texts",
    "predictions",
    "embeddings",
    "vocab",
    "clusters",
    "labels",
    "import_annif",
    "import_fasttext",
    "config_json",
    "model_dir",
    "http",
];

/// A scratch folder of this process.
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("inceptionxml-fuzz-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&d);
        d
    })
}

fn file(name: &str, data: &[u8]) -> PathBuf {
    let p = scratch().join(name);
    let _ = std::fs::write(&p, data);
    p
}

/// A small valid model directory (plain InceptionXML, d 64, 10 words, 5 labels) made once;
/// the `model_dir` target replaces one of its files.
fn seed_model() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = scratch().join("seed-model");
        let _ = std::fs::create_dir_all(&d);
        let mut cfg = ModelConfig::new(10, 5);
        cfg.embed_dim = 64;
        let varmap = VarMap::new();
        let model = InceptionXml::new(&cfg, &varmap, &Device::Cpu, 0).expect("seed model");
        let config = model_dir::ModelDirConfig {
            format: model_dir::FORMAT.to_string(),
            model: cfg,
            train: Default::default(),
        };
        model_dir::write_config(&d, &config).expect("config");
        let words: String = std::iter::once("<pad>".to_string())
            .chain((1..9).map(|i| format!("w{i}")))
            .chain(std::iter::once("<unk>".to_string()))
            .map(|w| w + "\n")
            .collect();
        std::fs::write(d.join(model_dir::VOCAB), words).expect("vocab");
        model_dir::save_weights(&d, &model, &varmap).expect("weights");
        d
    })
}

/// Feeds `data` to `target`'s parser. Unknown targets do nothing.
pub fn run(target: &str, data: &[u8]) {
    match target {
        "sparse" => drop(xmc::SparseMatrix::read_from(data, "f")),
        "bow" => drop(xmc::bow::read_bow_from(data, "f")),
        "texts" => drop(xmc::texts::read_texts_from(data, "f")),
        "clusters" => drop(xmc::cluster::Clustering::read_from(data, "f")),
        "predictions" => {
            let p = file("pred.txt", data);
            drop(xmc::predictions::read_predictions_file_order(&p));
            drop(xmc::predictions::read_predictions(&p));
        }
        "embeddings" => drop(xmc::embeddings::WordVectors::load(file("vec.txt", data))),
        "vocab" => drop(xmc::vocab::Vocab::load(file("vocab.txt", data))),
        "labels" => drop(xmc::labels::Labels::read_tsv(file("labels.tsv", data))),
        "import_annif" => {
            let vocab = xmc::labels::Labels {
                names: vec!["a".into(), "b".into()],
                uris: vec![Some("http://x/a".into()), Some("http://x/b".into())],
            };
            let p = file("corpus.tsv", data);
            drop(xmc::import::read_annif_tsv(&p, &vocab, false));
            drop(xmc::import::read_annif_tsv(&p, &vocab, true));
        }
        "import_fasttext" => {
            let p = file("ft.txt", data);
            drop(xmc::import::read_fasttext(&p, false));
            drop(xmc::import::read_fasttext(&p, true));
        }
        "config_json" => {
            let d = scratch().join("config-only");
            let _ = std::fs::create_dir_all(&d);
            let _ = std::fs::write(d.join(model_dir::CONFIG), data);
            drop(model_dir::read_config(&d));
        }
        "model_dir" => {
            // The first byte picks the file the rest replaces, in a copy of the seed model.
            let Some((&which, rest)) = data.split_first() else {
                return;
            };
            let seed = seed_model();
            let d = scratch().join("model");
            let _ = std::fs::create_dir_all(&d);
            for f in [model_dir::CONFIG, model_dir::VOCAB, model_dir::WEIGHTS] {
                let _ = std::fs::copy(seed.join(f), d.join(f));
            }
            let _ = std::fs::remove_file(d.join(model_dir::LABELS));
            let names = [
                model_dir::CONFIG,
                model_dir::VOCAB,
                model_dir::WEIGHTS,
                model_dir::LABELS,
            ];
            let _ = std::fs::write(d.join(names[which as usize % names.len()]), rest);
            drop(model_dir::load(&d, &Device::Cpu));
        }
        // Raw bytes from a client: hyper's parser, the router, the handlers, a small model.
        "http" => drop(inceptionxml_cli::serve::fuzz::exchange(data)),
        _ => {}
    }
}
