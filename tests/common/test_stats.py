import doctest
import warnings

import numpy as np
import pytest
from scipy import stats as scipy_stats

from common import stats


def test_describe_gives_the_t_interval_of_the_mean():
    values = [0.70, 0.74, 0.79, 0.81, 0.76]
    s = stats.describe(values)
    low, high = scipy_stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=scipy_stats.sem(values))
    assert s["n"] == 5 and s["mean"] == pytest.approx(0.76) and s["std"] == pytest.approx(np.std(values, ddof=1))
    assert s["ci95"] == pytest.approx([low, high])


def test_describe_leaves_out_nan_and_refuses_nothing():
    assert stats.describe([1.0, float("nan"), 3.0])["mean"] == 2.0
    assert np.isnan(stats.describe([1.0])["std"])
    with pytest.raises(ValueError, match="at least one"):
        stats.describe([float("nan")])


def test_mean_std_is_the_sample_std_of_the_known_values():
    mean, std = stats.mean_std([0.70, float("nan"), 0.74, 0.79])
    assert mean == pytest.approx(0.7433, abs=1e-4) and std == pytest.approx(np.std([0.70, 0.74, 0.79], ddof=1))
    assert np.isnan(stats.mean_std([0.70])[1]) and all(np.isnan(stats.mean_std([float("nan")])))


def test_paired_is_scipy_ttest_rel_of_b_minus_a():
    a, b = [0.50, 0.55, 0.60, 0.52], [0.56, 0.58, 0.66, 0.55]
    result = stats.paired(a, b)
    assert result["p_value"] == pytest.approx(scipy_stats.ttest_rel(b, a).pvalue)
    assert result["t"] > 0 and result["mean_difference"] == pytest.approx(0.045)
    assert result["ci95"][0] > 0  # every unit improved by 0.03 to 0.06: the interval excludes 0
    assert "p = " in stats.format_paired(result, scale=100) and "+4.50" in stats.format_paired(result, scale=100)


def test_paired_says_so_when_every_unit_differs_by_the_same_amount():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scipy's precision-loss warning would fail here
        result = stats.paired([0.5, 0.6, 0.7], [0.6, 0.7, 0.8])
    assert np.isnan(result["t"]) and np.isnan(result["p_value"]) and result["mean_difference"] == pytest.approx(0.1)
    assert stats.format_paired(result, scale=100) == (
        "difference +10.00 on every unit: no paired t-test (the differences do not vary), n = 3")


@pytest.mark.parametrize("a, b, message", [([1.0], [2.0], "at least 2"), ([1.0, 2.0], [1.0], "same length")])
def test_paired_refuses_what_cannot_be_paired(a, b, message):
    with pytest.raises(ValueError, match=message):
        stats.paired(a, b)


def _tost_by_hand(d, margin):
    """The two one-sided t-tests of the mean of ``d`` against -margin and +margin, straight from Student's t."""
    n, mean, se = len(d), np.mean(d), np.std(d, ddof=1) / np.sqrt(len(d))
    p_lower = scipy_stats.t.sf((mean + margin) / se, n - 1)  # H0: mean <= -margin
    p_upper = scipy_stats.t.cdf((mean - margin) / se, n - 1)  # H0: mean >= +margin
    half = scipy_stats.t.ppf(0.95, n - 1) * se
    return p_lower, p_upper, [mean - half, mean + half]


@pytest.mark.parametrize("margin, equivalent", [(0.02, True), (0.005, False)])
def test_equivalence_is_the_two_one_sided_t_tests_of_b_minus_a(margin, equivalent):
    a, b = [0.80, 0.82, 0.84, 0.81, 0.83], [0.81, 0.81, 0.85, 0.80, 0.835]
    result = stats.equivalence(a, b, margin)
    p_lower, p_upper, ci90 = _tost_by_hand(np.subtract(b, a), margin)
    assert result["p_lower"] == pytest.approx(p_lower) and result["p_upper"] == pytest.approx(p_upper)
    assert result["p"] == pytest.approx(max(p_lower, p_upper)) and result["ci90"] == pytest.approx(ci90)
    assert result["n"] == 5 and result["mean_difference"] == pytest.approx(0.001) and result["margin"] == margin
    assert result["equivalent"] is equivalent
    assert bool(-margin < ci90[0] and ci90[1] < margin) is equivalent  # at 5%: the 90% interval inside the margin
    line = stats.format_equivalence(result, scale=100)
    assert line.startswith("difference +0.10 (90% CI ") and f"), margin ±{100 * margin:.2f}: TOST p = " in line
    assert line.endswith(", n = 5: equivalent" if equivalent else ", n = 5: not equivalent")


