//! Label identities: every label's name and, when known, its URI.
//!
//! Names come from a dataset's `Y.txt` (line i names label i); URIs from an optional `Y.tsv` in
//! Annif's subject-vocabulary form, `<URI>\tlabel` per line in label-index order (further columns,
//! such as a notation, are ignored). A model directory keeps the same TSV form as `labels.tsv`,
//! with an empty first column for a label without a URI.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};
use crate::io::{lines, write_atomic};

/// The names and URIs of L labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labels {
    pub names: Vec<String>,
    pub uris: Vec<Option<String>>,
}

/// A URI field: `<uri>` or a bare `uri`; empty is none.
fn parse_uri(field: &str) -> Option<String> {
    let f = field.trim();
    let f = f
        .strip_prefix('<')
        .and_then(|s| s.strip_suffix('>'))
        .unwrap_or(f);
    (!f.is_empty()).then(|| f.to_string())
}

impl Labels {
    /// Labels named by their index (`"0"`, `"1"`, …), without URIs.
    pub fn numbered(n: usize) -> Self {
        Labels::from_names((0..n).map(|i| i.to_string()).collect())
    }

    /// Labels with these names and no URIs.
    pub fn from_names(names: Vec<String>) -> Self {
        let uris = vec![None; names.len()];
        Labels { names, uris }
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The URI of label `i`, or its name when it has none (what Annif's `uri` field carries).
    pub fn uri_or_name(&self, i: usize) -> &str {
        match self.uris.get(i) {
            Some(Some(u)) => u,
            _ => self.name(i),
        }
    }

    /// The name of label `i` (empty past the end).
    pub fn name(&self, i: usize) -> &str {
        self.names.get(i).map_or("", String::as_str)
    }

    /// Reads a subject-vocabulary TSV (`<URI>\tlabel` per line; an empty URI column is a label
    /// without a URI). Errors name the file and line.
    pub fn read_tsv(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let mut l = lines(path)?;
        let (mut names, mut uris) = (Vec::new(), Vec::new());
        // Each URI's first line: a URI names one label (two lines sharing one would send every
        // subject with that URI to one of them).
        let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        while let Some(line) = l.next_line()? {
            let line_no = names.len() + 1;
            let mut fields = line.split('\t');
            let uri = fields.next().map(parse_uri).unwrap_or_default();
            let Some(name) = fields.next() else {
                return Err(l.error("expected `<URI>\\tlabel`"));
            };
            if uri.is_none() && name.trim().is_empty() {
                return Err(l.error("a label needs a URI or a name"));
            }
            if let Some(u) = &uri {
                if let Some(first) = seen.insert(u.clone(), line_no) {
                    return Err(l.error(format!(
                        "URI <{u}> is on line {first} too: each label needs its own URI"
                    )));
                }
            }
            names.push(name.trim().to_string());
            uris.push(uri);
        }
        Ok(Labels { names, uris })
    }

    /// Writes the TSV form read by [`Labels::read_tsv`], atomically.
    pub fn write_tsv(&self, path: impl AsRef<Path>) -> Result<()> {
        for (i, n) in self.names.iter().enumerate() {
            if n.contains(['\t', '\n', '\r']) {
                return Err(Error::param(format!(
                    "label {i} name {n:?} contains a tab or line break"
                )));
            }
        }
        write_atomic(path, |f| {
            for (n, u) in self.names.iter().zip(&self.uris) {
                match u {
                    Some(u) => writeln!(f, "<{u}>\t{n}")?,
                    None => writeln!(f, "\t{n}")?,
                }
            }
            Ok(())
        })
    }

    /// Checks that there are exactly `n` labels (`path` names the source in the error).
    pub fn check_len(&self, n: usize, path: &Path) -> Result<()> {
        if self.len() != n {
            return Err(Error::mismatch(
                path,
                format!("{} labels, expected {n}", self.len()),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsv_round_trip_with_and_without_uris() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("labels.tsv");
        let l = Labels {
            names: vec!["baking".into(), "bread".into()],
            uris: vec![Some("http://example.org/b".into()), None],
        };
        l.write_tsv(&p).unwrap();
        assert_eq!(Labels::read_tsv(&p).unwrap(), l);
        assert_eq!(l.uri_or_name(0), "http://example.org/b");
        assert_eq!(l.uri_or_name(1), "bread");
    }

    #[test]
    fn annif_vocabulary_lines_and_errors() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("vocab.tsv");
        std::fs::write(&p, "<http://x/1>\tone\t42.1\nhttp://x/2\ttwo\nnolabel\n").unwrap();
        let e = Labels::read_tsv(&p).unwrap_err().to_string();
        assert!(e.contains("vocab.tsv:3"), "{e}");
        std::fs::write(&p, "<http://x/1>\tone\t42.1\nhttp://x/2\ttwo\n").unwrap();
        let l = Labels::read_tsv(&p).unwrap();
        assert_eq!(l.uris[1].as_deref(), Some("http://x/2"));
        assert_eq!(l.names, vec!["one", "two"]);
        // Issue 27 D7: two lines sharing a URI (written with and without brackets) are refused,
        // naming both lines; names alone may repeat.
        std::fs::write(&p, "<http://x/1>\tone\nhttp://x/2\ttwo\nhttp://x/1\tuno\n").unwrap();
        let e = Labels::read_tsv(&p).unwrap_err().to_string();
        assert!(
            e.contains("vocab.tsv:3") && e.contains("<http://x/1> is on line 1 too"),
            "{e}"
        );
        std::fs::write(&p, "\tsame\n\tsame\n").unwrap();
        assert_eq!(Labels::read_tsv(&p).unwrap().len(), 2);
    }
}
