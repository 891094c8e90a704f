//! The funnels processor: follows one correlation value (a cart id, an order id) through the steps
//! of a funnel of topology.yaml's `funnels:`, which happen in separate traces (add to cart, then
//! check out, then pay), and publishes each journey, how far it went and the time between its
//! steps, as a [`FunnelJourney`] on the rollups topic.
//!
//! The analyzer publishes every trace's funnel steps to the funnel-steps topic keyed by funnel and
//! correlation value, so all the steps of one journey come to one partition here. A journey opens
//! with a step, and closes when it has every step, in order (each no earlier than the one before,
//! within `join_window` of the first), or when the partition's event-time watermark (its latest
//! step time less `lateness`) passes the first step's time plus the join window. A partition quiet
//! for `lateness` moves its watermark on by the clock, so the last journeys close too.
//!
//! # Memory, offsets and exactness
//!
//! At most `max_journeys` are open; past that the one closest to its deadline is closed early, as
//! it stands (`evicted`). An open journey holds its first record's offset uncommitted, and a closed
//! one's record holds it until the broker has it, so a crash or a rebalance replays every open
//! journey from the committed position. Journeys are keyed by funnel, correlation value and first
//! step time, and a version with more steps replaces one with fewer in the store: a replay, or a
//! step published twice, changes nothing.

pub mod config;
mod metrics;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use rustc_hash::FxHashMap;
use tracepipe_analytics::transactions::FunnelSpec;
use tracepipe_processor::{Emitter, InputRecord, OutputId, Poison, Processor, SourceOffset, SourcePartition, UnixNanos};
use tracepipe_schemas::analytics::{FunnelJourney, FunnelStep, JourneyStep, Rollup, ROLLUP_SCHEMA};

#[derive(Debug, Clone, PartialEq)]
pub struct FunnelsConfig {
    /// How far behind a partition's latest step time a step may come and still join its journey.
    pub lateness: Duration,
    pub max_journeys: usize,
}

impl Default for FunnelsConfig {
    fn default() -> Self {
        FunnelsConfig { lateness: Duration::from_secs(30), max_journeys: 200_000 }
    }
}

/// Occurrences of one step a journey keeps (the earliest): enough to find one after the step
/// before, bounded however often a value repeats a step.
const MAX_OCCURRENCES: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Occurrence {
    at: u64,
    trace_id: [u8; 16],
    error: bool,
}

type JourneyId = u64;

struct Journey {
    funnel: usize,
    correlation: String,
    source: SourcePartition,
    first_offset: i64,
    /// Per step, the occurrences seen, earliest first.
    steps: Vec<Vec<Occurrence>>,
    deadline: u64,
}

impl Journey {
    fn started(&self) -> Option<u64> {
        self.steps[0].first().map(|o| o.at)
    }

    /// What the join window counts from: the first step, or the earliest step while that is missing.
    fn anchor(&self) -> u64 {
        self.started().unwrap_or_else(|| self.steps.iter().filter_map(|s| s.first()).map(|o| o.at).min().unwrap_or(0))
    }

    /// The steps reached: the first step's earliest occurrence, then each step's earliest
    /// occurrence no earlier than the step before and within the join window.
    fn path(&self, window: u64) -> Vec<Occurrence> {
        let Some(first) = self.steps[0].first() else { return Vec::new() };
        let end = first.at.saturating_add(window);
        let mut path = vec![*first];
        let mut at = first.at;
        for step in &self.steps[1..] {
            match step.iter().find(|o| o.at >= at && o.at <= end) {
                Some(o) => {
                    at = o.at;
                    path.push(*o);
                }
                None => break,
            }
        }
        path
    }

    fn add(&mut self, step: usize, occurrence: Occurrence) {
        let seen = &mut self.steps[step];
        if seen.contains(&occurrence) {
            return;
        }
        let at = seen.partition_point(|o| o.at <= occurrence.at);
        if at < MAX_OCCURRENCES {
            seen.insert(at, occurrence);
            seen.truncate(MAX_OCCURRENCES);
        }
    }
}

