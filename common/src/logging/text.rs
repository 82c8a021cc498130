//! The byte-level writers of a JSON log line: strings escaped for JSON and for terminals,
//! and the RFC 3339 timestamp. They run for every access-log line (one per request), so
//! they work on bytes and words instead of `core::fmt` (benches/RESULTS.md, 2026-12-02:
//! the formatter and a byte-at-a-time scan were ~10k instructions per line).

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// Whether `c` is escaped in log strings beyond JSON's own rules (see [`escape_json_str`]).
fn log_unsafe(c: char) -> bool {
    matches!(c as u32, 0x80..=0x9f | 0x061c | 0x200e | 0x200f | 0x202a..=0x202e | 0x2066..=0x2069)
}

/// Writes `s` as a JSON string: JSON's escapes (quote, backslash, C0 controls) plus
/// `\uXXXX` for C1 and bidirectional controls (U+0080-U+009F, U+061C, U+200E-U+200F,
/// U+202A-U+202E, U+2066-U+2069), so no field (a path, a header, an agent's text) can
/// reorder or hide what a terminal or log viewer shows.
pub fn escape_json_str(buf: &mut Vec<u8>, s: &str) {
    buf.reserve(s.len() + 2);
    buf.push(b'"');
    escape_json_body(buf, s);
    buf.push(b'"');
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Whether any byte of the little-endian word `x` is one [`escape_json_body`] must look
/// at: below 0x20, `"`, `\`, or not ASCII. Each test is the exact "has a zero byte" /
/// "has a byte less than n" word trick (a borrow only ever follows a real match).
fn word_needs_care(x: u64) -> bool {
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS != 0;
    x & HIGHS != 0
        || x.wrapping_sub(ONES * 0x20) & !x & HIGHS != 0
        || has_zero(x ^ (ONES * u64::from(b'"')))
        || has_zero(x ^ (ONES * u64::from(b'\\')))
}

/// [`escape_json_str`] without the quotes. Runs of printable ASCII (all of most log
/// values) are skipped eight bytes at a time and copied whole; only other bytes are looked
/// at one character at a time.
pub(crate) fn escape_json_body(buf: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    let (mut run, mut i) = (0, 0);
    loop {
        while let Some(w) = bytes
            .get(i..i + 8)
            .and_then(|w| <[u8; 8]>::try_from(w).ok())
        {
            if word_needs_care(u64::from_le_bytes(w)) {
                break;
            }
            i += 8;
        }
        let Some(&b) = bytes.get(i) else { break };
        if (0x20..0x80).contains(&b) && b != b'"' && b != b'\\' {
            i += 1;
            continue;
        }
        buf.extend_from_slice(&bytes[run..i]);
        if b < 0x80 {
            match b {
                b'"' => buf.extend_from_slice(b"\\\""),
                b'\\' => buf.extend_from_slice(b"\\\\"),
                b'\n' => buf.extend_from_slice(b"\\n"),
                b'\r' => buf.extend_from_slice(b"\\r"),
                b'\t' => buf.extend_from_slice(b"\\t"),
                _ => {
                    let _ = write!(WriteBuf(buf), "\\u{b:04x}");
                }
            }
            i += 1;
        } else {
            // `i` is a character boundary: it only ever advances by whole characters.
            let Some(c) = s.get(i..).and_then(|t| t.chars().next()) else {
                run = bytes.len();
                break;
            };
            let n = c.len_utf8();
            if log_unsafe(c) {
                let _ = write!(WriteBuf(buf), "\\u{:04x}", c as u32);
            } else {
                buf.extend_from_slice(&bytes[i..i + n]);
            }
            i += n;
        }
        run = i;
    }
    buf.extend_from_slice(&bytes[run.min(bytes.len())..]);
}

/// `fmt::Write` into a byte buffer, escaping as [`escape_json_str`] does (for values
/// formatted straight into a JSON string).
pub(crate) struct EscapeBuf<'a>(pub(crate) &'a mut Vec<u8>);

