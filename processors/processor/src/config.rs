//! How a section of topology.yaml becomes a processor's validated configuration.
//!
//! Each processor crate has a `config.rs` with its raw section as serde reads it
//! (`#[serde(deny_unknown_fields)]`, durations through `humantime-serde`, sizes as [`Size`]) and
//! one function, [`SectionConfig::validate`], that turns it into the domain type and reports
//! every problem with its path in the file (`processors.sampler.rules[2].threshold: ...`).
//!
//! So that `tracepipe validate` prints every problem at once, [`read`] does not stop at the first
//! key serde refuses: it reports it (an unknown key, or a value of the wrong type), takes that key
//! out of the section and reads the section again; the rest is then validated as usual, and a
//! later problem at a path already reported is not reported twice.

use std::collections::BTreeSet;
use std::fmt;
use std::ops::RangeInclusive;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_yaml_ng::Value;

/// One problem in the file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found, in file order; a line each when displayed.
#[derive(Debug, Clone, Default)]
pub struct Problems {
    found: Vec<Problem>,
    /// Paths of keys serde refused.
    refused: BTreeSet<String>,
}

impl Problems {
    /// Records a problem at `path`, unless serde refused the key there already: it was taken out,
    /// and "is required" would say the same thing twice.
    pub fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let path = path.into();
        if self.refused.contains(&path) {
            return;
        }
        self.found.push(Problem { path, message: message.into() });
    }

    /// A key serde refused, reported by [`read`].
    fn refused(&mut self, path: String, message: String) {
        self.found.push(Problem { path: path.clone(), message });
        self.refused.insert(path);
    }

    pub fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    pub fn len(&self) -> usize {
        self.found.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Problem> {
        self.found.iter()
    }

    pub fn into_vec(self) -> Vec<Problem> {
        self.found
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for problem in &self.found {
            writeln!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// `a.b` under `a`, or `b` at the top of the file.
pub fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

/// A processor's configuration as its section of topology.yaml gives it.
pub trait SectionConfig: Sized {
    /// The section as serde reads it.
    type Raw: DeserializeOwned;

    /// Turns the raw section into the configuration, adding every problem to `problems`; `None`
    /// when any problem leaves it unusable.
    fn validate(raw: Self::Raw, section: &Section<'_>, problems: &mut Problems) -> Option<Self>;
}

/// Where a section is in the file, and the topics the file declares, which it may name.
#[derive(Debug, Clone, Copy)]
pub struct Section<'a> {
    pub path: &'a str,
    pub topics: &'a BTreeSet<String>,
}

impl<'a> Section<'a> {
    pub fn new(path: &'a str, topics: &'a BTreeSet<String>) -> Self {
        Section { path, topics }
    }

    /// The path of `field` in this section.
    pub fn at(&self, field: &str) -> String {
        join(self.path, field)
    }

    /// Reads and validates this section as `C`.
    pub fn parse<C: SectionConfig>(&self, value: Value, problems: &mut Problems) -> Option<C> {
        let raw = read::<C::Raw>(self.path, value, problems)?;
        C::validate(raw, self, problems)
    }

    /// A text field that must be given and not blank.
    pub fn required(&self, field: &str, value: &Option<String>, problems: &mut Problems) -> Option<String> {
        required(self.at(field), value, problems)
    }

    /// A field naming a topic declared under `topics`.
    pub fn topic(&self, field: &str, value: &Option<String>, problems: &mut Problems) -> Option<String> {
        self.topic_at(self.at(field), value, problems)
    }

    /// Same, at a path of the caller's (an entry of a list or map).
    pub fn topic_at(&self, path: String, value: &Option<String>, problems: &mut Problems) -> Option<String> {
        let name = required(path.clone(), value, problems)?;
        if !self.topics.contains(&name) {
            problems.add(path, format!("topic `{name}` is not declared under topics"));
            return None;
        }
        Some(name)
    }
}

/// A text value that must be given and not blank.
pub fn required(path: String, value: &Option<String>, problems: &mut Problems) -> Option<String> {
    match value.as_deref() {
        Some(v) if !v.trim().is_empty() => Some(v.to_string()),
        _ => {
            problems.add(path, "is required");
            None
        }
    }
}

/// Reads `value` as `T`. Each key serde refuses is reported with its path and taken out, and the
/// value read again, so one mistake does not hide the others; `None` if it still cannot be read
/// (a list entry of the wrong shape, say), with that problem reported.
pub fn read<T: DeserializeOwned>(path: &str, mut value: Value, problems: &mut Problems) -> Option<T> {
    // Each round takes one key out, so this ends; the bound is for a pathological file.
    for _ in 0..256 {
        let error = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(read) => return Some(read),
            Err(error) => error,
        };
        let segments: Vec<&serde_path_to_error::Segment> = error.path().iter().collect();
        let at = segments.iter().fold(path.to_string(), |at, segment| match segment {
            serde_path_to_error::Segment::Seq { index } => format!("{at}[{index}]"),
            serde_path_to_error::Segment::Map { key } => join(&at, key),
            serde_path_to_error::Segment::Enum { variant } => join(&at, variant),
            serde_path_to_error::Segment::Unknown => join(&at, "?"),
        });
        let message = error.inner().to_string();
        let message = match message.strip_prefix("unknown field ") {
            Some(rest) => format!("unknown key {rest}"),
            None => message,
        };
        problems.refused(at, message);
        if !remove(&mut value, &segments) {
            return None;
        }
    }
    None
}

/// Takes out the map entry at `path`; false when the path does not end at a map entry.
fn remove(value: &mut Value, path: &[&serde_path_to_error::Segment]) -> bool {
    use serde_path_to_error::Segment;
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut current = value;
    for segment in parents {
        let next = match (segment, current) {
            (Segment::Map { key }, Value::Mapping(map)) => map.iter_mut().find(|(k, _)| key_is(k, key)).map(|(_, v)| v),
            (Segment::Seq { index }, Value::Sequence(items)) => items.get_mut(*index),
            _ => None,
        };
        match next {
            Some(next) => current = next,
            None => return false,
        }
    }
    match (last, current) {
        (Segment::Map { key }, Value::Mapping(map)) => {
            let found = map.keys().find(|k| key_is(k, key)).cloned();
            found.is_some_and(|k| map.remove(&k).is_some())
        }
        _ => false,
    }
}

fn key_is(key: &Value, name: &str) -> bool {
    scalar_text(key).is_some_and(|text| text == name)
}

/// A scalar as text: strings as they are, numbers and booleans as YAML writes them.
pub fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A size in bytes as topology.yaml writes it: `16MiB`, `512KiB`, `10MB`, `1000000`, read by
/// `bytesize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl serde::de::Visitor<'_> for SizeVisitor {
            type Value = Size;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size like 16MiB or 1000000")
            }

            fn visit_u64<E: serde::de::Error>(self, bytes: u64) -> Result<Size, E> {
                Ok(Size(bytes))
            }

            fn visit_i64<E: serde::de::Error>(self, bytes: i64) -> Result<Size, E> {
                u64::try_from(bytes).map(Size).map_err(|_| E::custom(format!("must be a size like 16MiB or 1000000, got {bytes}")))
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Size, E> {
                text.trim().parse::<bytesize::ByteSize>().map(|size| Size(size.as_u64())).map_err(|_| E::custom(format!("must be a size like 16MiB or 1000000, got `{text}`")))
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

/// A size field: `None` when unset; one outside `range` is a problem saying it must be
/// `expected`, and counts as unset.
pub fn size(path: String, value: Option<Size>, range: RangeInclusive<usize>, expected: &str, problems: &mut Problems) -> Option<usize> {
    let bytes = usize::try_from(value?.0).unwrap_or(usize::MAX);
    if range.contains(&bytes) {
        Some(bytes)
    } else {
        problems.add(path, format!("must be {expected}"));
        None
    }
}

/// A duration field that must be longer than zero; `default` when unset or invalid.
pub fn positive(path: String, value: Option<Duration>, default: Duration, problems: &mut Problems) -> Duration {
    match value {
        Some(duration) if duration.is_zero() => {
            problems.add(path, "must be longer than zero");
            default
        }
        Some(duration) => duration,
        None => default,
    }
}

/// A number field within `range`; `default` when unset or outside it.
pub fn within<T: PartialOrd + fmt::Display + Copy>(path: String, value: Option<T>, default: T, range: RangeInclusive<T>, problems: &mut Problems) -> T {
    let value = value.unwrap_or(default);
    if !range.contains(&value) {
        problems.add(path, format!("must be between {} and {}, got {value}", range.start(), range.end()));
        return default;
    }
    value
}

/// Windows are aligned to whole seconds, as the records that carry them say (`window_seconds`).
pub fn whole_seconds(path: String, window: Duration, problems: &mut Problems) {
    if window.as_secs() == 0 || window.subsec_nanos() != 0 {
        problems.add(path, "must be a whole number of seconds");
    }
}

/// What every processor that consumes from Kafka has in its section besides its topics: the
/// consumer group, the dead-letter topic, and how its commits are paced.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumerSpec {
    pub group: String,
    pub dlq: String,
    pub commit_interval: Duration,
    /// Unacknowledged outputs above which no more input is taken.
    pub max_in_flight: usize,
}

/// [`ConsumerSpec`]'s fields as a raw section has them. Each processor's raw section lists these
/// four keys itself rather than flattening a shared struct in: serde cannot refuse unknown keys
/// (`deny_unknown_fields`) in a struct that flattens another.
#[derive(Debug, Clone, Copy)]
pub struct RawConsumer<'a> {
    pub group: &'a Option<String>,
    pub dlq: &'a Option<String>,
    pub commit_interval: Option<Duration>,
    pub max_in_flight: Option<i64>,
}

impl ConsumerSpec {
    pub const DEFAULT_COMMIT_INTERVAL: Duration = Duration::from_secs(1);
    pub const DEFAULT_MAX_IN_FLIGHT: i64 = 50_000;

    pub fn validate(raw: RawConsumer<'_>, section: &Section<'_>, problems: &mut Problems) -> Option<ConsumerSpec> {
        let group = section.required("group", raw.group, problems);
        let dlq = section.topic("dlq", raw.dlq, problems);
        let commit_interval = positive(section.at("commit_interval"), raw.commit_interval, Self::DEFAULT_COMMIT_INTERVAL, problems);
        let max_in_flight = within(section.at("max_in_flight"), raw.max_in_flight, Self::DEFAULT_MAX_IN_FLIGHT, 1..=10_000_000, problems) as usize;
        Some(ConsumerSpec { group: group?, dlq: dlq?, commit_interval, max_in_flight })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Raw {
        name: Option<String>,
        #[serde(default, with = "humantime_serde")]
        every: Option<Duration>,
        size: Option<Size>,
        #[serde(default)]
        items: Vec<RawItem>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct RawItem {
        kind: Option<String>,
    }

    fn read_text(text: &str) -> (Option<Raw>, Vec<String>) {
        let mut problems = Problems::default();
        let raw = read::<Raw>("processors.x", serde_yaml_ng::from_str(text).unwrap(), &mut problems);
        (raw, problems.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn every_refused_key_is_reported_with_its_path_and_the_rest_is_read() {
        let (raw, problems) = read_text("name: a\nnmae: b\nevery: 2 parsecs\nsize: lots\nitems: [{ kind: k }, { knd: j }]\n");
        assert_eq!(raw.unwrap().name.as_deref(), Some("a"));
        assert_eq!(problems.len(), 4, "{problems:#?}");
        // Unknown keys are found as the keys are read, before any value is.
        assert!(problems[0].starts_with("processors.x.nmae: unknown key `nmae`, expected one of `name`"), "{problems:#?}");
        assert!(problems[1].starts_with("processors.x.items[1].knd: unknown key `knd`"), "{problems:#?}");
        assert!(problems[2].starts_with("processors.x.every: "), "{problems:#?}");
        assert_eq!(problems[3], "processors.x.size: must be a size like 16MiB or 1000000, got `lots`");
    }

    #[test]
    fn sizes_and_durations_are_read_by_their_crates() {
        let (raw, problems) = read_text("every: 1m 30s\nsize: 16MiB\n");
        assert!(problems.is_empty(), "{problems:?}");
        let raw = raw.unwrap();
        assert_eq!(raw.every, Some(Duration::from_secs(90)));
        assert_eq!(raw.size, Some(Size(16 << 20)));
        assert_eq!(read_text("size: 1000000\n").0.unwrap().size, Some(Size(1_000_000)));
        assert_eq!(read_text("size: 10MB\n").0.unwrap().size, Some(Size(10_000_000)));
    }

    #[test]
    fn a_list_entry_of_the_wrong_shape_is_one_problem() {
        let (raw, problems) = read_text("items: [3]\n");
        assert!(raw.is_none());
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("processors.x.items[0]: "), "{}", problems[0]);
    }
}
