//! A raw HTTP/2 client over TLS (ALPN `h2`) for hostile-input tests: frames and HPACK are
//! written by hand, so it can send what no HTTP/2 library would (missing or repeated
//! pseudo-headers, uppercase names, connection-specific headers, lying `content-length`).
//!
//! HPACK: requests use "literal without indexing, new name" with raw (non-Huffman)
//! strings. Responses: the client announces `SETTINGS_HEADER_TABLE_SIZE = 0`, so the
//! server's encoder never references its dynamic table; of a response header block only
//! `:status` is decoded (static index, or a literal whose value may be Huffman-coded: the
//! ten digit codes of RFC 7541 Appendix B are enough). Bodies come in DATA frames as is.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;
pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const PADDED: u8 = 0x8;
pub const PRIORITY: u8 = 0x20;
/// Largest frame payload the client sends (the h2 default `SETTINGS_MAX_FRAME_SIZE`).
pub const MAX_FRAME: usize = 16_384;

/// h2 error code names (RFC 9113 7).
pub fn reason(code: u32) -> &'static str {
    match code {
        0x0 => "NO_ERROR",
        0x1 => "PROTOCOL_ERROR",
        0x2 => "INTERNAL_ERROR",
        0x3 => "FLOW_CONTROL_ERROR",
        0x6 => "FRAME_SIZE_ERROR",
        0x7 => "REFUSED_STREAM",
        0x8 => "CANCEL",
        0x9 => "COMPRESSION_ERROR",
        0xb => "ENHANCE_YOUR_CALM",
        _ => "other",
    }
}

/// One frame read off the wire.
#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

/// How the server dealt with one stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A response (status, body); `reset`: a RST_STREAM code that followed it, if any.
    Response {
        status: u16,
        body: String,
        reset: Option<u32>,
    },
    /// RST_STREAM with this error code, no response.
    Reset(u32),
    /// GOAWAY (last stream id, error code): the connection is gone.
    GoAway { last: u32, code: u32 },
    /// The connection closed without either.
    Closed,
    /// Nothing within the deadline.
    Timeout,
}

impl Outcome {
    /// Refused as RFC 9113 wants a malformed request refused: a stream or connection error,
    /// or a 4xx answer.
    pub fn refused(&self) -> bool {
        match self {
            Outcome::Response { status, .. } => (400..500).contains(status),
            Outcome::Reset(_) | Outcome::GoAway { .. } => true,
            Outcome::Closed | Outcome::Timeout => false,
        }
    }
    /// Short text for the table.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Response {
                status,
                reset: Some(c),
                ..
            } => format!("{status} + RST_STREAM {}", reason(*c)),
            Outcome::Response { status, .. } => format!("{status}"),
            Outcome::Reset(c) => format!("RST_STREAM {}", reason(*c)),
            Outcome::GoAway { code, .. } => format!("GOAWAY {}", reason(*code)),
            Outcome::Closed => "closed".into(),
            Outcome::Timeout => "timeout".into(),
        }
    }
}

/// HPACK integer with an `n`-bit prefix; `first` holds the bits above the prefix.
pub fn encode_int(first: u8, n: u32, mut v: usize, out: &mut Vec<u8>) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// A header block: each field as "literal without indexing, new name", raw strings.
pub fn encode_block(fields: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        encode_int(0x00, 7, name.len(), &mut out);
        out.extend_from_slice(name);
        encode_int(0x00, 7, value.len(), &mut out);
        out.extend_from_slice(value);
    }
    out
}

fn decode_int(b: &[u8], pos: &mut usize, n: u32) -> Result<usize, String> {
    let max = (1usize << n) - 1;
    let first = *b.get(*pos).ok_or("int: end")? as usize & max;
    *pos += 1;
    if first < max {
        return Ok(first);
    }
    let (mut v, mut shift) = (max, 0u32);
    loop {
        let byte = *b.get(*pos).ok_or("int: end")? as usize;
        *pos += 1;
        v += (byte & 0x7f) << shift;
        shift += 7;
        if byte & 0x80 == 0 || shift > 28 {
            return Ok(v);
        }
    }
}

