//! Small I/O helpers shared by every format: a line reader that reports 1-based line numbers and
//! rejects non-UTF-8 text with the file and line, and an atomic writer (write `name.tmp`, then
//! rename) so an interrupted run never leaves a half-written output behind.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The most elements a reader reserves up front from a count that a file states (a header): a
/// larger count is allowed, but the memory then grows with what the file really holds.
pub const MAX_PREALLOC: usize = 1 << 20;

/// Opens `path` for buffered reading; a missing file is an error naming it.
pub fn open(path: &Path) -> Result<BufReader<File>> {
    let f = File::open(path).map_err(|e| Error::io(path, e))?;
    Ok(BufReader::with_capacity(1 << 20, f))
}

/// The longest line a reader accepts, in bytes (its line break not counted): far beyond any
/// text, label row or vector line, far below what would exhaust memory.
pub const MAX_LINE: usize = 64 << 20;

/// The UTF-8 byte-order mark, which some editors write at the start of a text file.
pub const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Reads lines from `reader`, tracking the 1-based line number, stripping `\n` / `\r\n` and a
/// byte-order mark at the start of the file.
pub struct Lines<R> {
    reader: R,
    path: PathBuf,
    buf: Vec<u8>,
    line: usize,
}

impl<R: BufRead> Lines<R> {
    pub fn new(reader: R, path: impl AsRef<Path>) -> Self {
        Lines {
            reader,
            path: path.as_ref().to_path_buf(),
            buf: Vec::with_capacity(256),
            line: 0,
        }
    }

    /// The path used in error messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The 1-based number of the line last returned (0 before the first).
    pub fn line_no(&self) -> usize {
        self.line
    }

    /// The next line as raw bytes, or `None` at end of file. A line longer than [`MAX_LINE`]
    /// bytes is an error naming the file and line, found before the line is held in memory
    /// (`/dev/zero` is one endless line).
    pub fn next_bytes(&mut self) -> Result<Option<&[u8]>> {
        self.buf.clear();
        let mut n = 0;
        loop {
            let available = match self.reader.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io(&self.path, e)),
            };
            if available.is_empty() {
                break;
            }
            let (end, done) = match available.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (available.len(), false),
            };
            if n + end > MAX_LINE + 2 {
                return Err(Error::parse(
                    &self.path,
                    self.line + 1,
                    format!("line longer than {MAX_LINE} bytes"),
                ));
            }
            self.buf.extend_from_slice(&available[..end]);
            self.reader.consume(end);
            n += end;
            if done {
                break;
            }
        }
        if n == 0 {
            return Ok(None);
        }
        self.line += 1;
        // A UTF-8 byte-order mark opening the file is not text (Annif reads `utf-8-sig`).
        if self.line == 1 && self.buf.starts_with(UTF8_BOM) {
            self.buf.drain(..UTF8_BOM.len());
        }
        if self.buf.last() == Some(&b'\n') {
            self.buf.pop();
            if self.buf.last() == Some(&b'\r') {
                self.buf.pop();
            }
        }
        Ok(Some(&self.buf))
    }

    /// The next line as UTF-8 text, or `None` at end of file. Invalid UTF-8 is an error naming
    /// the file, the line and the byte offset.
    pub fn next_line(&mut self) -> Result<Option<&str>> {
        let line = self.line + 1;
        let path = self.path.clone();
        match self.next_bytes()? {
            None => Ok(None),
            Some(bytes) => std::str::from_utf8(bytes).map(Some).map_err(|e| {
                Error::parse(
                    path,
                    line,
                    format!("invalid UTF-8 at byte {} of the line", e.valid_up_to()),
                )
            }),
        }
    }

    /// An error at the current line.
    pub fn error(&self, msg: impl Into<String>) -> Error {
        Error::parse(&self.path, self.line.max(1), msg)
    }
}

/// Opens `path` as a [`Lines`] reader. `-` is standard input.
pub fn lines(path: &Path) -> Result<Lines<Box<dyn BufRead>>> {
    let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
        Box::new(BufReader::new(std::io::stdin()))
    } else {
        Box::new(open(path)?)
    };
    Ok(Lines::new(reader, path))
}

