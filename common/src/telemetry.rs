//! OpenTelemetry traces shared by both binaries: the `telemetry:` config section, the OTLP
//! exporter, W3C `traceparent` propagation and span helpers.
//!
//! Spans are ordinary `tracing` spans with target [`SPAN_TARGET`]; the
//! `tracing-opentelemetry` layer (installed by [`crate::logging::init`] when an endpoint
//! is configured) turns them into OpenTelemetry spans, batched and sent as OTLP/HTTP
//! protobuf to `<endpoint>/v1/traces`. The HTTP client is hyper, driven by a dedicated
//! one-thread tokio runtime (`otel-export`): nothing blocks the request paths, and an
//! unreachable collector only costs dropped spans (the queue is bounded).
//!
//! Tracing is off when no endpoint is configured; [`enabled`] is then `false` and the
//! proxy creates no span at all (one atomic load per request).
//!
//! Standard environment variables override the file: `OTEL_EXPORTER_OTLP_ENDPOINT` (base
//! URL), `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (full URL, used as is), `OTEL_SERVICE_NAME`,
//! `OTEL_TRACES_SAMPLER_ARG` (ratio), `OTEL_SDK_DISABLED=true` (off);
//! `OTEL_EXPORTER_OTLP_HEADERS` is read by the exporter itself.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry::Context;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};
use serde::Deserialize;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Target of every HotPlex span; the filters enable it whatever the log level.
pub const SPAN_TARGET: &str = "hotplex_span";
/// Sampling ratio (0..=1) for traces that arrive without a sampled parent.
pub const DEFAULT_SAMPLING_RATIO: f64 = 1.0;
/// Longest time a finished span waits in the queue before it is exported.
pub const DEFAULT_BATCH_DELAY: Duration = Duration::from_secs(5);
/// Timeout of one export request.
pub const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// Finished spans queued for export; more are dropped.
pub const DEFAULT_MAX_QUEUE_SIZE: usize = 2048;
/// Path appended to a base endpoint.
pub const TRACES_PATH: &str = "/v1/traces";
/// Longest wait for the last export at shutdown.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Base OTLP endpoint (`/v1/traces` is appended).
pub const ENV_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// Full traces URL (used as is; wins over [`ENV_ENDPOINT`]).
pub const ENV_TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
/// Service name.
pub const ENV_SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
/// Sampling ratio.
pub const ENV_SAMPLER_ARG: &str = "OTEL_TRACES_SAMPLER_ARG";
/// `true`: tracing off whatever the config says.
pub const ENV_SDK_DISABLED: &str = "OTEL_SDK_DISABLED";

/// The `telemetry:` section of both config files. Every key is optional.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryFile {
    /// OTLP/HTTP collector base URL (`http://host:4318`); spans go to `<endpoint>/v1/traces`.
    /// Absent or empty: tracing off. Env `OTEL_EXPORTER_OTLP_ENDPOINT` overrides.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// `service.name` of the spans. Default: the binary's name. Env `OTEL_SERVICE_NAME` overrides.
    #[serde(default)]
    pub service_name: Option<String>,
    /// Share of new traces recorded, 0.0..=1.0 (a sampled parent is always followed).
    /// Default [`DEFAULT_SAMPLING_RATIO`]. Env `OTEL_TRACES_SAMPLER_ARG` overrides.
    #[serde(default)]
    pub sampling_ratio: Option<f64>,
    /// Longest time a finished span waits before export (humantime). Default [`DEFAULT_BATCH_DELAY`].
    #[serde(default, with = "humantime_serde")]
    pub batch_delay: Option<Duration>,
    /// Timeout of one export request (humantime). Default [`DEFAULT_EXPORT_TIMEOUT`].
    #[serde(default, with = "humantime_serde")]
    pub export_timeout: Option<Duration>,
    /// Finished spans queued for export (count); more are dropped. Default [`DEFAULT_MAX_QUEUE_SIZE`].
    #[serde(default)]
    pub max_queue_size: Option<usize>,
}

