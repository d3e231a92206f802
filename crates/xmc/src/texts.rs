//! Raw texts: one UTF-8 text per line (`trn_X.txt`, `tst_X.txt`). A text may be empty.

use std::io::BufRead;
use std::path::Path;

use crate::error::Result;
use crate::io::{self, Lines};

/// Reads every line of `path` as one text. Invalid UTF-8 is an error naming the file and line.
pub fn read_texts(path: impl AsRef<Path>) -> Result<Vec<String>> {
    read_texts_lines(&mut io::lines(path.as_ref())?)
}

/// Reads texts from any buffered reader; `path` is used in messages.
pub fn read_texts_from<R: BufRead>(reader: R, path: impl AsRef<Path>) -> Result<Vec<String>> {
    read_texts_lines(&mut Lines::new(reader, path))
}

fn read_texts_lines<R: BufRead>(lines: &mut Lines<R>) -> Result<Vec<String>> {
    let mut out = Vec::new();
    while let Some(l) = lines.next_line()? {
        out.push(l.to_owned());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_lines_and_empty_texts() {
        let t = read_texts_from(&b"a b\n\nc\r\n"[..], "x").unwrap();
        assert_eq!(t, vec!["a b", "", "c"]);
    }

    #[test]
    fn non_utf8_is_an_error_with_line() {
        let e = read_texts_from(&b"ok\n\xc3\x28\n"[..], "t.txt").unwrap_err();
        assert!(e.to_string().starts_with("t.txt:2: invalid UTF-8"), "{e}");
    }

    #[test]
    fn missing_file_names_it() {
        let e = read_texts("/nonexistent/dir/trn_X.txt")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/nonexistent/dir/trn_X.txt: "), "{e}");
    }
}
