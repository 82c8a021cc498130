//! Logging setup shared by both binaries: `tracing` with JSON lines (default) or a
//! human-readable format. The level comes from `RUST_LOG` when set, else from the caller.

use tracing_subscriber::{fmt, EnvFilter};

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

/// Installs the global subscriber. `default_level` is an `EnvFilter` directive such as
/// `info` or `hotplex_proxy=debug,info`, used when `RUST_LOG` is unset. Logs go to stderr.
/// Calling it twice is harmless (the second call is ignored).
pub fn init(format: LogFormat, default_level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(default_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