/// Validated telemetry settings.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetrySettings {
    /// Full URL the spans are POSTed to; `None`: tracing off.
    pub traces_endpoint: Option<String>,
    pub service_name: String,
    pub sampling_ratio: f64,
    pub batch_delay: Duration,
    pub export_timeout: Duration,
    pub max_queue_size: usize,
}

impl TelemetrySettings {
    /// Tracing off.
    pub fn off(service_name: &str) -> TelemetrySettings {
        TelemetrySettings {
            traces_endpoint: None,
            service_name: service_name.to_string(),
            sampling_ratio: DEFAULT_SAMPLING_RATIO,
            batch_delay: DEFAULT_BATCH_DELAY,
            export_timeout: DEFAULT_EXPORT_TIMEOUT,
            max_queue_size: DEFAULT_MAX_QUEUE_SIZE,
        }
    }
}

/// A bad telemetry setting: the key (`telemetry.sampling_ratio`, or an environment
/// variable name) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct SettingError {
    pub key: String,
    pub reason: String,
}

fn err(key: impl Into<String>, reason: impl Into<String>) -> SettingError {
    SettingError {
        key: key.into(),
        reason: reason.into(),
    }
}

/// Checks a base endpoint and returns the traces URL (`<base>/v1/traces`).
fn traces_url(key: &str, base: &str, append: bool) -> Result<String, SettingError> {
    let uri: http::Uri = base
        .parse()
        .map_err(|e| err(key, format!("{base:?} is not a URL: {e}")))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(err(
                key,
                "https is not supported by the built-in exporter: send to a local collector (http://...:4318)",
            ))
        }
        _ => return Err(err(key, format!("{base:?} must start with http://"))),
    }
    if uri.authority().is_none() {
        return Err(err(key, format!("{base:?} has no host")));
    }
    if !append {
        return Ok(base.to_string());
    }
    let trimmed = base.trim_end_matches('/');
    if trimmed.ends_with(TRACES_PATH) {
        Ok(trimmed.to_string())
    } else {
        Ok(format!("{trimmed}{TRACES_PATH}"))
    }
}

fn ratio(key: &str, r: f64) -> Result<f64, SettingError> {
    if r.is_finite() && (0.0..=1.0).contains(&r) {
        Ok(r)
    } else {
        Err(err(key, format!("{r} is not a ratio between 0.0 and 1.0")))
    }
}

impl TelemetryFile {
    /// Validates the section; `prefix` is the key path of the section (`telemetry`) and
    /// `default_service` the service name used when none is set.
    pub fn validate(
        &self,
        prefix: &str,
        default_service: &str,
    ) -> Result<TelemetrySettings, SettingError> {
        let key = |k: &str| format!("{prefix}.{k}");
        let traces_endpoint = match self.endpoint.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(e) => Some(traces_url(&key("endpoint"), e, true)?),
        };
        let service_name = match self.service_name.as_deref().map(str::trim) {
            None => default_service.to_string(),
            Some("") => return Err(err(key("service_name"), "must not be empty")),
            Some(s) => s.to_string(),
        };
        let sampling_ratio = ratio(
            &key("sampling_ratio"),
            self.sampling_ratio.unwrap_or(DEFAULT_SAMPLING_RATIO),
        )?;
        let positive = |k: &str, v: Option<Duration>, d: Duration| match v {
            Some(x) if x.is_zero() => Err(err(key(k), "must be greater than 0")),
            Some(x) => Ok(x),
            None => Ok(d),
        };
        let max_queue_size = self.max_queue_size.unwrap_or(DEFAULT_MAX_QUEUE_SIZE);
        if max_queue_size == 0 {
            return Err(err(key("max_queue_size"), "must be at least 1"));
        }
        Ok(TelemetrySettings {
            traces_endpoint,
            service_name,
            sampling_ratio,
            batch_delay: positive("batch_delay", self.batch_delay, DEFAULT_BATCH_DELAY)?,
            export_timeout: positive(
                "export_timeout",
                self.export_timeout,
                DEFAULT_EXPORT_TIMEOUT,
            )?,
            max_queue_size,
        })
    }
}

