"""Splits of a cohort by case (never by slice), reproducible from a seed."""

from __future__ import annotations

import hashlib

import numpy as np


def holdout_split(case_ids, test_fraction: float = 0.2, seed: int = 0, test_cases=None,
                  train_cases: int | None = None, validation_cases: int = 0) -> dict[str, list[str]]:
    """Splits case ids into train and test.

    Args:
        case_ids: all case ids.
        test_fraction: share of cases held out (at least one case when > 0).
        seed: shuffles the ids before the split.
        test_cases: explicit held-out ids; overrides ``test_fraction``.
        train_cases: train on this many of the remaining cases only (a learning
            curve, or a study's less-data arm). Drawn by a generator seeded from
            the held-out ids alone, so every model and seed on the same held-out
            set trains on the same cases, and a smaller subset lies inside a larger.
        validation_cases: this many of the training cases (after ``train_cases``)
            give a validation loss per epoch instead of training (the studies'
            convergence rule, ``common.train.convergence``); drawn the same way, so
            every model and seed on the same held-out set validates on the same cases.

    Returns:
        {"train": [...], "test": [...]} (and "validation" when ``validation_cases``), each sorted.
    """
    case_ids = sorted(case_ids)
    if test_cases:
        unknown = sorted(set(test_cases) - set(case_ids))
        if unknown:
            raise ValueError(f"test_cases: unknown case ids {unknown}")
        test = sorted(test_cases)
    else:
        if not 0.0 <= test_fraction < 1.0:
            raise ValueError(f"test_fraction must lie in [0, 1), got {test_fraction}")
        n_test = int(round(test_fraction * len(case_ids)))
        if test_fraction > 0:
            n_test = max(n_test, 1)
        order = np.random.default_rng(seed).permutation(len(case_ids))
        test = sorted(case_ids[i] for i in order[:n_test])
    train = [c for c in case_ids if c not in set(test)]
    if not train:
        raise ValueError(f"no training cases left after holding out {len(test)} of {len(case_ids)}")
    if train_cases is not None:
        if not 1 <= train_cases <= len(train):
            raise ValueError(f"train_cases must lie in [1, {len(train)}] (the cases left after holding out "
                             f"{len(test)} of {len(case_ids)}), got {train_cases}")
        train = sorted(train[i] for i in np.random.default_rng(_key(test)).permutation(len(train))[:train_cases])
    if not validation_cases:
        return {"train": train, "test": test}
    if not 1 <= validation_cases < len(train):
        raise ValueError(f"validation_cases must lie in [0, {len(train) - 1}] (some of the {len(train)} training "
                         f"cases must stay to train on), got {validation_cases}")
    drawn = set(train[i] for i in np.random.default_rng([*_key(test), 1]).permutation(len(train))[:validation_cases])
    return {"train": [c for c in train if c not in drawn], "validation": sorted(drawn), "test": test}


def _key(test) -> list[int]:
    """A generator seed from the held-out ids alone: every model and seed on the same held-out set draws alike."""
    return [int.from_bytes(hashlib.sha256(",".join(test).encode()).digest()[:8], "little")]