/// Huffman decoding of a string of ASCII digits (RFC 7541 Appendix B: `0`-`2` are the
/// 5-bit codes 00000-00010, `3`-`9` the 6-bit codes 011001-011111); padding is up to 7
/// one bits. Anything else is an error.
pub fn huffman_digits(bytes: &[u8]) -> Result<String, String> {
    let total = bytes.len() * 8;
    let bit = |i: usize| (bytes[i / 8] >> (7 - i % 8)) & 1;
    let (mut i, mut out) = (0usize, String::new());
    while i < total {
        let left = total - i;
        if left < 8 && (i..total).all(|j| bit(j) == 1) {
            return Ok(out);
        }
        let code = |len: usize| (0..len).fold(0u8, |acc, k| (acc << 1) | bit(i + k));
        if left >= 5 && code(5) <= 0b00010 {
            out.push((b'0' + code(5)) as char);
            i += 5;
        } else if left >= 6 && (0b011001..=0b011111).contains(&code(6)) {
            out.push((b'3' + code(6) - 0b011001) as char);
            i += 6;
        } else {
            return Err(format!(
                "not a Huffman-coded digit at bit {i} of {bytes:02x?}"
            ));
        }
    }
    Ok(out)
}

/// A string literal: (raw bytes, Huffman flag).
fn decode_str<'a>(b: &'a [u8], pos: &mut usize) -> Result<(&'a [u8], bool), String> {
    let huff = b.get(*pos).ok_or("str: end")? & 0x80 != 0;
    let len = decode_int(b, pos, 7)?;
    let s = b.get(*pos..*pos + len).ok_or("str: short")?;
    *pos += len;
    Ok((s, huff))
}

/// `:status` of a response header block (see the module doc for what is supported).
pub fn decode_status(block: &[u8]) -> Result<Option<u16>, String> {
    const STATIC_STATUS: [u16; 7] = [200, 204, 206, 304, 400, 404, 500];
    let mut pos = 0;
    let mut status = None;
    while pos < block.len() {
        let b = block[pos];
        if b & 0x80 != 0 {
            let idx = decode_int(block, &mut pos, 7)?;
            match idx {
                8..=14 => status = status.or(Some(STATIC_STATUS[idx - 8])),
                1..=61 => {}
                _ => return Err(format!("dynamic table reference {idx} (table size is 0)")),
            }
        } else if b & 0xe0 == 0x20 {
            decode_int(block, &mut pos, 5)?;
        } else {
            let prefix = if b & 0xc0 == 0x40 { 6 } else { 4 };
            let idx = decode_int(block, &mut pos, prefix)?;
            let is_status = match idx {
                0 => {
                    let (name, huff) = decode_str(block, &mut pos)?;
                    !huff && name == b":status"
                }
                8..=14 => true,
                1..=61 => false,
                _ => return Err(format!("dynamic table reference {idx} (table size is 0)")),
            };
            let (value, huff) = decode_str(block, &mut pos)?;
            if is_status && status.is_none() {
                let text = if huff {
                    huffman_digits(value)?
                } else {
                    String::from_utf8_lossy(value).into_owned()
                };
                status = Some(text.parse().map_err(|_| format!("bad :status {text:?}"))?);
            }
        }
    }
    Ok(status)
}

/// A raw h2 connection.
pub struct H2 {
    io: SslStream<TcpStream>,
    buf: Vec<u8>,
    pub goaway: Option<(u32, u32)>,
}

