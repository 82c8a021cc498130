//! `routes[].compression`: gzip / brotli of a route's responses, through pingora's own
//! response-compression context (`pingora::protocols::http::compression`).
//!
//! Only when all hold: the route has `compression:`; the client's `Accept-Encoding`
//! names an enabled coding with a non-zero q (brotli preferred, then gzip; `*` counts);
//! the response is a final one with a body (not HEAD, 1xx/101, 204, 206, 304); it has no
//! `Content-Encoding` yet; its type is compressible (JSON, text, JS, CSS, XML, SVG...)
//! and never `text/event-stream` (SSE must flush per event); and its `Content-Length`,
//! if any, is at least `min_size`. A response that could be compressed carries
//! `Vary: Accept-Encoding` whether or not this client got it compressed.
//!
//! A route without `compression:` costs one `Option` test per response head and body
//! chunk: no allocation, no pingora module (see `init_downstream_modules`).

use http::header::{HeaderValue, ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use std::io::Write;

use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::compression::{Algorithm, ResponseCompressionCtx};

/// Highest level accepted (gzip's maximum; brotli would go to 11 at a large CPU cost).
pub const MAX_COMPRESSION_LEVEL: u32 = 9;

/// A route's validated compression policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compression {
    pub gzip: bool,
    pub brotli: bool,
    pub level: u32,
    pub min_size: u64,
}

/// Whether a q parameter says "not acceptable" (`q=0`, `q=0.0`, `q=0.000`).
fn q_zero(params: &str) -> bool {
    params.split(';').any(|p| {
        let p = p.trim();
        let Some(v) = p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")) else {
            return false;
        };
        let v = v.trim();
        v == "0" || (v.starts_with("0.") && v[2..].bytes().all(|b| b == b'0'))
    })
}

impl Compression {
    /// The coding to use for a client's `Accept-Encoding`: brotli if accepted and
    /// enabled, else gzip; `None` when the client accepts neither (or sent none).
    pub fn negotiate(&self, accept: Option<&HeaderValue>) -> Option<Algorithm> {
        let text = accept.and_then(|v| v.to_str().ok())?;
        let (mut br, mut gz, mut any) = (None, None, None);
        for item in text.split(',') {
            let (name, params) = item.split_once(';').unwrap_or((item, ""));
            let ok = !q_zero(params);
            let name = name.trim();
            if name.eq_ignore_ascii_case("br") {
                br = Some(ok);
            } else if name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip") {
                gz = Some(ok);
            } else if name == "*" {
                any = Some(ok);
            }
        }
        let any = any.unwrap_or(false);
        if self.brotli && br.unwrap_or(any) {
            Some(Algorithm::Brotli)
        } else if self.gzip && gz.unwrap_or(any) {
            Some(Algorithm::Gzip)
        } else {
            None
        }
    }

    /// Whether this response may be compressed at all (see the module doc).
    fn eligible(&self, head_request: bool, resp: &ResponseHeader) -> bool {
        let s = resp.status.as_u16();
        if head_request || s < 200 || s == 204 || s == 206 || s == 304 {
            return false;
        }
        if resp
            .headers
            .get(CONTENT_ENCODING)
            .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"))
        {
            return false;
        }
        let Some(ct) = resp.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        if !compressible_type(ct) {
            return false;
        }
        match resp.headers.get(CONTENT_LENGTH) {
            None => true,
            Some(v) => std::str::from_utf8(v.as_bytes())
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .is_some_and(|n| n >= self.min_size.max(1)),
        }
    }

    /// At the response head: sets `Vary: Accept-Encoding` on a compressible response
    /// and, if the client accepts an enabled coding, rewrites the head
    /// (`Content-Encoding`, no `Content-Length`, weakened `ETag`) and returns the
    /// encoder to run over the body.
    pub fn start(&self, req: &RequestHeader, resp: &mut ResponseHeader) -> Option<Box<Encoder>> {
        if !self.eligible(req.method == http::Method::HEAD, resp) {
            return None;
        }
        add_vary(resp);
        match self.negotiate(req.headers.get(ACCEPT_ENCODING))? {
            Algorithm::Brotli => {
                // pingora 0.9.1's brotli encoder only flushes at the end of the body and
                // never finishes the stream (no last meta-block): decoders report
                // truncated data. Same crate, but finished (`into_inner`).
                resp.remove_header(&CONTENT_LENGTH);
                resp.remove_header(&http::header::ACCEPT_RANGES);
                weaken_etag(resp);
                resp.insert_header(CONTENT_ENCODING, "br").ok()?;
                // As pingora's context does for what it encodes (the length is unknown).
                resp.insert_header(http::header::TRANSFER_ENCODING, "chunked")
                    .ok()?;
                let w = brotli::CompressorWriter::new(Vec::new(), 4096, self.level, BROTLI_LGWIN);
                Some(Box::new(Encoder::Brotli(Some(Box::new(w)))))
            }
            algorithm => {
                // pingora's context compresses with the client's first listed coding: it
                // is given the one chosen here, alone, at the route's level.
                let mut ctx = ResponseCompressionCtx::new(0, false, false);
                ctx.adjust_algorithm_level(algorithm, self.level);
                let mut chosen = RequestHeader::build("GET", b"/", Some(1)).ok()?;
                chosen
                    .insert_header(ACCEPT_ENCODING, algorithm.as_str())
                    .ok()?;
                ctx.request_filter(&chosen);
                ctx.response_header_filter(resp, false);
                ctx.is_enabled().then(|| Box::new(Encoder::Pingora(ctx)))
            }
        }
    }
}

