"""The statistics every study reports (SPEC, "Studies"): mean ± std, the 95% CI, and the paired t-test.

The std is the sample standard deviation (ddof 1) wherever the zoo reports
one over units, the one the t-interval uses (``mean_std``).

Units are what was repeated (a CV fold from its own seed, a training seed, an
AL run); the CI is Student's t interval over them, and two methods are
compared on the same units with ``scipy.stats.ttest_rel``.

>>> s = describe([0.80, 0.82, 0.84])
>>> round(s["mean"], 2), round(s["std"], 2), [round(v, 3) for v in s["ci95"]]
(0.82, 0.02, [0.77, 0.87])
"""

from __future__ import annotations

import numpy as np
from scipy import stats


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1) of ``values``, NaNs left out: the std of every table.

    The std is NaN for fewer than two values, both are NaN for none.

    >>> [round(v, 4) for v in mean_std([0.75, 0.85, float("nan")])]
    [0.8, 0.0707]
    """
    values = np.asarray(values, float)
    values = values[~np.isnan(values)]
    mean = float(values.mean()) if len(values) else float("nan")
    return mean, float(values.std(ddof=1)) if len(values) > 1 else float("nan")


def describe(values) -> dict:
    """Mean, sample standard deviation and the 95% t-interval of the mean over ``values`` (NaNs left out)."""
    values = np.asarray(values, float)
    values = values[~np.isnan(values)]
    if not len(values):
        raise ValueError("describe needs at least one value that is not NaN")
    mean, std = mean_std(values)
    half = float(stats.t.ppf(0.975, len(values) - 1) * std / np.sqrt(len(values))) if len(values) > 1 else float("nan")
    return {"n": int(len(values)), "mean": mean, "std": std, "ci95": [mean - half, mean + half]}


def paired(a, b) -> dict:
    """``b - a`` per unit: its mean, 95% CI and the paired t-test (t, two-sided p) over the units.

    Where every unit differs by the same amount the test is undefined: t and p are NaN.
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired values must be two lists of the same length, got {a.shape} and {b.shape}")
    if len(a) < 2:
        raise ValueError(f"a paired t-test needs at least 2 units, got {len(a)}")
    difference = describe(b - a)
    if np.allclose(b - a, (b - a)[0], rtol=1e-9, atol=1e-15):
        # every unit moved by the same amount: no spread, so no t statistic (scipy would warn and return NaN)
        t, p_value = float("nan"), float("nan")
    else:
        test = stats.ttest_rel(b, a)
        t, p_value = float(test.statistic), float(test.pvalue)
    return {"n": int(len(a)), "difference": (b - a).tolist(), "mean_difference": difference["mean"],
            "ci95": difference["ci95"], "t": t, "p_value": p_value}


def format_summary(values, scale: float = 1.0) -> str:
    """``mean ± std [low, high]`` with two decimals, times ``scale`` (100 for percent)."""
    s = describe(values)
    low, high = s["ci95"]
    return f"{scale * s['mean']:.2f} ± {scale * s['std']:.2f} [{scale * low:.2f}, {scale * high:.2f}]"


def format_paired(result: dict, scale: float = 1.0) -> str:
    """One line: the mean difference, its 95% CI, t and p over n units."""
    if np.isnan(result["p_value"]):
        return (f"difference {scale * result['mean_difference']:+.2f} on every unit: no paired t-test "
                f"(the differences do not vary), n = {result['n']}")
    low, high = result["ci95"]
    return (f"difference {scale * result['mean_difference']:+.2f} (95% CI {scale * low:+.2f} to {scale * high:+.2f}), "
            f"paired t-test t = {result['t']:.3f}, p = {result['p_value']:.4g}, n = {result['n']}")
