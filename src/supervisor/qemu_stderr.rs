//! QEMU's stderr into the supervisor's log (and the terminal in the
//! foreground), bounded whatever QEMU writes: a line is cut at `MAX_LINE`
//! bytes (the rest dropped, with a marker), bytes that are not UTF-8 are
//! replaced, not fatal, and at most `BURST` lines then `PER_SECOND` a
//! second reach the log, the others counted. Memory stays at one line;
//! the log grows by at most `PER_SECOND * MAX_LINE` bytes a second, and
//! `logcap` bounds its size.

use std::time::Instant;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, BufReader};

use crate::ratelimit::RateLimit;

/// Longest stderr line kept, in bytes. QEMU's own messages
/// (`error_report`, `warn_report`) are one short line each.
const MAX_LINE: usize = 4096;
/// Lines logged at once (a start's warnings), then each second.
const BURST: u32 = 100;
const PER_SECOND: u32 = 10;
/// Read size: a flood of stderr is consumed in few wakeups.
const READ_BUF: usize = 64 * 1024;

/// One stderr line as kept: lossy UTF-8, at most `MAX_LINE` bytes of it.
#[derive(Debug, PartialEq, Eq)]
struct Line {
    text: String,
    /// Bytes of the line past the cap, read and thrown away.
    dropped: u64,
}

/// Reads lines of at most `max` bytes from `reader`; the memory held is
/// one line, whatever the length of what comes in.
struct BoundedLines<R> {
    reader: R,
    max: usize,
    buf: Vec<u8>,
}

impl<R: AsyncBufRead + Unpin> BoundedLines<R> {
    fn new(reader: R, max: usize) -> Self {
        Self {
            reader,
            max,
            buf: Vec::with_capacity(max),
        }
    }

    /// The next line without its `\n` (or `\r\n`), `None` at the end. A
    /// last line without a newline still counts.
    async fn next_line(&mut self) -> std::io::Result<Option<Line>> {
        self.buf.clear();
        let mut dropped = 0u64;
        let mut read_any = false;
        loop {
            let chunk = self.reader.fill_buf().await?;
            if chunk.is_empty() {
                return Ok(read_any.then(|| self.finish(dropped)));
            }
            read_any = true;
            let newline = chunk.iter().position(|&b| b == b'\n');
            let part = &chunk[..newline.unwrap_or(chunk.len())];
            let keep = part.len().min(self.max.saturating_sub(self.buf.len()));
            self.buf.extend_from_slice(&part[..keep]);
            dropped += (part.len() - keep) as u64;
            let used = part.len() + usize::from(newline.is_some());
            self.reader.consume(used);
            if newline.is_some() {
                return Ok(Some(self.finish(dropped)));
            }
        }
    }

    fn finish(&mut self, dropped: u64) -> Line {
        if self.buf.last() == Some(&b'\r') {
            self.buf.pop();
        }
        Line {
            text: String::from_utf8_lossy(&self.buf).into_owned(),
            dropped,
        }
    }
}

/// What reaches the log, line by line: the rate limit and the markers.
struct Relay {
    limit: RateLimit,
}

impl Relay {
    fn new() -> Self {
        Self {
            limit: RateLimit::new(BURST, PER_SECOND),
        }
    }

    /// The log messages for `line` read at `now`: none when over the rate,
    /// else the line, after a note of the lines dropped before it.
    fn messages(&mut self, line: &Line, now: Instant) -> Vec<String> {
        let Some(admitted) = self.limit.admit_at(now) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(2);
        if admitted.suppressed > 0 {
            out.push(dropped_note(admitted.suppressed));
        }
        out.push(if line.dropped > 0 {
            format!(
                "{} [line longer than {MAX_LINE} bytes: {} more bytes dropped]",
                line.text, line.dropped
            )
        } else {
            line.text.clone()
        });
        out
    }

    /// The count of lines dropped since the last one logged, at the end.
    fn last_words(&mut self) -> Option<String> {
        let n = self.limit.take_suppressed();
        (n > 0).then(|| dropped_note(n))
    }
}

