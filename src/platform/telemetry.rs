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
//!
//! Resource: `service.name` (see [`service_name`]), `service.version`, `service.instance.id`
//! (from `OTEL_RESOURCE_ATTRIBUTES` when it has one — the Kubernetes manifests put the pod
//! name there, with `k8s.pod.name`, `k8s.namespace.name` and `k8s.node.name` from the
//! downward API — else a random UUID per process, as the semantic conventions advise).
//!
//! Sampling: the SDK's sampler from `OTEL_TRACES_SAMPLER` (default parent-based always-on),
//! wrapped in [`FollowLinks`] unless `TRACE_FOLLOW_LINKS=false`: a root span linked to a
//! sampled span is sampled too. The fan-out of a change and the group commit that appended a
//! send are such roots (their own traces, linked to the request), so with head sampling at
//! 10 % every sampled send keeps its fan-out instead of 10 % of 10 %.

use opentelemetry::{
    global,
    trace::{Link, SpanKind, TraceContextExt as _, TraceId, TracerProvider as _},
    Context, KeyValue,
};
use opentelemetry_sdk::{
    propagation::TraceContextPropagator,
    trace::{SamplingDecision, SamplingResult, SdkTracerProvider, ShouldSample},
    Resource,
};
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
            set(resource_attribute(&attributes, "service.name").map(str::to_owned))
        })
        .unwrap_or_else(|| format!("switchboard-{service}"))
}

/// A sampler that samples a root span when any of its links is sampled, and otherwise asks
/// `inner`. Spans with a parent always go to `inner` (parent-based samplers follow the
/// parent there).
#[derive(Clone, Debug)]
pub struct FollowLinks {
    inner: Box<dyn ShouldSample>,
}

impl FollowLinks {
    /// Wraps `inner`.
    pub fn new(inner: Box<dyn ShouldSample>) -> Self {
        Self { inner }
    }
}

impl ShouldSample for FollowLinks {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        name: &str,
        span_kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        let root = !parent_context.is_some_and(|cx| cx.has_active_span());
        if root && links.iter().any(|l| l.span_context.is_sampled()) {
            return SamplingResult {
                decision: SamplingDecision::RecordAndSample,
                attributes: Vec::new(),
                trace_state: Default::default(),
            };
        }
        self.inner
            .should_sample(parent_context, trace_id, name, span_kind, attributes, links)
    }
}

/// The value of `key` in an `OTEL_RESOURCE_ATTRIBUTES` list (comma-separated `key=value`).
fn resource_attribute<'a>(attributes: &'a str, key: &str) -> Option<&'a str> {
    attributes.split(',').find_map(|pair| {
        let (k, value) = pair.split_once('=')?;
        (k.trim() == key).then_some(value)
    })
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
    let mut resource = Resource::builder()
        .with_service_name(service_name(service, |name| std::env::var(name).ok()))
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    let attributes = std::env::var("OTEL_RESOURCE_ATTRIBUTES").unwrap_or_default();
    if resource_attribute(&attributes, "service.instance.id").is_none() {
        resource = resource.with_attribute(KeyValue::new(
            "service.instance.id",
            uuid::Uuid::new_v4().to_string(),
        ));
    }
    // The SDK's configuration from the environment, OTEL_TRACES_SAMPLER included.
    let sampler = opentelemetry_sdk::trace::Config::default().sampler;
    let follow_links = !std::env::var("TRACE_FOLLOW_LINKS")
        .is_ok_and(|v| v.trim().eq_ignore_ascii_case("false") || v.trim() == "0");
    let builder = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build());
    Some(if follow_links {
        builder.with_sampler(FollowLinks::new(sampler)).build()
    } else {
        builder.with_sampler(sampler).build()
    })
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
    use super::{service_name, FollowLinks};
    use opentelemetry::trace::{
        Link, SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use opentelemetry_sdk::trace::{Sampler, SamplingDecision, ShouldSample};

    fn context(sampled: bool) -> SpanContext {
        let flags = if sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        SpanContext::new(
            TraceId::from(7u128),
            SpanId::from(9u64),
            flags,
            true,
            TraceState::default(),
        )
    }

    #[test]
    fn a_root_linked_to_a_sampled_span_is_sampled_and_nothing_else_changes() {
        let never = FollowLinks::new(Box::new(Sampler::ParentBased(Box::new(Sampler::AlwaysOff))));
        let decide = |parent: Option<&opentelemetry::Context>, links: &[Link]| {
            never
                .should_sample(
                    parent,
                    TraceId::from(1u128),
                    "realtime.fan_out",
                    &SpanKind::Consumer,
                    &[],
                    links,
                )
                .decision
        };
        let linked = |sampled| [Link::new(context(sampled), Vec::new(), 0)];
        assert_eq!(
            decide(None, &linked(true)),
            SamplingDecision::RecordAndSample
        );
        assert_eq!(decide(None, &linked(false)), SamplingDecision::Drop);
        assert_eq!(decide(None, &[]), SamplingDecision::Drop);
        // A child follows its parent, whatever it links to.
        let unsampled_parent =
            opentelemetry::Context::new().with_remote_span_context(context(false));
        assert_eq!(
            decide(Some(&unsampled_parent), &linked(true)),
            SamplingDecision::Drop
        );
    }

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
