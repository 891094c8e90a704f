//! Event-time windows kept per input partition and closed by the partition's own event time, so
//! that a replay of the same records from a committed position yields the same windows, whatever
//! the timing, the chunking of the input or the rebalances in between.
//!
//! # Segments
//!
//! Each input partition's records are cut into *segments*. The partition's watermark is the
//! window (`length` long) that its latest event time, less `lateness`, falls in; it only moves
//! forward. A record that moves it forward begins a new segment, and the segment before it
//! closes. Within a segment every record counts in its own event-time window: most in the
//! watermark's window or the next, a late one (its window behind the watermark) in its earlier
//! window, once, and counted as late ([`Segments::late`]); it is never moved into another window.
//! A closed segment's windows are published with keys that say what they describe: the window,
//! the series, and the segment (input partition and first offset) they were counted in. Windows
//! of one series from several segments, partitions or instances add up.
//!
//! # Why a replay is exact
//!
//! The partition's position is committed at most up to the first offset of its oldest segment
//! whose windows are not yet acknowledged ([`Segments::low_watermark`]). That first record, by
//! construction, moved the watermark past every record before it; so after a replay reads it the
//! watermark is what the first run had there, and every later decision (which segment, which
//! window, late or not) is the same. A segment is a function of its records.
//!
//! A segment still open when its partition goes quiet is published as it stands
//! ([`Segments::take_idle`]), carrying how many records it covers; when it closes it is published
//! again, covering more. The store keeps the version that covers most, so an early publication is
//! replaced, never added to.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;
use tracepipe_processor::{SourceOffset, SourcePartition, UnixNanos};

/// When a trace happened, for its window: its root's start (`root_start`), or, if the root claims
/// to start after the assembler emitted the trace (a client clock ahead), the record's
/// `timestamp_ms` (the emission).
pub fn event_time(root_start: UnixNanos, timestamp_ms: Option<i64>) -> UnixNanos {
    let emitted = timestamp_ms.and_then(|ms| u64::try_from(ms).ok()).map(|ms| ms.saturating_mul(1_000_000));
    emitted.map_or(root_start, |emitted| root_start.min(emitted))
}

/// Input topic names by input index, as records name them, for what a segment says it counted.
#[derive(Debug, Default)]
pub struct InputTopics(Vec<String>);

impl InputTopics {
    /// Remembers that input `input` is `topic`.
    pub fn note(&mut self, input: u16, topic: &str) {
        let input = usize::from(input);
        if self.0.len() <= input {
            self.0.resize(input + 1, String::new());
        }
        if self.0[input] != topic {
            self.0[input] = topic.to_string();
        }
    }

    /// The topic of `input`, empty if no record of it was seen.
    pub fn name(&self, input: u16) -> &str {
        self.0.get(usize::from(input)).map_or("", String::as_str)
    }
}

/// One segment of one input partition.
#[derive(Debug)]
pub struct Segment<S> {
    pub source: SourcePartition,
    /// The offset of its first record: with `source`, what identifies it.
    pub first_offset: i64,
    /// Its first record's timestamp: tells apart the segments of two incarnations of a topic
    /// whose offsets both start at 0 (an embedded broker restarted on the same store).
    pub first_timestamp_ms: Option<i64>,
    /// Records it covers so far.
    pub records: u64,
    /// The start of the watermark's window when it began: its windows before that came late.
    pub watermark_start: UnixNanos,
    /// State per event-time window, by window start.
    pub windows: BTreeMap<UnixNanos, S>,
    /// Records since it was last published.
    unpublished: u64,
    /// When (processing time) its last record came.
    last_input: UnixNanos,
}

/// What identifies a segment and how far it got, without its windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentInfo {
    pub source: SourcePartition,
    pub first_offset: i64,
    pub first_timestamp_ms: Option<i64>,
    pub records: u64,
    pub watermark_start: UnixNanos,
}

impl<S> Segment<S> {
    pub fn info(&self) -> SegmentInfo {
        SegmentInfo { source: self.source, first_offset: self.first_offset, first_timestamp_ms: self.first_timestamp_ms, records: self.records, watermark_start: self.watermark_start }
    }

    fn new(at: SourceOffset, timestamp_ms: Option<i64>, now: UnixNanos, watermark_start: UnixNanos) -> Self {
        Segment { source: at.source, first_offset: at.offset, first_timestamp_ms: timestamp_ms, records: 0, watermark_start, windows: BTreeMap::new(), unpublished: 0, last_input: now }
    }
}

