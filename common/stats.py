"""The statistics every study reports (SPEC, "Studies"): mean ± std, the 95% CI, and the paired t-test.

The std is the sample standard deviation (ddof 1) wherever the zoo reports
one over units, the one the t-interval uses (``mean_std``).

Units are what was repeated (a CV fold from its own seed, a training seed, an
AL run); the CI is Student's t interval over them, and two methods are
compared on the same units with ``scipy.stats.ttest_rel``. A claim of equal
accuracy is an equivalence test against a margin stated first (SPEC,
"Studies"): the paired TOST (``equivalence``), its number of units written
down before the runs (``tost_runs``).

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


def _check_pairs(a, b) -> tuple[np.ndarray, np.ndarray]:
    """Two same-length 1-D arrays of at least 2 units, or a ValueError saying which they are not."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired values must be two lists of the same length, got {a.shape} and {b.shape}")
    if len(a) < 2:
        raise ValueError(f"a paired t-test needs at least 2 units, got {len(a)}")
    return a, b


def paired(a, b) -> dict:
    """``b - a`` per unit: its mean, 95% CI and the paired t-test (t, two-sided p) over the units.

    Where every unit differs by the same amount the test is undefined: t and p are NaN.
    """
    a, b = _check_pairs(a, b)
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


def equivalence(a, b, margin: float) -> dict:
    """The paired two one-sided tests (TOST, Schuirmann 1987) of ``b - a`` per unit against ±``margin``.

    ``p_lower`` tests H0: mean difference <= -margin, ``p_upper`` H0: mean
    difference >= +margin, each a one-sided t-test of the differences
    (``scipy.stats.ttest_1samp`` against the shifted mean); ``p`` is the larger,
    and ``equivalent`` is p < 0.05, the same as the 90% t-interval of the
    mean difference (``ci90``, the TOST's interval) lying inside ±margin.
    Where every unit differs by the same amount the tests are undefined: the
    p values are NaN and ``equivalent`` is False, as ``paired`` does.

    >>> r = equivalence([0.80, 0.82, 0.84, 0.81], [0.81, 0.81, 0.85, 0.81], margin=0.02)
    >>> round(r["mean_difference"], 4), [round(v, 4) for v in r["ci90"]], round(r["p"], 4), r["equivalent"]
    (0.0025, [-0.0088, 0.0138], 0.0177, True)
    """
    a, b = _check_pairs(a, b)
    if not 0 < margin < np.inf:
        raise ValueError(f"the equivalence margin must be positive, got {margin}")
    difference = b - a
    n, mean, std = len(difference), float(difference.mean()), float(difference.std(ddof=1))
    half = float(stats.t.ppf(0.95, n - 1) * std / np.sqrt(n))
    if np.allclose(difference, difference[0], rtol=1e-9, atol=1e-15):  # no spread: no t statistic, as in paired
        p_lower = p_upper = float("nan")
    else:
        p_lower = float(stats.ttest_1samp(difference, -margin, alternative="greater").pvalue)
        p_upper = float(stats.ttest_1samp(difference, margin, alternative="less").pvalue)
    p = max(p_lower, p_upper) if not np.isnan(p_lower) else float("nan")
    return {"n": n, "mean_difference": mean, "ci90": [mean - half, mean + half], "p_lower": p_lower,
            "p_upper": p_upper, "p": p, "margin": float(margin), "equivalent": bool(p < 0.05)}


def format_equivalence(result: dict, scale: float = 1.0) -> str:
    """One line: the mean difference, its 90% CI, the margin, the TOST's p values over n units, the verdict."""
    if np.isnan(result["p"]):
        return (f"difference {scale * result['mean_difference']:+.2f} on every unit: no TOST (the differences do "
                f"not vary) against ±{scale * result['margin']:.2f}, n = {result['n']}")
    low, high = result["ci90"]
    return (f"difference {scale * result['mean_difference']:+.2f} (90% CI {scale * low:+.2f} to {scale * high:+.2f}), "
            f"margin ±{scale * result['margin']:.2f}: TOST p = {result['p']:.4g} (lower {result['p_lower']:.4g}, "
            f"upper {result['p_upper']:.4g}), n = {result['n']}: "
            f"{'equivalent' if result['equivalent'] else 'not equivalent'}")


def tost_power(n: int, sd: float, margin: float, alpha: float = 0.05, true_difference: float = 0.0) -> float:
    """The power of the paired TOST over ``n`` units whose differences have std ``sd`` and mean ``true_difference``.

    Each one-sided statistic is noncentral t (df n - 1, noncentrality (true_difference ± margin) / (sd / sqrt n));
    the power is P(lower rejects) + P(upper rejects) - 1, a lower bound of P(both reject) short of it only by
    the chance that neither rejects (s >= margin sqrt(n) / t_crit), negligible at the powers a study plans for.
    """
    se, df = sd / np.sqrt(n), n - 1
    critical = stats.t.ppf(1 - alpha, df)
    upper = stats.nct.cdf(-critical, df, (true_difference - margin) / se)  # H0: difference >= +margin rejected
    lower_fails = stats.nct.cdf(critical, df, (true_difference + margin) / se)  # H0: <= -margin kept
    return max(0.0, float(upper - lower_fails))


def tost_runs(sd: float, margin: float, power: float = 0.8, alpha: float = 0.05, true_difference: float = 0.0) -> int:
    """The smallest number of units whose paired TOST at ``alpha`` reaches ``power`` (``tost_power``, noncentral t).

    ``sd`` is the std of the per-unit differences expected (from a pilot or an earlier study), ``margin`` the
    equivalence margin, ``true_difference`` the difference assumed. n is iterated up from the standard normal
    approximation, ((z_{1-alpha} + z_{1-beta}) sd / (margin - |true_difference|))^2 with beta / 2 for a true
    difference of 0, which never exceeds it. It agrees with the t formula of Chow, Shao & Wang (2008, 3.2),
    n >= (t_{alpha,n-1} + t_{beta,n-1})^2 sd^2 / (margin - |true_difference|)^2, iterated in n.

    >>> tost_runs(sd=1.0, margin=1.0), tost_runs(sd=1.5, margin=1.0), tost_runs(sd=1.0, margin=1.0, power=0.9)
    (11, 21, 13)
    """
    for name, value in (("sd", sd), ("margin", margin)):
        if not 0 < value < np.inf:
            raise ValueError(f"{name} must be positive, got {value}")
    if not 0 < power < 1 or not 0 < alpha < 0.5:
        raise ValueError(f"power must lie in (0, 1) and alpha in (0, 0.5), got power {power}, alpha {alpha}")
    if not abs(true_difference) < margin:
        raise ValueError(f"true_difference {true_difference} is not inside the margin ±{margin}: no number of "
                         "units shows equivalence")
    beta = (1 - power) / 2 if true_difference == 0 else 1 - power
    z = stats.norm.ppf(1 - alpha) + stats.norm.ppf(1 - beta)
    n = max(2, int(np.ceil((z * sd / (margin - abs(true_difference))) ** 2)))
    while n > 2 and tost_power(n - 1, sd, margin, alpha, true_difference) >= power:  # guard: the start is a floor
        n -= 1
    while tost_power(n, sd, margin, alpha, true_difference) < power:
        n += 1
    return n
