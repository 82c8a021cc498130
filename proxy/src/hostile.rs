//! Raw HTTP/1 request-head checks for what httparse (pingora's parser) lets through but
//! RFC 9112 forbids or a stricter parser further down the line reads differently.
//!
//! | anomaly | why it is refused |
//! |---|---|
//! | bare LF (`\n` not preceded by `\r`) as a line end | RFC 9112 2.2 allows a recipient to accept it; httparse does, other parsers do not: two parsers that disagree on where a line (or the head) ends are the raw material of request smuggling |
//! | bare CR (`\r` not followed by `\n`) | RFC 9112 2.2: MUST be rejected or replaced; httparse rejects it today, checked here as defence in depth |
//! | NUL byte anywhere in the head | never valid (httparse rejects it today; defence in depth) |
//! | HTTP/1.1 request without `Host` | RFC 9112 3.2: a server MUST answer 400 |
//!
//! Checked in `request_filter` on the raw head bytes pingora kept
//! ([`pingora::protocols::http::v1::server::HttpSession::get_headers_raw_bytes`]); a hit is
//! answered `400 {"error":"malformed_head"}` ([`crate::errors::EdgeError::MalformedHead`])
//! with `Connection: close` before anything is routed or forwarded. HTTP/2 requests have no raw head (h2 itself checks framing).

/// What is wrong with a raw request head (`at`: byte offset in the head).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadAnomaly {
    /// A `\n` not preceded by `\r`.
    BareLf { at: usize },
    /// A `\r` not followed by `\n`.
    BareCr { at: usize },
    /// A NUL byte.
    Nul { at: usize },
    /// An HTTP/1.1 request without a `Host` header.
    MissingHost,
}

impl std::fmt::Display for HeadAnomaly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeadAnomaly::BareLf { at } => write!(f, "bare LF at byte {at}"),
            HeadAnomaly::BareCr { at } => write!(f, "bare CR at byte {at}"),
            HeadAnomaly::Nul { at } => write!(f, "NUL at byte {at}"),
            HeadAnomaly::MissingHost => f.write_str("HTTP/1.1 request without Host"),
        }
    }
}

/// Checks the line structure of a raw request head (request line through the empty line):
/// every line ends in CRLF, no lone CR, no NUL. The first anomaly found, if any. Only the
/// CR, LF and NUL bytes are visited (found with `memchr3`, a word or vector at a time).
pub fn check_line_endings(raw: &[u8]) -> Result<(), HeadAnomaly> {
    for at in memchr::memchr3_iter(b'\r', b'\n', b'\0', raw) {
        match raw[at] {
            b'\0' => return Err(HeadAnomaly::Nul { at }),
            b'\n' if at == 0 || raw[at - 1] != b'\r' => return Err(HeadAnomaly::BareLf { at }),
            b'\n' => {}
            // A CR: followed by LF, or it is bare (a NUL right after is reported as such).
            _ => match raw.get(at + 1) {
                Some(b'\n') => {}
                Some(b'\0') => return Err(HeadAnomaly::Nul { at: at + 1 }),
                _ => return Err(HeadAnomaly::BareCr { at }),
            },
        }
    }
    Ok(())
}

/// All checks on one HTTP/1 request: its raw head and the parsed header.
pub fn check_h1_request(
    raw: &[u8],
    version: http::Version,
    has_host: bool,
) -> Result<(), HeadAnomaly> {
    check_line_endings(raw)?;
    if version == http::Version::HTTP_11 && !has_host {
        return Err(HeadAnomaly::MissingHost);
    }
    Ok(())
}

