//! Logging setup shared by both binaries: `tracing` with JSON lines (default) or a
//! human-readable format, plus the OpenTelemetry layer when traces are on (see
//! [`crate::telemetry`]). The level comes from `RUST_LOG` when set, else from the caller.
//!
//! A JSON line is one object: `timestamp` (RFC 3339, UTC), `level`, `target`, `message`,
//! the event's fields (top level), and from the enclosing spans: `span` (innermost span
//! name), `session_id` and `node_id` (span fields `session_id`/`session.id`,
//! `node_id`/`node.id`), `trace_id` and `span_id` (hex, when the span is exported). Fields
//! given to [`LogOptions::static_fields`] (e.g. the worker's `node_id`) are added to every
//! line that has no such field.

use std::fmt::Write as _;
use std::io::Write as _;

mod text;
use std::sync::OnceLock;
pub use text::escape_json_str;
use text::{EscapeBuf, WriteBuf};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer, Registry};

use crate::telemetry::{self, TelemetrySettings, SPAN_TARGET};

/// Output format of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line (timestamp, level, target, fields, span context).
    #[default]
    Json,
    /// Human-readable, for a terminal.
    Text,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "json" => Ok(LogFormat::Json),
            "text" => Ok(LogFormat::Text),
            other => Err(format!(
                "unknown log format {other:?} (expected json or text)"
            )),
        }
    }
}

/// The target of audit lines (`tracing::info!(target: "audit", ...)`).
pub const AUDIT_TARGET: &str = "audit";

/// Where audit lines (target [`AUDIT_TARGET`]) go: their own sink, written at any log
/// level and never into the main log. Always JSON lines.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub enum AuditSink {
    /// Standard error (the default; shared with the main log, but not filtered by its level).
    #[default]
    Stderr,
    /// Standard output.
    Stdout,
    /// A file, opened for appending, created with mode 0600.
    File(std::path::PathBuf),
}

/// `stderr` or `stdout` (config `audit.stream`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditStream {
    Stderr,
    Stdout,
}

impl AuditSink {
    /// From the config keys `audit.file` / `audit.stream` (at most one set; `None`, `None`
    /// is the default). `Err`: the reason, for the caller's config error.
    pub fn from_config(
        file: Option<&std::path::Path>,
        stream: Option<AuditStream>,
    ) -> Result<AuditSink, String> {
        match (file, stream) {
            (Some(_), Some(_)) => Err("set audit.file or audit.stream, not both".into()),
            (Some(f), None) if !f.is_absolute() => Err("must be an absolute path".into()),
            (Some(f), None) => Ok(AuditSink::File(f.to_path_buf())),
            (None, Some(AuditStream::Stdout)) => Ok(AuditSink::Stdout),
            (None, _) => Ok(AuditSink::Stderr),
        }
    }

    /// Opens the sink (a file: append, created 0600).
    pub fn open(&self) -> std::io::Result<AuditOut> {
        use std::os::unix::fs::OpenOptionsExt;
        Ok(match self {
            AuditSink::Stderr => AuditOut::Stderr,
            AuditSink::Stdout => AuditOut::Stdout,
            AuditSink::File(p) => AuditOut::File(
                std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .mode(0o600)
                    .open(p)?,
            ),
        })
    }
}

/// An opened [`AuditSink`].
#[derive(Debug)]
pub enum AuditOut {
    Stderr,
    Stdout,
    File(std::fs::File),
}

impl AuditOut {
    fn write_line(&self, line: &[u8]) {
        let _ = match self {
            AuditOut::Stderr => std::io::stderr().lock().write_all(line),
            AuditOut::Stdout => {
                let mut o = std::io::stdout().lock();
                o.write_all(line).and_then(|()| o.flush())
            }
            // One write(2) per line on an O_APPEND file.
            AuditOut::File(f) => (&*f).write_all(line),
        };
    }
}

