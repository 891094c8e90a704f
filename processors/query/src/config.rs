//! `processors.query` in topology.yaml. The store it reads is the `storage` section's.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use tracepipe_processor::config::{positive, within, Problems, Section, SectionConfig};

use crate::sampling::AdaptiveSampling;

/// The query server's section, validated.
#[derive(Debug, Clone)]
pub struct QuerySpec {
    pub listen: SocketAddr,
    /// The environment variable holding the bearer token API requests must carry, if set.
    pub bearer_token_env: Option<String>,
    pub adaptive_sampling: AdaptiveSampling,
}

const DEFAULT_LISTEN: &str = "127.0.0.1:16686";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQuery {
    listen: Option<String>,
    bearer_token_env: Option<String>,
    #[serde(default)]
    adaptive_sampling: RawAdaptiveSampling,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAdaptiveSampling {
    target_traces_per_second: Option<f64>,
    #[serde(default, with = "humantime_serde")]
    lookback: Option<Duration>,
    default_probability: Option<f64>,
    min_probability: Option<f64>,
    min_traces_per_second: Option<f64>,
}

impl SectionConfig for QuerySpec {
    type Raw = RawQuery;

    fn validate(raw: RawQuery, section: &Section<'_>, problems: &mut Problems) -> Option<QuerySpec> {
        let adaptive_sampling = validate_adaptive_sampling(&section.at("adaptive_sampling"), &raw.adaptive_sampling, problems);
        let listen = raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
        let listen = match listen.parse() {
            Ok(listen) => listen,
            Err(_) => {
                problems.add(section.at("listen"), format!("`{listen}` is not an address like {DEFAULT_LISTEN}"));
                return None;
            }
        };
        Some(QuerySpec { listen, bearer_token_env: raw.bearer_token_env.filter(|v| !v.is_empty()), adaptive_sampling })
    }
}

fn validate_adaptive_sampling(at: &str, raw: &RawAdaptiveSampling, problems: &mut Problems) -> AdaptiveSampling {
    let defaults = AdaptiveSampling::default();
    let rate = |field: &str, value: Option<f64>, default: f64, problems: &mut Problems| match value {
        Some(v) if v.is_finite() && v > 0.0 => v,
        None => default,
        Some(v) => {
            problems.add(format!("{at}.{field}"), format!("must be a number of traces per second above zero, got {v}"));
            default
        }
    };
    let sampling = AdaptiveSampling {
        target_traces_per_second: rate("target_traces_per_second", raw.target_traces_per_second, defaults.target_traces_per_second, problems),
        lookback: positive(format!("{at}.lookback"), raw.lookback, defaults.lookback, problems),
        default_probability: within(format!("{at}.default_probability"), raw.default_probability, defaults.default_probability, 0.0..=1.0, problems),
        min_probability: within(format!("{at}.min_probability"), raw.min_probability, defaults.min_probability, 0.0..=1.0, problems),
        min_traces_per_second: rate("min_traces_per_second", raw.min_traces_per_second, defaults.min_traces_per_second, problems),
    };
    if sampling.min_traces_per_second > sampling.target_traces_per_second {
        problems.add(format!("{at}.min_traces_per_second"), format!("must not exceed target_traces_per_second ({})", sampling.target_traces_per_second));
    }
    sampling
}