/// Reads a whole file into memory, naming it on failure.
pub fn read_all(path: &Path) -> Result<Vec<u8>> {
    let mut v = Vec::new();
    open(path)?
        .read_to_end(&mut v)
        .map_err(|e| Error::io(path, e))?;
    Ok(v)
}

/// A file written to a temporary sibling and renamed over `path` by [`AtomicFile::commit`].
/// Dropped without a commit, the temporary file is removed and `path` is untouched.
///
/// Paths that are not regular files are written in place instead: a device such as `/dev/null`,
/// a FIFO or a terminal is opened and written directly (renaming over it would replace it). A
/// symbolic link is followed: its target is written atomically and the link stays a link.
pub struct AtomicFile {
    path: PathBuf,
    tmp: PathBuf,
    /// Written in place (no temporary file, no rename).
    direct: bool,
    writer: Option<BufWriter<File>>,
}

/// Where a write to `path` should land: `(final path, written in place)`.
fn resolve_output(path: &Path) -> (PathBuf, bool) {
    let Ok(link) = std::fs::symlink_metadata(path) else {
        return (path.to_path_buf(), false); // a new file
    };
    let target = if link.file_type().is_symlink() {
        std::fs::canonicalize(path).unwrap_or_else(|_| {
            // A dangling link: write the file it names (relative to the link's folder).
            let dest = std::fs::read_link(path).unwrap_or_else(|_| path.to_path_buf());
            match path.parent() {
                Some(dir) if dest.is_relative() => dir.join(dest),
                _ => dest,
            }
        })
    } else {
        path.to_path_buf()
    };
    let special = std::fs::metadata(&target).is_ok_and(|m| !m.is_file() && !m.is_dir());
    (target, special)
}

