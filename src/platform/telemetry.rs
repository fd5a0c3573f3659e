//! Logs and traces, set up once by each binary.
//!
//! Logs ([`LogSettings`]): `LOG_FORMAT=json` writes one JSON object per line (timestamp, level,
//! target, fields, and the current spans, which carry `trace_id`, `span_id` and `request_id`);
//! anything else writes the human format. The filter is `RUST_LOG` (default `info`). Tokens, passwords and
//! message content are never put in fields.
//!
//! Traces: when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set,
//! spans are exported with OTLP over HTTP/protobuf in batches; the SDK reads the other
//! standard variables itself (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`, `OTEL_BSP_*`). W3C trace context
//! (`traceparent`) is the propagator. Unset: no exporter, nothing leaves the process.

use opentelemetry::{global, trace::TracerProvider as _, KeyValue};
use opentelemetry_sdk::{propagation::TraceContextPropagator, trace::SdkTracerProvider, Resource};
use tracing_subscriber::{fmt, layer::SubscriberExt, util::SubscriberInitExt, EnvFilter, Layer};

use crate::platform::config::LogSettings;

/// Keeps the trace pipeline alive; [`Telemetry::shutdown`] flushes what is buffered.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Flushes and stops the exporter (call when the service stops).
    pub fn shutdown(self) {
        if let Some(p) = self.provider {
            if let Err(e) = p.shutdown() {
                eprintln!("trace exporter shutdown: {e}");
            }
        }
    }
}

fn exporting() -> bool {
    let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.trim().is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// The `service.name` resource attribute: `OTEL_SERVICE_NAME` when set and not empty, else
/// `service.name` from `OTEL_RESOURCE_ATTRIBUTES` (comma-separated `key=value`), else
/// `switchboard-<service>` — the precedence of the OpenTelemetry SDK environment variable
/// specification ("OTEL_SERVICE_NAME ... takes precedence over service.name defined with
/// OTEL_RESOURCE_ATTRIBUTES"). `env` reads a variable.
fn service_name(service: &str, env: impl Fn(&str) -> Option<String>) -> String {
    let set = |v: Option<String>| v.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    set(env("OTEL_SERVICE_NAME"))
        .or_else(|| {
            let attributes = env("OTEL_RESOURCE_ATTRIBUTES").unwrap_or_default();
            set(attributes.split(',').find_map(|pair| {
                let (key, value) = pair.split_once('=')?;
                (key.trim() == "service.name").then(|| value.to_owned())
            }))
        })
        .unwrap_or_else(|| format!("switchboard-{service}"))
}

fn provider(service: &'static str) -> Option<SdkTracerProvider> {
    if !exporting() {
        return None;
    }
    let protocol = std::env::var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .unwrap_or_default();
    if !protocol.is_empty() && protocol != "http/protobuf" {
        eprintln!("OTEL_EXPORTER_OTLP_PROTOCOL={protocol} is not built in; using http/protobuf");
    }
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
    {
        Ok(e) => e,
        Err(e) => {
            eprintln!("OTLP exporter not started: {e}");
            return None;
        }
    };
    let resource = Resource::builder()
        .with_service_name(service_name(service, |name| std::env::var(name).ok()))
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build(),
    )
}

/// Installs the global subscriber and, when configured, the OTLP trace pipeline. Call once,
/// first thing in `main` after the settings parse. A filter that does not parse falls back
/// to `info` with a warning.
pub fn init(service: &'static str, logs: &LogSettings) -> Telemetry {
    global::set_text_map_propagator(TraceContextPropagator::new());
    let provider = provider(service);
    let otel = provider.as_ref().map(|p| {
        global::set_tracer_provider(p.clone());
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer(service))
            .boxed()
    });
    let (filter, bad_filter) = match EnvFilter::try_new(&logs.filter) {
        Ok(f) => (f, None),
        Err(e) => (EnvFilter::new("info"), Some(e)),
    };
    let json = logs.format.trim() == "json";
    let logs = if json {
        fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .boxed()
    } else {
        fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .compact()
            .boxed()
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(logs)
        .with(otel)
        .init();
    tracing::info!(
        service,
        version = env!("CARGO_PKG_VERSION"),
        otlp = provider.is_some(),
        "starting"
    );
    if let Some(e) = bad_filter {
        tracing::warn!(error = %e, "RUST_LOG does not parse; logging at info");
    }
    Telemetry { provider }
}

#[cfg(test)]
mod tests {
    use super::service_name;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn otel_service_name_wins_then_resource_attributes_then_the_default() {
        let both = [
            ("OTEL_SERVICE_NAME", "chat-auth"),
            ("OTEL_RESOURCE_ATTRIBUTES", "service.name=other,team=x"),
        ];
        assert_eq!(service_name("auth", env(&both)), "chat-auth");
        let attributes = [(
            "OTEL_RESOURCE_ATTRIBUTES",
            "team=x, service.name=from-attrs",
        )];
        assert_eq!(service_name("auth", env(&attributes)), "from-attrs");
        let empty = [
            ("OTEL_SERVICE_NAME", " "),
            ("OTEL_RESOURCE_ATTRIBUTES", "team=x"),
        ];
        assert_eq!(service_name("auth", env(&empty)), "switchboard-auth");
        assert_eq!(service_name("messaging", env(&[])), "switchboard-messaging");
    }
}
