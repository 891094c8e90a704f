//! `processors.funnels` in topology.yaml.

use std::time::Duration;

use serde::Deserialize;
use tracepipe_processor::config::{positive, within, ConsumerSpec, Problems, RawConsumer, Section, SectionConfig};

use crate::FunnelsConfig;

/// The funnels processor's section, validated.
#[derive(Debug, Clone)]
pub struct FunnelsSpec {
    pub consumer: ConsumerSpec,
    /// The analyzer's funnel steps.
    pub input: String,
    /// Where journeys go: the rollups topic.
    pub output: String,
    pub config: FunnelsConfig,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFunnels {
    group: Option<String>,
    input: Option<String>,
    output: Option<String>,
    dlq: Option<String>,
    #[serde(default, with = "humantime_serde")]
    lateness: Option<Duration>,
    max_journeys: Option<i64>,
    #[serde(default, with = "humantime_serde")]
    commit_interval: Option<Duration>,
    max_in_flight: Option<i64>,
}

impl SectionConfig for FunnelsSpec {
    type Raw = RawFunnels;

    fn validate(raw: RawFunnels, section: &Section<'_>, problems: &mut Problems) -> Option<FunnelsSpec> {
        let consumer = RawConsumer { group: &raw.group, dlq: &raw.dlq, commit_interval: raw.commit_interval, max_in_flight: raw.max_in_flight };
        let consumer = ConsumerSpec::validate(consumer, section, problems);
        let input = section.topic("input", &raw.input, problems);
        let output = section.topic("output", &raw.output, problems);
        let defaults = FunnelsConfig::default();
        let config = FunnelsConfig {
            lateness: positive(section.at("lateness"), raw.lateness, defaults.lateness, problems),
            max_journeys: within(section.at("max_journeys"), raw.max_journeys, defaults.max_journeys as i64, 1..=100_000_000, problems) as usize,
        };
        Some(FunnelsSpec { consumer: consumer?, input: input?, output: output?, config })
    }
}