/// A partition's event time.
#[derive(Debug, Clone, Copy, Default)]
struct Clock {
    latest_step: u64,
    watermark: u64,
    last_input: UnixNanos,
}

pub struct FunnelJoin {
    funnels: Arc<[FunnelSpec]>,
    config: FunnelsConfig,
    output: OutputId,
    by_key: FxHashMap<(usize, String), JourneyId>,
    journeys: FxHashMap<JourneyId, Journey>,
    next_id: JourneyId,
    /// Per partition, (deadline, journey): what its watermark closes.
    deadlines: BTreeMap<SourcePartition, BTreeSet<(u64, JourneyId)>>,
    /// Every open journey by deadline: what memory pressure closes first.
    by_deadline: BTreeSet<(u64, JourneyId)>,
    clocks: BTreeMap<SourcePartition, Clock>,
    /// Per partition, the first offsets of open journeys (with how many start there).
    held: BTreeMap<SourcePartition, BTreeMap<i64, u32>>,
}

impl FunnelJoin {
    pub fn new(funnels: Arc<[FunnelSpec]>, config: FunnelsConfig, output: OutputId) -> Self {
        FunnelJoin {
            funnels,
            config,
            output,
            by_key: FxHashMap::default(),
            journeys: FxHashMap::default(),
            next_id: 0,
            deadlines: BTreeMap::new(),
            by_deadline: BTreeSet::new(),
            clocks: BTreeMap::new(),
            held: BTreeMap::new(),
        }
    }

    pub fn open_journeys(&self) -> usize {
        self.journeys.len()
    }

    fn window(&self, funnel: usize) -> u64 {
        self.funnels[funnel].join_window.as_nanos().min(u128::from(u64::MAX / 4)) as u64
    }

    fn set_deadline(&mut self, id: JourneyId, deadline: u64) {
        let journey = self.journeys.get_mut(&id).expect("open journey");
        let (old, source) = (journey.deadline, journey.source);
        journey.deadline = deadline;
        let per_source = self.deadlines.entry(source).or_default();
        per_source.remove(&(old, id));
        per_source.insert((deadline, id));
        self.by_deadline.remove(&(old, id));
        self.by_deadline.insert((deadline, id));
    }

    fn open(&mut self, funnel: usize, correlation: String, source: SourcePartition, offset: i64) -> JourneyId {
        let id = self.next_id;
        self.next_id += 1;
        let steps = vec![Vec::new(); self.funnels[funnel].steps.len()];
        self.by_key.insert((funnel, correlation.clone()), id);
        self.journeys.insert(id, Journey { funnel, correlation, source, first_offset: offset, steps, deadline: 0 });
        *self.held.entry(source).or_default().entry(offset).or_default() += 1;
        self.deadlines.entry(source).or_default().insert((0, id));
        self.by_deadline.insert((0, id));
        metrics::OPEN.inc();
        id
    }

