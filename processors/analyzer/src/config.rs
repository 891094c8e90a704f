//! `processors.analyzer` in topology.yaml.

use std::time::Duration;

use serde::Deserialize;
use tracepipe_processor::config::{positive, whole_seconds, within, ConsumerSpec, Problems, RawConsumer, Section, SectionConfig};

use crate::cohorts::CohortConfig;
use crate::{AnalyzerConfig, ApdexThresholds, DetectionConfig};

/// The analyzer's section, validated.
#[derive(Debug, Clone)]
pub struct AnalyzerSpec {
    pub consumer: ConsumerSpec,
    pub input: String,
    /// Where rollups go.
    pub output: String,
    pub alerts: String,
    /// Where funnel steps go (topology.yaml's `funnels:`), for the funnels processor.
    pub funnel_steps: Option<String>,
    pub config: AnalyzerConfig,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAnalyzer {
    group: Option<String>,
    input: Option<String>,
    output: Option<String>,
    alerts: Option<String>,
    funnel_steps: Option<String>,
    dlq: Option<String>,
    #[serde(default, with = "humantime_serde")]
    window: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    lateness: Option<Duration>,
    max_series: Option<i64>,
    max_operations_per_service: Option<i64>,
    max_error_groups: Option<i64>,
    error_traces: Option<bool>,
    #[serde(default)]
    detection: RawDetection,
    #[serde(default)]
    apdex: RawApdex,
    #[serde(default)]
    cohorts: RawCohorts,
    #[serde(default, with = "humantime_serde")]
    commit_interval: Option<Duration>,
    max_in_flight: Option<i64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDetection {
    #[serde(default, with = "humantime_serde")]
    slice: Option<Duration>,
    baseline_slices: Option<i64>,
    min_baseline_slices: Option<i64>,
    min_samples: Option<i64>,
    sensitivity: Option<f64>,
    min_ratio: Option<f64>,
    #[serde(default, with = "humantime_serde")]
    min_delta: Option<Duration>,
    consecutive: Option<i64>,
    resolve_after: Option<i64>,
    error_min_count: Option<i64>,
    error_ratio: Option<f64>,
}

/// `cohorts: {attributes: [service.version], feature_flags: true, max_values: 32, max_flags: 64}`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCohorts {
    attributes: Option<Vec<String>>,
    feature_flags: Option<bool>,
    max_values: Option<i64>,
    max_flags: Option<i64>,
}

/// `apdex: {threshold: 500ms, services: {frontend: 300ms}}`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawApdex {
    #[serde(default, with = "humantime_serde")]
    threshold: Option<Duration>,
    #[serde(default)]
    services: std::collections::BTreeMap<String, humantime_serde::Serde<Duration>>,
}

impl SectionConfig for AnalyzerSpec {
    type Raw = RawAnalyzer;

    fn validate(raw: RawAnalyzer, section: &Section<'_>, problems: &mut Problems) -> Option<AnalyzerSpec> {
        let consumer = RawConsumer { group: &raw.group, dlq: &raw.dlq, commit_interval: raw.commit_interval, max_in_flight: raw.max_in_flight };
        let consumer = ConsumerSpec::validate(consumer, section, problems);
        let input = section.topic("input", &raw.input, problems);
        let output = section.topic("output", &raw.output, problems);
        let alerts = section.topic("alerts", &raw.alerts, problems);
        let funnel_steps = match &raw.funnel_steps {
            Some(_) => Some(section.topic("funnel_steps", &raw.funnel_steps, problems)?),
            None => None,
        };
        let defaults = AnalyzerConfig::default();
        let detection = validate_detection(&section.at("detection"), &raw.detection, &defaults.detection, problems);
        let config = AnalyzerConfig {
            window: positive(section.at("window"), raw.window, defaults.window, problems),
            lateness: positive(section.at("lateness"), raw.lateness, defaults.lateness, problems),
            max_series: within(section.at("max_series"), raw.max_series, defaults.max_series as i64, 1..=1_000_000, problems) as usize,
            max_operations_per_service: within(section.at("max_operations_per_service"), raw.max_operations_per_service, defaults.max_operations_per_service as i64, 1..=1_000_000, problems)
                as usize,
            max_error_groups: within(section.at("max_error_groups"), raw.max_error_groups, defaults.max_error_groups as i64, 1..=1_000_000, problems) as usize,
            error_traces: raw.error_traces.unwrap_or(defaults.error_traces),
            detection,
            apdex: validate_apdex(&section.at("apdex"), raw.apdex, problems),
            cohorts: validate_cohorts(&section.at("cohorts"), raw.cohorts, &defaults.cohorts, problems),
        };
        whole_seconds(section.at("window"), config.window, problems);
        Some(AnalyzerSpec { consumer: consumer?, input: input?, output: output?, alerts: alerts?, funnel_steps, config })
    }
}

