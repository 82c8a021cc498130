//! Helpers shared by the load-bench binaries (`bench-backend`, `sse-load`, `ws-idle`) that
//! `benches/load_bench.sh` runs: header parsing, HTTP/1.1 chunked decoding, SSE event
//! parsing and percentiles. Loopback benchmarking only: nothing here is a general client.

use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch (the SSE event timestamp; sender and receiver run on
/// the same machine, so they share the clock).
pub fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// `"Name: value"` → `("Name", "value")`; `None` without a colon or with an empty name.
pub fn parse_header(s: &str) -> Option<(String, String)> {
    let (k, v) = s.split_once(':')?;
    let k = k.trim();
    if k.is_empty() || k.bytes().any(|b| b.is_ascii_whitespace()) {
        return None;
    }
    Some((k.to_string(), v.trim().to_string()))
}

/// `p` in [0, 100] of `sorted` (nearest rank); 0 for an empty slice.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The response head: status code and whether the body is chunked. `None` until
/// `buf` holds the whole head; `Some(Err)` for a malformed one.
pub fn parse_head(buf: &[u8]) -> Option<Result<(u16, bool, usize), String>> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = match std::str::from_utf8(&buf[..end]) {
        Ok(h) => h,
        Err(_) => return Some(Err("response head is not UTF-8".into())),
    };
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse::<u16>().ok());
    let Some(status) = status else {
        return Some(Err(format!(
            "bad status line: {:?}",
            head.lines().next().unwrap_or("")
        )));
    };
    let chunked = lines.filter_map(parse_header).any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked")
    });
    Some(Ok((status, chunked, end)))
}

/// Incremental decoder of an HTTP/1.1 chunked body.
#[derive(Debug, Default)]
pub struct Dechunker {
    /// Bytes of the current chunk still to pass through.
    remaining: usize,
    /// Undecoded input (a partial size line or chunk trailer).
    pending: Vec<u8>,
    /// After a chunk's data: its CRLF is still to skip.
    need_crlf: bool,
    /// The last (zero) chunk was seen.
    pub done: bool,
}

impl Dechunker {
    /// Feeds raw bytes, appends the decoded payload to `out`. `Err` on a malformed size line.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        self.pending.extend_from_slice(input);
        let mut pos = 0;
        let buf = std::mem::take(&mut self.pending);
        while pos < buf.len() && !self.done {
            if self.remaining > 0 {
                let n = self.remaining.min(buf.len() - pos);
                out.extend_from_slice(&buf[pos..pos + n]);
                pos += n;
                self.remaining -= n;
                if self.remaining == 0 {
                    self.need_crlf = true;
                }
                continue;
            }
            if self.need_crlf {
                if buf.len() - pos < 2 {
                    break;
                }
                if &buf[pos..pos + 2] != b"\r\n" {
                    return Err("missing CRLF after a chunk".into());
                }
                pos += 2;
                self.need_crlf = false;
                continue;
            }
            let Some(eol) = buf[pos..].windows(2).position(|w| w == b"\r\n") else {
                if buf.len() - pos > 64 {
                    return Err("chunk size line too long".into());
                }
                break;
            };
            let line = std::str::from_utf8(&buf[pos..pos + eol]).map_err(|e| e.to_string())?;
            let hex = line.split(';').next().unwrap_or("").trim();
            let size =
                usize::from_str_radix(hex, 16).map_err(|_| format!("bad chunk size {hex:?}"))?;
            pos += eol + 2;
            if size == 0 {
                self.done = true;
            } else {
                self.remaining = size;
            }
        }
        self.pending = buf[pos..].to_vec();
        Ok(())
    }
}

/// Splits complete SSE events (`...\n\n`) off the front of `buf` and returns the value of
/// each event's first `data:` field, parsed as a number (the sender's [`unix_nanos`]).
/// Events without a numeric `data:` yield `None`.
pub fn take_events(buf: &mut Vec<u8>) -> Vec<Option<u128>> {
    let mut events = Vec::new();
    let mut start = 0;
    while let Some(i) = buf[start..].windows(2).position(|w| w == b"\n\n") {
        let ev = &buf[start..start + i];
        let data = ev
            .split(|&b| b == b'\n')
            .find_map(|l| l.strip_prefix(b"data:"))
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| d.trim().parse::<u128>().ok());
        events.push(data);
        start += i + 2;
    }
    buf.drain(..start);
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_and_percentiles() {
        assert_eq!(
            parse_header("X-API-Key: abc "),
            Some(("X-API-Key".into(), "abc".into()))
        );
        assert_eq!(parse_header("no colon"), None);
        assert_eq!(parse_header(": v"), None);
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&[], 50.0), 0);
        assert_eq!(percentile(&[7], 1.0), 7);
    }

    #[test]
    fn heads() {
        assert!(parse_head(b"HTTP/1.1 200 OK\r\n").is_none());
        let h = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nxyz";
        assert_eq!(parse_head(h), Some(Ok((200, true, h.len() - 3))));
        let h = b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 2\r\n\r\n";
        assert_eq!(parse_head(h), Some(Ok((401, false, h.len()))));
        assert!(matches!(parse_head(b"garbage\r\n\r\n"), Some(Err(_))));
    }

    #[test]
    fn dechunks_across_arbitrary_splits() {
        let wire = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n";
        for split in 0..wire.len() {
            let mut d = Dechunker::default();
            let mut out = Vec::new();
            d.feed(&wire[..split], &mut out).expect("first half");
            d.feed(&wire[split..], &mut out).expect("second half");
            assert_eq!(out, b"hello, world", "split at {split}");
            assert!(d.done);
        }
        let mut d = Dechunker::default();
        assert!(d.feed(b"zz\r\n", &mut Vec::new()).is_err());
        let mut d = Dechunker::default();
        assert!(d.feed(b"1\r\naXY", &mut Vec::new()).is_err());
    }

    #[test]
    fn events_are_split_and_parsed() {
        let mut b = b"data: 12\n\n: comment\n\ndata: 34\n\ndata: 5".to_vec();
        assert_eq!(take_events(&mut b), vec![Some(12), None, Some(34)]);
        assert_eq!(b, b"data: 5");
        b.extend_from_slice(b"6\n\n");
        assert_eq!(take_events(&mut b), vec![Some(56)]);
        assert!(b.is_empty());
    }
}