    /// Closes a journey: publishes it, holding its first offset, unless its first step never came.
    fn close(&mut self, id: JourneyId, closed: &str, out: &mut Emitter) {
        let Some(journey) = self.journeys.remove(&id) else { return };
        metrics::OPEN.dec();
        self.by_key.remove(&(journey.funnel, journey.correlation.clone()));
        if let Some(per_source) = self.deadlines.get_mut(&journey.source) {
            per_source.remove(&(journey.deadline, id));
        }
        self.by_deadline.remove(&(journey.deadline, id));
        if let Some(held) = self.held.get_mut(&journey.source) {
            if let Some(n) = held.get_mut(&journey.first_offset) {
                *n -= 1;
                if *n == 0 {
                    held.remove(&journey.first_offset);
                }
            }
        }
        let spec = &self.funnels[journey.funnel];
        let Some(started) = journey.started() else {
            let steps = journey.steps.iter().map(Vec::len).sum::<usize>();
            metrics::DROPPED_STEPS.with_label_values(&[&spec.name, "without_entry"]).inc_by(steps as u64);
            return;
        };
        let path = journey.path(self.window(journey.funnel));
        let closed = if path.len() == spec.steps.len() { "complete" } else { closed };
        metrics::JOURNEYS.with_label_values(&[&spec.name, closed]).inc();
        for (index, step) in path.iter().enumerate() {
            metrics::STEPS_REACHED.with_label_values(&[&spec.name, &spec.steps[index].name]).inc();
            if index > 0 {
                metrics::STEP_SECONDS.with_label_values(&[&spec.name, &spec.steps[index].name]).observe((step.at - path[index - 1].at) as f64 / 1e9);
            }
        }
        let record = Rollup::FunnelJourney(FunnelJourney {
            schema: ROLLUP_SCHEMA.into(),
            funnel: spec.name.clone(),
            correlation: journey.correlation.clone(),
            started_unix_nanos: started,
            reached: path.iter().map(|o| JourneyStep { at_unix_nanos: o.at, trace_id: hex::encode(o.trace_id), error: o.error }).collect(),
            steps: spec.steps.len() as u32,
            closed: closed.to_string(),
        });
        let key = FunnelStep::key(&spec.name, &journey.correlation);
        let hold = SourceOffset { source: journey.source, offset: journey.first_offset };
        out.emit_holding(self.output, key.as_bytes(), &serde_json::to_vec(&record).expect("serializable"), Some(hold));
    }

    /// Closes the journeys of `source` whose deadline its watermark passed.
    fn close_due(&mut self, source: SourcePartition, out: &mut Emitter) {
        let watermark = self.clocks.get(&source).map_or(0, |c| c.watermark);
        loop {
            let due = self.deadlines.get(&source).and_then(|d| d.first().copied()).filter(|(deadline, _)| *deadline <= watermark);
            let Some((_, id)) = due else { break };
            self.close(id, "join_window", out);
        }
    }

    fn join(&mut self, step: FunnelStep, input: &InputRecord<'_>, now: UnixNanos, out: &mut Emitter) -> Result<(), Poison> {
        let Some(funnel) = self.funnels.iter().position(|f| f.name == step.funnel) else {
            metrics::DROPPED_STEPS.with_label_values(&[&step.funnel, "unknown_funnel"]).inc();
            return Ok(());
        };
        let step_index = step.step as usize;
        if step_index >= self.funnels[funnel].steps.len() {
            metrics::DROPPED_STEPS.with_label_values(&[&step.funnel, "unknown_funnel"]).inc();
            return Ok(());
        }
        let mut trace_id = [0u8; 16];
        hex::decode_to_slice(&step.trace_id, &mut trace_id).map_err(|e| Poison::new("invalid_trace_id", format!("trace_id `{}`: {e}", step.trace_id)))?;
        let lateness = self.config.lateness.as_nanos() as u64;
        let clock = self.clocks.entry(input.source).or_default();
        clock.latest_step = clock.latest_step.max(step.at_unix_nanos);
        clock.watermark = clock.watermark.max(clock.latest_step.saturating_sub(lateness));
        clock.last_input = now;
        let watermark = clock.watermark;
        let window = self.window(funnel);
        let occurrence = Occurrence { at: step.at_unix_nanos, trace_id, error: step.error };

        let key = (funnel, step.correlation);
        let mut id = self.by_key.get(&key).copied();
        // A first step past the open journey's window begins the next journey.
        if let Some(open) = id {
            let journey = &self.journeys[&open];
            if step_index == 0 && journey.started().is_some_and(|started| occurrence.at > started.saturating_add(window)) {
                self.close(open, "join_window", out);
                id = None;
            }
        }
        let id = match id {
            Some(id) => id,
            None if occurrence.at.saturating_add(window) < watermark => {
                metrics::DROPPED_STEPS.with_label_values(&[&self.funnels[funnel].name, "late"]).inc();
                return Ok(());
            }
            None => self.open(funnel, key.1, input.source, input.offset),
        };
        let journey = self.journeys.get_mut(&id).expect("open journey");
        journey.add(step_index, occurrence);
        let (deadline, complete) = (journey.anchor().saturating_add(window), journey.path(window).len() == journey.steps.len());
        if deadline != journey.deadline {
            self.set_deadline(id, deadline);
        }
        if complete {
            self.close(id, "complete", out);
        }
        self.close_due(input.source, out);
        while self.journeys.len() > self.config.max_journeys {
            let Some(&(_, oldest)) = self.by_deadline.first() else { break };
            self.close(oldest, "evicted", out);
        }
        Ok(())
    }
}

