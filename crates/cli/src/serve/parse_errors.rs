//! Problem bodies for the answers hyper writes itself. When a request cannot be parsed (bad
//! syntax: 400, a request line too long: 414, header fields too large: 431, an HTTP version it
//! does not speak: 505) hyper answers before any handler runs, with an empty body and
//! `connection: close`; the framework gives no hook to shape that answer. [`ProblemBodies`] wraps
//! the connection's stream and, when such a head is written, writes it with an
//! `application/problem+json` body instead, like every other error of the API.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A connection's stream whose hyper-written error answers get a problem body.
pub struct ProblemBodies<S> {
    inner: S,
    /// A rewritten answer still to be written, from `sent` on.
    pending: Vec<u8>,
    sent: usize,
}

impl<S> ProblemBodies<S> {
    pub fn new(inner: S) -> Self {
        ProblemBodies {
            inner,
            pending: Vec::new(),
            sent: 0,
        }
    }
}

/// The detail of each status hyper answers by itself.
fn detail(status: u16) -> &'static str {
    match status {
        400 => "the request is not valid HTTP/1.1",
        414 => "the request line is longer than the server accepts",
        431 => "the request's header fields are larger than the server accepts",
        505 => "the server speaks HTTP/1.0 and HTTP/1.1",
        _ => "the request could not be read",
    }
}

/// `buf` rewritten with a problem body, if it is exactly one error head of hyper's own: a 4xx or
/// 5xx status line, `connection: close`, `content-length: 0`, no content type, and nothing after
/// the head.
pub fn rewrite(buf: &[u8]) -> Option<Vec<u8>> {
    let head = std::str::from_utf8(buf).ok()?;
    let rest = head.strip_prefix("HTTP/1.1 ")?;
    let end = head.find("\r\n\r\n")?;
    if end + 4 != head.len() {
        return None;
    }
    let (status_line, fields) = rest.split_once("\r\n")?;
    let (code, reason) = status_line.split_once(' ')?;
    let status: u16 = code.parse().ok()?;
    if !(400..600).contains(&status) {
        return None;
    }
    let lower = fields.to_ascii_lowercase();
    let lines: Vec<&str> = lower.split("\r\n").collect();
    if !lines.contains(&"connection: close")
        || !lines.contains(&"content-length: 0")
        || lines.iter().any(|l| l.starts_with("content-type:"))
    {
        return None;
    }
    let body = serde_json::json!({
        "type": "about:blank",
        "title": reason,
        "status": status,
        "detail": detail(status),
    })
    .to_string();
    let mut out = format!("HTTP/1.1 {status} {reason}\r\n");
    for line in fields.split("\r\n").filter(|l| !l.is_empty()) {
        if line.eq_ignore_ascii_case("content-length: 0") {
            out.push_str(&format!("content-length: {}\r\n", body.len()));
        } else {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("content-type: application/problem+json\r\n\r\n");
    out.push_str(&body);
    Some(out.into_bytes())
}

impl<S: AsyncWrite + Unpin> ProblemBodies<S> {
    /// Writes what is pending of a rewritten answer.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.pending.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.pending.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    /// Takes `buf` as written if it is an error head to rewrite (the rewritten answer is then
    /// pending).
    fn take(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Option<Poll<io::Result<usize>>> {
        let answer = rewrite(buf)?;
        self.pending = answer;
        self.sent = 0;
        Some(match self.poll_drain(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            // Written, or the rest goes out on the flush that follows.
            _ => Poll::Ready(Ok(buf.len())),
        })
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ProblemBodies<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ProblemBodies<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        if let Some(p) = this.take(cx, buf) {
            return p;
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        let mut nonempty = bufs.iter().filter(|b| !b.is_empty());
        if let (Some(only), None) = (nonempty.next(), nonempty.next()) {
            if let Some(p) = this.take(cx, only) {
                return p;
            }
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hyper_s_own_error_heads_are_rewritten() {
        let head = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\n\
                     content-length: 0\r\ndate: Tue, 08 Dec 2026 00:41:00 GMT\r\n\r\n";
        let out = String::from_utf8(rewrite(head).unwrap()).unwrap();
        let (h, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(h.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(h.contains("content-type: application/problem+json"));
        assert!(h.contains(&format!("content-length: {}", body.len())));
        assert!(h.contains("date: Tue"));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["status"], 431);
        assert_eq!(v["title"], "Request Header Fields Too Large");
        // Not hyper's: a success, a body, a content type, a head followed by anything.
        for other in [
            &b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"[..],
            b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 2\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\
              content-type: text/plain\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\nx",
            b"{\"HTTP/1.1 400\"}",
        ] {
            assert!(
                rewrite(other).is_none(),
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }

    #[tokio::test]
    async fn a_rewritten_answer_is_written_whole() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (a, mut b) = tokio::io::duplex(16); // small: the answer goes out in many writes
        let mut w = ProblemBodies::new(a);
        let head = b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
        let reader = tokio::spawn(async move {
            let mut out = Vec::new();
            b.read_to_end(&mut out).await.unwrap();
            out
        });
        assert_eq!(w.write(head).await.unwrap(), head.len());
        w.flush().await.unwrap();
        w.shutdown().await.unwrap();
        drop(w);
        let out = String::from_utf8(reader.await.unwrap()).unwrap();
        assert_eq!(out.as_bytes(), rewrite(head).unwrap().as_slice());
        assert!(
            out.contains("\"detail\":\"the request is not valid HTTP/1.1\""),
            "{out}"
        );
    }
}