/// Options of [`init_with`].
#[derive(Debug, Default)]
pub struct LogOptions {
    /// Where audit lines go (default stderr), whatever the log level.
    pub audit: Option<AuditOut>,
    /// Traces: exported when it has an endpoint.
    pub telemetry: Option<TelemetrySettings>,
    /// Fields added to every JSON line lacking them, e.g. `("node_id", "w1")`.
    pub static_fields: Vec<(&'static str, String)>,
}

/// Installs the global subscriber. `default_level` is an `EnvFilter` directive such as
/// `info` or `hotplex_proxy=debug,info`, used when `RUST_LOG` is unset. Logs go to stderr.
/// Calling it twice is harmless (the second call is ignored).
pub fn init(format: LogFormat, default_level: &str) {
    let _ = init_with(format, default_level, LogOptions::default());
}

/// Like [`init`], with traces and static fields. Fails only when the exporter cannot
/// start (the log is installed anyway, without traces).
pub fn init_with(
    format: LogFormat,
    default_level: &str,
    opts: LogOptions,
) -> Result<(), telemetry::StartError> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(default_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // The most verbose level the operator asked for, before the always-on span and audit
    // directives below (audit=trace makes the whole filter's level TRACE).
    let log_records = filter.max_level_hint();
    // HotPlex spans are always enabled (for trace export and the span fields of log
    // lines), whatever the log level; they produce no output of their own.
    let filter = match format!("{SPAN_TARGET}=info").parse() {
        Ok(d) => filter.add_directive(d),
        Err(_) => filter,
    };
    // Audit lines are enabled at any level; the main output skips them, the audit layer
    // writes only them, to its own sink.
    let filter = match format!("{AUDIT_TARGET}=trace").parse() {
        Ok(d) => filter.add_directive(d),
        Err(_) => filter,
    };
    let audit = JsonLayer::audit(
        opts.audit.unwrap_or(AuditOut::Stderr),
        opts.static_fields.clone(),
    );
    let mut otel: Option<telemetry::OtelLayer<Registry>> = None;
    let mut result = Ok(());
    if let Some(t) = opts.telemetry.as_ref() {
        match telemetry::start::<Registry>(t) {
            Ok(l) => otel = l,
            Err(e) => result = Err(e),
        }
    }
    let _ = match format {
        LogFormat::Json => {
            stack(filter, otel, audit, JsonLayer::new(opts.static_fields)).try_init()
        }
        LogFormat::Text => stack(filter, otel, audit, text_layer()).try_init(),
    };
    // `log` records (pingora and other dependencies log through the `log` crate) more
    // verbose than the operator's level are dropped by the `log` macros themselves. The
    // bridge `try_init` installs takes the whole filter's level (TRACE, for the audit
    // directive), so every debug!/trace! record of a dependency was turned into a tracing
    // event and refused by the filter only then: ~6.5k instructions per proxied request
    // (benches/RESULTS.md, 2026-12-02). Audit lines are tracing events, never `log` records.
    if let Some(level) = log_records {
        log::set_max_level(log_level_filter(level));
    }
    if let Err(e) = &result {
        tracing::error!(error = %e, "traces are off: the exporter did not start");
    }
    result
}

/// The subscriber: the registry, the trace exporter's layer (with its own per-layer
/// filter), the audit layer, the output layer, and the operator's `EnvFilter` outermost.
///
/// The global filter must be the outermost layer. Under a layer that is interested in
/// every callsite (the JSON layers are), an inner stack holding a per-layer filter turns
/// the `EnvFilter`'s "never" into "sometimes" (tracing-subscriber's `Layered`), and every
/// disabled callsite of every dependency is then filtered again at each call: the `h2`
/// crate's `trace!` callsites cost ~24k instructions per HTTP/2 request that way
/// (benches/RESULTS.md). Outermost, the filter's "never" is final and cached per callsite.
fn stack<O, L>(
    filter: EnvFilter,
    otel: Option<O>,
    audit: JsonLayer,
    output: L,
) -> impl Subscriber + for<'a> LookupSpan<'a> + Send + Sync
where
    O: Layer<Registry> + Send + Sync,
    L: Layer<
            tracing_subscriber::layer::Layered<
                JsonLayer,
                tracing_subscriber::layer::Layered<Option<O>, Registry>,
            >,
        > + Send
        + Sync,
{
    tracing_subscriber::registry()
        .with(otel)
        .with(audit)
        .with(output)
        .with(filter)
}

/// The human-readable output layer (no audit lines, no span lines of the exporter's spans).
fn text_layer<S>() -> impl Layer<S> + Send + Sync
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(tracing_subscriber::filter::filter_fn(|m| {
            m.target() != AUDIT_TARGET && (m.target() != SPAN_TARGET || !m.is_span())
        }))
}