/// brotli window (log2 bytes), as pingora's.
const BROTLI_LGWIN: u32 = 19;

/// The body encoder of one response.
pub enum Encoder {
    /// pingora's response-compression context (gzip).
    Pingora(ResponseCompressionCtx),
    /// brotli, finished at the end of the body (`None` once finished).
    Brotli(Option<Box<brotli::CompressorWriter<Vec<u8>>>>),
}

impl Encoder {
    /// Encodes one body chunk; the last (`end`) also ends the coded stream. `None`: pass
    /// the chunk as is (the encoder gave up or is done).
    pub fn encode(&mut self, data: Option<&Bytes>, end: bool) -> Option<Bytes> {
        match self {
            Encoder::Pingora(ctx) => ctx.response_body_filter(data, end),
            Encoder::Brotli(slot) => {
                let w = slot.as_mut()?;
                if let Some(d) = data {
                    if let Err(e) = w.write_all(d) {
                        tracing::warn!(error = %e, "brotli encoding failed");
                        *slot = None;
                        return None;
                    }
                }
                if end {
                    return slot.take().map(|w| Bytes::from((*w).into_inner()));
                }
                if data.is_some_and(|d| !d.is_empty()) {
                    // Each chunk out as it came in (a slow producer is not held back).
                    let _ = w.flush();
                }
                Some(Bytes::from(std::mem::take(w.get_mut())))
            }
        }
    }
}

fn weaken_etag(resp: &mut ResponseHeader) {
    let Some(etag) = resp.headers.get(http::header::ETAG) else {
        return;
    };
    let b = etag.as_bytes();
    if b.starts_with(b"W/") {
        return;
    }
    if b.starts_with(b"\"") {
        if let Ok(v) = HeaderValue::from_bytes(&[b"W/", b].concat()) {
            let _ = resp.insert_header(http::header::ETAG, v);
            return;
        }
    }
    resp.remove_header(&http::header::ETAG);
}

/// Media types worth compressing. `text/event-stream` never: each SSE event must reach
/// the client when it is written, and a compressor holds bytes back.
pub fn compressible_type(content_type: &str) -> bool {
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime == "text/event-stream" {
        return false;
    }
    mime.starts_with("text/")
        || mime.ends_with("+json")
        || mime.ends_with("+xml")
        || matches!(
            mime.as_str(),
            "application/json"
                | "application/javascript"
                | "application/x-javascript"
                | "application/ecmascript"
                | "application/xml"
                | "application/wasm"
                | "application/manifest+json"
                | "application/x-ndjson"
                | "image/svg+xml"
                | "image/x-icon"
                | "font/ttf"
                | "font/otf"
        )
}

