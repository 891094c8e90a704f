//! The structure of one trace: parents, children and depths; the entries (roots, and messaging
//! consumers, which start an asynchronous part of the trace); the critical path of each entry; and
//! the root-cause error span. Built into reused buffers, so a trace costs no allocation once they
//! have grown.
//!
//! Bad structure is repaired and counted, never trusted: a parent id that is not in the trace
//! makes the span an orphan; a parent chain that loops is cut; a span that ends before it starts
//! lasts zero; a child outside its parent's time (clock skew between services) is clamped to it.

use tracepipe_schemas::trace_view::{kind, SpanView};

pub const NONE: u32 = u32::MAX;

/// What was wrong with a trace's structure.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StructureProblems {
    /// Spans whose parent is not in the trace (missing, or sent in another fragment).
    pub missing_parents: u32,
    /// Parent chains that looped back on themselves, cut at one span.
    pub cycles: u32,
    /// Spans with an id another span of the trace already has; only the first is a parent.
    pub duplicate_span_ids: u32,
    pub negative_durations: u32,
    /// Synchronous children that start before or end after their parent.
    pub skewed_children: u32,
}

#[derive(Debug, Default)]
pub struct TraceTree {
    parent: Vec<u32>,
    child_start: Vec<u32>,
    children: Vec<u32>,
    depth: Vec<u32>,
    /// Whether each span's parent id pointed at nothing.
    orphan: Vec<bool>,
    by_id: Vec<([u8; 8], u32)>,
    state: Vec<u8>,
    path: Vec<u32>,
    stack: Vec<(u32, u64, u64)>,
    window: Vec<(u64, u64, u32)>,
    pub problems: StructureProblems,
}

