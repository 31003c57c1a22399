"""Held-out splits by case: disjoint, sorted, seeded, and explicit ids checked."""

import pytest

from common.ct import splits

IDS = [f"case_{i:03d}" for i in range(10)]


def test_a_fraction_holds_out_that_share_of_cases_by_seed():
    split = splits.holdout_split(IDS, 0.2, seed=3)
    assert len(split["test"]) == 2 and sorted(split["train"] + split["test"]) == IDS
    assert split["test"] == sorted(split["test"]) and not set(split["train"]) & set(split["test"])
    assert splits.holdout_split(IDS, 0.2, seed=3) == split
    assert any(splits.holdout_split(IDS, 0.2, seed=s)["test"] != split["test"] for s in range(4, 10))
    assert len(splits.holdout_split(IDS[:3], 0.01)["test"]) == 1  # at least one case when > 0


def test_explicit_cases_win_and_unknown_ones_are_named():
    assert splits.holdout_split(IDS, 0.5, test_cases=["case_007", "case_001"])["test"] == ["case_001", "case_007"]
    with pytest.raises(ValueError, match=r"test_cases: unknown case ids \['case_99'\]"):
        splits.holdout_split(IDS, test_cases=["case_99"])
    with pytest.raises(ValueError, match="test_fraction"):
        splits.holdout_split(IDS, 1.0)


def test_train_cases_are_a_subset_fixed_by_the_held_out_set():
    full = splits.holdout_split(IDS, test_cases=["case_001", "case_007"])
    four = splits.holdout_split(IDS, test_cases=["case_007", "case_001"], seed=5, train_cases=4)
    assert len(four["train"]) == 4 and set(four["train"]) < set(full["train"]) and four["test"] == full["test"]
    assert splits.holdout_split(IDS, test_cases=["case_001", "case_007"], seed=9, train_cases=4) == four  # any seed
    six = splits.holdout_split(IDS, test_cases=["case_001", "case_007"], train_cases=6)
    assert set(four["train"]) < set(six["train"])  # nested: more data adds cases
    other = splits.holdout_split(IDS, test_cases=["case_002", "case_003"], train_cases=4)
    assert other["train"] != four["train"]
    with pytest.raises(ValueError, match="train_cases"):
        splits.holdout_split(IDS, test_cases=["case_001"], train_cases=len(IDS))


def test_validation_cases_come_out_of_training_the_same_for_every_seed():
    test = ["case_001", "case_007"]
    full = splits.holdout_split(IDS, test_cases=test)
    two = splits.holdout_split(IDS, test_cases=test, seed=5, validation_cases=2)
    assert len(two["validation"]) == 2 and sorted(two["train"] + two["validation"]) == full["train"]
    assert two["validation"] == sorted(two["validation"]) and two["test"] == full["test"]
    assert splits.holdout_split(IDS, test_cases=test, seed=9, validation_cases=2) == two  # every model and seed
    subset = splits.holdout_split(IDS, test_cases=test, train_cases=6, validation_cases=2)
    assert set(subset["validation"]) < set(full["train"]) and len(subset["train"]) == 4
    assert "validation" not in splits.holdout_split(IDS, test_cases=test)  # runs without: their split as before
    with pytest.raises(ValueError, match=r"validation_cases must lie in \[0, 7\]"):
        splits.holdout_split(IDS, test_cases=test, validation_cases=8)