/// How a record's event time stands to its partition's watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeliness {
    OnTime,
    /// Its window is behind the partition's watermark.
    Late,
    /// Its window is more than [`MAX_LATENESS`] behind the watermark: it counts in no window, so a
    /// segment holds a bounded number of windows whatever the trace times.
    TooLate,
}

/// How far behind its partition's watermark a trace may be and still count in its window.
pub const MAX_LATENESS: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

struct Partition<S> {
    /// The watermark's window index; the current segment began when it last moved.
    watermark: u64,
    current: Segment<S>,
}

pub struct Segments<S> {
    length: u64,
    lateness: u64,
    partitions: FxHashMap<SourcePartition, Partition<S>>,
    /// Records counted late since the start.
    pub late: u64,
    /// Records too late to count in any window since the start.
    pub too_late: u64,
    /// What a record too late to count is counted in, and dropped.
    discard: S,
    /// Records observed since the start.
    pub observed: u64,
}

impl<S: Default> Segments<S> {
    pub fn new(length: std::time::Duration, lateness: std::time::Duration) -> Self {
        Segments { length: (length.as_nanos() as u64).max(1), lateness: lateness.as_nanos() as u64, partitions: FxHashMap::default(), late: 0, too_late: 0, discard: S::default(), observed: 0 }
    }

    pub fn length_nanos(&self) -> u64 {
        self.length
    }

    /// Counts the record at `at` (stamped `timestamp_ms` by its producer), whose event time is
    /// `event_time`, read at `now`: returns the segment it closed, if it moved its partition's
    /// watermark, and the state of its window.
    pub fn observe(&mut self, at: SourceOffset, timestamp_ms: Option<i64>, event_time: UnixNanos, now: UnixNanos) -> (Option<Segment<S>>, &mut S, Timeliness) {
        let watermark = event_time.saturating_sub(self.lateness) / self.length;
        let mut closed = None;
        let watermark_start = watermark.saturating_mul(self.length);
        let partition = match self.partitions.entry(at.source) {
            std::collections::hash_map::Entry::Vacant(vacant) => vacant.insert(Partition { watermark, current: Segment::new(at, timestamp_ms, now, watermark_start) }),
            std::collections::hash_map::Entry::Occupied(occupied) => {
                let partition = occupied.into_mut();
                if watermark > partition.watermark {
                    partition.watermark = watermark;
                    closed = Some(std::mem::replace(&mut partition.current, Segment::new(at, timestamp_ms, now, watermark_start)));
                }
                partition
            }
        };
        let window = event_time / self.length;
        let max_late_windows = (MAX_LATENESS.as_nanos() as u64).div_ceil(self.length);
        let timeliness = if window.saturating_add(max_late_windows) < partition.watermark {
            Timeliness::TooLate
        } else if window < partition.watermark {
            Timeliness::Late
        } else {
            Timeliness::OnTime
        };
        self.observed += 1;
        let segment = &mut partition.current;
        segment.records += 1;
        segment.unpublished += 1;
        segment.last_input = now;
        let state = match timeliness {
            Timeliness::TooLate => {
                self.too_late += 1;
                self.discard = S::default();
                &mut self.discard
            }
            Timeliness::Late => {
                self.late += 1;
                segment.windows.entry(window.saturating_mul(self.length)).or_default()
            }
            Timeliness::OnTime => segment.windows.entry(window.saturating_mul(self.length)).or_default(),
        };
        (closed, state, timeliness)
    }

    /// Open segments with records not yet published whose partition has had no input for
    /// `quiet`, to publish as they stand (they stay open, and hold their offsets).
    pub fn take_idle(&mut self, now: UnixNanos, quiet: std::time::Duration) -> impl Iterator<Item = &mut Segment<S>> {
        let quiet = quiet.as_nanos() as u64;
        self.partitions.values_mut().map(|p| &mut p.current).filter(move |s| s.unpublished > 0 && now.saturating_sub(s.last_input) >= quiet).map(|s| {
            s.unpublished = 0;
            s
        })
    }

    /// Every open segment with records not yet published (shutdown: publish what is there).
    pub fn take_unpublished(&mut self) -> impl Iterator<Item = &mut Segment<S>> {
        self.partitions.values_mut().map(|p| &mut p.current).filter(|s| s.unpublished > 0).map(|s| {
            s.unpublished = 0;
            s
        })
    }

