"""Whether a training had converged when it stopped: the studies' convergence rule, the same for every arm.

The rule (pre-registered for the studies, docs/results.md): a unit converged when its validation loss is flat
over the last fifth of its epochs: the line fitted to ``val_loss`` over those epochs (at least
``MIN_EPOCHS``) falls by no more than ``FLAT_WITHIN`` of their mean from their first to their last epoch.
A loss that still falls faster than that had more to learn; one that is flat or rises (overfitting) had not.
An equal schedule for every arm is then fair only where every unit of every arm passes; ``zoo compare`` and
``zoo compare-pose`` print how many did, per arm.

>>> round(change_over_last_fifth([1.0, 0.6, 0.5, 0.45, 0.44, 0.44, 0.44, 0.44, 0.44, 0.44]), 6)  # flat: converged
0.0
>>> round(change_over_last_fifth([1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1]), 3)  # halves again: not
-1.0
"""

from __future__ import annotations

import csv
import math
import pathlib

import numpy as np

LAST = 0.2  # the last fifth of the epochs
MIN_EPOCHS = 3  # a line through fewer says nothing
FLAT_WITHIN = 0.02  # a fall of at most 2% of the mean loss over the last fifth
COLUMN = "val_loss"


def change_over_last_fifth(losses) -> float:
    """The fitted change of ``losses`` from the first to the last of the last fifth of epochs, over their mean."""
    losses = np.asarray(losses, np.float64)
    window = losses[-max(MIN_EPOCHS, math.ceil(LAST * len(losses))):]
    if len(window) < MIN_EPOCHS:
        raise ValueError(f"losses: the rule needs at least {MIN_EPOCHS} epochs, got {len(window)}")
    slope = np.polyfit(np.arange(len(window)), window, 1)[0]
    return float(slope * (len(window) - 1) / window.mean())


def check(history: pathlib.Path, within: float = FLAT_WITHIN) -> dict | None:
    """The rule on one training's ``history.csv``: {"epochs", "change", "converged"}; None when it has no
    validation loss or too few epochs (the unit cannot be checked)."""
    history = pathlib.Path(history)
    if not history.exists():
        return None
    with open(history, encoding="utf-8", newline="") as stream:
        values = [row.get(COLUMN) for row in csv.DictReader(stream)]
    if not values or any(v in (None, "") for v in values) or len(values) < MIN_EPOCHS:
        return None
    change = change_over_last_fifth([float(v) for v in values])
    return {"epochs": len(values), "change": change, "converged": change >= -within}


def summary(histories: dict[str, pathlib.Path], within: float = FLAT_WITHIN) -> dict:
    """The rule on each unit of an arm (unit name -> its history): the checks, and who did not converge or could
    not be checked."""
    checks = {name: check(path, within) for name, path in histories.items()}
    return {"checks": checks, "unconverged": [n for n, c in checks.items() if c and not c["converged"]],
            "unchecked": [n for n, c in checks.items() if c is None]}


def describe(arm: dict) -> str:
    """One line: how many units of an arm converged by the rule, naming those that did not or could not be checked."""
    total = len(arm["checks"])
    passed = total - len(arm["unconverged"]) - len(arm["unchecked"])
    parts = [f"{passed} of {total} units converged"]
    if arm["unconverged"]:
        parts.append("NOT converged: " + ", ".join(
            f"{n} ({arm['checks'][n]['change']:+.1%})" for n in arm["unconverged"]))
    if arm["unchecked"]:
        parts.append(f"unchecked (no {COLUMN}, or under {MIN_EPOCHS} epochs): " + ", ".join(arm["unchecked"]))
    return "; ".join(parts)


def beside_mean(arm: dict) -> str:
    """What stands beside an arm's mean when the rule does not hold for every unit ("" when it does)."""
    told = [f"{len(arm['unconverged'])} unit(s) not converged"] if arm["unconverged"] else []
    told += [f"{len(arm['unchecked'])} unit(s) unchecked"] if arm["unchecked"] else []
    return f"  [{'; '.join(told)}]" if told else ""


RULE = (f"convergence rule: {COLUMN} flat over the last fifth of epochs (fitted fall <= {FLAT_WITHIN:.0%} of its "
        "mean; common.train.convergence)")
