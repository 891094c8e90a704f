"""Reference values for tests/compare_scipy.rs, computed by SciPy and NumPy on the same samples.

Reads cases as JSON on stdin: each has the baseline and candidate as [value, count] buckets and
their error counts. Writes, per case, the Mann-Whitney U of the candidate and its two-sided
p-value (asymptotic, with the continuity correction), the Hodges-Lehmann shift (the median of
all candidate - baseline differences), the two-proportion test's p-value (as the chi-square test
of the 2x2 table without Yates' correction, which is the same test) and the quantiles.
"""

import json
import sys

import numpy as np
from scipy import stats


def expand(buckets):
    return np.repeat(np.array([v for v, _ in buckets], dtype=np.float64), [c for _, c in buckets])


out = []
for case in json.load(sys.stdin):
    a, b = expand(case["a"]), expand(case["b"])
    mwu = stats.mannwhitneyu(b, a, alternative="two-sided", method="asymptotic", use_continuity=True)
    shift = float(np.median(np.subtract.outer(b, a)))
    ea, eb = case["errors_a"], case["errors_b"]
    table = [[ea, len(a) - ea], [eb, len(b) - eb]]
    errors_p = float(stats.chi2_contingency(table, correction=False).pvalue) if ea + eb > 0 else 1.0
    quantiles = {str(q): float(np.quantile(b, q, method="inverted_cdf")) for q in (0.5, 0.9, 0.99)}
    out.append({"u": float(mwu.statistic), "p": float(mwu.pvalue), "shift": shift, "errors_p": errors_p, "quantiles": quantiles})
json.dump(out, sys.stdout)
