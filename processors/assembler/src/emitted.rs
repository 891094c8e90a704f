//! The trace ids emitted recently, with how many times, so spans that come later go out as
//! numbered late fragments. Bounded: the oldest ids are forgotten first. Its bytes count against
//! the assembler's memory budget.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasherDefault;

use tracepipe_schemas::otlp_proto::IdHasher;
use tracepipe_schemas::TraceId;

pub struct EmittedTraces {
    counts: HashMap<TraceId, u32, BuildHasherDefault<IdHasher>>,
    order: VecDeque<TraceId>,
    capacity: usize,
}

impl EmittedTraces {
    /// Bytes one remembered id takes at most: a map bucket (id, count and control byte) at the
    /// map's lowest load, and the id again in the order queue at its lowest.
    pub const MAX_BYTES_PER_ID: usize = 2 * (16 + 4 + 1) + 2 * 16;

    pub fn new(capacity: usize) -> Self {
        EmittedTraces { counts: HashMap::default(), order: VecDeque::new(), capacity: capacity.max(1) }
    }

    /// How many times the trace has been emitted (0 if never, or forgotten).
    pub fn emissions(&self, trace_id: &TraceId) -> u32 {
        self.counts.get(trace_id).copied().unwrap_or(0)
    }

    pub fn record(&mut self, trace_id: TraceId) {
        let count = self.counts.entry(trace_id).or_insert(0);
        *count += 1;
        if *count == 1 {
            self.order.push_back(trace_id);
            if self.order.len() > self.capacity {
                if let Some(oldest) = self.order.pop_front() {
                    self.counts.remove(&oldest);
                }
            }
        }
    }

    /// Bytes held by the map and the queue as allocated.
    pub fn cost(&self) -> usize {
        // The map's buckets are a power of two, at most 7/8 of them usable.
        let buckets = if self.counts.capacity() == 0 { 0 } else { (self.counts.capacity() * 8 / 7).next_power_of_two() };
        buckets * (std::mem::size_of::<(TraceId, u32)>() + 1) + self.order.capacity() * std::mem::size_of::<TraceId>()
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}
