//! Event-time windows: a trace counts in the window its start falls in. A window stays open for
//! `lateness` past its end, so traces that arrive late (assembly waits for grace and timeouts)
//! still count in it; a trace older than every open window counts in the oldest one, and one
//! from the future (clock skew) in the window of now. Each window remembers the first input
//! offset of every partition it covers: until its records are out and acknowledged, those offsets
//! are not committed, so a crash replays what the window held.

use std::collections::VecDeque;

use tracepipe_processor::{SourceOffset, SourcePartition, UnixNanos};

pub struct Window<S> {
    pub start: UnixNanos,
    pub state: S,
    /// The first offset of each partition this window covers.
    pub first_offsets: Vec<SourceOffset>,
}

pub struct Windows<S> {
    length: u64,
    lateness: u64,
    open: VecDeque<Window<S>>,
    /// Traces counted in another window than their own (too old, or from the future).
    pub displaced: u64,
}

impl<S: Default> Windows<S> {
    pub fn new(length: std::time::Duration, lateness: std::time::Duration) -> Self {
        Windows { length: length.as_nanos().max(1) as u64, lateness: lateness.as_nanos() as u64, open: VecDeque::new(), displaced: 0 }
    }

    pub fn length_nanos(&self) -> u64 {
        self.length
    }

    /// The window for an event at `event_time`, seen at `now`, from input `at`.
    pub fn window_for(&mut self, event_time: UnixNanos, now: UnixNanos, at: Option<SourceOffset>) -> &mut Window<S> {
        let mut start = event_time - event_time % self.length;
        let now_start = now - now % self.length;
        if start > now_start {
            start = now_start;
            self.displaced += 1;
        }
        if let Some(oldest) = self.open.front().map(|w| w.start) {
            if start < oldest && start + self.length + self.lateness <= now {
                start = oldest;
                self.displaced += 1;
            }
        }
        let index = match self.open.binary_search_by_key(&start, |w| w.start) {
            Ok(i) => i,
            Err(i) => {
                self.open.insert(i, Window { start, state: S::default(), first_offsets: Vec::new() });
                i
            }
        };
        let window = &mut self.open[index];
        if let Some(at) = at {
            if !window.first_offsets.iter().any(|o| o.source == at.source) {
                window.first_offsets.push(at);
            }
        }
        window
    }

    /// Takes the windows whose end plus lateness has passed at `now`, oldest first.
    pub fn take_closed(&mut self, now: UnixNanos) -> Vec<Window<S>> {
        let mut closed = Vec::new();
        while self.open.front().is_some_and(|w| w.start + self.length + self.lateness <= now) {
            closed.extend(self.open.pop_front());
        }
        closed
    }

    /// Takes every open window (shutdown or rebalance: what was seen goes out as partial windows).
    pub fn take_all(&mut self) -> Vec<Window<S>> {
        self.open.drain(..).collect()
    }

    pub fn low_watermark(&self, source: SourcePartition) -> Option<i64> {
        self.open.iter().flat_map(|w| &w.first_offsets).filter(|o| o.source == source).map(|o| o.offset).min()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const S: u64 = 1_000_000_000;

    fn at(partition: i32, offset: i64) -> Option<SourceOffset> {
        Some(SourceOffset { source: SourcePartition { input: 0, partition }, offset })
    }

    #[test]
    fn events_land_in_their_window_until_it_closes() {
        let mut windows: Windows<u32> = Windows::new(Duration::from_secs(60), Duration::from_secs(30));
        windows.window_for(61 * S, 70 * S, at(0, 5)).state += 1;
        windows.window_for(59 * S, 70 * S, at(0, 6)).state += 1;
        windows.window_for(62 * S, 70 * S, at(1, 9)).state += 1;
        assert_eq!(windows.low_watermark(SourcePartition { input: 0, partition: 0 }), Some(5));
        assert!(windows.take_closed(89 * S).is_empty());
        let closed = windows.take_closed(90 * S);
        assert_eq!(closed.iter().map(|w| (w.start, w.state)).collect::<Vec<_>>(), vec![(0, 1)]);
        assert_eq!(windows.low_watermark(SourcePartition { input: 0, partition: 0 }), Some(5));
        // Too old for any open window: counted in the oldest open one.
        windows.window_for(10 * S, 95 * S, None).state += 1;
        // From the future: counted now.
        windows.window_for(10_000 * S, 95 * S, None).state += 1;
        assert_eq!(windows.displaced, 2);
        let rest = windows.take_all();
        assert_eq!(rest.iter().map(|w| (w.start, w.state)).collect::<Vec<_>>(), vec![(60 * S, 4)]);
        assert_eq!(windows.low_watermark(SourcePartition { input: 0, partition: 0 }), None);
    }
}
