//! topology.yaml's `storage` section: where the store is and how long each kind of row is kept.

use std::time::Duration;

use serde::Deserialize;
use tracepipe_processor::config::{positive, Problems, Section, SectionConfig};

use crate::store::StoreUrl;

/// How long each kind of data is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub traces: Duration,
    pub edges: Duration,
    /// The 1-minute rollups (and every other kind of rollup record).
    pub rollups: Duration,
    /// The downsampled series: 5-minute, hourly and daily buckets.
    pub rollups_5m: Duration,
    pub rollups_1h: Duration,
    pub rollups_1d: Duration,
    pub alerts: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        const DAY: Duration = Duration::from_secs(86_400);
        Retention { traces: 7 * DAY, edges: 30 * DAY, rollups: 30 * DAY, rollups_5m: 90 * DAY, rollups_1h: 400 * DAY, rollups_1d: 5 * 365 * DAY, alerts: 90 * DAY }
    }
}

/// Where the sink writes and the query server reads.
#[derive(Debug, Clone)]
pub struct StorageSpec {
    pub url: StoreUrl,
    pub retention: Retention,
}

impl Default for StorageSpec {
    fn default() -> Self {
        StorageSpec { url: StoreUrl::Sqlite(DEFAULT_SQLITE_FILE.into()), retention: Retention::default() }
    }
}

const DEFAULT_SQLITE_FILE: &str = "tracepipe.db";

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawStorage {
    url: Option<String>,
    #[serde(default)]
    retention: RawRetention,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    #[serde(default, with = "humantime_serde")]
    traces: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    edges: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    rollups: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    rollups_5m: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    rollups_1h: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    rollups_1d: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    alerts: Option<Duration>,
}

impl SectionConfig for StorageSpec {
    type Raw = RawStorage;

    fn validate(raw: RawStorage, section: &Section<'_>, problems: &mut Problems) -> Option<StorageSpec> {
        let url = match raw.url.as_deref() {
            None => StoreUrl::Sqlite(DEFAULT_SQLITE_FILE.into()),
            Some(text) => StoreUrl::parse(text).unwrap_or_else(|e| {
                problems.add(section.at("url"), e.to_string());
                StoreUrl::Sqlite(DEFAULT_SQLITE_FILE.into())
            }),
        };
        let r = &raw.retention;
        let d = Retention::default();
        let at = |field: &str| section.at(&format!("retention.{field}"));
        let retention = Retention {
            traces: positive(at("traces"), r.traces, d.traces, problems),
            edges: positive(at("edges"), r.edges, d.edges, problems),
            rollups: positive(at("rollups"), r.rollups, d.rollups, problems),
            rollups_5m: positive(at("rollups_5m"), r.rollups_5m, d.rollups_5m, problems),
            rollups_1h: positive(at("rollups_1h"), r.rollups_1h, d.rollups_1h, problems),
            rollups_1d: positive(at("rollups_1d"), r.rollups_1d, d.rollups_1d, problems),
            alerts: positive(at("alerts"), r.alerts, d.alerts, problems),
        };
        // A coarser series is merged from the finer one, which must still be there: for a whole
        // coarser bucket and the time the sink merges it again (see the sink's downsampling).
        const HOUR: u64 = 3600;
        for (finer, coarser, f, c, needed) in [
            ("rollups", "rollups_5m", retention.rollups, retention.rollups_5m, 2 * HOUR),
            ("rollups_5m", "rollups_1h", retention.rollups_5m, retention.rollups_1h, 8 * HOUR),
            ("rollups_1h", "rollups_1d", retention.rollups_1h, retention.rollups_1d, 3 * 24 * HOUR),
        ] {
            if c < f {
                problems.add(at(coarser), format!("must be at least retention.{finer}: coarser series are kept longer"));
            }
            if f < Duration::from_secs(needed) {
                problems.add(at(finer), format!("must be at least {}: the {coarser} series is merged from it", humantime::format_duration(Duration::from_secs(needed))));
            }
        }
        Some(StorageSpec { url, retention })
    }
}