impl TraceTree {
    /// Rebuilds the tree for `spans`, reusing the buffers.
    pub fn build(&mut self, spans: &[SpanView<'_>]) {
        let n = spans.len();
        assert!(n < NONE as usize, "a trace of {n} spans");
        self.problems = StructureProblems::default();
        self.by_id.clear();
        self.by_id.extend(spans.iter().enumerate().map(|(i, s)| (s.span_id, i as u32)));
        self.by_id.sort_unstable();
        for pair in self.by_id.windows(2) {
            if pair[0].0 == pair[1].0 {
                self.problems.duplicate_span_ids += 1;
            }
        }
        self.parent.clear();
        self.orphan.clear();
        for (i, span) in spans.iter().enumerate() {
            if span.end_unix_nano < span.start_unix_nano {
                self.problems.negative_durations += 1;
            }
            let parent = match span.parent_span_id {
                None => NONE,
                Some(id) => match self.by_id.binary_search_by(|(candidate, _)| candidate.cmp(&id)) {
                    // The first of duplicates is the parent: ids sort equal, so step back to it.
                    Ok(mut at) => {
                        while at > 0 && self.by_id[at - 1].0 == id {
                            at -= 1;
                        }
                        let p = self.by_id[at].1;
                        if p as usize == i {
                            self.problems.cycles += 1;
                            NONE
                        } else {
                            p
                        }
                    }
                    Err(_) => {
                        self.problems.missing_parents += 1;
                        NONE
                    }
                },
            };
            self.orphan.push(span.parent_span_id.is_some() && parent == NONE);
            self.parent.push(parent);
        }
        self.cut_cycles();
        self.link_children();
        self.compute_depths(spans);
    }

    fn cut_cycles(&mut self) {
        const UNSEEN: u8 = 0;
        const ON_PATH: u8 = 1;
        const DONE: u8 = 2;
        self.state.clear();
        self.state.resize(self.parent.len(), UNSEEN);
        for start in 0..self.parent.len() {
            if self.state[start] != UNSEEN {
                continue;
            }
            self.path.clear();
            let mut at = start as u32;
            while at != NONE && self.state[at as usize] == UNSEEN {
                self.state[at as usize] = ON_PATH;
                self.path.push(at);
                at = self.parent[at as usize];
            }
            if at != NONE && self.state[at as usize] == ON_PATH {
                self.parent[at as usize] = NONE;
                self.problems.cycles += 1;
            }
            for &p in &self.path {
                self.state[p as usize] = DONE;
            }
        }
    }

    fn link_children(&mut self) {
        let n = self.parent.len();
        self.child_start.clear();
        self.child_start.resize(n + 1, 0);
        for &p in &self.parent {
            if p != NONE {
                self.child_start[p as usize + 1] += 1;
            }
        }
        for i in 0..n {
            self.child_start[i + 1] += self.child_start[i];
        }
        self.children.clear();
        self.children.resize(self.child_start[n] as usize, 0);
        // `path` serves as each parent's fill cursor.
        self.path.clear();
        self.path.extend_from_slice(&self.child_start[..n]);
        for (i, &p) in self.parent.iter().enumerate() {
            if p != NONE {
                let slot = &mut self.path[p as usize];
                self.children[*slot as usize] = i as u32;
                *slot += 1;
            }
        }
    }

    fn compute_depths(&mut self, spans: &[SpanView<'_>]) {
        let n = self.parent.len();
        self.depth.clear();
        self.depth.resize(n, 0);
        self.path.clear();
        self.path.extend((0..n as u32).filter(|&i| self.parent[i as usize] == NONE));
        // Breadth first from the roots; every span is reached once, cycles having been cut.
        let mut next = 0;
        while next < self.path.len() {
            let at = self.path[next];
            next += 1;
            let (start, end) = window_of(&spans[at as usize]);
            let children = &self.children[self.child_start[at as usize] as usize..self.child_start[at as usize + 1] as usize];
            for &c in children {
                self.depth[c as usize] = self.depth[at as usize] + 1;
                let child = &spans[c as usize];
                if is_synchronous(child) && (child.start_unix_nano < start || child.end_unix_nano > end) {
                    self.problems.skewed_children += 1;
                }
                self.path.push(c);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.parent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.parent.is_empty()
    }

    pub fn parent(&self, span: u32) -> Option<u32> {
        let p = self.parent[span as usize];
        (p != NONE).then_some(p)
    }

    pub fn children(&self, span: u32) -> &[u32] {
        let i = span as usize;
        &self.children[self.child_start[i] as usize..self.child_start[i + 1] as usize]
    }

    pub fn depth(&self, span: u32) -> u32 {
        self.depth[span as usize]
    }

    /// A root (no parent id at all) or a messaging consumer with its producer in the trace: where
    /// a request, or an asynchronous continuation of it, begins. Orphans are not entries: their
    /// parent is elsewhere, so their duration is not an endpoint's.
    pub fn is_entry(&self, spans: &[SpanView<'_>], span: u32) -> bool {
        let s = &spans[span as usize];
        if self.orphan[span as usize] {
            return false;
        }
        s.is_root() || s.kind == kind::CONSUMER
    }

    /// Walks the critical path of `entry` (the chain of work that determined when it finished, as
    /// Jaeger computes it): from the end backwards, the child that finished last before the
    /// cursor is on the path, then the cursor moves to that child's start. `on_segment` gets each
    /// span on the path with its self time there; the segments add up to the entry's duration.
    /// Messaging consumers below the entry are asynchronous (their own entries) and not followed.
    pub fn critical_path(&mut self, spans: &[SpanView<'_>], entry: u32, mut on_segment: impl FnMut(u32, u64)) {
        let (start, end) = window_of(&spans[entry as usize]);
        self.stack.clear();
        self.stack.push((entry, start, end));
        while let Some((span, lo, hi)) = self.stack.pop() {
            self.window.clear();
            for &c in &self.children[self.child_start[span as usize] as usize..self.child_start[span as usize + 1] as usize] {
                let child = &spans[c as usize];
                if !is_synchronous(child) {
                    continue;
                }
                let c_start = child.start_unix_nano.clamp(lo, hi);
                let c_end = child.end_unix_nano.clamp(c_start, hi);
                self.window.push((c_end, c_start, c));
            }
            self.window.sort_unstable_by(|a, b| b.cmp(a));
            let mut cursor = hi;
            for i in 0..self.window.len() {
                let (c_end, c_start, c) = self.window[i];
                if c_end > cursor {
                    continue;
                }
                on_segment(span, cursor - c_end);
                self.stack.push((c, c_start, c_end));
                cursor = c_start;
            }
            on_segment(span, cursor - lo);
        }
    }

    /// The span where the trace's failure originated. Candidates are the error spans without an
    /// erroring child (the deepest of each chain of errors); when independent failures leave
    /// several, the one that failed first (ended first) is the origin, the deeper one on a tie.
    pub fn root_cause(&self, spans: &[SpanView<'_>]) -> Option<u32> {
        (0..spans.len() as u32)
            .filter(|&i| spans[i as usize].is_error())
            .filter(|&i| !self.children(i).iter().any(|&c| spans[c as usize].is_error()))
            .min_by_key(|&i| (spans[i as usize].end_unix_nano, std::cmp::Reverse(self.depth(i)), i))
    }
}

/// A span's time, a negative duration counting as zero.
fn window_of(span: &SpanView<'_>) -> (u64, u64) {
    (span.start_unix_nano, span.end_unix_nano.max(span.start_unix_nano))
}

/// Whether a child runs within its parent's time: all but messaging consumers, which the
/// producer does not wait for.
fn is_synchronous(span: &SpanView<'_>) -> bool {
    span.kind != kind::CONSUMER
}

#[cfg(test)]
mod tests {
    use tracepipe_schemas::trace_view::SpanView;

    use super::*;

    fn span(id: u8, parent: Option<u8>, start: u64, end: u64) -> SpanView<'static> {
        SpanView {
            resource: 0,
            span_id: [id; 8],
            parent_span_id: parent.map(|p| [p; 8]),
            name: "op",
            kind: kind::SERVER,
            start_unix_nano: start,
            end_unix_nano: end,
            ..Default::default()
        }
    }

    fn path(spans: &[SpanView<'_>], entry: u32) -> Vec<(u8, u64)> {
        let mut tree = TraceTree::default();
        tree.build(spans);
        let mut segments = std::collections::BTreeMap::new();
        tree.critical_path(spans, entry, |s, nanos| {
            if nanos > 0 {
                *segments.entry(spans[s as usize].span_id[0]).or_insert(0) += nanos;
            }
        });
        segments.into_iter().collect()
    }

    #[test]
    fn sequential_children_are_all_on_the_path() {
        // 1: 0..100, calls 2 (10..40) then 3 (50..90).
        let spans = [span(1, None, 0, 100), span(2, Some(1), 10, 40), span(3, Some(1), 50, 90)];
        assert_eq!(path(&spans, 0), vec![(1, 30), (2, 30), (3, 40)]);
    }

    #[test]
    fn of_parallel_children_the_last_to_finish_is_on_the_path() {
        // 2 and 3 overlap; 3 finishes last, and 2 ends after 3 starts so it is off the path.
        let spans = [span(1, None, 0, 100), span(2, Some(1), 10, 60), span(3, Some(1), 20, 80), span(4, Some(3), 30, 70)];
        assert_eq!(path(&spans, 0), vec![(1, 40), (3, 20), (4, 40)]);
        let total: u64 = path(&spans, 0).iter().map(|(_, n)| n).sum();
        assert_eq!(total, 100);
    }

    #[test]
    fn skewed_children_are_clamped_and_counted() {
        // The child's clock is 50 ahead: it appears to end after its parent.
        let spans = [span(1, None, 0, 100), span(2, Some(1), 60, 150)];
        let mut tree = TraceTree::default();
        tree.build(&spans);
        assert_eq!(tree.problems.skewed_children, 1);
        assert_eq!(path(&spans, 0), vec![(1, 60), (2, 40)]);
    }

    #[test]
    fn consumers_are_their_own_entries() {
        let mut consumer = span(3, Some(2), 200, 300);
        consumer.kind = kind::CONSUMER;
        let mut producer = span(2, Some(1), 10, 20);
        producer.kind = kind::PRODUCER;
        let spans = [span(1, None, 0, 100), producer, consumer];
        let mut tree = TraceTree::default();
        tree.build(&spans);
        assert!(tree.is_entry(&spans, 0) && tree.is_entry(&spans, 2) && !tree.is_entry(&spans, 1));
        assert_eq!(tree.problems.skewed_children, 0, "a consumer may run after its producer");
        assert_eq!(path(&spans, 0), vec![(1, 90), (2, 10)]);
        assert_eq!(path(&spans, 2), vec![(3, 100)]);
    }

    #[test]
    fn cycles_missing_parents_duplicates_and_negative_durations_are_repaired_and_counted() {
        let spans = [
            span(1, Some(2), 0, 10),
            span(2, Some(1), 0, 10),
            span(3, Some(3), 0, 10),
            span(4, Some(9), 5, 1),
            span(4, None, 0, 10),
        ];
        let mut tree = TraceTree::default();
        tree.build(&spans);
        assert_eq!(tree.problems.cycles, 2, "1 <-> 2 and 3 -> 3");
        assert_eq!(tree.problems.missing_parents, 1);
        assert_eq!(tree.problems.duplicate_span_ids, 1);
        assert_eq!(tree.problems.negative_durations, 1);
        assert!(!tree.is_entry(&spans, 3), "an orphan is not an endpoint");
        for entry in 0..spans.len() as u32 {
            tree.critical_path(&spans, entry, |_, _| {});
        }
    }

    #[test]
    fn root_cause_is_the_error_no_erroring_child_explains() {
        let mut spans = vec![span(1, None, 0, 100), span(2, Some(1), 10, 90), span(3, Some(2), 20, 80), span(4, Some(1), 91, 99)];
        for i in [0, 1, 2] {
            spans[i].status_code = 2;
        }
        let mut tree = TraceTree::default();
        tree.build(&spans);
        assert_eq!(tree.root_cause(&spans), Some(2));
        spans[2].status_code = 0;
        tree.build(&spans);
        assert_eq!(tree.root_cause(&spans), Some(1), "2 is not explained by its child any more");
        spans.iter_mut().for_each(|s| s.status_code = 0);
        assert_eq!(tree.root_cause(&spans), None);
    }

    #[test]
    fn a_deep_chain_does_not_recurse() {
        let spans: Vec<_> = (0..100_000u32)
            .map(|i| {
                let mut s = span(0, None, u64::from(i), 200_000 - u64::from(i));
                s.span_id = (u64::from(i) + 1).to_be_bytes();
                s.parent_span_id = (i > 0).then(|| u64::from(i).to_be_bytes());
                s
            })
            .collect();
        let mut tree = TraceTree::default();
        tree.build(&spans);
        let mut total = 0;
        tree.critical_path(&spans, 0, |_, n| total += n);
        assert_eq!(total, 200_000);
        assert_eq!(tree.depth(99_999), 99_999);
    }
}