impl TelemetrySettings {
    /// Applies the standard `OTEL_*` variables read through `get` (empty values count as
    /// unset). Errors name the variable.
    pub fn with_env(
        mut self,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<TelemetrySettings, SettingError> {
        let var = |k: &str| {
            get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        if let Some(e) = var(ENV_TRACES_ENDPOINT) {
            self.traces_endpoint = Some(traces_url(ENV_TRACES_ENDPOINT, &e, false)?);
        } else if let Some(e) = var(ENV_ENDPOINT) {
            self.traces_endpoint = Some(traces_url(ENV_ENDPOINT, &e, true)?);
        }
        if let Some(s) = var(ENV_SERVICE_NAME) {
            self.service_name = s;
        }
        if let Some(r) = var(ENV_SAMPLER_ARG) {
            let r: f64 = r
                .parse()
                .map_err(|_| err(ENV_SAMPLER_ARG, format!("{r:?} is not a number")))?;
            self.sampling_ratio = ratio(ENV_SAMPLER_ARG, r)?;
        }
        if var(ENV_SDK_DISABLED).is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            self.traces_endpoint = None;
        }
        Ok(self)
    }

    /// [`Self::with_env`] with the process environment.
    pub fn with_process_env(self) -> Result<TelemetrySettings, SettingError> {
        self.with_env(|k| std::env::var(k).ok())
    }
}

static ENABLED: AtomicBool = AtomicBool::new(false);
/// `sampling_ratio` of the running exporter (f64 bits).
static ROOT_RATIO: AtomicU64 = AtomicU64::new(0);
static ACTIVE: Mutex<Option<Exporting>> = Mutex::new(None);

/// Whether spans are exported (an endpoint is configured and the exporter started).
/// Cheap: call it per request before creating spans.
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// A running exporter: the provider and the runtime its HTTP client runs on.
struct Exporting {
    provider: SdkTracerProvider,
    runtime: tokio::runtime::Runtime,
}

/// The OTLP HTTP client: hyper, with each request run on the export runtime (the batch
/// processor polls exports from its own thread, outside any tokio runtime).
#[derive(Debug, Clone)]
struct ExportClient {
    inner: opentelemetry_http::hyper::HyperClient,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for ExportClient {
    async fn send_bytes(
        &self,
        request: http::Request<opentelemetry_http::Bytes>,
    ) -> Result<http::Response<opentelemetry_http::Bytes>, opentelemetry_http::HttpError> {
        let client = self.inner.clone();
        self.runtime
            .spawn(async move { client.send_bytes(request).await })
            .await
            .map_err(|e| Box::new(e) as opentelemetry_http::HttpError)?
    }
}

/// Why the exporter could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot start the export runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(String),
}

/// Builds the provider (and its export runtime) for `s`; `None` when tracing is off.
fn build(
    s: &TelemetrySettings,
) -> Result<Option<(SdkTracerProvider, tokio::runtime::Runtime)>, StartError> {
    let Some(url) = s.traces_endpoint.as_deref() else {
        return Ok(None);
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("otel-export")
        .enable_all()
        .build()
        .map_err(StartError::Runtime)?;
    let client = ExportClient {
        inner: opentelemetry_http::hyper::HyperClient::with_default_connector(
            s.export_timeout,
            None,
        ),
        runtime: runtime.handle().clone(),
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(url)
        .with_timeout(s.export_timeout)
        .with_http_client(client)
        .build()
        .map_err(|e| StartError::Exporter(e.to_string()))?;
    let batch = BatchConfigBuilder::default()
        .with_scheduled_delay(s.batch_delay)
        .with_max_queue_size(s.max_queue_size)
        .build();
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(batch)
        .build();
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(s.service_name.clone())
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            s.sampling_ratio,
        ))))
        .with_resource(resource)
        .build();
    Ok(Some((provider, runtime)))
}

/// The `tracing` layer exporting [`SPAN_TARGET`] spans, boxed for any registry-backed
/// subscriber.
pub type OtelLayer<S> = Box<dyn tracing_subscriber::Layer<S> + Send + Sync>;

