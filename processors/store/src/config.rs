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
    pub rollups: Duration,
    pub alerts: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        const DAY: Duration = Duration::from_secs(86_400);
        Retention { traces: 7 * DAY, edges: 30 * DAY, rollups: 30 * DAY, alerts: 90 * DAY }
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
            alerts: positive(at("alerts"), r.alerts, d.alerts, problems),
        };
        Some(StorageSpec { url, retention })
    }
}
