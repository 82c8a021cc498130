//! A Server-Sent-Events reader over a streaming HTTP response (the WHATWG event-stream
//! format: `event:`/`data:`/`id:` fields, events separated by a blank line).

use futures_util::StreamExt;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    /// `event:` field (`message` when absent).
    pub event: String,
    /// `data:` lines joined by `\n`.
    pub data: String,
    /// `id:` field, if any.
    pub id: Option<String>,
}

impl Event {
    /// `data` parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).unwrap_or(serde_json::Value::Null)
    }
}

/// Incremental parser: feed bytes, take complete events.
#[derive(Debug, Default)]
pub struct Parser {
    buf: Vec<u8>,
    cur: Event,
    has_data: bool,
}

impl Parser {
    /// Feeds bytes; returns the events completed by them.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Event> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
            let mut line: Vec<u8> = self.buf.drain(..=pos).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8_lossy(&line).into_owned();
            if line.is_empty() {
                if self.has_data || !self.cur.event.is_empty() {
                    let mut ev = std::mem::take(&mut self.cur);
                    if ev.event.is_empty() {
                        ev.event = "message".into();
                    }
                    out.push(ev);
                }
                self.has_data = false;
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f.to_string(), v.strip_prefix(' ').unwrap_or(v).to_string()),
                None => (line.clone(), String::new()),
            };
            match field.as_str() {
                "event" => self.cur.event = value,
                "data" => {
                    if self.has_data {
                        self.cur.data.push('\n');
                    }
                    self.cur.data.push_str(&value);
                    self.has_data = true;
                }
                "id" => self.cur.id = Some(value),
                _ => {}
            }
        }
        out
    }
}

/// Reads events from a streaming response as they arrive.
pub struct Reader {
    stream: futures_util::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    parser: Parser,
    pending: std::collections::VecDeque<Event>,
}

impl Reader {
    pub fn new(resp: reqwest::Response) -> Reader {
        Reader {
            stream: resp.bytes_stream().boxed(),
            parser: Parser::default(),
            pending: Default::default(),
        }
    }

    /// The next event, or `None` at the end of the stream (or on a transport error).
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Some(ev);
            }
            match self.stream.next().await {
                Some(Ok(chunk)) => self.pending.extend(self.parser.feed(&chunk)),
                _ => return None,
            }
        }
    }

    /// Collects events until the stream ends.
    pub async fn collect(mut self) -> Vec<Event> {
        let mut all = Vec::new();
        while let Some(ev) = self.next().await {
            all.push(ev);
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_split_chunks_and_multiline_data() {
        let mut p = Parser::default();
        assert!(p.feed(b"event: thinking\ndata: {\"a\":").is_empty());
        let evs = p.feed(b"1}\n\n: comment\ndata: x\r\ndata: y\n\n");
        assert_eq!(evs.len(), 2);
        assert_eq!(evs[0].event, "thinking");
        assert_eq!(evs[0].json()["a"], 1);
        assert_eq!(evs[1].event, "message");
        assert_eq!(evs[1].data, "x\ny");
    }
}
