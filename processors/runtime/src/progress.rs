//! Per-partition offset progress: what has been consumed, which outputs are still in flight, and
//! from that the position that is safe to commit (see the crate docs for the protocol).

use std::collections::{BTreeMap, HashMap};

use tracepipe_processor::{SourceOffset, SourcePartition};

#[derive(Debug, Default)]
pub struct PartitionProgress {
    /// Which assignment of the partition this is: a delivery report for an output held under an
    /// earlier one (the partition revoked and assigned again meanwhile) releases nothing here.
    assignment: u32,
    /// One past the last offset handed to the processor; `None` until the first message.
    next_offset: Option<i64>,
    /// Input offset → number of outputs holding it that the broker has not acknowledged.
    in_flight: BTreeMap<i64, u32>,
    /// The last position the broker accepted as committed.
    committed: Option<i64>,
}

impl PartitionProgress {
    /// The position that is safe to commit given the processor's low watermark.
    pub fn commit_position(&self, low_watermark: Option<i64>) -> Option<i64> {
        let mut position = self.next_offset?;
        if let Some((&oldest_in_flight, _)) = self.in_flight.first_key_value() {
            position = position.min(oldest_in_flight);
        }
        if let Some(watermark) = low_watermark {
            position = position.min(watermark);
        }
        Some(position)
    }
}

/// An input offset held by an output, under one assignment of its partition.
#[derive(Clone, Copy, Debug)]
pub struct Held {
    pub at: SourceOffset,
    assignment: u32,
}

/// Progress of every assigned partition.
#[derive(Debug, Default)]
pub struct Progress {
    partitions: HashMap<SourcePartition, PartitionProgress>,
    in_flight_total: usize,
    assignments: u32,
}

impl Progress {
    pub fn assign(&mut self, source: SourcePartition) {
        self.partition(source);
    }

    fn partition(&mut self, source: SourcePartition) -> &mut PartitionProgress {
        let assignments = &mut self.assignments;
        self.partitions.entry(source).or_insert_with(|| {
            *assignments = assignments.wrapping_add(1);
            PartitionProgress { assignment: *assignments, ..PartitionProgress::default() }
        })
    }

    /// Forgets a revoked partition; returns how many of its outputs were still in flight.
    pub fn revoke(&mut self, source: SourcePartition) -> usize {
        let in_flight = self
            .partitions
            .remove(&source)
            .map(|p| p.in_flight.values().map(|&n| n as usize).sum())
            .unwrap_or(0);
        self.in_flight_total -= in_flight;
        in_flight
    }

    pub fn consumed(&mut self, at: SourceOffset) {
        let partition = self.partition(at.source);
        partition.next_offset = Some(partition.next_offset.map_or(at.offset + 1, |n| n.max(at.offset + 1)));
    }

    pub fn hold(&mut self, at: SourceOffset) -> Held {
        // Outputs for a partition revoked meanwhile still count, and are released by acks.
        let partition = self.partition(at.source);
        *partition.in_flight.entry(at.offset).or_insert(0) += 1;
        let assignment = partition.assignment;
        self.in_flight_total += 1;
        Held { at, assignment }
    }

    pub fn release(&mut self, held: Held) {
        let at = held.at;
        let Some(partition) = self.partitions.get_mut(&at.source).filter(|p| p.assignment == held.assignment) else { return };
        if let Some(count) = partition.in_flight.get_mut(&at.offset) {
            *count -= 1;
            if *count == 0 {
                partition.in_flight.remove(&at.offset);
            }
            self.in_flight_total -= 1;
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight_total
    }

    pub fn sources(&self) -> impl Iterator<Item = SourcePartition> + '_ {
        self.partitions.keys().copied()
    }

    /// Positions past what the broker last accepted: what to commit now. A position counts as
    /// committed only once [`Progress::acknowledge`] says the broker took it, so a commit that
    /// failed (or whose answer never came) is simply asked for again by the next call.
    pub fn to_commit(&self, only: Option<&[SourcePartition]>, low_watermark: impl Fn(SourcePartition) -> Option<i64>) -> Vec<(SourcePartition, i64)> {
        let mut out = Vec::new();
        for (source, partition) in &self.partitions {
            if only.is_some_and(|only| !only.contains(source)) {
                continue;
            }
            let Some(position) = partition.commit_position(low_watermark(*source)) else { continue };
            if partition.committed.is_none_or(|c| position > c) {
                out.push((*source, position));
            }
        }
        out
    }

    /// The broker accepted `position` as the committed offset of `source`. Answers may come back
    /// out of order (an older asynchronous commit after a newer synchronous one): the committed
    /// position never moves back.
    pub fn acknowledge(&mut self, source: SourcePartition, position: i64) {
        if let Some(partition) = self.partitions.get_mut(&source) {
            partition.committed = Some(partition.committed.map_or(position, |c| c.max(position)));
        }
    }

    /// The position the broker last accepted for `source`.
    pub fn committed(&self, source: SourcePartition) -> Option<i64> {
        self.partitions.get(&source)?.committed
    }