/// The `log` crate's filter for a tracing level filter.
fn log_level_filter(l: tracing_subscriber::filter::LevelFilter) -> log::LevelFilter {
    use tracing_subscriber::filter::LevelFilter as L;
    match l {
        L::OFF => log::LevelFilter::Off,
        L::ERROR => log::LevelFilter::Error,
        L::WARN => log::LevelFilter::Warn,
        L::INFO => log::LevelFilter::Info,
        L::DEBUG => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    }
}

/// Span fields copied onto the log lines of events inside the span.
#[derive(Debug, Default, Clone)]
struct SpanLogFields {
    session_id: Option<String>,
    node_id: Option<String>,
    /// `trace_id` and `span_id` fields of a span that is not exported: the log lines
    /// inside still name their trace.
    trace_id: Option<String>,
    span_id: Option<String>,
}

impl SpanLogFields {
    fn is_empty(&self) -> bool {
        self.session_id.is_none()
            && self.node_id.is_none()
            && self.trace_id.is_none()
            && self.span_id.is_none()
    }
}

impl Visit for SpanLogFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "session_id" | "session.id" if !value.is_empty() => {
                self.session_id = Some(value.to_string())
            }
            "node_id" | "node.id" if !value.is_empty() => self.node_id = Some(value.to_string()),
            "trace_id" if !value.is_empty() => self.trace_id = Some(value.to_string()),
            "span_id" if !value.is_empty() => self.span_id = Some(value.to_string()),
            _ => {}
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if matches!(
            field.name(),
            "session_id" | "session.id" | "node_id" | "node.id" | "trace_id" | "span_id"
        ) {
            let mut s = String::new();
            let _ = write!(s, "{value:?}");
            let s = s.trim_matches('"').to_string();
            self.record_str(field, &s);
        }
    }
}

/// Keys that spans or static fields may also provide: an event field wins.
const RESERVED: [&str; 5] = ["session_id", "node_id", "span", "trace_id", "span_id"];

/// Writes `,"key":<value>` pairs straight into the line buffer (no map, few allocations:
/// the access log runs once per request).
struct JsonFields<'a> {
    buf: &'a mut Vec<u8>,
    /// Reserved keys the event itself set.
    seen: [bool; RESERVED.len()],
}

impl JsonFields<'_> {
    fn key(&mut self, name: &str) {
        // Every reserved key starts with 's', 'n' or 't': most keys skip the comparisons.
        if matches!(name.as_bytes().first(), Some(b's' | b'n' | b't')) {
            if let Some(i) = RESERVED.iter().position(|r| *r == name) {
                self.seen[i] = true;
            }
        }
        // Field names are identifiers of the code (letters, digits, '_' and '.'): copied
        // as they are; anything else is escaped.
        if name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
        {
            self.buf.reserve(name.len() + 4);
            self.buf.extend_from_slice(b",\"");
            self.buf.extend_from_slice(name.as_bytes());
            self.buf.extend_from_slice(b"\":");
        } else {
            self.buf.push(b',');
            escape_json_str(self.buf, name);
            self.buf.push(b':');
        }
    }

    fn value<T: serde::Serialize + ?Sized>(&mut self, name: &str, v: &T) {
        self.key(name);
        if serde_json::to_writer(&mut *self.buf, v).is_err() {
            self.buf.extend_from_slice(b"null");
        }
    }

    /// A string value, escaped beyond JSON's rules: C1 controls (U+0080-U+009F) and the
    /// bidirectional controls (U+061C, U+200E-U+200F, U+202A-U+202E, U+2066-U+2069) are
    /// written as `\uXXXX`, so no field (a path, a header, an agent's text) can reorder or
    /// hide what a terminal or log viewer shows.
    fn string(&mut self, name: &str, v: &str) {
        self.key(name);
        escape_json_str(self.buf, v);
    }

    fn has(&self, key: &str) -> bool {
        RESERVED
            .iter()
            .position(|r| *r == key)
            .is_some_and(|i| self.seen[i])
    }
}

