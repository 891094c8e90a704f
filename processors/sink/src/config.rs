//! `processors.sink` in topology.yaml. What the sink keeps for how long is the `storage` section's
//! (`tracepipe_store::StorageSpec`), shared with the query server.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use tracepipe_processor::config::{positive, within, ConsumerSpec, Problems, RawConsumer, Section, SectionConfig};
use tracepipe_store::Retention;

use crate::{SinkConfig, SinkInput};

/// The sink's section, validated.
#[derive(Debug, Clone)]
pub struct SinkSpec {
    pub consumer: ConsumerSpec,
    /// Input topics and what each carries, in the pipeline's input order.
    pub inputs: Vec<(String, SinkInput)>,
    pub batch_rows: usize,
    pub flush_interval: Duration,
    pub retention_check: Duration,
}

impl SinkSpec {
    /// The sink's configuration, deleting rows past `retention`.
    pub fn sink_config(&self, retention: Retention) -> SinkConfig {
        SinkConfig { batch_rows: self.batch_rows, flush_interval: self.flush_interval, retention, retention_check: self.retention_check }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSink {
    group: Option<String>,
    #[serde(default)]
    inputs: BTreeMap<String, String>,
    dlq: Option<String>,
    batch_rows: Option<i64>,
    #[serde(default, with = "humantime_serde")]
    flush_interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    retention_check: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    commit_interval: Option<Duration>,
    max_in_flight: Option<i64>,
}

impl SectionConfig for SinkSpec {
    type Raw = RawSink;

    fn validate(raw: RawSink, section: &Section<'_>, problems: &mut Problems) -> Option<SinkSpec> {
        let consumer = RawConsumer { group: &raw.group, dlq: &raw.dlq, commit_interval: raw.commit_interval, max_in_flight: raw.max_in_flight };
        let consumer = ConsumerSpec::validate(consumer, section, problems);
        let mut inputs = Vec::new();
        for (kind, topic) in &raw.inputs {
            let at = section.at(&format!("inputs.{kind}"));
            let kind = match kind.as_str() {
                "traces" => SinkInput::Traces,
                "edges" => SinkInput::Edges,
                "rollups" => SinkInput::Rollups,
                "alerts" => SinkInput::Alerts,
                other => {
                    problems.add(at, format!("unknown input `{other}` (the sink reads traces, edges, rollups and alerts)"));
                    continue;
                }
            };
            if let Some(topic) = section.topic_at(at, &Some(topic.clone()), problems) {
                inputs.push((topic, kind));
            }
        }
        if raw.inputs.is_empty() {
            problems.add(section.at("inputs"), "name at least one of traces, edges, rollups, alerts with its topic");
        }
        let defaults = SinkConfig::default();
        Some(SinkSpec {
            consumer: consumer?,
            inputs,
            batch_rows: within(section.at("batch_rows"), raw.batch_rows, defaults.batch_rows as i64, 1..=1_000_000, problems) as usize,
            flush_interval: positive(section.at("flush_interval"), raw.flush_interval, defaults.flush_interval, problems),
            retention_check: positive(section.at("retention_check"), raw.retention_check, defaults.retention_check, problems),
        })
    }
}
