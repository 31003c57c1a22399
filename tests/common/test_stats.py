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
