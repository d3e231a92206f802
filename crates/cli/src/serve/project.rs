//! A served project: one model directory or an ensemble of several, its batcher, and reloading.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use inceptionxml::Model;

use super::batcher::{BatchParams, Batcher};
use super::metrics::Metrics;

/// `--model [NAME=]DIR[,DIR...]`, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectSpec {
    pub id: String,
    pub dirs: Vec<PathBuf>,
}

impl std::str::FromStr for ProjectSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (name, dirs) = match s.split_once('=') {
            Some((n, d)) => (Some(n.trim()), d),
            None => (None, s),
        };
        let dirs: Vec<PathBuf> = dirs
            .split(',')
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .collect();
        if dirs.is_empty() {
            return Err(format!("{s:?}: no model directory"));
        }
        let id = match name {
            Some(n) => n.to_string(),
            None if dirs.len() > 1 => {
                return Err(format!("{s:?}: an ensemble needs a name (NAME=DIR1,DIR2)"))
            }
            None => base_name(&dirs[0]),
        };
        let ok = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
        if id.is_empty() || !id.chars().all(ok) {
            return Err(format!(
                "project id {id:?}: use letters, digits, '-', '_' and '.' (NAME=DIR)"
            ));
        }
        Ok(ProjectSpec { id, dirs })
    }
}

fn base_name(dir: &Path) -> String {
    let canonical = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    canonical
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// What identifies a version of the model files: every file's path, size and modification
/// time, and the newest modification time.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Signature {
    files: Vec<(PathBuf, u64, SystemTime)>,
    pub newest: Option<SystemTime>,
}

impl Signature {
    /// The files of `dirs` as they are now (a directory that cannot be read gives no files).
    pub fn of(dirs: &[PathBuf]) -> Self {
        let mut files = Vec::new();
        for d in dirs {
            let Ok(entries) = std::fs::read_dir(d) else {
                continue;
            };
            for e in entries.flatten() {
                let Ok(m) = e.metadata() else { continue };
                // Temporary files of an atomic write in progress are not part of the model.
                let name = e.file_name();
                if !m.is_file() || name.to_string_lossy().starts_with('.') {
                    continue;
                }
                if let Ok(t) = m.modified() {
                    files.push((e.path(), m.len(), t));
                }
            }
        }
        files.sort();
        let newest = files.iter().map(|f| f.2).max();
        Signature { files, newest }
    }
}

/// A project being served.
pub struct Project {
    pub spec: ProjectSpec,
    pub model: Arc<RwLock<Arc<Model>>>,
    pub signature: RwLock<Signature>,
    pub batcher: Batcher,
    exact: bool,
}

/// Loads the model directories of a project (validated; the CPU).
pub fn load(spec: &ProjectSpec, exact: bool) -> inceptionxml::Result<Model> {
    let opts = inceptionxml::LoadOptions {
        exact,
        ..Default::default()
    };
    Model::load_with(&spec.dirs, &opts)
}

impl Project {
    /// Loads the project and starts its workers.
    pub fn start(
        spec: ProjectSpec,
        exact: bool,
        params: BatchParams,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let signature = Signature::of(&spec.dirs);
        let ens = load(&spec, exact).map_err(|e| anyhow::anyhow!("project {}: {e}", spec.id))?;
        let model = Arc::new(RwLock::new(Arc::new(ens)));
        let batcher = Batcher::start(&spec.id, model.clone(), params, metrics)?;
        Ok(Project {
            spec,
            model,
            signature: RwLock::new(signature),
            batcher,
            exact,
        })
    }

    /// The model now being served.
    pub fn current(&self) -> Arc<Model> {
        self.model.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Reloads the project if its files changed: the new model is loaded and validated beside
    /// the old one, then swapped in at once; a model that fails keeps the old one serving.
    /// Blocking (run it off the async threads).
    pub fn reload_if_changed(&self) -> ReloadOutcome {
        let now = Signature::of(&self.spec.dirs);
        if *self.signature.read().unwrap_or_else(|e| e.into_inner()) == now {
            return ReloadOutcome::Unchanged;
        }
        match load(&self.spec, self.exact) {
            Ok(ens) => {
                *self.model.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(ens);
                *self.signature.write().unwrap_or_else(|e| e.into_inner()) = now;
                ReloadOutcome::Reloaded
            }
            Err(e) => ReloadOutcome::Failed(e.to_string()),
        }
    }

    /// Annif's project object.
    pub fn json(&self, language: &str) -> serde_json::Value {
        let sig = self.signature.read().unwrap_or_else(|e| e.into_inner());
        serde_json::json!({
            "project_id": self.spec.id,
            "name": self.spec.id,
            "language": language,
            "backend": { "backend_id": "inceptionxml" },
            "vocab": null,
            "vocab_language": null,
            "is_trained": true,
            "modification_time": sig.newest.map(rfc3339),
        })
    }
}

/// What a reload did to a project.
#[derive(Debug, Clone, PartialEq)]
pub enum ReloadOutcome {
    Unchanged,
    Reloaded,
    Failed(String),
}

/// `YYYY-MM-DDTHH:MM:SSZ` (UTC) of a file time.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn specs_and_ids() {
        let p: ProjectSpec = "yso=/m/a,/m/b".parse().unwrap();
        assert_eq!(p.id, "yso");
        assert_eq!(p.dirs.len(), 2);
        let p: ProjectSpec = "/models/cooking-plus".parse().unwrap();
        assert_eq!(p.id, "cooking-plus");
        assert!("/m/a,/m/b".parse::<ProjectSpec>().is_err());
        assert!("bad id=/m/a".parse::<ProjectSpec>().is_err());
    }

    #[test]
    fn rfc3339_dates() {
        let t = UNIX_EPOCH + Duration::from_secs(1_589_906_562);
        assert_eq!(rfc3339(t), "2020-05-19T16:42:42Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }
}