impl AtomicFile {
    pub fn create(path: impl AsRef<Path>) -> Result<Self> {
        let (path, direct) = resolve_output(path.as_ref());
        if direct {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| Error::io(&path, e))?;
            return Ok(AtomicFile {
                tmp: path.clone(),
                path,
                direct,
                writer: Some(BufWriter::with_capacity(1 << 20, f)),
            });
        }
        let tmp = temp_sibling(&path)?;
        let f = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        // A file replaced keeps its permissions (a private 0600 output stays private), set
        // before anything is written.
        if let Ok(old) = std::fs::metadata(&path) {
            f.set_permissions(old.permissions())
                .map_err(|e| Error::io(&tmp, e))?;
        }
        Ok(AtomicFile {
            path,
            tmp,
            direct,
            writer: Some(BufWriter::with_capacity(1 << 20, f)),
        })
    }

    /// The final path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes, syncs and renames the temporary file over the final path (a file written in
    /// place is only flushed).
    pub fn commit(mut self) -> Result<()> {
        let Some(w) = self.writer.take() else {
            return Ok(());
        };
        let f = w
            .into_inner()
            .map_err(|e| Error::io(&self.tmp, e.into_error()))?;
        if self.direct {
            return Ok(());
        }
        f.sync_all().map_err(|e| Error::io(&self.tmp, e))?;
        drop(f);
        std::fs::rename(&self.tmp, &self.path).map_err(|e| Error::io(&self.path, e))
    }

    /// Maps an I/O error from writing into this file's error.
    pub fn err(&self, e: std::io::Error) -> Error {
        Error::io(&self.path, e)
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.writer.as_mut() {
            Some(w) => w.write(buf),
            None => Err(std::io::Error::other("write after commit")),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self.writer.as_mut() {
            Some(w) => w.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.writer.take().is_some() && !self.direct {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// The temporary sibling `.NAME.PID.tmp` a write of `path` goes through before its rename.
/// Leftovers of earlier writes to the same path whose process is gone (killed mid-write) are
/// removed on the way.
pub fn temp_sibling(path: &Path) -> Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| Error::param(format!("{}: not a file name", path.display())))?
        .to_string_lossy()
        .into_owned();
    let prefix = format!(".{name}.");
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten() {
            let f = e.file_name().to_string_lossy().into_owned();
            let pid = f
                .strip_prefix(&prefix)
                .and_then(|r| r.strip_suffix(".tmp"))
                .and_then(|p| p.parse::<u32>().ok());
            let gone = |pid: u32| {
                pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
            };
            if pid.is_some_and(gone) && Path::new("/proc/self").exists() {
                // A folder is the leftover of a killed `build_folder`.
                let _ = match e.file_type() {
                    Ok(t) if t.is_dir() => std::fs::remove_dir_all(e.path()),
                    _ => std::fs::remove_file(e.path()),
                };
            }
        }
    }
    Ok(path.with_file_name(format!("{prefix}{}.tmp", std::process::id())))
}

/// Writes `path` atomically with the closure `f`.
pub fn write_atomic(
    path: impl AsRef<Path>,
    f: impl FnOnce(&mut AtomicFile) -> std::io::Result<()>,
) -> Result<()> {
    let mut file = AtomicFile::create(path)?;
    f(&mut file).map_err(|e| file.err(e))?;
    file.commit()
}

/// Builds the folder `out`, which must not exist yet, with `f` in a temporary folder beside it,
/// renamed into place when `f` succeeds and removed when it fails: an interrupted or failed write
/// leaves nothing half-written at `out`.
pub fn build_folder<T>(out: &Path, f: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    if out.exists() {
        return Err(Error::io(
            out,
            std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "already exists (choose a new folder)",
            ),
        ));
    }
    if out.file_name().is_none() {
        return Err(Error::param(format!(
            "{}: not a folder name",
            out.display()
        )));
    }
    // `.NAME.PID.tmp`; the folders of killed builds of `out` are removed on the way.
    let tmp = temp_sibling(out)?;
    let built = (|| {
        std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let v = f(&tmp)?;
        std::fs::rename(&tmp, out).map_err(|e| Error::io(out, e))?;
        Ok(v)
    })();
    if built.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    built
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_strip_crlf_and_count() {
        let data = b"a\r\nb\n\nc";
        let mut l = Lines::new(&data[..], "x.txt");
        assert_eq!(l.next_line().unwrap(), Some("a"));
        assert_eq!(l.next_line().unwrap(), Some("b"));
        assert_eq!(l.next_line().unwrap(), Some(""));
        assert_eq!(l.next_line().unwrap(), Some("c"));
        assert_eq!(l.line_no(), 4);
        assert_eq!(l.next_line().unwrap(), None);
    }

    /// Issue 27 D8: a byte-order mark opening the file is dropped (it became part of label 0's
    /// URI, of the first text, of a fastText line's first label); one later in the file is
    /// text, and a file of only a mark is one empty line.
    #[test]
    fn a_leading_byte_order_mark_is_not_text() {
        let data = b"\xEF\xBB\xBF<http://x/a>\tA\n\xEF\xBB\xBFb\n";
        let mut l = Lines::new(&data[..], "v.tsv");
        assert_eq!(l.next_line().unwrap(), Some("<http://x/a>\tA"));
        assert_eq!(l.next_line().unwrap(), Some("\u{feff}b"));
        let mut only = Lines::new(&b"\xEF\xBB\xBF"[..], "e.txt");
        assert_eq!(only.next_line().unwrap(), Some(""));
        assert_eq!(only.next_line().unwrap(), None);
    }

    /// Issue 27 D13: an error quoting a 10 MB line is cut to a few hundred bytes (it printed
    /// 10 MB), at a character boundary.
    #[test]
    fn errors_quoting_huge_input_are_cut() {
        let line = "é".repeat(5 << 20);
        let e = Error::parse("big.txt", 1, format!("bad header {line:?}")).to_string();
        assert!(e.len() < 600, "{} bytes", e.len());
        assert!(
            e.starts_with("big.txt:1: bad header \"éé") && e.contains("more bytes"),
            "{e}"
        );
        let short = Error::parse("s.txt", 2, "bad id \"x\"").to_string();
        assert_eq!(short, "s.txt:2: bad id \"x\"");
    }

    /// Issue 27 D6: an endless line (`/dev/zero`) is an error naming the file and line once
    /// it passes [`MAX_LINE`], not an abort on a 32 GB allocation; lines just under it are read.
    #[test]
    fn an_endless_line_is_an_error_not_an_abort() {
        let zeros = std::io::BufReader::new(std::io::repeat(0));
        let mut l = Lines::new(zeros, "/dev/zero");
        let e = l.next_bytes().unwrap_err().to_string();
        assert!(e.starts_with("/dev/zero:1: line longer than"), "{e}");
        let mut long = vec![b'a'; MAX_LINE];
        long.extend_from_slice(b"\r\nnext\n");
        let mut l = Lines::new(&long[..], "long.txt");
        assert_eq!(l.next_bytes().unwrap().unwrap().len(), MAX_LINE);
        assert_eq!(l.next_line().unwrap(), Some("next"));
    }

    #[test]
    fn non_utf8_names_file_and_line() {
        let data = b"ok\nbad \xff here\n";
        let mut l = Lines::new(&data[..], "t.txt");
        l.next_line().unwrap();
        let e = l.next_line().unwrap_err().to_string();
        assert!(e.starts_with("t.txt:2: invalid UTF-8"), "{e}");
    }

    #[test]
    fn stale_temporary_files_of_dead_processes_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.txt");
        // A leftover of a process that no longer exists (pid beyond the kernel's maximum).
        let stale = dir.path().join(".out.txt.4194399.tmp");
        std::fs::write(&stale, "half").unwrap();
        let other = dir.path().join(".other.txt.4194399.tmp");
        std::fs::write(&other, "not ours").unwrap();
        write_atomic(&p, |w| w.write_all(b"ok")).unwrap();
        assert!(!stale.exists());
        assert!(other.exists(), "only leftovers of this path are touched");
    }

    /// Issue 27 D10: the temporary folder of a killed `build_folder` (an `import` killed
    /// mid-write) is removed by the next build of the same folder; others are left alone.
    #[test]
    fn stale_temporary_folders_of_dead_processes_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("xc");
        let stale = dir.path().join(".xc.4194399.tmp");
        std::fs::create_dir_all(stale.join("sub")).unwrap();
        std::fs::write(stale.join("trn_X.txt"), "half").unwrap();
        let other = dir.path().join(".other.4194399.tmp");
        std::fs::create_dir(&other).unwrap();
        build_folder(&out, |tmp| {
            std::fs::write(tmp.join("f"), "x").map_err(|e| Error::io(tmp, e))
        })
        .unwrap();
        assert!(!stale.exists(), "the killed build's folder is left");
        assert!(other.exists(), "only leftovers of this folder are touched");
        assert_eq!(std::fs::read(out.join("f")).unwrap(), b"x");
    }

    /// Issue 27 D3: replacing an existing file keeps its mode (a 0600 file became 0644), also
    /// through a symbolic link; a new file gets the umask's.
    #[test]
    fn a_replaced_file_keeps_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("private.txt");
        std::fs::write(&p, "old").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        write_atomic(&p, |w| w.write_all(b"new")).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&p), 0o600);
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        let link = dir.path().join("link.txt");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        write_atomic(&link, |w| w.write_all(b"newer")).unwrap();
        assert_eq!(mode(&p), 0o600);
        assert_eq!(std::fs::read(&p).unwrap(), b"newer");
    }

    #[test]
    fn special_files_are_written_in_place_and_links_followed() {
        let dir = tempfile::tempdir().unwrap();
        // A device is written, never replaced by a regular file.
        write_atomic("/dev/null", |w| w.write_all(b"gone")).unwrap();
        let m = std::fs::metadata("/dev/null").unwrap();
        assert!(!m.is_file(), "/dev/null became a regular file");
        // A symbolic link keeps being a link; its target gets the content.
        let target = dir.path().join("target.txt");
        std::fs::write(&target, "old").unwrap();
        let link = dir.path().join("link.txt");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        write_atomic(&link, |w| w.write_all(b"new")).unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        // A dangling link creates its target.
        let dangling = dir.path().join("dangling.txt");
        std::os::unix::fs::symlink("made.txt", &dangling).unwrap();
        write_atomic(&dangling, |w| w.write_all(b"x")).unwrap();
        assert_eq!(std::fs::read(dir.path().join("made.txt")).unwrap(), b"x");
    }

    #[test]
    fn atomic_write_keeps_old_file_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.txt");
        write_atomic(&p, |w| w.write_all(b"first")).unwrap();
        let r = write_atomic(&p, |w| {
            w.write_all(b"partial")?;
            Err(std::io::Error::other("boom"))
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"first");
        // No temporary file left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