    /// Messages consumed but not yet committed, per partition (the pipeline's own lag).
    pub fn uncommitted(&self) -> impl Iterator<Item = (SourcePartition, i64)> + '_ {
        self.partitions.iter().filter_map(|(s, p)| Some((*s, p.next_offset? - p.committed.unwrap_or(p.next_offset?))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P0: SourcePartition = SourcePartition { input: 0, partition: 0 };

    fn at(offset: i64) -> SourceOffset {
        SourceOffset { source: P0, offset }
    }

    /// Commits as a broker that accepts every commit at once would see them.
    fn commit_all(progress: &mut Progress, low: Option<i64>) -> Vec<(SourcePartition, i64)> {
        let positions = progress.to_commit(None, |_| low);
        for &(source, position) in &positions {
            progress.acknowledge(source, position);
        }
        positions
    }

    #[test]
    fn commits_only_below_unacknowledged_outputs_and_the_watermark() {
        let mut progress = Progress::default();
        progress.assign(P0);
        assert!(commit_all(&mut progress, None).is_empty(), "nothing consumed yet");
        for offset in 10..15 {
            progress.consumed(at(offset));
        }
        let first = progress.hold(at(11));
        let second = progress.hold(at(11));
        let third = progress.hold(at(13));
        assert_eq!(commit_all(&mut progress, None), vec![(P0, 11)]);
        progress.release(first);
        assert!(commit_all(&mut progress, None).is_empty(), "one output of 11 still in flight");
        progress.release(second);
        assert_eq!(commit_all(&mut progress, None), vec![(P0, 13)]);
        progress.release(third);
        assert_eq!(commit_all(&mut progress, Some(12)), vec![], "watermark holds 12");
        assert_eq!(commit_all(&mut progress, None), vec![(P0, 15)]);
        assert_eq!(progress.in_flight(), 0);
    }

    #[test]
    fn a_commit_the_broker_refused_is_asked_for_again() {
        let mut progress = Progress::default();
        progress.assign(P0);
        progress.consumed(at(4));
        assert_eq!(progress.to_commit(None, |_| None), vec![(P0, 5)]);
        // The broker refused it (no acknowledgement): the next round asks for it again.
        assert_eq!(progress.to_commit(None, |_| None), vec![(P0, 5)]);
        progress.consumed(at(5));
        progress.acknowledge(P0, 6);
        progress.acknowledge(P0, 5);
        assert_eq!(progress.committed(P0), Some(6), "a late answer to an older commit does not move it back");
        assert!(progress.to_commit(None, |_| None).is_empty());
    }

    #[test]
    fn revoke_forgets_in_flight_outputs() {
        let mut progress = Progress::default();
        progress.consumed(at(1));
        let held = progress.hold(at(1));
        assert_eq!(progress.revoke(P0), 1);
        assert_eq!(progress.in_flight(), 0);
        progress.release(held);
        assert_eq!(progress.in_flight(), 0);
    }

    #[test]
    fn a_late_report_from_an_earlier_assignment_releases_nothing_new() {
        let mut progress = Progress::default();
        progress.assign(P0);
        progress.consumed(at(7));
        let before_revoke = progress.hold(at(7));
        progress.revoke(P0);
        // The partition comes back and offset 7 is read and held again.
        progress.assign(P0);
        progress.consumed(at(7));
        let after_assign = progress.hold(at(7));
        progress.release(before_revoke);
        assert_eq!(progress.in_flight(), 1, "the old report must not free the new output");
        assert!(progress.to_commit(None, |_| None).iter().all(|&(_, position)| position <= 7));
        progress.release(after_assign);
        assert_eq!(progress.to_commit(None, |_| None), vec![(P0, 8)]);
    }

    use proptest::prelude::*;

    proptest! {
        /// Whatever the broker accepts or refuses, in whatever order its answers come: the
        /// committed position only ever names offsets whose outputs were all acknowledged, never
        /// moves back, and reaches the end of the input once the broker accepts the last ask.
        #[test]
        fn committed_positions_are_safe_and_reach_the_end(steps in proptest::collection::vec((0u8..4, any::<bool>()), 1..200)) {
            let mut progress = Progress::default();
            progress.assign(P0);
            let mut next = 0i64;
            let mut held: Vec<Held> = Vec::new();
            let mut asked: Vec<i64> = Vec::new();
            let mut last_committed = None;
            for (action, accept) in steps {
                match action {
                    0 => {
                        progress.consumed(at(next));
                        if accept {
                            held.push(progress.hold(at(next)));
                        }
                        next += 1;
                    }
                    1 => {
                        if let Some(output) = held.pop() {
                            progress.release(output);
                        }
                    }
                    2 => asked.extend(progress.to_commit(None, |_| None).into_iter().map(|(_, p)| p)),
                    _ => {
                        // The broker answers the oldest or newest outstanding ask, or refuses it.
                        let answer = if accept { asked.pop() } else if asked.is_empty() { None } else { Some(asked.remove(0)) };
                        if let (Some(position), true) = (answer, accept || next % 2 == 0) {
                            progress.acknowledge(P0, position);
                        }
                    }
                }
                let committed = progress.committed(P0);
                prop_assert!(committed >= last_committed, "moved back from {last_committed:?} to {committed:?}");
                last_committed = committed;
                if let Some(position) = committed {
                    prop_assert!(position <= next);
                    if let Some(oldest_held) = held.iter().map(|h| h.at.offset).min() {
                        prop_assert!(position <= oldest_held, "committed {position} past output {oldest_held} still in flight");
                    }
                }
            }
            for output in held.drain(..) {
                progress.release(output);
            }
            let positions = progress.to_commit(None, |_| None);
            for (source, position) in positions {
                progress.acknowledge(source, position);
            }
            if next > 0 {
                prop_assert_eq!(progress.committed(P0), Some(next));
            }
        }
    }
}
