//! The standard process metrics (the Prometheus client libraries' `process_*` family, read
//! from `/proc/self` with the `procfs` crate at each scrape) and `switchboard_build_info`.

use std::sync::OnceLock;

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge, info::Info},
};

/// `process_cpu_seconds_total`, `process_resident_memory_bytes`,
/// `process_virtual_memory_bytes`, `process_start_time_seconds`, `process_threads`,
/// `process_open_fds`, `process_max_fds`. A value `/proc` does not give is left out.
#[derive(Debug)]
pub(super) struct ProcessCollector;

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: f64) -> std::fmt::Result {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Ok(me) = procfs::process::Process::myself() else {
            return Ok(());
        };
        if let Ok(stat) = me.stat() {
            let ticks = procfs::ticks_per_second() as f64;
            let cpu = ConstCounter::new((stat.utime + stat.stime) as f64 / ticks);
            cpu.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "User and system CPU time spent, in seconds",
                None,
                cpu.metric_type(),
            )?)?;
            let rss = stat.rss.saturating_mul(procfs::page_size());
            gauge(
                &mut encoder,
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                rss as f64,
            )?;
            gauge(
                &mut encoder,
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                stat.vsize as f64,
            )?;
            gauge(
                &mut encoder,
                "process_threads",
                "Threads of the process",
                stat.num_threads as f64,
            )?;
            if let Ok(boot) = procfs::boot_time_secs() {
                gauge(
                    &mut encoder,
                    "process_start_time_seconds",
                    "Start time of the process since the Unix epoch, in seconds",
                    boot as f64 + stat.starttime as f64 / ticks,
                )?;
            }
        }
        if let Ok(open) = me.fd_count() {
            gauge(
                &mut encoder,
                "process_open_fds",
                "Open file descriptors",
                open as f64,
            )?;
        }
        if let Ok(limits) = me.limits() {
            if let procfs::process::LimitValue::Value(max) = limits.max_open_files.soft_limit {
                gauge(
                    &mut encoder,
                    "process_max_fds",
                    "The most file descriptors the process may open",
                    max as f64,
                )?;
            }
        }
        Ok(())
    }
}

static SERVICE: OnceLock<String> = OnceLock::new();

/// Names the service for `switchboard_build_info` (the first call wins).
pub(super) fn set_service(service: &str) {
    let _ = SERVICE.set(service.to_owned());
}

/// `switchboard_build_info{service, version, revision}` = 1: the package version, and the
/// source revision when the build was given one (`SWITCHBOARD_REVISION` at compile time, as
/// the container build does), else `unknown` (the Prometheus naming practices' "info" metric).
#[derive(Debug)]
pub(super) struct BuildInfo;

impl Collector for BuildInfo {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let info = Info::new(vec![
            ("service", SERVICE.get().map_or("unknown", String::as_str)),
            ("version", env!("CARGO_PKG_VERSION")),
            (
                "revision",
                option_env!("SWITCHBOARD_REVISION").unwrap_or("unknown"),
            ),
        ]);
        info.encode(encoder.encode_descriptor(
            "switchboard_build",
            "Always 1; the build's version and revision as labels",
            None,
            info.metric_type(),
        )?)
    }
}
