//! `processors.slo` in topology.yaml: where the SLO evaluator writes its alerts and how often it
//! evaluates. The SLOs themselves are topology.yaml's top-level `slos:`.

use std::time::Duration;

use serde::Deserialize;
use tracepipe_processor::config::{positive, Problems, Section, SectionConfig};

#[derive(Debug, Clone)]
pub struct SloEvaluatorSpec {
    pub alerts: String,
    pub interval: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSloEvaluator {
    alerts: Option<String>,
    #[serde(default, with = "humantime_serde")]
    interval: Option<Duration>,
}

impl SectionConfig for SloEvaluatorSpec {
    type Raw = RawSloEvaluator;

    fn validate(raw: RawSloEvaluator, section: &Section<'_>, problems: &mut Problems) -> Option<SloEvaluatorSpec> {
        let alerts = section.topic("alerts", &raw.alerts, problems);
        let interval = positive(section.at("interval"), raw.interval, Duration::from_secs(15), problems);
        Some(SloEvaluatorSpec { alerts: alerts?, interval })
    }
}