fn dropped_note(n: u64) -> String {
    format!("[{n} lines of QEMU's stderr not logged: more than {PER_SECOND} a second]")
}

/// Passes QEMU's stderr to the supervisor's log until QEMU closes it. A
/// read error ends it too; the pipe then closes and QEMU's next write gets
/// EPIPE (QEMU ignores SIGPIPE), so QEMU never blocks on a full pipe.
pub(super) async fn log_stderr<R: AsyncRead + Unpin>(stderr: R) {
    let mut lines = BoundedLines::new(BufReader::with_capacity(READ_BUF, stderr), MAX_LINE);
    let mut relay = Relay::new();
    loop {
        match lines.next_line().await {
            Ok(Some(line)) => {
                for msg in relay.messages(&line, Instant::now()) {
                    tracing::info!(target: "qemu", "{msg}");
                }
            }
            Ok(None) => break,
            Err(e) => {
                tracing::warn!("reading QEMU's stderr failed: {e}; the rest is not logged");
                break;
            }
        }
    }
    if let Some(msg) = relay.last_words() {
        tracing::info!(target: "qemu", "{msg}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::AsyncReadExt;

    async fn all_lines(input: impl AsyncRead + Unpin, max: usize) -> Vec<Line> {
        let mut lines = BoundedLines::new(BufReader::with_capacity(64, input), max);
        let mut out = Vec::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            out.push(line);
        }
        out
    }

    fn line(text: &str, dropped: u64) -> Line {
        Line {
            text: text.into(),
            dropped,
        }
    }

    #[tokio::test]
    async fn lines_are_split_on_newline_and_a_last_one_without_it_counts() {
        let got = all_lines(&b"one\r\ntwo\n\nlast"[..], 16).await;
        assert_eq!(
            got,
            [line("one", 0), line("two", 0), line("", 0), line("last", 0)]
        );
    }

    #[tokio::test]
    async fn an_over_long_line_is_cut_and_the_next_one_is_whole() {
        // 10 MiB without a newline, then a normal line: only `max` bytes
        // of the long one are kept, the rest counted.
        let long = tokio::io::repeat(b'x').take(10 << 20);
        let got = all_lines(long.chain(&b"\nnext\n"[..]), 8).await;
        assert_eq!(got, [line("xxxxxxxx", (10 << 20) - 8), line("next", 0)]);
    }

    #[tokio::test]
    async fn bytes_that_are_not_utf8_are_replaced_and_reading_goes_on() {
        let got = all_lines(&b"bad \xff\xfe byte\nstill here\n"[..], 64).await;
        assert_eq!(
            got,
            [line("bad \u{fffd}\u{fffd} byte", 0), line("still here", 0)]
        );
    }

    #[test]
    fn a_cut_line_says_how_much_was_dropped() {
        let mut relay = Relay::new();
        let msgs = relay.messages(&line("abc", 12), Instant::now());
        assert_eq!(
            msgs,
            ["abc [line longer than 4096 bytes: 12 more bytes dropped]"]
        );
    }

    #[test]
    fn a_flood_is_rate_limited_and_the_dropped_lines_are_counted() {
        let mut relay = Relay::new();
        let t0 = Instant::now();
        let logged: usize = (0..1000)
            .map(|i| relay.messages(&line(&format!("l{i}"), 0), t0).len())
            .sum();
        assert_eq!(logged, BURST as usize);
        // A second later PER_SECOND lines go through, the first one after
        // a note of the 900 dropped.
        let t1 = t0 + Duration::from_secs(1);
        let msgs = relay.messages(&line("later", 0), t1);
        assert_eq!(msgs.len(), 2, "{msgs:?}");
        assert_eq!(msgs[0], dropped_note(900));
        assert_eq!(msgs[1], "later");
        for _ in 0..PER_SECOND {
            relay.messages(&line("more", 0), t1);
        }
        assert_eq!(relay.last_words(), Some(dropped_note(1)));
        assert_eq!(relay.last_words(), None);
    }
}