/// Starts the exporter for `s` and returns the layer to install; `None` (and
/// [`enabled`] false) when no endpoint is configured.
pub(crate) fn start<S>(s: &TelemetrySettings) -> Result<Option<OtelLayer<S>>, StartError>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a> + Send + Sync,
{
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::Layer as _;
    let Some((provider, runtime)) = build(s)? else {
        return Ok(None);
    };
    let tracer = provider.tracer("hotplex");
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_filter(tracing_subscriber::filter::filter_fn(|m| {
            if m.is_span() {
                m.target() == SPAN_TARGET
            } else {
                *m.level() <= tracing::Level::WARN
            }
        }));
    let mut active = ACTIVE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(old) = active.replace(Exporting { provider, runtime }) {
        stop(old);
    }
    ROOT_RATIO.store(s.sampling_ratio.to_bits(), Ordering::Relaxed);
    ENABLED.store(true, Ordering::Relaxed);
    Ok(Some(Box::new(layer)))
}

fn stop(e: Exporting) {
    if let Err(err) = e.provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT) {
        eprintln!("telemetry: flushing the last spans failed: {err}");
    }
    e.runtime.shutdown_timeout(Duration::from_millis(500));
}

/// Exports the spans still queued and stops the exporter (idempotent). Call it once the
/// servers stopped, outside any async context: it blocks up to [`SHUTDOWN_TIMEOUT`].
pub fn shutdown() {
    ENABLED.store(false, Ordering::Relaxed);
    let taken = ACTIVE.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(e) = taken {
        stop(e);
    }
}

/// Reads W3C trace-context headers.
struct HeaderGet<'a>(&'a http::HeaderMap);

impl Extractor for HeaderGet<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Writes trace-context headers through a callback.
struct HeaderSet<F: FnMut(&'static str, String)>(F);

impl<F: FnMut(&'static str, String)> Injector for HeaderSet<F> {
    fn set(&mut self, key: &str, value: String) {
        // The W3C propagator only writes these two.
        let key: &'static str = match key {
            "traceparent" => "traceparent",
            "tracestate" => "tracestate",
            _ => return,
        };
        if !value.is_empty() {
            (self.0)(key, value);
        }
    }
}

/// The remote parent carried by `traceparent` / `tracestate` (an empty context when
/// absent or malformed).
pub fn extract(headers: &http::HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&HeaderGet(headers))
}

/// Writes `traceparent` (and `tracestate`) for `cx` through `set(name, value)`; nothing
/// when `cx` has no valid span.
pub fn inject(cx: &Context, set: impl FnMut(&'static str, String)) {
    TraceContextPropagator::new().inject_context(cx, &mut HeaderSet(set));
}

/// A trace that is sampled out before any span exists (see [`sampled_out`]): the ids the
/// request's `traceparent` carries on, and the parent's `tracestate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampledOut {
    pub trace_id: opentelemetry::trace::TraceId,
    pub span_id: opentelemetry::trace::SpanId,
    pub trace_state: Option<String>,
    /// `00-<trace_id>-<span_id>-00` in lower-case hex, written once (the access log line
    /// and the upstream request read slices of it).
    text: [u8; 55],
}

impl SampledOut {
    /// The ids, and the parent's `tracestate` (sent on as is).
    pub fn new(
        trace_id: opentelemetry::trace::TraceId,
        span_id: opentelemetry::trace::SpanId,
        trace_state: Option<String>,
    ) -> SampledOut {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut text = *b"00-00000000000000000000000000000000-0000000000000000-00";
        let digits = trace_id.to_bytes().into_iter().chain(span_id.to_bytes());
        let slots = (3..35).step_by(2).chain((36..52).step_by(2));
        for (at, b) in slots.zip(digits) {
            text[at] = HEX[usize::from(b >> 4)];
            text[at + 1] = HEX[usize::from(b & 0xf)];
        }
        SampledOut {
            trace_id,
            span_id,
            trace_state,
            text,
        }
    }