fn validate_cohorts(at: &str, raw: RawCohorts, defaults: &CohortConfig, problems: &mut Problems) -> CohortConfig {
    let attributes = raw.attributes.unwrap_or_else(|| defaults.attributes.clone());
    for (i, attribute) in attributes.iter().enumerate() {
        if attribute.trim().is_empty() {
            problems.add(format!("{at}.attributes[{i}]"), "must not be empty");
        } else if attribute.starts_with(crate::cohorts::FLAG_PREFIX) {
            problems.add(format!("{at}.attributes[{i}]"), "feature flags are split by `feature_flags: true`, as feature_flag.<key>");
        } else if attributes[..i].contains(attribute) {
            problems.add(format!("{at}.attributes[{i}]"), format!("{attribute} is listed twice"));
        }
    }
    if attributes.len() > crate::cohorts::MAX_ATTRIBUTES {
        problems.add(format!("{at}.attributes"), format!("at most {} attributes, got {}", crate::cohorts::MAX_ATTRIBUTES, attributes.len()));
    }
    let attributes = attributes.into_iter().take(crate::cohorts::MAX_ATTRIBUTES).collect();
    CohortConfig {
        attributes,
        feature_flags: raw.feature_flags.unwrap_or(defaults.feature_flags),
        max_values: within(format!("{at}.max_values"), raw.max_values, defaults.max_values as i64, 1..=10_000, problems) as usize,
        max_flags: within(format!("{at}.max_flags"), raw.max_flags, defaults.max_flags as i64, 0..=10_000, problems) as usize,
    }
}

fn validate_apdex(at: &str, raw: RawApdex, problems: &mut Problems) -> ApdexThresholds {
    let defaults = ApdexThresholds::default();
    let mut thresholds = ApdexThresholds { default: positive(format!("{at}.threshold"), raw.threshold, defaults.default, problems), services: Default::default() };
    for (service, threshold) in raw.services {
        let threshold = positive(format!("{at}.services.{service}"), Some(*threshold), defaults.default, problems);
        thresholds.services.insert(service, threshold);
    }
    for (path, threshold) in std::iter::once((format!("{at}.threshold"), thresholds.default)).chain(thresholds.services.iter().map(|(s, t)| (format!("{at}.services.{s}"), *t))) {
        if threshold.subsec_nanos() % 1_000_000 != 0 {
            problems.add(path, "must be whole milliseconds");
        }
    }
    thresholds
}

fn validate_detection(at: &str, d: &RawDetection, dd: &DetectionConfig, problems: &mut Problems) -> DetectionConfig {
    let path = |field: &str| format!("{at}.{field}");
    let detection = DetectionConfig {
        slice: positive(path("slice"), d.slice, dd.slice, problems),
        baseline_slices: within(path("baseline_slices"), d.baseline_slices, dd.baseline_slices as i64, 2..=10_000, problems) as usize,
        min_baseline_slices: within(path("min_baseline_slices"), d.min_baseline_slices, dd.min_baseline_slices as i64, 1..=10_000, problems) as usize,
        min_samples: within(path("min_samples"), d.min_samples, dd.min_samples as i64, 1..=1_000_000, problems) as u64,
        sensitivity: within(path("sensitivity"), d.sensitivity, dd.sensitivity, 0.0..=100.0, problems),
        min_ratio: within(path("min_ratio"), d.min_ratio, dd.min_ratio, 1.0..=100.0, problems),
        min_delta: positive(path("min_delta"), d.min_delta, dd.min_delta, problems),
        consecutive: within(path("consecutive"), d.consecutive, i64::from(dd.consecutive), 1..=100, problems) as u32,
        resolve_after: within(path("resolve_after"), d.resolve_after, i64::from(dd.resolve_after), 1..=10_000, problems) as u32,
        error_min_count: within(path("error_min_count"), d.error_min_count, dd.error_min_count as i64, 1..=1_000_000, problems) as u64,
        error_ratio: within(path("error_ratio"), d.error_ratio, dd.error_ratio, 1.0..=1000.0, problems),
    };
    if detection.min_baseline_slices > detection.baseline_slices {
        problems.add(path("min_baseline_slices"), "must not exceed baseline_slices");
    }
    detection
}
