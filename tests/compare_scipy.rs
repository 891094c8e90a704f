//! The comparison's statistics (`tracepipe_analytics::compare`) against SciPy's and NumPy's on
//! the same samples: Mann-Whitney U and its p-value, the Hodges-Lehmann shift, the
//! two-proportion test and the quantiles. The reference script is tests/python/compare_reference.py,
//! run in the test virtualenv `make python` makes.

use std::io::Write;
use std::process::{Command, Stdio};

use rand::{rngs::SmallRng, Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal};
use serde_json::{json, Value};
use tracepipe_analytics::compare::{compare, hodges_lehmann, mann_whitney, CompareSettings, Sample};
use tracepipe_analytics::latency::{new_histogram, record_nanos, sparse, MergedHistogram};

struct Case {
    a: MergedHistogram,
    b: MergedHistogram,
    errors_a: u64,
    errors_b: u64,
}

fn sample(rng: &mut SmallRng, n: usize, median_ms: f64, sigma: f64) -> MergedHistogram {
    let distribution = LogNormal::new((median_ms * 1e6).ln(), sigma).unwrap();
    let mut h = new_histogram();
    for _ in 0..n {
        record_nanos(&mut h, distribution.sample(rng) as u64);
    }
    let mut merged = MergedHistogram::default();
    merged.add(&sparse(&h));
    merged
}

fn close(ours: f64, reference: f64, relative: f64, what: &str) {
    let scale = reference.abs().max(1e-300);
    assert!((ours - reference).abs() / scale <= relative || (ours - reference).abs() < 1e-12, "{what}: ours {ours}, reference {reference}");
}

#[test]
fn statistics_match_scipy_on_the_same_samples() {
    let python = concat!(env!("CARGO_MANIFEST_DIR"), "/target/python/bin/python");
    let mut rng = SmallRng::seed_from_u64(7);
    let mut cases = Vec::new();
    // Same distribution, a 30% slower candidate, a faster one with more spread, a tiny one, and
    // one with many ties (few distinct buckets).
    for (na, nb, median_b, sigma_b) in [(2000, 500, 20.0, 0.5), (1500, 300, 26.0, 0.5), (800, 800, 15.0, 0.9), (60, 55, 21.0, 0.4), (1000, 1000, 20.0, 0.02)] {
        let a = sample(&mut rng, na, 20.0, 0.5);
        let b = sample(&mut rng, nb, median_b, sigma_b);
        let errors_a = (0..na).filter(|_| rng.random::<f64>() < 0.02).count() as u64;
        let errors_b = (0..nb).filter(|_| rng.random::<f64>() < 0.04).count() as u64;
        cases.push(Case { a, b, errors_a, errors_b });
    }
    let input: Vec<Value> = cases
        .iter()
        .map(|c| json!({"a": c.a.buckets().collect::<Vec<_>>(), "b": c.b.buckets().collect::<Vec<_>>(), "errors_a": c.errors_a, "errors_b": c.errors_b}))
        .collect();
    let mut child = Command::new(python)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/compare_reference.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the test virtualenv's python (make python)");
    child.stdin.take().unwrap().write_all(serde_json::to_string(&input).unwrap().as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "reference script failed");
    let reference: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();

    for (i, (case, reference)) in cases.iter().zip(&reference).enumerate() {
        let (u, sd, _) = mann_whitney(&case.a, &case.b);
        close(u, reference["u"].as_f64().unwrap(), 1e-12, &format!("case {i} U"));
        let c = compare(Sample { latency_us: &case.a, errors: case.errors_a }, Sample { latency_us: &case.b, errors: case.errors_b }, &CompareSettings { min_samples: 1, ..Default::default() });
        let latency = c.latency.as_ref().unwrap();
        close(latency.p_value, reference["p"].as_f64().unwrap(), 1e-6, &format!("case {i} Mann-Whitney p"));
        let shift = hodges_lehmann(&case.a, &case.b, 2.0, sd).unwrap().estimate;
        close(shift, reference["shift"].as_f64().unwrap(), 1e-12, &format!("case {i} Hodges-Lehmann shift"));
        close(c.errors.as_ref().unwrap().p_value, reference["errors_p"].as_f64().unwrap(), 1e-6, &format!("case {i} two-proportion p"));
        for (q, ours) in [("0.5", &c.candidate.p50_ms), ("0.9", &c.candidate.p90_ms), ("0.99", &c.candidate.p99_ms)] {
            close(ours.as_ref().unwrap().estimate * 1e3, reference["quantiles"][q].as_f64().unwrap(), 1e-12, &format!("case {i} quantile {q}"));
        }
        println!("case {i}: U {u}, p {:.3e}, shift {shift} µs, errors p {:.3e}: {}", latency.p_value, c.errors.as_ref().unwrap().p_value, c.verdict.label());
    }
}