    /// The W3C `traceparent` value: version 00, these ids, flags 00 (not sampled).
    pub fn traceparent(&self) -> &str {
        // Only ASCII hex digits and '-' are ever written into `text`.
        std::str::from_utf8(&self.text).unwrap_or_default()
    }

    /// The trace id in hex (as the access log and exported spans write it).
    pub fn trace_id_hex(&self) -> &str {
        self.traceparent().get(3..35).unwrap_or_default()
    }

    /// The span id in hex.
    pub fn span_id_hex(&self) -> &str {
        self.traceparent().get(36..52).unwrap_or_default()
    }
}

/// The sampler's decision taken before creating spans, where it is certain: the exporter
/// samples with ParentBased(TraceIdRatioBased(sampling_ratio)), so a remote parent that is
/// not sampled, or no parent while the ratio is 0, is never recorded. Then no span needs to
/// exist (creating OpenTelemetry spans, their attributes and their context costs several
/// thousand instructions per request): `Some` with the parent's trace id (or a new one) and
/// a new span id, to send on in `traceparent` so the next hop samples it out too. `None`:
/// the trace may be recorded (create the spans; the SDK decides).
pub fn sampled_out(parent: &Context) -> Option<SampledOut> {
    sampled_out_with(parent, f64::from_bits(ROOT_RATIO.load(Ordering::Relaxed)))
}

fn sampled_out_with(parent: &Context, ratio: f64) -> Option<SampledOut> {
    use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
    let ids = RandomIdGenerator::default();
    let span = parent.span();
    let psc = span.span_context();
    if psc.is_valid() {
        if psc.is_sampled() {
            return None;
        }
        let ts = psc.trace_state().header();
        return Some(SampledOut::new(
            psc.trace_id(),
            ids.new_span_id(),
            (!ts.is_empty()).then_some(ts),
        ));
    }
    if ratio > 0.0 {
        return None;
    }
    Some(SampledOut::new(ids.new_trace_id(), ids.new_span_id(), None))
}

/// Makes `parent` (extracted from a request) the parent of `span`. Call it right after
/// creating the span, before entering it.
pub fn set_parent(span: &tracing::Span, parent: Context) {
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// The OpenTelemetry context of `span` (to inject into an outgoing request).
pub fn context_of(span: &tracing::Span) -> Context {
    span.context()
}

/// `(trace_id, span_id)` in hex of `span`, when it is exported.
pub fn ids_of(span: &tracing::Span) -> Option<(String, String)> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid()
        .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
}

/// Marks `span` as failed (`otel.status_code = ERROR`) with a description.
pub fn set_error(span: &tracing::Span, description: impl Into<String>) {
    span.set_status(opentelemetry::trace::Status::error(description.into()));
}