impl std::fmt::Write for EscapeBuf<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        escape_json_body(self.0, s);
        Ok(())
    }
}

/// `fmt::Write` into a byte buffer.
pub(crate) struct WriteBuf<'a>(pub(crate) &'a mut Vec<u8>);

impl std::fmt::Write for WriteBuf<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// Writes the current time as RFC 3339 in UTC with microseconds,
/// `2026-12-02T03:25:36.123456Z`: the text tracing-subscriber's `SystemTime` timer writes,
/// from integer arithmetic. A clock outside years 1970-9999 goes through that timer.
pub fn write_now(buf: &mut Vec<u8>) {
    if !write_timestamp(buf, SystemTime::now()) {
        use tracing_subscriber::fmt::format::Writer;
        use tracing_subscriber::fmt::time::FormatTime;
        let mut s = String::new();
        let _ = tracing_subscriber::fmt::time::SystemTime.format_time(&mut Writer::new(&mut s));
        buf.extend_from_slice(s.as_bytes());
    }
}

/// Writes `t` as [`write_now`] does; `false` (nothing written) outside years 1970-9999.
fn write_timestamp(buf: &mut Vec<u8>, t: SystemTime) -> bool {
    let Some(d) = t
        .duration_since(UNIX_EPOCH)
        .ok()
        .filter(|d| d.as_secs() < MAX_SECS)
    else {
        return false;
    };
    let secs = d.as_secs();
    let (year, month, day) = civil_from_days(secs / 86_400);
    let sod = secs % 86_400;
    let mut out = *b"0000-00-00T00:00:00.000000Z";
    put_digits(&mut out[0..4], year);
    put_digits(&mut out[5..7], month);
    put_digits(&mut out[8..10], day);
    put_digits(&mut out[11..13], sod / 3600);
    put_digits(&mut out[14..16], sod % 3600 / 60);
    put_digits(&mut out[17..19], sod % 60);
    put_digits(&mut out[20..26], u64::from(d.subsec_micros()));
    buf.extend_from_slice(&out);
    true
}

/// 10000-01-01T00:00:00Z: from there the year has five digits.
const MAX_SECS: u64 = 253_402_300_800;