impl H2 {
    /// TLS (no certificate verification: the proxy's dev certificate) with ALPN `h2`,
    /// the preface and the client SETTINGS (header table 0, no push, 1 MiB window).
    pub async fn connect(addr: SocketAddr) -> Result<H2, String> {
        let mut b = SslConnector::builder(SslMethod::tls()).map_err(|e| e.to_string())?;
        b.set_verify(SslVerifyMode::NONE);
        b.set_alpn_protos(b"\x02h2").map_err(|e| e.to_string())?;
        let ssl = b
            .build()
            .configure()
            .and_then(|c| c.into_ssl("localhost"))
            .map_err(|e| e.to_string())?;
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let mut io = SslStream::new(ssl, tcp).map_err(|e| e.to_string())?;
        std::pin::Pin::new(&mut io)
            .connect()
            .await
            .map_err(|e| format!("TLS handshake: {e}"))?;
        if io.ssl().selected_alpn_protocol() != Some(&b"h2"[..]) {
            return Err("server did not select h2".into());
        }
        let mut h = H2 {
            io,
            buf: Vec::new(),
            goaway: None,
        };
        let mut settings = Vec::new();
        for (id, v) in [(0x1u16, 0u32), (0x2, 0), (0x4, 1 << 20)] {
            settings.extend_from_slice(&id.to_be_bytes());
            settings.extend_from_slice(&v.to_be_bytes());
        }
        let mut first = PREFACE.to_vec();
        first.extend(frame_bytes(SETTINGS, 0, 0, &settings));
        // Connection window: 1 MiB more.
        first.extend(frame_bytes(
            WINDOW_UPDATE,
            0,
            0,
            &(1u32 << 20).to_be_bytes(),
        ));
        h.write(&first).await?;
        Ok(h)
    }

    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.io
            .write_all(bytes)
            .await
            .map_err(|e| format!("write: {e}"))?;
        self.io.flush().await.map_err(|e| format!("flush: {e}"))
    }

    pub async fn send_frame(
        &mut self,
        kind: u8,
        flags: u8,
        stream: u32,
        payload: &[u8],
    ) -> Result<(), String> {
        self.write(&frame_bytes(kind, flags, stream, payload)).await
    }

    /// HEADERS (+ CONTINUATION past [`MAX_FRAME`]) carrying `fields` in this order.
    pub async fn send_headers(
        &mut self,
        stream: u32,
        fields: &[(&[u8], &[u8])],
        end_stream: bool,
    ) -> Result<(), String> {
        let block = encode_block(fields);
        let chunks: Vec<&[u8]> = if block.is_empty() {
            vec![&[]]
        } else {
            block.chunks(MAX_FRAME).collect()
        };
        let mut out = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            let last = i + 1 == chunks.len();
            let mut flags = if last { END_HEADERS } else { 0 };
            let kind = if i == 0 {
                if end_stream {
                    flags |= END_STREAM;
                }
                HEADERS
            } else {
                CONTINUATION
            };
            out.extend(frame_bytes(kind, flags, stream, c));
        }
        self.write(&out).await
    }

    pub async fn send_data(&mut self, stream: u32, data: &[u8], end: bool) -> Result<(), String> {
        let flags = if end { END_STREAM } else { 0 };
        self.send_frame(DATA, flags, stream, data).await
    }

    /// The next frame, answering SETTINGS and PING; `None` on EOF/error.
    async fn next_frame(&mut self) -> Option<Frame> {
        loop {
            if self.buf.len() >= 9 {
                let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
                if self.buf.len() >= 9 + len {
                    let f = Frame {
                        kind: self.buf[3],
                        flags: self.buf[4],
                        stream: u32::from_be_bytes([
                            self.buf[5],
                            self.buf[6],
                            self.buf[7],
                            self.buf[8],
                        ]) & 0x7fff_ffff,
                        payload: self.buf[9..9 + len].to_vec(),
                    };
                    self.buf.drain(..9 + len);
                    match f.kind {
                        SETTINGS if f.flags & ACK == 0 => {
                            let _ = self.send_frame(SETTINGS, ACK, 0, &[]).await;
                        }
                        PING if f.flags & ACK == 0 => {
                            let p = f.payload.clone();
                            let _ = self.send_frame(PING, ACK, 0, &p).await;
                        }
                        GOAWAY if f.payload.len() >= 8 => {
                            let p = &f.payload;
                            let last = u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff;
                            let code = u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
                            self.goaway = Some((last, code));
                        }
                        _ => {}
                    }
                    return Some(f);
                }
            }
            let mut tmp = [0u8; 16_384];
            match self.io.read(&mut tmp).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
            }
        }
    }

    /// Reads until `stream` is answered (response through END_STREAM, or reset), the
    /// connection goes away, or `within` passes.
    pub async fn outcome(&mut self, stream: u32, within: Duration) -> Outcome {
        let deadline = tokio::time::Instant::now() + within;
        let mut block: Vec<u8> = Vec::new();
        let mut status: Option<u16> = None;
        let mut body = Vec::new();
        let mut headers_done = false;
        loop {
            let f = match tokio::time::timeout_at(deadline, self.next_frame()).await {
                Err(_) => return Outcome::Timeout,
                Ok(None) => {
                    return match (status, self.goaway) {
                        (Some(s), _) => Outcome::Response {
                            status: s,
                            body: String::from_utf8_lossy(&body).into_owned(),
                            reset: None,
                        },
                        (None, Some((last, code))) => Outcome::GoAway { last, code },
                        (None, None) => Outcome::Closed,
                    }
                }
                Ok(Some(f)) => f,
            };
            if f.kind == GOAWAY && status.is_none() {
                let (last, code) = self.goaway.unwrap_or((0, 0));
                if last < stream || code != 0 {
                    return Outcome::GoAway { last, code };
                }
                continue;
            }
            // Frames of other streams (earlier, already judged ones) are skipped.
            if f.stream != stream {
                continue;
            }
            match f.kind {
                HEADERS | CONTINUATION => {
                    let mut p = &f.payload[..];
                    if f.kind == HEADERS {
                        let pad = if f.flags & PADDED != 0 {
                            let n = p.first().copied().unwrap_or(0) as usize;
                            p = &p[1..];
                            n
                        } else {
                            0
                        };
                        if f.flags & PRIORITY != 0 {
                            p = &p[5.min(p.len())..];
                        }
                        p = &p[..p.len().saturating_sub(pad)];
                    }
                    block.extend_from_slice(p);
                    if f.flags & END_HEADERS != 0 {
                        if !headers_done {
                            status = decode_status(&block).unwrap_or_else(|e| panic!("{e}"));
                            headers_done = true;
                        }
                        block.clear();
                    }
                    if f.flags & END_STREAM != 0 {
                        return Outcome::Response {
                            status: status.unwrap_or(0),
                            body: String::from_utf8_lossy(&body).into_owned(),
                            reset: None,
                        };
                    }
                }
                DATA => {
                    let mut p = &f.payload[..];
                    if f.flags & PADDED != 0 {
                        let n = p.first().copied().unwrap_or(0) as usize;
                        p = &p[1..p.len().saturating_sub(n).max(1)];
                    }
                    body.extend_from_slice(p);
                    if !f.payload.is_empty() {
                        // Give the flow-control window back (stream and connection).
                        let inc = (f.payload.len() as u32).to_be_bytes();
                        let _ = self.send_frame(WINDOW_UPDATE, 0, stream, &inc).await;
                        let _ = self.send_frame(WINDOW_UPDATE, 0, 0, &inc).await;
                    }
                    if f.flags & END_STREAM != 0 {
                        return Outcome::Response {
                            status: status.unwrap_or(0),
                            body: String::from_utf8_lossy(&body).into_owned(),
                            reset: None,
                        };
                    }
                }
                RST_STREAM => {
                    let p = &f.payload;
                    let code = if p.len() >= 4 {
                        u32::from_be_bytes([p[0], p[1], p[2], p[3]])
                    } else {
                        u32::MAX
                    };
                    return match status {
                        Some(s) => Outcome::Response {
                            status: s,
                            body: String::from_utf8_lossy(&body).into_owned(),
                            reset: Some(code),
                        },
                        None => Outcome::Reset(code),
                    };
                }
                _ => {}
            }
        }
    }

    /// True while the connection has not gone away.
    pub fn alive(&self) -> bool {
        self.goaway.is_none()
    }
}

