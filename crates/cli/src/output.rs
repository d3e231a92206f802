//! How ranked labels are written for people and scripts: the sparse XC format (label ids), a TSV
//! with label URIs and names, or JSON in the shape of Annif's suggest response.

use std::io::Write;

use xmc::labels::Labels;

/// `predict --format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Sparse `label:score` rows with a `rows labels` header (the XC repository's format).
    #[default]
    Xc,
    /// One line per suggestion: `row<TAB>uri<TAB>label<TAB>score` (row 0-based; the URI column
    /// holds the name for a label without a URI).
    Tsv,
    /// One JSON object per text: `{"results":[{"uri","label","notation","score"}]}`.
    Json,
}

/// One suggested label, as Annif's REST API returns it.
#[derive(Debug, serde::Serialize)]
pub struct Suggestion<'a> {
    /// The label's URI, or its name when it has none.
    pub uri: &'a str,
    pub label: &'a str,
    pub notation: Option<&'a str>,
    pub score: f32,
    /// With `--explain` / `explain=true` only: each word's weight for this label, in text order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explanation: Option<&'a [inceptionxml::WordWeight]>,
}

/// A ranked row as suggestions, best first.
pub fn suggestions<'a>(row: &[(u32, f32)], labels: &'a Labels) -> Vec<Suggestion<'a>> {
    row.iter()
        .map(|&(l, score)| Suggestion {
            uri: labels.uri_or_name(l as usize),
            label: labels.name(l as usize),
            notation: None,
            score,
            explanation: None,
        })
        .collect()
}

/// Explained labels as suggestions carrying their explanations.
pub fn explained<'a>(
    row: &'a [inceptionxml::Explained],
    labels: &'a Labels,
) -> Vec<Suggestion<'a>> {
    row.iter()
        .map(|e| Suggestion {
            uri: labels.uri_or_name(e.id as usize),
            label: labels.name(e.id as usize),
            notation: None,
            score: e.score,
            explanation: Some(&e.words),
        })
        .collect()
}

/// Writes one explained row `r` (`tsv`: a fifth column of `word:weight` pairs in text order,
/// space-separated; `json`: an `"explanation": [{"word", "weight"}]` per result).
pub fn write_explained(
    w: &mut dyn Write,
    r: usize,
    row: &[inceptionxml::Explained],
    labels: &Labels,
    format: Format,
) -> std::io::Result<()> {
    let sug = explained(row, labels);
    match format {
        Format::Tsv => {
            for s in &sug {
                let words: Vec<String> = s
                    .explanation
                    .unwrap_or_default()
                    .iter()
                    .map(|x| format!("{}:{}", x.word, x.weight))
                    .collect();
                writeln!(
                    w,
                    "{r}\t{}\t{}\t{}\t{}",
                    s.uri,
                    s.label,
                    s.score,
                    words.join(" ")
                )?;
            }
            Ok(())
        }
        Format::Json | Format::Xc => {
            let v = serde_json::json!({ "results": sug });
            writeln!(w, "{v}")
        }
    }
}

/// Writes row `r` in `format` (`xc` rows without the header, which the caller writes).
pub fn write_row(
    w: &mut dyn Write,
    r: usize,
    row: &[(u32, f32)],
    labels: &Labels,
    format: Format,
) -> std::io::Result<()> {
    match format {
        Format::Xc => {
            let s: Vec<String> = row.iter().map(|(l, v)| format!("{l}:{v}")).collect();
            writeln!(w, "{}", s.join(" "))
        }
        Format::Tsv => {
            for s in suggestions(row, labels) {
                writeln!(w, "{r}\t{}\t{}\t{}", s.uri, s.label, s.score)?;
            }
            Ok(())
        }
        Format::Json => {
            let v = serde_json::json!({ "results": suggestions(row, labels) });
            writeln!(w, "{v}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_carry_uris_and_names() {
        let labels = Labels {
            names: vec!["a".into(), "b".into()],
            uris: vec![Some("http://x/a".into()), None],
        };
        let row = [(1u32, 0.75f32), (0, 0.5)];
        let mut out = Vec::new();
        write_row(&mut out, 3, &row, &labels, Format::Tsv).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "3\tb\tb\t0.75\n3\thttp://x/a\ta\t0.5\n"
        );
        let mut out = Vec::new();
        write_row(&mut out, 0, &row, &labels, Format::Json).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["results"][1]["uri"], "http://x/a");
        assert_eq!(v["results"][0]["label"], "b");
        let mut out = Vec::new();
        write_row(&mut out, 0, &row, &labels, Format::Xc).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "1:0.75 0:0.5\n");
    }
}
