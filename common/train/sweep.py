"""The studies' learning-rate sweep: one training command at a few multiples of its rate, the best by validation loss.

Pre-registered for the studies (issue 36, docs/results.md): each arm's command runs once per scale (by default
x1/3, x1, x3 of its recipe's rate: ``--lr-scale``), on one fold and seed that the test does not use, and the arm
then trains at the scale whose model ended with the lowest validation loss. "The model it ends with" is the one
the command keeps and scores: after the last epoch for the fixed schedules of ``zoo train`` and ``zoo
train-pose`` (its last stage), the best epoch of the last training for ``zoo tri-al`` (whose early stopping keeps
those weights). A scale whose loss turned NaN or infinite is recorded as diverged and never chosen.

A sweep folder holds one run per scale, ``OUT/lr_x<scale>/``, each the command's own run folder (a rerun of the
sweep resumes them), and ``OUT/sweep.json``: the command, each scale's validation loss, the choice and this rule.

>>> run_name(1 / 3), run_name(1.0), run_name(3.0)
('lr_x0.333', 'lr_x1', 'lr_x3')
>>> choose({0.333: 0.41, 1.0: 0.38, 3.0: None})  # 3.0 diverged
1.0
"""

from __future__ import annotations

import csv
import math
import pathlib

from common import errors

SCALES = (1 / 3, 1.0, 3.0)
COMMANDS = ("train", "train-pose", "tri-al")  # one training each, with a val_loss per epoch
RULE = ("learning-rate sweep: each scale's validation loss of the model its command keeps (the last epoch; the best "
        "epoch for tri-al's early stopping); the lowest is chosen, a diverged scale never (common.train.sweep)")


def run_name(scale: float) -> str:
    """The run folder of one scale: ``lr_x`` and the scale to three significant digits."""
    return f"lr_x{scale:.3g}"


def _val_losses(history: pathlib.Path) -> list[float]:
    if not history.exists():
        raise errors.DataError(f"{history}: missing; the sweep's run did not finish")
    with open(history, encoding="utf-8", newline="") as stream:
        values = [row.get("val_loss") for row in csv.DictReader(stream)]
    if not values or any(v in (None, "") for v in values):
        raise errors.DataError(f"{history}: no val_loss to choose by (zoo train: give --validation-cases N; "
                               "train-pose: the data needs a valid split)")
    return [float(v) for v in values]


def _tri_al_history(run: pathlib.Path) -> pathlib.Path:
    """The history of the last training of the one column and run a sweep's ``zoo tri-al`` study holds."""
    runs = sorted(p for p in run.glob("*/run_*") if p.parent.name != "source")
    if len(runs) != 1:
        raise errors.DataError(f"{run}: a sweep's tri-al study holds one column and one run (--strategy with one "
                               f"value, --fractions with one for supervised, --runs 1); found {len(runs)}")
    if (runs[0] / "logs" / "history.csv").exists():  # TRI-SL: one training
        return runs[0] / "logs" / "history.csv"
    rounds = sorted(runs[0].glob("logs/iteration_*"), key=lambda p: int(p.name.split("_")[1]))
    if not rounds:
        raise errors.DataError(f"{runs[0]}: no training logs; the sweep's run did not finish")
    return rounds[-1] / "history.csv"


def final_val_loss(command: str, run) -> float:
    """The validation loss of the model ``command``'s run folder ``run`` ends with (the module's rule)."""
    run = pathlib.Path(run)
    if command == "train":
        return _val_losses(run / "history.csv")[-1]
    if command == "train-pose":
        from common.train import pose

        return _val_losses(pose.last_stage_history(run))[-1]
    if command == "tri-al":
        return min(_val_losses(_tri_al_history(run)))
    raise ValueError(f"command must be one of {COMMANDS}, got {command!r}")


def choose(losses: dict[float, float | None]) -> float:
    """The scale of the lowest finite loss (None: diverged)."""
    finite = {s: v for s, v in losses.items() if v is not None and math.isfinite(v)}
    if not finite:
        raise errors.DataError(f"every scale of the sweep diverged ({', '.join(map(run_name, losses))})")
    return min(finite, key=finite.get)


def record(command: list[str], losses: dict[float, float | None], out) -> dict:
    """What ``sweep.json`` holds."""
    chosen = choose(losses)
    return {"command": command, "rule": RULE, "chosen_scale": chosen,
            "scales": [{"scale": s, "run": str(pathlib.Path(out) / run_name(s)), "val_loss": v,
                        "diverged": v is None} for s, v in losses.items()]}


def format_record(sweep: dict) -> str:
    """A table of the scales and their losses, the chosen one marked."""
    rows = ["| lr scale | val_loss | |", "|---|---|---|"]
    for row in sweep["scales"]:
        loss = "diverged" if row["diverged"] else f"{row['val_loss']:.6f}"
        rows.append(f"| x{row['scale']:.3g} | {loss} | {'chosen' if row['scale'] == sweep['chosen_scale'] else ''} |")
    return "\n".join(rows) + f"\n{RULE}"
