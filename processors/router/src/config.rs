//! `processors.router` in topology.yaml.

use std::time::Duration;

use serde::Deserialize;
use tracepipe_processor::config::{size, ConsumerSpec, Problems, RawConsumer, Section, SectionConfig, Size};
use tracepipe_schemas::Encoding;

/// The router's section, validated.
#[derive(Debug, Clone)]
pub struct RouterSpec {
    pub consumer: ConsumerSpec,
    /// Input topics and the encoding each carries, in the pipeline's input order.
    pub inputs: Vec<(String, Encoding)>,
    pub output: String,
    /// The largest record written to `output`; a trace's spans past it go in further records.
    pub max_message_bytes: usize,
}

impl RouterSpec {
    pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 << 20;
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouter {
    group: Option<String>,
    #[serde(default)]
    inputs: Vec<RawInput>,
    output: Option<String>,
    dlq: Option<String>,
    max_message_bytes: Option<Size>,
    #[serde(default, with = "humantime_serde")]
    commit_interval: Option<Duration>,
    max_in_flight: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInput {
    topic: Option<String>,
    encoding: Option<String>,
}

impl SectionConfig for RouterSpec {
    type Raw = RawRouter;

    fn validate(raw: RawRouter, section: &Section<'_>, problems: &mut Problems) -> Option<RouterSpec> {
        let consumer = RawConsumer { group: &raw.group, dlq: &raw.dlq, commit_interval: raw.commit_interval, max_in_flight: raw.max_in_flight };
        let consumer = ConsumerSpec::validate(consumer, section, problems);
        if raw.inputs.is_empty() {
            problems.add(section.at("inputs"), "needs at least one input topic");
        }
        let mut inputs: Vec<(String, Encoding)> = Vec::new();
        for (i, input) in raw.inputs.iter().enumerate() {
            let at = section.at(&format!("inputs[{i}]"));
            let topic = section.topic_at(format!("{at}.topic"), &input.topic, problems);
            let encoding = tracepipe_processor::config::required(format!("{at}.encoding"), &input.encoding, problems)
                .and_then(|e| e.parse::<Encoding>().map_err(|message| problems.add(format!("{at}.encoding"), message)).ok());
            if let (Some(topic), Some(encoding)) = (topic, encoding) {
                if inputs.iter().any(|(t, _)| *t == topic) {
                    problems.add(format!("{at}.topic"), format!("topic `{topic}` is listed twice"));
                }
                inputs.push((topic, encoding));
            }
        }
        let output = section.topic("output", &raw.output, problems);
        let max_message_bytes = size(section.at("max_message_bytes"), raw.max_message_bytes, 1..=usize::MAX, "a size like 16MiB or 1000000", problems)
            .unwrap_or(Self::DEFAULT_MAX_MESSAGE_BYTES);
        Some(RouterSpec { consumer: consumer?, inputs, output: output?, max_message_bytes })
    }
}
