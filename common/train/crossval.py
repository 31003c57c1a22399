"""The papers' protocol: K-fold cross-validation over cases, mean ± std, paired t-tests.

``run_cv`` writes one folder per fold (a normal run folder, see
``common.train.segmentation``) plus, once the fold is scored, its ``metrics.json``::

    OUT/plan.json            the units: fold (or repeat) names, held-out cases, seeds
    OUT/fold_1/ ... fold_K/  run folders; metrics.json marks a finished fold
    OUT/summary.json         per class and metric: mean, std over folds, per-fold values
    OUT/summary.md           the same as a Markdown table in the papers' form

Rerunning the same command skips finished folds and resumes the unfinished
one (its ``BackupAndRestore`` state). ``run_repeats`` is the same for tasks
with a fixed split: one held-out set, N seeds.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

import keras
import numpy as np
from scipy import stats

from common import atomic, errors, tables
from common.ct import inference, metrics, shards, splits, volumes
from common.train import segmentation as training


def kfold(case_ids, k: int = 5, seed: int = 0) -> list[list[str]]:
    """Partitions case ids into ``k`` held-out sets of near-equal size, shuffled by ``seed``."""
    case_ids = sorted(case_ids)
    if not 2 <= k <= len(case_ids):
        raise ValueError(f"folds must lie in [2, {len(case_ids)}] for {len(case_ids)} cases, got {k}")
    order = np.random.default_rng(seed).permutation(len(case_ids))
    return [sorted(case_ids[i] for i in part) for part in np.array_split(order, k)]


def _plan_units(out: pathlib.Path, units: list[dict]) -> list[dict]:
    """Writes the plan, or checks that a rerun asks for the same one."""
    path = out / "plan.json"
    if path.exists():
        previous = json.loads(path.read_text(encoding="utf-8"))["units"]
        if previous != units:
            raise ValueError(f"{path}: this folder holds a different split or seeds; use a new output folder")
    else:
        atomic.write_json(path, {"units": units})
    return units


def _score_unit(model, config: training.TrainConfig, manifest: dict, test_cases, log) -> dict:
    cases = {c.case_id: c for c in volumes.find_cases(manifest["source"])}
    missing = sorted(set(test_cases) - set(cases))
    if missing:
        raise errors.DataError(f"{manifest['source']}: held-out cases {missing} not found")
    per_case = inference.evaluate_cases(model, [cases[c] for c in test_cases], manifest["num_classes"],
                                        manifest["hu_window"], config.batch_size,
                                        label_map=manifest.get("label_map"), log=log)
    summary = metrics.summarize(list(per_case.values()))
    return {
        "test_cases": list(test_cases),
        "per_case": {case: {str(k): v for k, v in m.items()} for case, m in per_case.items()},
        "per_class": {str(k): {name: s["mean"] for name, s in v.items()} for k, v in summary.items()},
    }


def _run_units(config: training.TrainConfig, out, units: list[dict], log) -> dict:
    out = pathlib.Path(out)
    manifest = shards.load_manifest(config.data)
    _plan_units(out, units)
    for unit in units:
        unit_dir = out / unit["name"]
        if (unit_dir / "metrics.json").exists():
            log(f"{unit['name']}: finished earlier, skipped")
            continue
        log(f"{unit['name']}: training, held out {', '.join(unit['test_cases'])}")
        keras.backend.clear_session()  # a fresh model per fold, and no graph left from the last
        unit_config = dataclasses.replace(config, out=str(unit_dir), test_cases=unit["test_cases"],
                                          seed=unit["seed"])
        model = training.train(unit_config, log=log)
        result = {"name": unit["name"], **_score_unit(model, unit_config, manifest, unit["test_cases"], log)}
        atomic.write_json(unit_dir / "metrics.json", result)
    return summarize_run(out, manifest["class_names"])


def run_cv(config: training.TrainConfig, out, folds: int = 5, log=print) -> dict:
    """K-fold cross-validation by case; returns the summary (also written to ``out``)."""
    ids = [c["id"] for c in shards.load_manifest(config.data)["cases"]]
    units = [{"name": f"fold_{i + 1}", "test_cases": held_out, "seed": config.seed}
             for i, held_out in enumerate(kfold(ids, folds, config.seed))]
    return _run_units(config, out, units, log)


def run_repeats(config: training.TrainConfig, out, repeats: int = 5, log=print) -> dict:
    """One fixed held-out split, ``repeats`` trainings with seeds seed, seed+1, ..."""
    if repeats < 2:
        raise ValueError(f"repeats must be >= 2 for a standard deviation, got {repeats}")
    ids = [c["id"] for c in shards.load_manifest(config.data)["cases"]]
    held_out = splits.holdout_split(ids, config.test_fraction, config.seed, config.test_cases)["test"]
    units = [{"name": f"run_{i + 1}", "test_cases": held_out, "seed": config.seed + i} for i in range(repeats)]
    return _run_units(config, out, units, log)


def load_units(out) -> list[dict]:
    """The finished units' metrics of a cross-validation folder, in plan order."""
    out = pathlib.Path(out)
    plan = out / "plan.json"
    if not plan.exists():
        raise errors.DataError(f"{out}: not a cross-validation folder (no plan.json)")
    units = json.loads(plan.read_text(encoding="utf-8"))["units"]
    return [json.loads((out / u["name"] / "metrics.json").read_text(encoding="utf-8"))
            for u in units if (out / u["name"] / "metrics.json").exists()]


