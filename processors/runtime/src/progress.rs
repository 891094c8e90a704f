//! Per-partition offset progress: what has been consumed, which outputs are still in flight, and
//! from that the position that is safe to commit (see the crate docs for the protocol).

use std::collections::{BTreeMap, HashMap};

use tracepipe_processor::{SourceOffset, SourcePartition};

#[derive(Debug, Default)]
pub struct PartitionProgress {
    /// One past the last offset handed to the processor; `None` until the first message.
    next_offset: Option<i64>,
    /// Input offset → number of outputs holding it that the broker has not acknowledged.
    in_flight: BTreeMap<i64, u32>,
    /// The last position committed (or requested).
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

/// Progress of every assigned partition.
#[derive(Debug, Default)]
pub struct Progress {
    partitions: HashMap<SourcePartition, PartitionProgress>,
    in_flight_total: usize,
}

impl Progress {
    pub fn assign(&mut self, source: SourcePartition) {
        self.partitions.entry(source).or_default();
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
        let partition = self.partitions.entry(at.source).or_default();
        partition.next_offset = Some(partition.next_offset.map_or(at.offset + 1, |n| n.max(at.offset + 1)));
    }

    pub fn hold(&mut self, at: SourceOffset) {
        // Outputs for a partition revoked meanwhile still count, and are released by acks.
        *self.partitions.entry(at.source).or_default().in_flight.entry(at.offset).or_insert(0) += 1;
        self.in_flight_total += 1;
    }

    pub fn release(&mut self, at: SourceOffset) {
        let Some(partition) = self.partitions.get_mut(&at.source) else { return };
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

    /// Positions that moved past what was last committed, marked as committed.
    pub fn advance_commits(
        &mut self,
        only: Option<&[SourcePartition]>,
        low_watermark: impl Fn(SourcePartition) -> Option<i64>,
    ) -> Vec<(SourcePartition, i64)> {
        let mut out = Vec::new();
        for (source, partition) in &mut self.partitions {
            if only.is_some_and(|only| !only.contains(source)) {
                continue;
            }
            let Some(position) = partition.commit_position(low_watermark(*source)) else { continue };
            if partition.committed.is_none_or(|c| position > c) {
                partition.committed = Some(position);
                out.push((*source, position));
            }
        }
        out
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

    #[test]
    fn commits_only_below_unacknowledged_outputs_and_the_watermark() {
        let mut progress = Progress::default();
        progress.assign(P0);
        assert!(progress.advance_commits(None, |_| None).is_empty(), "nothing consumed yet");
        for offset in 10..15 {
            progress.consumed(at(offset));
        }
        progress.hold(at(11));
        progress.hold(at(11));
        progress.hold(at(13));
        assert_eq!(progress.advance_commits(None, |_| None), vec![(P0, 11)]);
        progress.release(at(11));
        assert!(progress.advance_commits(None, |_| None).is_empty(), "one output of 11 still in flight");
        progress.release(at(11));
        assert_eq!(progress.advance_commits(None, |_| None), vec![(P0, 13)]);
        progress.release(at(13));
        assert_eq!(progress.advance_commits(None, |_| Some(12)), vec![], "watermark holds 12");
        assert_eq!(progress.advance_commits(None, |_| None), vec![(P0, 15)]);
        assert_eq!(progress.in_flight(), 0);
    }

    #[test]
    fn revoke_forgets_in_flight_outputs() {
        let mut progress = Progress::default();
        progress.consumed(at(1));
        progress.hold(at(1));
        assert_eq!(progress.revoke(P0), 1);
        assert_eq!(progress.in_flight(), 0);
        progress.release(at(1));
        assert_eq!(progress.in_flight(), 0);
    }
}