impl Visit for JsonFields<'_> {
    fn record_f64(&mut self, f: &Field, v: f64) {
        self.value(f.name(), &v);
    }
    fn record_i64(&mut self, f: &Field, v: i64) {
        self.value(f.name(), &v);
    }
    fn record_u64(&mut self, f: &Field, v: u64) {
        self.value(f.name(), &v);
    }
    fn record_bool(&mut self, f: &Field, v: bool) {
        self.value(f.name(), &v);
    }
    fn record_str(&mut self, f: &Field, v: &str) {
        self.string(f.name(), v);
    }
    fn record_error(&mut self, f: &Field, v: &(dyn std::error::Error + 'static)) {
        self.string(f.name(), &v.to_string());
    }
    fn record_debug(&mut self, f: &Field, v: &dyn std::fmt::Debug) {
        // Formatted straight into the line, escaped piece by piece (no String per field:
        // `%` fields such as the access log's method, path and request id come here).
        self.key(f.name());
        self.buf.push(b'"');
        let _ = write!(EscapeBuf(self.buf), "{v:?}");
        self.buf.push(b'"');
    }
}

/// The JSON-lines layer: the main log (stderr, audit lines skipped) or the audit log (only
/// audit lines, to an [`AuditOut`]).
pub struct JsonLayer {
    static_fields: Vec<(&'static str, String)>,
    dispatch: OnceLock<tracing::dispatcher::WeakDispatch>,
    /// `Some`: the audit layer (only audit lines, there; it keeps no span state of its own,
    /// reading what the main layer recorded).
    audit: Option<AuditOut>,
}

impl JsonLayer {
    fn new(static_fields: Vec<(&'static str, String)>) -> JsonLayer {
        JsonLayer {
            static_fields,
            dispatch: OnceLock::new(),
            audit: None,
        }
    }

    fn audit(out: AuditOut, static_fields: Vec<(&'static str, String)>) -> JsonLayer {
        JsonLayer {
            audit: Some(out),
            ..JsonLayer::new(static_fields)
        }
    }

    /// Writes the line of `event` into `buf` (without the trailing newline).
    fn write_line<S>(&self, event: &Event<'_>, ctx: &Context<'_, S>, buf: &mut Vec<u8>)
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let meta = event.metadata();
        // RFC 3339 (digits, '-', ':', '.', 'T', 'Z'): nothing to escape.
        buf.extend_from_slice(b"{\"timestamp\":\"");
        text::write_now(buf);
        buf.extend_from_slice(b"\",\"level\":\"");
        buf.extend_from_slice(meta.level().as_str().as_bytes());
        buf.extend_from_slice(b"\",\"target\":");
        let _ = serde_json::to_writer(&mut *buf, meta.target());
        let mut f = JsonFields {
            buf,
            seen: [false; RESERVED.len()],
        };
        event.record(&mut f);
        let mut leaf: Option<Id> = None;
        let (mut session, mut node, mut ids) = (None, None, None);
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope {
                if leaf.is_none() {
                    leaf = Some(span.id());
                    if !f.has("span") {
                        f.value("span", span.name());
                    }
                }
                if let Some(l) = span.extensions().get::<SpanLogFields>() {
                    session = session.or_else(|| l.session_id.clone());
                    node = node.or_else(|| l.node_id.clone());
                    if ids.is_none() {
                        ids = l.trace_id.clone().zip(l.span_id.clone());
                    }
                }
            }
        }
        if let (Some(v), false) = (session, f.has("session_id")) {
            f.value("session_id", &v);
        }
        if let (Some(v), false) = (node, f.has("node_id")) {
            f.value("node_id", &v);
        }
        if let (Some(id), true) = (leaf, telemetry::enabled()) {
            if let Some(d) = self.dispatch.get().and_then(|w| w.upgrade()) {
                if let Some(cx) = tracing_opentelemetry::get_otel_context(&id, &d) {
                    use opentelemetry::trace::TraceContextExt;
                    let span = cx.span();
                    let sc = span.span_context();
                    if sc.is_valid() && !f.has("trace_id") {
                        // Lower-case hex, written in place.
                        f.key("trace_id");
                        let _ = write!(WriteBuf(f.buf), "\"{}\"", sc.trace_id());
                        f.key("span_id");
                        let _ = write!(WriteBuf(f.buf), "\"{}\"", sc.span_id());
                    }
                }
            }
        }
        if let (Some((trace, span)), false) = (ids, f.has("trace_id")) {
            f.value("trace_id", &trace);
            f.value("span_id", &span);
        }
        for (k, v) in &self.static_fields {
            if !f.has(k) {
                f.value(k, v.as_str());
            }
        }
        f.buf.push(b'}');
    }
}

impl<S> Layer<S> for JsonLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        let _ = self.dispatch.set(subscriber.downgrade());
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if self.audit.is_some() {
            return;
        }
        let mut f = SpanLogFields::default();
        attrs.record(&mut f);
        if !f.is_empty() {
            if let Some(span) = ctx.span(id) {
                span.extensions_mut().insert(f);
            }
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if self.audit.is_some() {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        if let Some(f) = ext.get_mut::<SpanLogFields>() {
            values.record(f);
            return;
        }
        let mut f = SpanLogFields::default();
        values.record(&mut f);
        if !f.is_empty() {
            ext.insert(f);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let is_audit = event.metadata().target() == AUDIT_TARGET;
        if is_audit != self.audit.is_some() {
            return;
        }
        // One line buffer per thread, reused (the access log writes a line per request).
        thread_local! {
            static LINE: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(1024));
        }
        let write = |buf: &mut Vec<u8>| {
            buf.clear();
            self.write_line(event, &ctx, buf);
            buf.push(b'\n');
            match &self.audit {
                Some(out) => out.write_line(buf),
                None => {
                    let _ = std::io::stderr().lock().write_all(buf);
                }
            }
        };
        let reused = LINE.try_with(|cell| match cell.try_borrow_mut() {
            Ok(mut buf) => {
                write(&mut buf);
                // A huge line does not pin its memory on the thread.
                if buf.capacity() > 64 * 1024 {
                    *buf = Vec::with_capacity(1024);
                }
                true
            }
            // Re-entered (an event while writing one) or thread-local gone: a fresh buffer.
            Err(_) => false,
        });
        if !matches!(reused, Ok(true)) {
            write(&mut Vec::with_capacity(512));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::sync::{Arc, Mutex};

    /// A JSON layer writing into a buffer instead of stderr.
    struct Capture {
        inner: JsonLayer,
        out: Arc<Mutex<Vec<Value>>>,
    }

    impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
        fn on_new_span(&self, a: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
            self.inner.on_new_span(a, id, ctx)
        }
        fn on_record(&self, id: &Id, v: &Record<'_>, ctx: Context<'_, S>) {
            self.inner.on_record(id, v, ctx)
        }
        fn on_event(&self, e: &Event<'_>, ctx: Context<'_, S>) {
            let mut buf = Vec::new();
            self.inner.write_line(e, &ctx, &mut buf);
            let line: Value = serde_json::from_slice(&buf).expect("a JSON line");
            self.out.lock().expect("lock").push(line);
        }
    }

    #[test]
    fn audit_sink_from_config_and_file_mode() {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(AuditSink::from_config(None, None), Ok(AuditSink::Stderr));
        assert_eq!(
            AuditSink::from_config(None, Some(AuditStream::Stdout)),
            Ok(AuditSink::Stdout)
        );
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("audit.log");
        assert!(AuditSink::from_config(Some(&p), Some(AuditStream::Stderr)).is_err());
        assert!(AuditSink::from_config(Some(std::path::Path::new("a.log")), None).is_err());
        let sink = AuditSink::from_config(Some(&p), None).expect("file");
        let out = sink.open().expect("open");
        out.write_line(b"one\n");
        drop(out);
        sink.open().expect("reopen").write_line(b"two\n");
        assert_eq!(std::fs::read_to_string(&p).expect("read"), "one\ntwo\n");
        let mode = std::fs::metadata(&p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn escaping_matches_serde_json_for_plain_and_mixed_text() {
        // The fast path (runs of printable ASCII) and the slow path agree with serde_json
        // wherever serde_json's escapes are ours (everything but C1/bidi controls).
        for s in [
            "",
            "GET",
            "/sessions/w1.abc.v2-123456.mac",
            "a\"b",
            "tab\there",
            "\u{7f}del",
            "caf\u{e9} \u{1f600} \u{4e2d}\u{6587}",
            "end\\",
            "\u{1}\u{1f}",
        ] {
            let mut ours = Vec::new();
            escape_json_str(&mut ours, s);
            let ours = String::from_utf8(ours).expect("utf8");
            let back: String = serde_json::from_str(&ours).expect("json");
            assert_eq!(back, s, "round trip of {s:?}");
            assert_eq!(ours, serde_json::to_string(s).expect("json"), "{s:?}");
        }
        // Formatted values are escaped piece by piece.
        let mut b = Vec::new();
        let (text, quoted) = ("x\u{202e}", "q");
        let _ = write!(EscapeBuf(&mut b), "{text}{quoted:?}");
        assert_eq!(String::from_utf8(b).expect("utf8"), "x\\u202e\\\"q\\\"");
    }

    /// A callsite the operator's filter disables stays disabled for good (its interest is
    /// "never", cached), even with the exporter's per-layer filter in the stack.
    #[test]
    fn disabled_callsites_are_never_reevaluated() {
        use tracing::callsite::{Callsite, DefaultCallsite};
        use tracing::field::FieldSet;
        use tracing::metadata::Kind;
        use tracing::{Level, Metadata};
        macro_rules! callsite {
            ($cs:ident, $meta:ident, $target:expr, $level:expr, $kind:expr) => {
                static $meta: Metadata<'static> = Metadata::new(
                    "probe",
                    $target,
                    $level,
                    None,
                    None,
                    None,
                    FieldSet::new(&[], tracing::callsite::Identifier(&$cs)),
                    $kind,
                );
                static $cs: DefaultCallsite = DefaultCallsite::new(&$meta);
            };
        }
        callsite!(
            H2_TRACE,
            H2_META,
            "h2::proto::streams",
            Level::TRACE,
            Kind::EVENT
        );
        callsite!(OURS_INFO, OURS_META, "access", Level::INFO, Kind::EVENT);
        callsite!(OUR_SPAN, SPAN_META, SPAN_TARGET, Level::INFO, Kind::SPAN);
        // A stand-in for the exporter's layer: a per-layer filter taking only our spans.
        let otel = tracing_subscriber::layer::Identity::new().with_filter(
            tracing_subscriber::filter::filter_fn(|m| m.is_span() && m.target() == SPAN_TARGET),
        );
        let filter = EnvFilter::new("info")
            .add_directive(format!("{SPAN_TARGET}=info").parse().expect("directive"))
            .add_directive(format!("{AUDIT_TARGET}=trace").parse().expect("directive"));
        let sub = stack(
            filter,
            Some(otel),
            JsonLayer::audit(AuditOut::Stderr, vec![]),
            JsonLayer::new(vec![]),
        );
        let d = tracing::Dispatch::new(sub);
        let meta = |c: &'static DefaultCallsite| c.metadata();
        assert!(d.register_callsite(meta(&H2_TRACE)).is_never());
        assert!(!d.register_callsite(meta(&OURS_INFO)).is_never());
        assert!(!d.register_callsite(meta(&OUR_SPAN)).is_never());
        // The order this replaced (the filter innermost): the same callsite was
        // "sometimes", i.e. filtered again at every call.
        let old = tracing_subscriber::registry()
            .with(EnvFilter::new("info"))
            .with(
                tracing_subscriber::layer::Identity::new()
                    .with_filter(tracing_subscriber::filter::filter_fn(|m| m.is_span())),
            )
            .with(JsonLayer::audit(AuditOut::Stderr, vec![]))
            .with(JsonLayer::new(vec![]));
        let old = tracing::Dispatch::new(old);
        assert!(old.register_callsite(meta(&H2_TRACE)).is_sometimes());
    }

    #[test]
    fn keys_are_copied_or_escaped_and_reserved_ones_are_seen() {
        let mut buf = Vec::new();
        let mut f = JsonFields {
            buf: &mut buf,
            seen: [false; RESERVED.len()],
        };
        f.value("http.route", "a");
        f.value("session_id", "s");
        f.value("we\"ird\u{202e}", &1);
        f.value("trace_id", "t");
        assert!(f.has("session_id") && f.has("trace_id"));
        assert!(!f.has("span_id") && !f.has("node_id") && !f.has("span"));
        f.buf.push(b'}');
        let line = String::from_utf8(buf[1..].to_vec()).expect("utf8");
        let v: serde_json::Value = serde_json::from_str(&format!("{{{line}")).expect("json");
        assert_eq!(v["http.route"], "a");
        assert_eq!(v["session_id"], "s");
        assert_eq!(v["we\"ird\u{202e}"], 1);
        assert!(line.contains("we\\\"ird\\u202e"), "{line}");
    }

    #[test]
    fn log_record_levels_follow_the_operators_level() {
        use tracing_subscriber::filter::LevelFilter as L;
        assert_eq!(log_level_filter(L::WARN), log::LevelFilter::Warn);
        assert_eq!(log_level_filter(L::INFO), log::LevelFilter::Info);
        assert_eq!(log_level_filter(L::TRACE), log::LevelFilter::Trace);
        assert_eq!(log_level_filter(L::OFF), log::LevelFilter::Off);
        // The hint is the operator's most verbose directive, not the audit one's.
        let f = EnvFilter::new("warn,pingora_core=debug");
        assert_eq!(f.max_level_hint(), Some(L::DEBUG));
        assert_eq!(EnvFilter::new("info").max_level_hint(), Some(L::INFO));
    }

    #[test]
    fn lines_carry_span_fields_and_static_fields() {
        let out = Arc::new(Mutex::new(Vec::new()));
        let layer = Capture {
            inner: JsonLayer::new(vec![("node_id", "static-node".into())]),
            out: out.clone(),
        };
        let sub = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(sub, || {
            tracing::info!(answer = 42, "outside");
            let span = tracing::info_span!(
                target: SPAN_TARGET,
                "turn",
                session.id = "s-1",
                node.id = tracing::field::Empty
            );
            span.record("node.id", "w7");
            let _g = span.enter();
            tracing::warn!(
                kind = "x",
                ok = true,
                ratio = 0.5,
                quote = "a\"b\n",
                "inside"
            );
            tracing::info!(session_id = "explicit", "event field wins");
        });
        let lines = out.lock().expect("lock").clone();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[1]["ratio"], 0.5);
        assert_eq!(lines[1]["quote"], "a\"b\n");
        assert_eq!(lines[2]["session_id"], "explicit");
        assert_eq!(lines[2]["node_id"], "w7");
        assert_eq!(lines[0]["message"], "outside");
        assert_eq!(lines[0]["answer"], 42);
        assert_eq!(lines[0]["level"], "INFO");
        assert_eq!(lines[0]["node_id"], "static-node");
        assert!(lines[0].get("session_id").is_none());
        assert!(lines[0]["timestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')));
        assert_eq!(lines[1]["session_id"], "s-1");
        assert_eq!(lines[1]["node_id"], "w7", "span field wins over static");
        assert_eq!(lines[1]["span"], "turn");
        assert_eq!(lines[1]["ok"], true);
        // Traces are off in unit tests: no ids.
        assert!(lines[1].get("trace_id").is_none());
    }

    #[test]
    fn lines_in_a_sampled_out_request_carry_its_ids() {
        let out = Arc::new(Mutex::new(Vec::new()));
        let layer = Capture {
            inner: JsonLayer::new(vec![]),
            out: out.clone(),
        };
        let sub = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(sub, || {
            let span = tracing::info_span!(
                "proxy.request",
                trace_id = %"4bf92f3577b34da6a3ce929d0e0e4736",
                span_id = "00f067aa0ba902b7",
            );
            tracing::info!(target: "access", parent: span.id(), path = %"/a\"b\u{202e}", status = 200u64);
            let _g = span.enter();
            tracing::info!(trace_id = "mine", "an event's own ids win");
        });
        let lines = out.lock().expect("lock").clone();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(lines[0]["span_id"], "00f067aa0ba902b7");
        assert_eq!(lines[0]["path"], "/a\"b\u{202e}");
        assert_eq!(lines[0]["status"], 200);
        assert_eq!(lines[1]["trace_id"], "mine");
        assert!(lines[1].get("span_id").is_none());
    }
}