def summarize_run(out, class_names) -> dict:
    """Mean ± std over units of each class's per-unit mean metric; writes summary.json and .md."""
    out = pathlib.Path(out)
    units = load_units(out)
    per_class = {}
    for label in units[0]["per_class"] if units else []:
        per_class[label] = {}
        for name in units[0]["per_class"][label]:
            values = [u["per_class"][label][name] for u in units]
            per_class[label][name] = {"mean": float(np.nanmean(values)), "std": float(np.nanstd(values)),
                                      "values": values}
    summary = {"units": [u["name"] for u in units], "class_names": list(class_names), "per_class": per_class}
    atomic.write_json(out / "summary.json", summary)
    with atomic.atomic_path(out / "summary.md") as tmp:
        tmp.write_text(format_summary(summary) + "\n", encoding="utf-8")
    return summary


def format_summary(summary: dict, metric_names=("dice", "hd95", "assd")) -> str:
    """The papers' table: one row per class, ``mean (± std)`` over folds; overlaps in percent."""
    rows = []
    for label, by_metric in summary["per_class"].items():
        cells = [tables.mean_std(by_metric[name]["mean"], by_metric[name]["std"], metrics.scale_of(name))
                 for name in metric_names]
        rows.append([summary["class_names"][int(label)], *cells])
    units = f"{len(summary['units'])} folds/runs: " + ", ".join(summary["units"])
    return units + "\n\n" + tables.markdown(["class", *metric_names], rows)


def format_runs(runs: dict, metric_names=("dice", "voe", "assd", "precision", "recall", "hd")) -> str:
    """One row per cv folder, ``mean (± std)`` over folds of each class-averaged metric (the papers' Table 1).

    Args:
        runs: row label -> cross-validation folder.
        metric_names: the columns; overlaps in percent, distances in mm.
    """
    rows = []
    for label, folder in runs.items():
        units = load_units(folder)
        if not units:
            raise ValueError(f"{folder}: no finished fold to report")
        cells = []
        for name in metric_names:
            values = [unit_mean(u, name) for u in units]
            cells.append(tables.mean_std(np.nanmean(values), np.nanstd(values), metrics.scale_of(name)))
        rows.append([f"{label} ({len(units)} folds)", *cells])
    return tables.markdown(["method", *metric_names], rows)


def unit_mean(unit: dict, metric: str = "dice") -> float:
    """A fold's ``metric`` averaged over its classes (the papers' "averaged over organs")."""
    return float(np.nanmean([by_metric[metric] for by_metric in unit["per_class"].values()]))


def compare(run_a, run_b, metric: str = "dice") -> dict:
    """Per-unit differences of the class-mean ``metric`` and the paired t-test p-value (scipy).

    Both folders must hold the same units over the same held-out cases.
    """
    a, b = load_units(run_a), load_units(run_b)
    if [(u["name"], u["test_cases"]) for u in a] != [(u["name"], u["test_cases"]) for u in b]:
        raise ValueError(f"{run_a} and {run_b} do not share the same finished folds and held-out cases")
    if len(a) < 2:
        raise ValueError(f"a paired t-test needs at least 2 finished folds, found {len(a)}")
    values_a, values_b = [unit_mean(u, metric) for u in a], [unit_mean(u, metric) for u in b]
    test = stats.ttest_rel(values_b, values_a)
    return {"metric": metric, "units": [u["name"] for u in a], "a": values_a, "b": values_b,
            "difference": [vb - va for va, vb in zip(values_a, values_b)],
            "t": float(test.statistic), "p_value": float(test.pvalue)}