impl Processor for FunnelJoin {
    fn name(&self) -> &'static str {
        "funnels"
    }

    fn on_input(&mut self, input: &InputRecord<'_>, now: UnixNanos, out: &mut Emitter) -> Result<(), Poison> {
        let step: FunnelStep = serde_json::from_slice(input.payload).map_err(|e| Poison::new("decode", format!("not a funnel step: {e}")))?;
        self.join(step, input, now, out)
    }

    fn tick_interval(&self) -> Option<Duration> {
        Some(Duration::from_secs(1))
    }

    /// A partition quiet for `lateness` moves its watermark on by the clock.
    fn on_tick(&mut self, now: UnixNanos, out: &mut Emitter) {
        let lateness = self.config.lateness.as_nanos() as u64;
        let quiet: Vec<SourcePartition> = self
            .clocks
            .iter_mut()
            .filter(|(_, clock)| now.saturating_sub(clock.last_input) >= lateness)
            .map(|(source, clock)| {
                clock.watermark = clock.watermark.max(now.saturating_sub(lateness));
                *source
            })
            .collect();
        for source in quiet {
            self.close_due(source, out);
        }
    }

    fn low_watermark(&self, source: SourcePartition) -> Option<i64> {
        self.held.get(&source).and_then(|held| held.keys().next().copied())
    }

    /// Open journeys of revoked partitions are not published: they hold the committed position,
    /// and the partitions' next owner replays them.
    fn release_partitions(&mut self, sources: &[SourcePartition]) {
        let gone: Vec<JourneyId> = self.journeys.iter().filter(|(_, j)| sources.contains(&j.source)).map(|(id, _)| *id).collect();
        for id in gone {
            let journey = self.journeys.remove(&id).expect("listed");
            self.by_key.remove(&(journey.funnel, journey.correlation));
            self.by_deadline.remove(&(journey.deadline, id));
            metrics::OPEN.dec();
        }
        for source in sources {
            self.deadlines.remove(source);
            self.clocks.remove(source);
            self.held.remove(source);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracepipe_processor::config::Problems;

    const SECOND: u64 = 1_000_000_000;

    fn join(max_journeys: usize) -> FunnelJoin {
        let yaml = "- name: purchase\n  correlation: cart.id\n  join_window: 10m\n  steps:\n    - { name: add, service: frontend, operation: POST /cart }\n    - { name: checkout, service: frontend, operation: GET /checkout }\n    - { name: pay, service: payments, operation: charge }\n";
        let mut problems = Problems::default();
        let funnels = tracepipe_analytics::transactions::validate_funnels("funnels", Some(serde_yaml_ng::from_str(yaml).unwrap()), &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        FunnelJoin::new(funnels.into(), FunnelsConfig { lateness: Duration::from_secs(30), max_journeys }, OutputId(0))
    }

    fn feed(join: &mut FunnelJoin, offset: i64, cart: &str, step: u32, at_s: u64, out: &mut Emitter) {
        let record = FunnelStep { schema: "x".into(), funnel: "purchase".into(), step, correlation: cart.into(), at_unix_nanos: at_s * SECOND, trace_id: format!("{:032x}", offset + 1), error: false };
        let payload = serde_json::to_vec(&record).unwrap();
        let input = InputRecord { source: SourcePartition { input: 0, partition: 0 }, topic: "tracepipe.funnel-steps", offset, key: None, payload: &payload, timestamp_ms: None };
        join.on_input(&input, 0, out).unwrap();
    }

    fn journeys(out: &Emitter) -> Vec<FunnelJourney> {
        out.records()
            .map(|(_, _, value)| match serde_json::from_slice(value).unwrap() {
                Rollup::FunnelJourney(j) => j,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn steps_join_in_order_within_the_window_and_hold_their_offsets() {
        let mut join = join(100);
        let mut out = Emitter::default();
        let start = 1_000_000;
        // Cart a: every step, the last two out of order in the input. Cart b: stops at checkout.
        // Cart c: pays before it checks out, which does not count. Cart d: no first step.
        feed(&mut join, 0, "a", 0, start, &mut out);
        feed(&mut join, 1, "b", 0, start + 1, &mut out);
        feed(&mut join, 2, "a", 2, start + 20, &mut out);
        feed(&mut join, 3, "c", 0, start + 2, &mut out);
        feed(&mut join, 4, "c", 2, start + 3, &mut out);
        feed(&mut join, 5, "c", 1, start + 4, &mut out);
        feed(&mut join, 6, "d", 1, start + 5, &mut out);
        feed(&mut join, 7, "b", 1, start + 6, &mut out);
        feed(&mut join, 7, "b", 1, start + 6, &mut out);
        assert!(out.is_empty());
        assert_eq!(join.low_watermark(SourcePartition { input: 0, partition: 0 }), Some(0));
        feed(&mut join, 8, "a", 1, start + 10, &mut out);
        let done = journeys(&out);
        assert_eq!(done.len(), 1);
        assert_eq!((done[0].correlation.as_str(), done[0].reached.len(), done[0].closed.as_str()), ("a", 3, "complete"));
        assert_eq!(done[0].reached.iter().map(|s| s.at_unix_nanos / SECOND - start).collect::<Vec<_>>(), vec![0, 10, 20]);
        assert_eq!(join.low_watermark(SourcePartition { input: 0, partition: 0 }), Some(1));
        out.clear();
        // The window passes (10 minutes and the lateness) on a later step of another cart.
        feed(&mut join, 9, "e", 0, start + 700, &mut out);
        let mut done = journeys(&out);
        done.sort_by(|a, b| a.correlation.cmp(&b.correlation));
        let reached: Vec<(&str, usize, &str)> = done.iter().map(|j| (j.correlation.as_str(), j.reached.len(), j.closed.as_str())).collect();
        assert_eq!(reached, vec![("b", 2, "join_window"), ("c", 2, "join_window")]);
        assert_eq!(join.open_journeys(), 1);
        assert_eq!(join.low_watermark(SourcePartition { input: 0, partition: 0 }), Some(9));
        // Past the cap, the journey closest to its deadline closes as it stands.
        let mut join = self::join(1);
        let mut out = Emitter::default();
        feed(&mut join, 0, "x", 0, start, &mut out);
        feed(&mut join, 1, "y", 0, start + 1, &mut out);
        let done = journeys(&out);
        assert_eq!((done.len(), done[0].correlation.as_str(), done[0].closed.as_str()), (1, "x", "evicted"));
    }

    /// Journeys by store key, the version with the most steps kept, as the store keeps them.
    fn stored(into: &mut BTreeMap<(String, u64), FunnelJourney>, out: &Emitter) {
        for journey in journeys(out) {
            let key = (journey.correlation.clone(), journey.started_unix_nanos);
            match into.get(&key) {
                Some(kept) if kept.reached.len() >= journey.reached.len() => {}
                _ => {
                    into.insert(key, journey);
                }
            }
        }
    }

    #[test]
    fn a_crash_at_any_record_replayed_from_the_committed_position_stores_the_same_journeys() {
        // 40 carts, steps shuffled within a few seconds, some repeated, some never finished.
        let mut steps: Vec<(String, u32, u64)> = Vec::new();
        let mut seed = 7u64;
        let mut next = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            seed >> 33
        };
        for cart in 0..40u64 {
            // 30 s apart: the watermark closes the early carts' journeys while later ones come.
            let start = 1_000 + cart * 30;
            let reached = 1 + next() % 3;
            for step in 0..reached {
                steps.push((format!("c{cart}"), step as u32, start + step * 2 + next() % 2));
                if next() % 5 == 0 {
                    steps.push((format!("c{cart}"), step as u32, start + step * 2 + 1));
                }
            }
        }
        let mut keyed: Vec<(u64, (String, u32, u64))> = steps.into_iter().map(|step| (step.2 + next() % 3, step)).collect();
        keyed.sort_by_key(|(key, _)| *key);
        let steps: Vec<(String, u32, u64)> = keyed.into_iter().map(|(_, step)| step).collect();
        let run = |from: usize, join: &mut FunnelJoin, out: &mut Emitter| {
            for (offset, (cart, step, at)) in steps.iter().enumerate().skip(from) {
                feed(join, offset as i64, cart, *step, *at, out);
            }
            join.on_tick(u64::MAX / 2, out);
        };
        let mut whole = BTreeMap::new();
        let (mut join_all, mut out) = (join(100), Emitter::default());
        run(0, &mut join_all, &mut out);
        stored(&mut whole, &out);
        assert_eq!(whole.len(), 40, "one journey per cart");
        let source = SourcePartition { input: 0, partition: 0 };
        for crash_after in 0..steps.len() {
            // Everything published before the crash is stored; the state is lost; the next run
            // starts at what was committed: the oldest offset still held.
            let (mut first, mut out) = (join(100), Emitter::default());
            for (offset, (cart, step, at)) in steps.iter().enumerate().take(crash_after) {
                feed(&mut first, offset as i64, cart, *step, *at, &mut out);
            }
            let committed = first.low_watermark(source).map_or(crash_after, |offset| offset as usize);
            let mut store = BTreeMap::new();
            stored(&mut store, &out);
            let (mut second, mut out) = (join(100), Emitter::default());
            run(committed, &mut second, &mut out);
            stored(&mut store, &out);
            assert_eq!(store, whole, "a crash after {crash_after} records");
        }
    }

    #[test]
    fn unreadable_steps_are_poison_and_unknown_funnels_are_skipped() {
        let mut join = join(100);
        let mut out = Emitter::default();
        let mut input = |payload: &[u8]| -> Result<(), Poison> {
            let record = InputRecord { source: SourcePartition { input: 0, partition: 0 }, topic: "t", offset: 1, key: None, payload, timestamp_ms: None };
            join.on_input(&record, 0, &mut out)
        };
        let poison = input(b"{\"funnel\": 1").unwrap_err();
        assert_eq!(poison.kind, "decode");
        let bad_id = br#"{"schema":"x","funnel":"purchase","step":0,"correlation":"a","at_unix_nanos":1,"trace_id":"zz"}"#;
        assert_eq!(input(bad_id).unwrap_err().kind, "invalid_trace_id");
        let unknown = format!(r#"{{"schema":"x","funnel":"gone","step":0,"correlation":"a","at_unix_nanos":1,"trace_id":"{:032x}"}}"#, 1);
        input(unknown.as_bytes()).unwrap();
        let past_the_steps = format!(r#"{{"schema":"x","funnel":"purchase","step":9,"correlation":"a","at_unix_nanos":1,"trace_id":"{:032x}"}}"#, 1);
        input(past_the_steps.as_bytes()).unwrap();
        assert_eq!(join.open_journeys(), 0);
        assert_eq!(join.low_watermark(SourcePartition { input: 0, partition: 0 }), None, "nothing held");
    }
}
