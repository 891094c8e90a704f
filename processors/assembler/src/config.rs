//! `processors.assembler` in topology.yaml.

use std::time::Duration;

use serde::Deserialize;
use tracepipe_processor::config::{positive, size, within, ConsumerSpec, Problems, RawConsumer, Section, SectionConfig, Size};

use crate::{largest_trace_limit, AssemblerConfig};

/// The assembler's section, validated.
#[derive(Debug, Clone)]
pub struct AssemblerSpec {
    pub consumer: ConsumerSpec,
    pub input: String,
    pub output: String,
    pub config: AssemblerConfig,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAssembler {
    group: Option<String>,
    input: Option<String>,
    output: Option<String>,
    dlq: Option<String>,
    #[serde(default, with = "humantime_serde")]
    grace: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    idle_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    max_duration: Option<Duration>,
    max_spans: Option<i64>,
    max_trace_bytes: Option<Size>,
    memory_budget: Option<Size>,
    emitted_cache: Option<i64>,
    #[serde(default, with = "humantime_serde")]
    commit_interval: Option<Duration>,
    max_in_flight: Option<i64>,
}

impl SectionConfig for AssemblerSpec {
    type Raw = RawAssembler;

    fn validate(raw: RawAssembler, section: &Section<'_>, problems: &mut Problems) -> Option<AssemblerSpec> {
        let consumer = RawConsumer { group: &raw.group, dlq: &raw.dlq, commit_interval: raw.commit_interval, max_in_flight: raw.max_in_flight };
        let consumer = ConsumerSpec::validate(consumer, section, problems);
        let input = section.topic("input", &raw.input, problems);
        let output = section.topic("output", &raw.output, problems);
        let defaults = AssemblerConfig::default();
        let memory_budget_bytes =
            size(section.at("memory_budget"), raw.memory_budget, 1 << 20..=usize::MAX, "a size of at least 1MiB, like 256MiB", problems).unwrap_or(defaults.memory_budget_bytes);
        // One trace is emitted at a time, so it must fit the budget's eviction batch, a sixteenth.
        let largest_trace = largest_trace_limit(memory_budget_bytes);
        let max_trace_bytes = match size(section.at("max_trace_bytes"), raw.max_trace_bytes, 64 << 10..=256 << 20, "a size from 64KiB to 256MiB, like 8MiB", problems) {
            None => defaults.max_trace_bytes.min(largest_trace),
            Some(bytes) => {
                if bytes > largest_trace {
                    problems.add(section.at("max_trace_bytes"), format!("must be at most a sixteenth of memory_budget ({largest_trace} bytes): one trace is emitted at a time"));
                }
                bytes
            }
        };
        let config = AssemblerConfig {
            grace: positive(section.at("grace"), raw.grace, defaults.grace, problems),
            idle_timeout: positive(section.at("idle_timeout"), raw.idle_timeout, defaults.idle_timeout, problems),
            max_duration: positive(section.at("max_duration"), raw.max_duration, defaults.max_duration, problems),
            max_spans: within(section.at("max_spans"), raw.max_spans, i64::from(defaults.max_spans), 1..=1_000_000, problems) as u32,
            max_trace_bytes,
            memory_budget_bytes,
            emitted_cache_traces: within(section.at("emitted_cache"), raw.emitted_cache, defaults.emitted_cache_traces as i64, 1..=100_000_000, problems) as usize,
        };
        if config.grace >= config.idle_timeout {
            problems.add(section.at("grace"), "must be shorter than idle_timeout");
        }
        if config.idle_timeout > config.max_duration {
            problems.add(section.at("idle_timeout"), "must not be longer than max_duration");
        }
        Some(AssemblerSpec { consumer: consumer?, input: input?, output: output?, config })
    }
}