/// Writes `v` in decimal into `out`, right-aligned, zero-padded (`v` fits).
fn put_digits(out: &mut [u8], mut v: u64) {
    for d in out.iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// (year, month, day) of the day `days` after 1970-01-01 (proleptic Gregorian; Howard
/// Hinnant's `civil_from_days`, for days >= 0).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The reference: the old byte-at-a-time scan, kept here to compare against.
    fn escape_slow(s: &str) -> String {
        let mut out = String::from("\"");
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if (c as u32) < 0x20 || log_unsafe(c) => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }

    fn escaped(s: &str) -> String {
        let mut b = Vec::new();
        escape_json_str(&mut b, s);
        String::from_utf8(b).expect("utf8")
    }

    #[test]
    fn log_strings_escape_c1_and_bidi_controls() {
        let text = escaped("a\"b\\c\nd\u{1}e\u{9b}f\u{202e}g\u{2067}h\u{e9}");
        assert_eq!(
            text,
            "\"a\\\"b\\\\c\\nd\\u0001e\\u009bf\\u202eg\\u2067h\u{e9}\""
        );
        // Still JSON, and it decodes to the original text.
        let back: String = serde_json::from_str(&text).expect("json");
        assert_eq!(back, "a\"b\\c\nd\u{1}e\u{9b}f\u{202e}g\u{2067}h\u{e9}");
    }

    #[test]
    fn the_word_scan_finds_every_byte_at_every_position() {
        // Each special character at each offset of words and tails, among plain text.
        let specials = [
            '"', '\\', '\n', '\u{1f}', '\u{7f}', '\u{80}', '\u{9f}', '\u{202e}', 'é', ' ', '~',
            '\u{0}',
        ];
        for len in 0..20 {
            for pos in 0..len {
                for &c in &specials {
                    let s: String = (0..len)
                        .map(|i| {
                            if i == pos {
                                c
                            } else {
                                (b'a' + (i % 26) as u8) as char
                            }
                        })
                        .collect();
                    assert_eq!(escaped(&s), escape_slow(&s), "{s:?}");
                    let back: String = serde_json::from_str(&escaped(&s)).expect("json");
                    assert_eq!(back, s);
                }
            }
        }
        // Bytes just around the thresholds of the word tests, every value.
        for b in 0u32..0x100 {
            let c = char::from_u32(b).expect("char");
            let s = format!("abcdefg{c}hijklmnopq{c}{c}");
            assert_eq!(escaped(&s), escape_slow(&s), "byte {b:#x}");
        }
        assert!(!word_needs_care(u64::from_le_bytes(*b"/session")));
        assert!(word_needs_care(u64::from_le_bytes(*b"/sess\"on")));
        assert!(word_needs_care(u64::from_le_bytes(*b"/sess\x1fon")));
        assert!(!word_needs_care(u64::from_le_bytes(*b"/sess on")));
    }

    #[test]
    fn timestamps_are_rfc3339_with_microseconds() {
        let at = |s: u64, us: u32| {
            let mut b = Vec::new();
            assert!(write_timestamp(
                &mut b,
                UNIX_EPOCH + Duration::new(s, us * 1000)
            ));
            String::from_utf8(b).expect("utf8")
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(at(951_782_400, 7), "2000-02-29T00:00:00.000007Z");
        assert_eq!(at(1_795_915_536, 123_456), "2026-11-29T01:25:36.123456Z");
        assert_eq!(at(4_107_542_399, 999_999), "2100-02-28T23:59:59.999999Z");
        assert_eq!(at(4_107_542_400, 0), "2100-03-01T00:00:00.000000Z");
        assert_eq!(at(MAX_SECS - 1, 0), "9999-12-31T23:59:59.000000Z");
        // Every day from 1970 to 9999 follows the one before: the next day of the month,
        // or the 1st after the month's last day (leap years by the Gregorian rule).
        let leap =
            |y: u64| y.is_multiple_of(4) && (!y.is_multiple_of(100) || y.is_multiple_of(400));
        let month_len = |y: u64, m: u64| match m {
            2 if leap(y) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        let mut prev = civil_from_days(0);
        assert_eq!(prev, (1970, 1, 1));
        for days in 1..(MAX_SECS / 86_400) {
            let (y, m, d) = civil_from_days(days);
            let (py, pm, pd) = prev;
            let expected = if pd < month_len(py, pm) {
                (py, pm, pd + 1)
            } else if pm < 12 {
                (py, pm + 1, 1)
            } else {
                (py + 1, 1, 1)
            };
            assert_eq!((y, m, d), expected, "day {days}");
            prev = (y, m, d);
        }
        assert_eq!(prev, (9999, 12, 31));
        // Outside 1970-9999: nothing written (write_now then uses tracing-subscriber's timer).
        let mut b = Vec::new();
        assert!(!write_timestamp(
            &mut b,
            UNIX_EPOCH - Duration::from_secs(1)
        ));
        assert!(!write_timestamp(
            &mut b,
            UNIX_EPOCH + Duration::from_secs(MAX_SECS)
        ));
        assert!(b.is_empty());
        // The clock now, as the old formatter wrote it (same length, same minute as one
        // of two readings taken around it).
        let reference = || {
            use tracing_subscriber::fmt::format::Writer;
            use tracing_subscriber::fmt::time::FormatTime;
            let mut s = String::new();
            let _ = tracing_subscriber::fmt::time::SystemTime.format_time(&mut Writer::new(&mut s));
            s
        };
        let before = reference();
        write_now(&mut b);
        let after = reference();
        assert_eq!(b.len(), before.len());
        assert!(
            [&before, &after]
                .iter()
                .any(|r| r.as_bytes()[..16] == b[..16]),
            "{before} {} {after}",
            String::from_utf8_lossy(&b)
        );
    }
}