/// The check for a pingora session: `None` for HTTP/2 (and subrequests), which have no raw
/// HTTP/1 head.
pub fn check_session(session: &pingora::proxy::Session) -> Option<HeadAnomaly> {
    let h1 = session.as_downstream().as_http1()?;
    let req = session.req_header();
    let raw = h1.get_headers_raw_bytes();
    check_h1_request(
        &raw,
        req.version,
        req.headers.contains_key(http::header::HOST),
    )
    .err()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Version;

    /// The byte-at-a-time scan `check_line_endings` replaced: the reference it must agree
    /// with on every input.
    fn check_slow(raw: &[u8]) -> Result<(), HeadAnomaly> {
        let mut prev = 0u8;
        for (at, &b) in raw.iter().enumerate() {
            match b {
                b'\n' if prev != b'\r' => return Err(HeadAnomaly::BareLf { at }),
                b'\0' => return Err(HeadAnomaly::Nul { at }),
                _ if prev == b'\r' && b != b'\n' => return Err(HeadAnomaly::BareCr { at: at - 1 }),
                _ => {}
            }
            prev = b;
        }
        if prev == b'\r' {
            return Err(HeadAnomaly::BareCr {
                at: raw.len().saturating_sub(1),
            });
        }
        Ok(())
    }

    #[test]
    fn the_scan_agrees_with_the_byte_loop_on_every_short_head() {
        // Every string of up to 6 bytes over an alphabet with the three special bytes.
        let alphabet = [b'\r', b'\n', b'\0', b'a', b':'];
        let mut n = 0;
        for len in 0..=6u32 {
            for code in 0..alphabet.len().pow(len) {
                let mut c = code;
                let raw: Vec<u8> = (0..len)
                    .map(|_| {
                        let b = alphabet[c % alphabet.len()];
                        c /= alphabet.len();
                        b
                    })
                    .collect();
                assert_eq!(check_line_endings(&raw), check_slow(&raw), "{raw:?}");
                n += 1;
            }
        }
        assert!(n > 19_000);
        // Long heads: the specials far into the head (past the vector widths).
        let head =
            b"GET /sessions/abc HTTP/1.1\r\nHost: example.com\r\nX-Api-Key: k\r\n\r\n".repeat(3);
        for at in 0..head.len() {
            for b in [b'\r', b'\n', b'\0', b'x'] {
                let mut raw = head.clone();
                raw[at] = b;
                assert_eq!(check_line_endings(&raw), check_slow(&raw), "{at} {b}");
            }
        }
    }

    #[test]
    fn crlf_heads_pass() {
        for raw in [
            &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"POST /sessions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nX-Obs: caf\xc3\xa9\r\n\r\n",
            // RFC 9112 2.2: empty CRLF lines before the request line may be ignored.
            b"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET / HTTP/1.0\r\n\r\n",
        ] {
            assert_eq!(check_line_endings(raw), Ok(()), "{raw:?}");
        }
    }

    #[test]
    fn bare_lf_anywhere_is_refused() {
        assert_eq!(
            check_line_endings(b"GET / HTTP/1.1\nHost: x\n\n"),
            Err(HeadAnomaly::BareLf { at: 14 })
        );
        // Only the header block's terminator.
        assert_eq!(
            check_line_endings(b"GET / HTTP/1.1\r\nHost: x\r\n\n"),
            Err(HeadAnomaly::BareLf { at: 25 })
        );
        // One header line among CRLF lines.
        assert_eq!(
            check_line_endings(b"GET / HTTP/1.1\r\nHost: x\nX-A: 1\r\n\r\n"),
            Err(HeadAnomaly::BareLf { at: 23 })
        );
        // A leading empty line that is a bare LF.
        assert_eq!(
            check_line_endings(b"\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            Err(HeadAnomaly::BareLf { at: 0 })
        );
        // LF LF after a CRLF: the second LF is bare.
        assert_eq!(
            check_line_endings(b"GET / HTTP/1.1\r\n\n"),
            Err(HeadAnomaly::BareLf { at: 16 })
        );
    }

    #[test]
    fn bare_cr_and_nul_are_refused() {
        assert_eq!(
            check_line_endings(b"GET / HTTP/1.1\r\nX-A: a\rb\r\n\r\n"),
            Err(HeadAnomaly::BareCr { at: 22 })
        );
        assert_eq!(
            check_line_endings(b"GET / HTTP/1.1\r\nHost: x\r\n\r"),
            Err(HeadAnomaly::BareCr { at: 25 })
        );
        assert_eq!(
            check_line_endings(b"GET / HTTP/1.1\r\r\n\r\n"),
            Err(HeadAnomaly::BareCr { at: 14 })
        );
        assert_eq!(
            check_line_endings(b"GET / HTTP/1.1\r\nX-A: \0\r\n\r\n"),
            Err(HeadAnomaly::Nul { at: 21 })
        );
    }

    #[test]
    fn host_is_required_on_http_1_1_only() {
        let raw = b"GET / HTTP/1.1\r\n\r\n";
        assert_eq!(
            check_h1_request(raw, Version::HTTP_11, false),
            Err(HeadAnomaly::MissingHost)
        );
        assert_eq!(check_h1_request(raw, Version::HTTP_11, true), Ok(()));
        assert_eq!(check_h1_request(raw, Version::HTTP_10, false), Ok(()));
        // Line endings are checked first.
        assert_eq!(
            check_h1_request(b"GET / HTTP/1.1\n\n", Version::HTTP_11, false),
            Err(HeadAnomaly::BareLf { at: 14 })
        );
    }

    #[test]
    fn every_single_byte_mutation_of_a_line_end_is_caught() {
        let good = b"GET /sessions/a HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\r\n";
        for (i, &b) in good.iter().enumerate() {
            if b != b'\r' && b != b'\n' {
                continue;
            }
            // Drop the byte, or replace it with a space: always a lone CR or LF.
            let mut dropped = good.to_vec();
            dropped.remove(i);
            assert!(check_line_endings(&dropped).is_err(), "drop {i}");
            let mut spaced = good.to_vec();
            spaced[i] = b' ';
            assert!(check_line_endings(&spaced).is_err(), "space {i}");
        }
    }

    #[test]
    fn anomalies_display_their_position() {
        assert_eq!(
            HeadAnomaly::BareLf { at: 3 }.to_string(),
            "bare LF at byte 3"
        );
        assert_eq!(
            HeadAnomaly::MissingHost.to_string(),
            "HTTP/1.1 request without Host"
        );
    }
}