fn add_vary(resp: &mut ResponseHeader) {
    let present = resp.headers.get_all(http::header::VARY).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .map(|t| t.trim_ascii())
            .any(|t| t == b"*" || t.eq_ignore_ascii_case(b"accept-encoding"))
    });
    if !present {
        let _ = resp.append_header(http::header::VARY, "Accept-Encoding");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Compression {
        Compression {
            gzip: true,
            brotli: true,
            level: 6,
            min_size: 100,
        }
    }

    fn hv(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).expect("header")
    }

    #[test]
    fn negotiation_honours_q_zero_and_the_enabled_codings() {
        let p = policy();
        assert_eq!(p.negotiate(None), None);
        assert_eq!(p.negotiate(Some(&hv("identity"))), None);
        assert_eq!(p.negotiate(Some(&hv("gzip"))), Some(Algorithm::Gzip));
        assert_eq!(
            p.negotiate(Some(&hv("gzip, deflate, br"))),
            Some(Algorithm::Brotli)
        );
        assert_eq!(
            p.negotiate(Some(&hv("br;q=0, gzip;q=0.5"))),
            Some(Algorithm::Gzip)
        );
        assert_eq!(p.negotiate(Some(&hv("gzip;q=0.000"))), None);
        assert_eq!(p.negotiate(Some(&hv("*"))), Some(Algorithm::Brotli));
        assert_eq!(p.negotiate(Some(&hv("*, br;q=0"))), Some(Algorithm::Gzip));
        let gzip_only = Compression {
            brotli: false,
            ..p.clone()
        };
        assert_eq!(
            gzip_only.negotiate(Some(&hv("br, gzip"))),
            Some(Algorithm::Gzip)
        );
        assert_eq!(gzip_only.negotiate(Some(&hv("br"))), None);
    }

    #[test]
    fn types() {
        for t in [
            "application/json",
            "application/json; charset=utf-8",
            "text/html",
            "TEXT/CSS",
            "application/problem+json",
            "image/svg+xml",
            "application/javascript",
        ] {
            assert!(compressible_type(t), "{t}");
        }
        for t in [
            "text/event-stream",
            "text/event-stream; charset=utf-8",
            "image/png",
            "application/zip",
            "application/octet-stream",
            "",
        ] {
            assert!(!compressible_type(t), "{t}");
        }
    }

    fn resp(status: u16, ct: &str, len: Option<usize>) -> ResponseHeader {
        let mut r = ResponseHeader::build(status, None).expect("resp");
        r.insert_header(CONTENT_TYPE, ct).expect("ct");
        if let Some(n) = len {
            r.insert_header(CONTENT_LENGTH, n.to_string()).expect("cl");
        }
        r
    }

    fn req(method: &str, ae: Option<&str>) -> RequestHeader {
        let mut r = RequestHeader::build(method, b"/", None).expect("req");
        if let Some(ae) = ae {
            r.insert_header(ACCEPT_ENCODING, ae).expect("ae");
        }
        r
    }

    #[test]
    fn start_rewrites_the_head_and_encodes_the_body() {
        let p = policy();
        let body = Bytes::from(vec![b'a'; 4096]);
        let mut r = resp(200, "application/json", Some(body.len()));
        let mut c = p
            .start(&req("GET", Some("gzip")), &mut r)
            .expect("compressed");
        assert_eq!(
            r.headers.get(CONTENT_ENCODING).map(|v| v.as_bytes()),
            Some(&b"gzip"[..])
        );
        assert!(r.headers.get(CONTENT_LENGTH).is_none());
        assert_eq!(
            r.headers.get(http::header::VARY).map(|v| v.as_bytes()),
            Some(&b"Accept-Encoding"[..])
        );
        let mut out = c.encode(Some(&body), true).expect("bytes").to_vec();
        assert!(out.len() < 200, "{}", out.len());
        let mut d = flate2::read::GzDecoder::new(&out[..]);
        let mut plain = Vec::new();
        std::io::Read::read_to_end(&mut d, &mut plain).expect("gunzip");
        assert_eq!(plain, body.to_vec());
        out.clear();

        // brotli in two chunks, finished: a complete stream.
        let mut r = resp(200, "text/plain", None);
        r.insert_header(http::header::ETAG, "\"v1\"").expect("etag");
        let mut c = p.start(&req("GET", Some("br")), &mut r).expect("brotli");
        assert_eq!(
            r.headers.get(CONTENT_ENCODING).map(|v| v.as_bytes()),
            Some(&b"br"[..])
        );
        assert_eq!(
            r.headers.get(http::header::ETAG).map(|v| v.as_bytes()),
            Some(&b"W/\"v1\""[..])
        );
        let mut coded = c.encode(Some(&body), false).expect("chunk").to_vec();
        coded.extend_from_slice(&c.encode(Some(&body), false).expect("chunk"));
        coded.extend_from_slice(&c.encode(None, true).expect("end"));
        let mut plain = Vec::new();
        std::io::Read::read_to_end(&mut brotli::Decompressor::new(&coded[..], 4096), &mut plain)
            .expect("a finished brotli stream");
        assert_eq!(plain.len(), 2 * body.len());

        // Not accepted: Vary only.
        let mut r = resp(200, "text/html", Some(4096));
        assert!(p.start(&req("GET", None), &mut r).is_none());
        assert!(r.headers.get(CONTENT_ENCODING).is_none());
        assert!(r.headers.get(http::header::VARY).is_some());

        // Never: SSE, small, HEAD, 304, already encoded, an image.
        let never = [
            (
                req("GET", Some("gzip")),
                resp(200, "text/event-stream", None),
            ),
            (
                req("GET", Some("gzip")),
                resp(200, "application/json", Some(99)),
            ),
            (
                req("HEAD", Some("gzip")),
                resp(200, "application/json", Some(4096)),
            ),
            (
                req("GET", Some("gzip")),
                resp(304, "application/json", None),
            ),
            (req("GET", Some("gzip")), resp(200, "image/png", Some(4096))),
            (req("GET", Some("gzip")), {
                let mut r = resp(200, "text/plain", Some(4096));
                r.insert_header(CONTENT_ENCODING, "br").expect("ce");
                r
            }),
        ];
        for (q, mut r) in never {
            assert!(
                p.start(&q, &mut r).is_none(),
                "{:?} {:?}",
                q.method,
                r.headers
            );
            assert!(
                r.headers.get(CONTENT_ENCODING).is_none_or(|v| v == "br"),
                "{:?}",
                r.headers
            );
        }
    }
}