/// Sets an attribute on `span` (for keys not declared when the span was created).
pub fn set_attribute(
    span: &tracing::Span,
    key: &'static str,
    value: impl Into<opentelemetry::Value>,
) {
    span.set_attribute(key, value);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn defaults_are_off() {
        let s = TelemetryFile::default()
            .validate("telemetry", "svc")
            .expect("valid");
        assert_eq!(s, TelemetrySettings::off("svc"));
    }

    #[test]
    fn file_values_validate() {
        let f: TelemetryFile = serde_yaml_like(
            r#"{"endpoint":"http://collector:4318/","service_name":"edge","sampling_ratio":0.25}"#,
        );
        let s = f.validate("telemetry", "svc").expect("valid");
        assert_eq!(
            s.traces_endpoint.as_deref(),
            Some("http://collector:4318/v1/traces")
        );
        assert_eq!(s.service_name, "edge");
        assert_eq!(s.sampling_ratio, 0.25);

        let bad = TelemetryFile {
            sampling_ratio: Some(1.5),
            ..Default::default()
        };
        let e = bad.validate("telemetry", "svc").expect_err("ratio");
        assert_eq!(e.key, "telemetry.sampling_ratio");
        let bad = TelemetryFile {
            endpoint: Some("https://x:4318".into()),
            ..Default::default()
        };
        assert_eq!(
            bad.validate("telemetry", "s").expect_err("https").key,
            "telemetry.endpoint"
        );
        let bad = TelemetryFile {
            endpoint: Some("collector:4318".into()),
            ..Default::default()
        };
        assert!(bad.validate("telemetry", "s").is_err());
        let bad = TelemetryFile {
            batch_delay: Some(Duration::ZERO),
            ..Default::default()
        };
        assert_eq!(
            bad.validate("telemetry", "s").expect_err("zero").key,
            "telemetry.batch_delay"
        );
    }

    /// The section is parsed by serde in both binaries; JSON is YAML here.
    fn serde_yaml_like(text: &str) -> TelemetryFile {
        serde_json::from_str(text).expect("parse")
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(serde_json::from_str::<TelemetryFile>(r#"{"endpoit":"x"}"#).is_err());
    }

    #[test]
    fn environment_overrides_the_file() {
        let file = TelemetryFile {
            endpoint: Some("http://file:4318".into()),
            sampling_ratio: Some(0.5),
            ..Default::default()
        }
        .validate("telemetry", "svc")
        .expect("valid");
        let s = file
            .clone()
            .with_env(env(&[
                (ENV_ENDPOINT, "http://jaeger:4318"),
                (ENV_SERVICE_NAME, "from-env"),
                (ENV_SAMPLER_ARG, "0.1"),
            ]))
            .expect("valid env");
        assert_eq!(
            s.traces_endpoint.as_deref(),
            Some("http://jaeger:4318/v1/traces")
        );
        assert_eq!(s.service_name, "from-env");
        assert_eq!(s.sampling_ratio, 0.1);
        let s = file
            .clone()
            .with_env(env(&[
                (ENV_ENDPOINT, "http://jaeger:4318"),
                (ENV_TRACES_ENDPOINT, "http://c:9/custom"),
            ]))
            .expect("valid env");
        assert_eq!(s.traces_endpoint.as_deref(), Some("http://c:9/custom"));
        let s = file
            .clone()
            .with_env(env(&[(ENV_SDK_DISABLED, "true")]))
            .expect("valid");
        assert_eq!(s.traces_endpoint, None);
        let e = file
            .clone()
            .with_env(env(&[(ENV_SAMPLER_ARG, "lots")]))
            .expect_err("bad ratio");
        assert_eq!(e.key, ENV_SAMPLER_ARG);
        let e = file
            .with_env(env(&[(ENV_ENDPOINT, "ftp://x")]))
            .expect_err("bad url");
        assert_eq!(e.key, ENV_ENDPOINT);
    }

    #[test]
    fn traceparent_round_trip() {
        let mut h = http::HeaderMap::new();
        h.insert(
            "traceparent",
            http::HeaderValue::from_static(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
        );
        let cx = extract(&h);
        let sc = cx.span().span_context().clone();
        assert!(sc.is_valid() && sc.is_remote() && sc.is_sampled());
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let mut out = Vec::new();
        inject(&cx, |k, v| out.push((k, v)));
        assert_eq!(
            out,
            vec![(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string()
            )]
        );
        // Garbage yields an empty context and injects nothing.
        let mut h = http::HeaderMap::new();
        h.insert("traceparent", http::HeaderValue::from_static("nope"));
        let mut out = Vec::new();
        inject(&extract(&h), |k, v| out.push((k, v)));
        assert!(out.is_empty());
    }

    /// The shortcut decides exactly as the SDK's sampler would, where it decides at all.
    #[test]
    fn sampled_out_agrees_with_the_sdk_sampler() {
        use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
        let ctx_of = |tp: Option<&'static str>, state: Option<&'static str>| {
            let mut h = http::HeaderMap::new();
            if let Some(tp) = tp {
                h.insert("traceparent", http::HeaderValue::from_static(tp));
            }
            if let Some(st) = state {
                h.insert("tracestate", http::HeaderValue::from_static(st));
            }
            extract(&h)
        };
        const SAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        const UNSAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        for ratio in [0.0, 0.5, 1.0] {
            let provider = SdkTracerProvider::builder()
                .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                    ratio,
                ))))
                .build();
            let tracer = provider.tracer("t");
            for tp in [None, Some(SAMPLED), Some(UNSAMPLED)] {
                let cx = ctx_of(tp, Some("k=v"));
                let ours = sampled_out_with(&cx, ratio);
                let sdk = tracer.start_with_context("s", &cx);
                let sdk_sampled = sdk.span_context().is_sampled();
                match &ours {
                    Some(out) => {
                        assert!(
                            !sdk_sampled,
                            "ratio {ratio}, parent {tp:?}: the SDK samples it"
                        );
                        let tp_out = out.traceparent();
                        assert!(
                            tp_out.starts_with("00-") && tp_out.ends_with("-00"),
                            "{tp_out}"
                        );
                        assert_eq!(tp_out.len(), 55);
                        // The hex the SDK's Display writes, in W3C's order.
                        assert_eq!(tp_out, format!("00-{}-{}-00", out.trace_id, out.span_id));
                        assert_eq!(out.trace_id_hex(), out.trace_id.to_string());
                        assert_eq!(out.span_id_hex(), out.span_id.to_string());
                        if tp.is_some() {
                            assert_eq!(out.trace_id, cx.span().span_context().trace_id());
                            assert_eq!(out.trace_state.as_deref(), Some("k=v"));
                            assert_ne!(out.span_id, cx.span().span_context().span_id());
                        } else {
                            assert!(out.trace_id != opentelemetry::trace::TraceId::INVALID);
                            assert_eq!(out.trace_state, None);
                        }
                    }
                    // Undecided only where the SDK may record: a sampled parent, or a
                    // new trace with a ratio above 0.
                    None => assert!(tp == Some(SAMPLED) || (tp.is_none() && ratio > 0.0)),
                }
            }
        }
    }

    /// The exporter really POSTs protobuf spans to `<endpoint>/v1/traces`.
    #[test]
    fn exporter_posts_protobuf_spans() {
        use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
        use prost::Message as _;
        use std::io::{Read, Write};

        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = std::thread::spawn(move || {
            let (mut sock, _) = listener.accept().expect("accept");
            sock.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let (head_end, len) = loop {
                let n = sock.read(&mut chunk).expect("read");
                assert!(n > 0, "connection closed before the request head");
                buf.extend_from_slice(&chunk[..n]);
                if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..p]).to_ascii_lowercase();
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .expect("content-length");
                    break (p + 4, len);
                }
            };
            while buf.len() < head_end + len {
                let n = sock.read(&mut chunk).expect("read body");
                assert!(n > 0, "short body");
                buf.extend_from_slice(&chunk[..n]);
            }
            sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .expect("answer");
            let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
            (head, buf[head_end..head_end + len].to_vec())
        });

        let s = TelemetryFile {
            endpoint: Some(format!("http://{addr}")),
            service_name: Some("unit-test".into()),
            batch_delay: Some(Duration::from_millis(50)),
            ..Default::default()
        }
        .validate("telemetry", "svc")
        .expect("valid");
        let (provider, runtime) = build(&s).expect("build").expect("enabled");
        let tracer = provider.tracer("t");
        let mut span = tracer.start("unit-span");
        span.set_attribute(opentelemetry::KeyValue::new("session.id", "s-1"));
        span.end();
        provider.force_flush().expect("flush");
        let (head, body) = server.join().expect("server thread");
        assert!(head.starts_with("POST /v1/traces HTTP/1.1"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/x-protobuf"),
            "{head}"
        );
        let req =
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::decode(
                body.as_slice(),
            )
            .expect("protobuf");
        let rs = &req.resource_spans[0];
        let svc = rs
            .resource
            .as_ref()
            .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
            .and_then(|a| a.value.as_ref())
            .map(|v| format!("{:?}", v.value));
        assert!(svc.is_some_and(|v| v.contains("unit-test")));
        let span = &rs.scope_spans[0].spans[0];
        assert_eq!(span.name, "unit-span");
        assert!(span.attributes.iter().any(|a| a.key == "session.id"));
        let _ = provider.shutdown();
        runtime.shutdown_background();
    }
}
