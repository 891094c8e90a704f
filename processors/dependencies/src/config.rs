//! `processors.dependencies` in topology.yaml.

use std::time::Duration;

use serde::Deserialize;
use tracepipe_processor::config::{positive, whole_seconds, within, ConsumerSpec, Problems, RawConsumer, Section, SectionConfig};

use crate::DependenciesConfig;

/// The dependencies processor's section, validated.
#[derive(Debug, Clone)]
pub struct DependenciesSpec {
    pub consumer: ConsumerSpec,
    pub input: String,
    /// Where edge windows go.
    pub output: String,
    pub alerts: String,
    pub config: DependenciesConfig,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDependencies {
    group: Option<String>,
    input: Option<String>,
    output: Option<String>,
    alerts: Option<String>,
    dlq: Option<String>,
    #[serde(default, with = "humantime_serde")]
    window: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    lateness: Option<Duration>,
    max_edges: Option<i64>,
    #[serde(default, with = "humantime_serde")]
    learning: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    vanish_after: Option<Duration>,
    virtual_node_peer_attributes: Option<Vec<String>>,
    #[serde(default, with = "humantime_serde")]
    commit_interval: Option<Duration>,
    max_in_flight: Option<i64>,
}

impl SectionConfig for DependenciesSpec {
    type Raw = RawDependencies;

    fn validate(raw: RawDependencies, section: &Section<'_>, problems: &mut Problems) -> Option<DependenciesSpec> {
        let consumer = RawConsumer { group: &raw.group, dlq: &raw.dlq, commit_interval: raw.commit_interval, max_in_flight: raw.max_in_flight };
        let consumer = ConsumerSpec::validate(consumer, section, problems);
        let input = section.topic("input", &raw.input, problems);
        let output = section.topic("output", &raw.output, problems);
        let alerts = section.topic("alerts", &raw.alerts, problems);
        let defaults = DependenciesConfig::default();
        let config = DependenciesConfig {
            window: positive(section.at("window"), raw.window, defaults.window, problems),
            lateness: positive(section.at("lateness"), raw.lateness, defaults.lateness, problems),
            max_edges: within(section.at("max_edges"), raw.max_edges, defaults.max_edges as i64, 1..=1_000_000, problems) as usize,
            learning: positive(section.at("learning"), raw.learning, defaults.learning, problems),
            vanish_after: positive(section.at("vanish_after"), raw.vanish_after, defaults.vanish_after, problems),
            virtual_node_peer_attributes: match raw.virtual_node_peer_attributes {
                Some(keys) if keys.is_empty() || keys.iter().any(|k| k.trim().is_empty()) => {
                    problems.add(section.at("virtual_node_peer_attributes"), "must list attribute keys, none of them blank");
                    defaults.virtual_node_peer_attributes
                }
                Some(keys) => keys,
                None => defaults.virtual_node_peer_attributes,
            },
        };
        whole_seconds(section.at("window"), config.window, problems);
        Some(DependenciesSpec { consumer: consumer?, input: input?, output: output?, alerts: alerts?, config })
    }
}