pub fn frame_bytes(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Self-checks of the codec pieces (RFC 7541 examples), run by the including test file.
pub fn self_check() {
    // C.1: 10 with a 5-bit prefix; 1337 with a 5-bit prefix.
    let mut v = Vec::new();
    encode_int(0, 5, 10, &mut v);
    assert_eq!(v, [0x0a]);
    v.clear();
    encode_int(0, 5, 1337, &mut v);
    assert_eq!(v, [0x1f, 0x9a, 0x0a]);
    assert_eq!(decode_int(&v, &mut 0, 5), Ok(1337));
    // C.6.1 / C.6.2: ":status: 302" and "307", literal with indexed name, Huffman value.
    assert_eq!(decode_status(&[0x48, 0x82, 0x64, 0x02]), Ok(Some(302)));
    assert_eq!(
        decode_status(&[0x48, 0x83, 0x64, 0x0e, 0xff]),
        Ok(Some(307))
    );
    // Indexed :status 200 / 404, then other indexed fields.
    assert_eq!(decode_status(&[0x88, 0x8f]), Ok(Some(200)));
    assert_eq!(decode_status(&[0x20, 0x8d]), Ok(Some(404)));
    // A raw literal :status.
    let block = encode_block(&[(b":status", b"431"), (b"x", b"y")]);
    assert_eq!(decode_status(&block), Ok(Some(431)));
    assert!(huffman_digits(&[0x61]).is_err());
    assert!(decode_status(&[0xbe]).is_err(), "dynamic reference");
}
