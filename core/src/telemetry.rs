//! Tracing setup shared by every binary: plain text for a person at a terminal, one JSON
//! object per line for pods (`--log-format json` / `KDFS_LOG_FORMAT=json`). The filter
//! comes from `RUST_LOG` and defaults to `info`. A process that runs several
//! components (`kdfs local`) writes through its own [`MakeWriter`] instead, which may
//! pick a destination per line ([`init_to`]).

use tracing::Subscriber;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The tracing target of the audit log: one structured INFO line per upload, delete and
/// refused authentication (bad token, refused TLS handshake), so operators can route it
/// (`RUST_LOG=kdfs::audit=info`, or a log pipeline filtering on the target).
pub const AUDIT_TARGET: &str = "kdfs::audit";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Plain,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "plain" | "text" => Ok(Self::Plain),
            "json" => Ok(Self::Json),
            other => Err(format!("unknown log format {other:?}: use plain or json")),
        }
    }
}

fn filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Installs the global subscriber. Call once, from `main`; a second call (tests) is a no-op.
pub fn init(format: LogFormat) {
    let filter = filter();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Plain => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}

/// Installs the global subscriber writing every line through `writer` without colour
/// codes (it is meant for files, and may choose one per line from the line's metadata
/// and the emitting thread), and also to stderr as [`init`] does when `also_stderr`.
/// Same format and filter as [`init`]; a second call is a no-op.
pub fn init_to<W>(format: LogFormat, writer: W, also_stderr: bool)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let files = formatted(
        format,
        tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(writer),
    );
    let terminal = also_stderr.then(|| {
        formatted(
            format,
            tracing_subscriber::fmt::layer().with_writer(std::io::stderr),
        )
    });
    let _ = tracing_subscriber::registry()
        .with(filter())
        .with(files)
        .with(terminal)
        .try_init();
}

/// `layer` in `format`, boxed so that both formats have one type.
fn formatted<S, W>(
    format: LogFormat,
    layer: tracing_subscriber::fmt::Layer<
        S,
        tracing_subscriber::fmt::format::DefaultFields,
        tracing_subscriber::fmt::format::Format,
        W,
    >,
) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    match format {
        LogFormat::Plain => layer.boxed(),
        LogFormat::Json => layer
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .boxed(),
    }
}

/// The process-wide Prometheus recorder behind the `metrics` facade, installed on first
/// use. The facade has exactly one global recorder, so every component of a process
/// (several of them in `kdfs local` and in tests) must share this one handle rather
/// than race to install its own: the first would win and the others render nothing.
/// Metric names carry their component's prefix (`kdfs_namenode_…`, `kdfs_gateway_…`).
pub fn prometheus() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Fails only if something outside kdfs installed a recorder first; then our
        // metrics go there and this handle renders an empty page.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}