    /// The first offset of `source`'s open segment: its position may be committed up to there.
    pub fn low_watermark(&self, source: SourcePartition) -> Option<i64> {
        self.partitions.get(&source).map(|p| p.current.first_offset)
    }

    /// Forgets the partitions (revoked and committed): their next owner replays their open
    /// segments from the committed position.
    pub fn release(&mut self, sources: &[SourcePartition]) {
        self.partitions.retain(|source, _| !sources.contains(source));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const S: u64 = 1_000_000_000;

    fn at(partition: i32, offset: i64) -> SourceOffset {
        SourceOffset { source: SourcePartition { input: 0, partition }, offset }
    }

    /// (first offset, [(window start in seconds, records)]) of every segment closed, and of the
    /// open ones at the end, for records given as (partition, event time in seconds) from `from`.
    fn segments(records: &[(i32, u64)], from: usize) -> Vec<(i32, i64, Vec<(u64, u64)>)> {
        let mut segments: Segments<u64> = Segments::new(Duration::from_secs(60), Duration::from_secs(10));
        let mut out = Vec::new();
        let mut push = |s: Segment<u64>| out.push((s.source.partition, s.first_offset, s.windows.iter().map(|(w, n)| (w / S, *n)).collect::<Vec<_>>()));
        for (offset, &(partition, seconds)) in records.iter().enumerate().skip(from) {
            let (closed, count, _) = segments.observe(at(partition, offset as i64), None, seconds * S, 0);
            *count += 1;
            if let Some(closed) = closed {
                push(closed);
            }
        }
        let mut open: Vec<_> = segments.partitions.into_values().map(|p| p.current).collect();
        open.sort_by_key(|s| s.source);
        for s in open {
            push(s);
        }
        out
    }

    #[test]
    fn a_late_record_counts_in_its_own_window_once() {
        let records = [(0, 5), (0, 65), (0, 71), (0, 30), (0, 130), (0, 75)];
        assert_eq!(
            segments(&records, 0),
            vec![(0, 0, vec![(0, 1), (60, 1)]), (0, 2, vec![(0, 1), (60, 1)]), (0, 4, vec![(60, 1), (120, 1)])],
            "71 moves the watermark to window 60 (71 - 10 lateness); 30 is then late, in window 0"
        );
    }

    #[test]
    fn a_trace_more_than_a_day_behind_counts_in_no_window() {
        let mut segments: Segments<u64> = Segments::new(Duration::from_secs(60), Duration::from_secs(10));
        let day = 86_400;
        let now = 3 * day * S;
        let (_, count, timeliness) = segments.observe(at(0, 0), None, now, 0);
        *count += 1;
        assert_eq!(timeliness, Timeliness::OnTime);
        let (_, count, timeliness) = segments.observe(at(0, 1), None, now - (day - 120) * S, 0);
        *count += 1;
        assert_eq!(timeliness, Timeliness::Late, "within a day: counted, as late");
        let (_, count, timeliness) = segments.observe(at(0, 2), None, now - 2 * day * S, 0);
        *count += 1;
        assert_eq!(timeliness, Timeliness::TooLate);
        let open = &segments.partitions[&SourcePartition { input: 0, partition: 0 }].current;
        assert_eq!(open.windows.len(), 2, "the too-late trace opened no window");
        assert_eq!(open.records, 3, "but the segment covers its record");
        assert_eq!((segments.late, segments.too_late), (1, 1));
    }

    #[test]
    fn a_replay_from_a_segment_start_yields_the_same_segments() {
        let records = [(0, 5), (1, 3), (0, 65), (0, 90), (1, 70), (0, 40), (1, 200), (0, 100), (0, 150), (1, 190), (0, 61)];
        let whole = segments(&records, 0);
        // Partition 0's segments start at offsets 0, 3 and 8; replaying from 3 (the first run's
        // oldest open segment of partition 0 at some point) gives the same segments from there.
        let replayed = segments(&records, 3);
        for segment in replayed.iter().filter(|s| s.0 == 0) {
            assert!(whole.contains(segment), "{segment:?} not in {whole:?}");
        }
        assert_eq!(replayed.iter().filter(|s| s.0 == 0).count(), whole.iter().filter(|s| s.0 == 0 && s.1 >= 3).count());
    }
}