def test_a_difference_beyond_the_margin_is_not_equivalent_whatever_its_significance():
    a = [0.80, 0.82, 0.84, 0.81, 0.83, 0.79]
    result = stats.equivalence(a, np.add(a, [0.031, 0.029, 0.030, 0.032, 0.028, 0.030]), margin=0.01)
    assert not result["equivalent"] and result["p_upper"] > 0.99 and result["p_lower"] < 1e-6


def test_format_equivalence_writes_one_line():
    result = {"n": 15, "mean_difference": -0.0003, "ci90": [-0.012, 0.0114], "p": 0.012, "p_lower": 0.004,
              "p_upper": 0.012, "margin": 0.01, "equivalent": True}
    assert stats.format_equivalence(result, scale=100) == (
        "difference -0.03 (90% CI -1.20 to +1.14), margin ±1.00: TOST p = 0.012 (lower 0.004, upper 0.012), "
        "n = 15: equivalent")


def test_equivalence_says_so_when_every_unit_differs_by_the_same_amount():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = stats.equivalence([0.5, 0.6, 0.7], [0.5, 0.6, 0.7], margin=0.01)
    assert np.isnan(result["p"]) and np.isnan(result["p_lower"]) and not result["equivalent"]
    assert stats.format_equivalence(result, scale=100) == (
        "difference +0.00 on every unit: no TOST (the differences do not vary) against ±1.00, n = 3")


@pytest.mark.parametrize("a, b, margin, message", [
    ([1.0], [2.0], 1.0, "at least 2"), ([1.0, 2.0], [1.0], 1.0, "same length"),
    ([1.0, 2.0], [1.5, 2.0], 0.0, "margin must be positive, got 0.0"),
    ([1.0, 2.0], [1.5, 2.0], float("nan"), "margin must be positive, got nan"),
])
def test_equivalence_refuses_what_cannot_be_tested(a, b, margin, message):
    with pytest.raises(ValueError, match=message):
        stats.equivalence(a, b, margin)


def _power_by_hand(n, sd, margin, alpha=0.05, delta=0.0):
    """P(lower rejects) + P(upper rejects) - 1, each one-sided statistic noncentral t."""
    se, critical = sd / np.sqrt(n), scipy_stats.t.ppf(1 - alpha, n - 1)
    return (scipy_stats.nct.sf(critical, n - 1, (delta + margin) / se)
            + scipy_stats.nct.cdf(-critical, n - 1, (delta - margin) / se) - 1)


@pytest.mark.parametrize("sd, margin, power, delta, expected", [
    (1.0, 1.0, 0.8, 0.0, 11), (1.5, 1.0, 0.8, 0.0, 21), (1.0, 1.0, 0.9, 0.0, 13), (3.0, 1.0, 0.8, 0.0, 79),
    (1.0, 1.0, 0.8, 0.5, 27), (0.2, 1.0, 0.8, 0.0, 3),
])
def test_tost_runs_is_the_smallest_n_of_enough_power(sd, margin, power, delta, expected):
    n = stats.tost_runs(sd, margin, power=power, true_difference=delta)
    assert n == expected
    assert _power_by_hand(n, sd, margin, delta=delta) >= power > _power_by_hand(n - 1, sd, margin, delta=delta)
    # Chow, Shao & Wang (2008, 3.2): n >= (t_{alpha,n-1} + t_{beta(/2),n-1})^2 sd^2 / (margin - |delta|)^2
    beta = (1 - power) / 2 if delta == 0 else 1 - power
    assert n >= (scipy_stats.t.ppf(0.95, n - 1) + scipy_stats.t.ppf(1 - beta, n - 1)) ** 2 * sd ** 2 / \
        (margin - abs(delta)) ** 2


def test_tost_runs_reaches_its_power_in_simulation():
    n, rng = stats.tost_runs(sd=1.0, margin=1.0), np.random.default_rng(0)
    d = rng.normal(0.0, 1.0, (20000, n))
    se, critical = d.std(1, ddof=1) / np.sqrt(n), scipy_stats.t.ppf(0.95, n - 1)
    rejected = ((d.mean(1) + 1.0) / se > critical) & ((d.mean(1) - 1.0) / se < -critical)
    assert rejected.mean() == pytest.approx(0.849, abs=0.01)


@pytest.mark.parametrize("kwargs, message", [
    (dict(sd=0.0, margin=1.0), "sd must be positive"), (dict(sd=1.0, margin=-1.0), "margin must be positive"),
    (dict(sd=1.0, margin=1.0, power=1.0), "power must lie in"), (dict(sd=1.0, margin=1.0, alpha=0.5), "alpha"),
    (dict(sd=1.0, margin=1.0, true_difference=-1.0), "not inside the margin"),
])
def test_tost_runs_refuses_what_has_no_answer(kwargs, message):
    with pytest.raises(ValueError, match=message):
        stats.tost_runs(**kwargs)


def test_the_docstring_examples_run():
    failed, attempted = doctest.testmod(stats)  # common/stats.py is not among pytest's doctest paths
    assert failed == 0 and attempted >= 6
