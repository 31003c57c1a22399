"""The papers' protocol: K-fold cross-validation over cases, mean ± std, paired t-tests.

``run_cv`` trains one unit per (fold, repeat): a normal run folder (see
``common.train.segmentation``) plus, once the unit is scored, its ``metrics.json``::

    OUT/plan.json            the units: names, held-out cases, seeds
    OUT/fold_1/ ... fold_K/  run folders (fold_k_repeat_r with repeats); metrics.json marks a finished unit
    OUT/summary.json         per class and metric: mean, std over units, per-unit values
    OUT/summary.md           the same as a Markdown table in the papers' form
    OUT/postprocessing.json  per class: held-out Dice with and without its largest connected component only,
                             and whether ``zoo predict --postprocess`` applies that rule (``common.ct.postprocess``)

Every unit trains from its own seed: fold k of repeat r from ``base_r + k``,
with ``base_r`` the r-th of ``seeds`` (default ``seed + r * folds``), so the
spread over units holds the initialisation's variation as well as the
split's, and no two units share a seed. The split itself depends on
``config.seed`` only, so two runs with the same seed hold out the same cases
and ``compare`` pairs them unit by unit. ``folds=1`` holds out one fixed set
(``test_fraction`` or ``test_cases``) instead, for ``repeats`` seeds.

Rerunning the same command skips finished units and resumes the unfinished
one (its ``BackupAndRestore`` state).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import pathlib

import keras
import numpy as np

from common import atomic, errors, registry, stats, tables
from common.ct import ensemble, inference, metrics, postprocess, shards, splits, volumes
from common.train import callbacks
from common.train import segmentation as training

logger = logging.getLogger(__name__)


def kfold(case_ids, k: int = 5, seed: int = 0) -> list[list[str]]:
    """Partitions case ids into ``k`` held-out sets of near-equal size, shuffled by ``seed``."""
    case_ids = sorted(case_ids)
    if not 2 <= k <= len(case_ids):
        raise ValueError(f"folds must lie in [2, {len(case_ids)}] for {len(case_ids)} cases, got {k}")
    order = np.random.default_rng(seed).permutation(len(case_ids))
    return [sorted(case_ids[i] for i in part) for part in np.array_split(order, k)]


def _plan_units(out: pathlib.Path, units: list[dict]) -> list[dict]:
    """Writes the plan, or checks that a rerun asks for the same one."""
    path = out / ensemble.PLAN
    if path.exists():
        previous = json.loads(path.read_text(encoding="utf-8"))["units"]
        if previous != units:
            raise ValueError(f"{path}: this folder holds a different split or seeds; use a new output folder")
    else:
        atomic.write_json(path, {"units": units})
    return units


def _score_unit(model, config: training.TrainConfig, manifest: dict, test_cases) -> dict:
    """Scores a unit's held-out cases as predicted, and each class reduced to its largest component.

    Where the cohort marks organ look-alikes (``distractors/``), every class also gets
    ``distractor_error``: the share of its look-alikes' voxels predicted as that class.
    """
    cases = {c.case_id: c for c in volumes.find_cases(manifest["source"])}
    missing = sorted(set(test_cases) - set(cases))
    if missing:
        raise errors.DataError(f"{manifest['source']}: held-out cases {missing} not found")
    per_case, lcc_dice = {}, {}
    classes = range(1, manifest["num_classes"])
    for case, image, predicted, reference in inference.predicted_cases(
            model, [cases[c] for c in test_cases], manifest["num_classes"], manifest["hu_window"],
            config.batch_size, label_map=manifest.get("label_map")):
        per_case[case.case_id] = metrics.segmentation_metrics(predicted, reference, image.GetSpacing(), classes)
        distractors = volumes.read_distractors(case, image)
        if distractors is not None:
            for label, error in metrics.distractor_errors(predicted, distractors, classes).items():
                per_case[case.case_id][label][metrics.DISTRACTOR_ERROR] = error
        lcc_dice[case.case_id] = postprocess.lcc_dice(predicted, reference, classes)
        logger.info(f"evaluated {case.case_id}: mean Dice {metrics.mean_foreground_dice(per_case[case.case_id]):.3f}")
    summary = metrics.summarize(list(per_case.values()))
    return {
        "test_cases": list(test_cases),
        "per_case": {case: {str(k): v for k, v in m.items()} for case, m in per_case.items()},
        "per_class": {str(k): {name: s["mean"] for name, s in v.items()} for k, v in summary.items()},
        "lcc_dice": lcc_dice,
    }


def decide_postprocessing(out, class_names) -> dict | None:
    """Writes ``postprocessing.json`` from the units' held-out Dice with and without each class's LCC.

    Returns:
        The decision, or None when a unit is unfinished or was scored before the zoo measured the rule.
    """
    units, planned = load_units(out), json.loads((pathlib.Path(out) / ensemble.PLAN).read_text(encoding="utf-8"))
    if len(units) < len(planned["units"]) or not all("lcc_dice" in u for u in units):
        logger.info(f"{out}: no post-processing decision (a unit is unfinished or scored without the rule)")
        return None
    decision = postprocess.decide(units, class_names)
    postprocess.write_decision(out, decision)
    kept = [entry["name"] for entry in decision["classes"].values() if entry["apply"]]
    logger.info(f"post-processing: largest component kept for {', '.join(kept) or 'no class'} "
                f"({pathlib.Path(out) / postprocess.DECISION})")
    return decision


def _unscored(finished: dict, manifest: dict) -> list[str]:
    """What a unit scored by an older zoo lacks: the largest-component rule, or the cohort's distractor errors."""
    lacks = [] if "lcc_dice" in finished else ["the largest-component rule"]
    first = next(iter(finished["per_class"].values()), {})
    if metrics.DISTRACTOR_ERROR not in first:
        cases = {c.case_id: c for c in volumes.find_cases(manifest["source"])}
        case = cases.get(finished["test_cases"][0])
        if case is not None and volumes.distractors_path(case) is not None:
            lacks.append("the distractor errors")
    return lacks


def _score_older_unit(unit_dir: pathlib.Path, config: training.TrainConfig, manifest: dict) -> None:
    """A finished unit is skipped; one scored before the zoo measured something it now measures is scored again."""
    finished = json.loads((unit_dir / "metrics.json").read_text(encoding="utf-8"))
    lacks = _unscored(finished, manifest)
    if not lacks:
        logger.info(f"{unit_dir.name}: finished earlier, skipped")
        return
    if not (unit_dir / "model.keras").exists():
        logger.info(f"{unit_dir.name}: finished earlier without {' and '.join(lacks)}, and its model is not here to "
                    "score them: kept as it is")
        return
    logger.info(f"{unit_dir.name}: finished earlier, scoring its held-out cases again for {' and '.join(lacks)}")
    model, _ = registry.load_run(unit_dir)
    scored = _score_unit(model, config, manifest, finished["test_cases"])
    atomic.write_json(unit_dir / "metrics.json", {**finished, **scored})


def _run_units(config: training.TrainConfig, out, units: list[dict]) -> dict:
    out = pathlib.Path(out)
    manifest = shards.load_manifest(config.data)
    _plan_units(out, units)
    for unit in units:
        unit_dir = out / unit["name"]
        unit_config = dataclasses.replace(config, out=str(unit_dir), test_cases=unit["test_cases"],
                                          seed=unit["seed"])
        if (unit_dir / "metrics.json").exists():
            _score_older_unit(unit_dir, unit_config, manifest)
            continue
        logger.info(f"{unit['name']}: training, held out {', '.join(unit['test_cases'])}")
        keras.backend.clear_session()  # a fresh model per fold, and no graph left from the last
        try:
            model = training.train(unit_config)
        except callbacks.OtherOptions as error:  # `zoo cv` has no --overwrite: its units keep their folder's options
            raise callbacks.OtherOptions(error.run_dir, error.changes, "give a new output folder") from None
        result = {"name": unit["name"], **_score_unit(model, unit_config, manifest, unit["test_cases"])}
        atomic.write_json(unit_dir / "metrics.json", result)
    summary = summarize_run(out, manifest["class_names"])
    decide_postprocessing(out, manifest["class_names"])
    return summary


def plan_units(case_ids, seed: int = 0, folds: int = 5, repeats: int = 1, seeds=None, test_fraction: float = 0.2,
               test_cases=None) -> list[dict]:
    """The units of a cross-validation: name, held-out cases and training seed of each (fold, repeat).

    Args:
        case_ids: the prepared cases.
        seed: shuffles the split; the first repeat's base seed.
        folds: K >= 2 for K-fold cross-validation, or 1 for one fixed held-out set.
        repeats: trainings per fold, each from other seeds.
        seeds: the repeats' base seeds (default ``seed + r * folds``); fold k trains from ``base + k``.
        test_fraction, test_cases: the held-out set when ``folds`` is 1.
    """
    if folds < 1:
        raise ValueError(f"folds must be >= 1, got {folds}")
    bases = list(seeds) if seeds else [seed + r * folds for r in range(repeats)]
    if seeds and repeats not in (1, len(bases)):
        raise ValueError(f"repeats ({repeats}) and seeds ({len(bases)} given) disagree; give one of them")
    if folds == 1:
        if len(bases) < 2:
            raise ValueError("folds 1 (one fixed held-out set) needs repeats >= 2 for a standard deviation")
        held_out = [splits.holdout_split(case_ids, test_fraction, seed, test_cases)["test"]]
    else:
        held_out = kfold(case_ids, folds, seed)
    units = []
    for r, base in enumerate(bases):
        for k, cases in enumerate(held_out):
            if folds == 1:
                name = f"run_{r + 1}"
            else:
                name = f"fold_{k + 1}" if len(bases) == 1 else f"fold_{k + 1}_repeat_{r + 1}"
            units.append({"name": name, "test_cases": cases, "seed": base + k})
    if len({u["seed"] for u in units}) < len(units):
        raise ValueError(f"seeds {bases}: two units would train from the same seed; space them {folds} apart")
    return units


def run_cv(config: training.TrainConfig, out, folds: int = 5, repeats: int = 1, seeds=None) -> dict:
    """Cross-validation by case, every (fold, repeat) from its own seed; returns the summary (also in ``out``)."""
    ids = [c["id"] for c in shards.load_manifest(config.data)["cases"]]
    units = plan_units(ids, config.seed, folds, repeats, seeds, config.test_fraction, config.test_cases)
    return _run_units(config, out, units)


def load_units(out) -> list[dict]:
    """The finished units' metrics of a cross-validation folder, in plan order."""
    out = pathlib.Path(out)
    plan = out / ensemble.PLAN
    if not plan.exists():
        raise errors.DataError(f"{out}: not a cross-validation folder (no plan.json)")
    units = json.loads(plan.read_text(encoding="utf-8"))["units"]
    return [json.loads((out / u["name"] / "metrics.json").read_text(encoding="utf-8"))
            for u in units if (out / u["name"] / "metrics.json").exists()]


def summarize_run(out, class_names) -> dict:
    """Mean ± sample std over units of each class's per-unit mean metric; writes summary.json and .md."""
    out = pathlib.Path(out)
    units = load_units(out)
    per_class = {}
    for label in units[0]["per_class"] if units else []:
        per_class[label] = {}
        # A unit scored by an older zoo may lack a metric: NaN there, as for one undefined in a unit.
        for name in dict.fromkeys(name for u in units for name in u["per_class"].get(label, {})):
            values = [u["per_class"].get(label, {}).get(name, float("nan")) for u in units]
            mean, std = stats.mean_std(values)
            per_class[label][name] = {"mean": mean, "std": std, "values": values}
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
    return units + "\n\n" + tables.markdown(["class", *metric_names], rows,
                                             caption=tables.spread(f"{len(summary['units'])} folds/runs"))


def format_runs(runs: dict, metric_names=("dice", "voe", "assd", "precision", "recall", "hd")) -> str:
    """One row per cv folder, ``mean (± sample std)`` over units of each class-averaged metric (the papers' Table 1).

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
            cells.append(tables.mean_std(*stats.mean_std([unit_mean(u, name) for u in units]), metrics.scale_of(name)))
        rows.append([f"{label} ({_count_units(units)})", *cells])
    return tables.markdown(["method", *metric_names], rows, caption=tables.spread("each row's units (in brackets)"))


def _count_units(units: list[dict]) -> str:
    """"5 folds", or "15 units: 5 folds x 3 seeds" where folds were trained more than once."""
    folds = len({u["name"].split("_repeat_")[0] for u in units})
    if folds == len(units):
        return f"{folds} folds"
    seeds = f" x {len(units) // folds} seeds" if len(units) % folds == 0 else ""  # else a run still going
    return f"{len(units)} units: {folds} folds{seeds}"


def unit_mean(unit: dict, metric: str = "dice", classes=None) -> float:
    """A fold's ``metric`` averaged over its classes (the papers' "averaged over organs"), or over ``classes``.

    ``classes``: label values as strings (the keys of ``unit["per_class"]``); None for every class.
    """
    per_class = unit["per_class"]
    missing = sorted(set(classes or ()) - set(per_class))
    if missing:
        raise ValueError(f"{unit['name']}: no class {missing} among its scored labels {sorted(per_class)}")
    unscored = sorted(label for label in (classes or per_class) if metric not in per_class[label])
    if unscored:
        raise ValueError(f"{unit['name']}: no {metric!r} scored for class {unscored}; scored: "
                         f"{sorted(per_class[unscored[0]])}")
    values = np.array([per_class[label][metric] for label in (classes or per_class)], np.float64)
    return float(np.nanmean(values)) if not np.isnan(values).all() else math.nan  # NaN: no class scored it


def _read_config(path: pathlib.Path) -> dict:
    """A unit's config.json; {} where there is none (a unit written by hand, or its folder copied without)."""
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise errors.DataError(f"{path}: not a run's configuration ({error})") from None


def _unit_configs(out, names) -> dict[str, dict]:
    return {name: _read_config(pathlib.Path(out) / name / callbacks.CONFIG) for name in names}


def _class_names(configs) -> list[str]:
    """The class names the first unit's config.json that holds them records; [] where none does."""
    return next((list(c["class_names"]) for c in configs if c.get("class_names")), [])


def class_labels(out, names) -> list[str]:
    """Label values (as ``per_class`` keys) of ``names``: numbers, or class names from the folds' config.json."""
    class_names = _class_names(map(_read_config, sorted(pathlib.Path(out).glob(f"*/{callbacks.CONFIG}"))))
    labels = []
    for name in names:
        if name.isdigit():
            labels.append(str(int(name)))
        elif name in class_names:
            labels.append(str(class_names.index(name)))
        else:
            raise ValueError(f"--classes: {name!r} is neither a label number nor one of {class_names[1:]}")
    return labels


# Below this a unit's held-out Dice of a class counts as the organ lost whole, not outlined poorly (zoo compare
# --miss-below): a missed organ scores near 0, one found and outlined overlaps by more than half.
MISS_BELOW = 0.5


def organ_misses(units: list[dict], threshold: float = MISS_BELOW, class_names=()) -> dict[str, list]:
    """Per class, the units that lost it whole: [(unit name, Dice), ...] where its Dice is below ``threshold``.

    A unit's Dice of a class is its mean over the unit's held-out cases (``unit["per_class"][label]["dice"]``);
    an undefined (NaN) one is no miss. Classes are named by ``class_names`` (background first) where it names
    them, else "class <label>"; every scored class is a key, in label order, its units in ``units``' order.
    """
    if not 0 < threshold < 1:
        raise ValueError(f"miss_below: a Dice fraction in (0, 1), got {threshold!r}")
    misses = {}
    for label in sorted({label for unit in units for label in unit["per_class"]}, key=int):
        name = class_names[int(label)] if int(label) < len(class_names) else f"class {label}"
        dice = [(unit["name"], unit["per_class"].get(label, {}).get("dice", float("nan"))) for unit in units]
        misses[name] = [(unit, value) for unit, value in dice if value < threshold]
    return misses


def cohort_check(configs_a: dict[str, dict], configs_b: dict[str, dict]) -> dict:
    """Whether each pair of units (one name, one per arm) trained on the same prepared voxels.

    Compares the units' ``data_sha256`` (``segmentation.run_record``). Returns ``same`` (unit -> the digest both
    record), ``differ`` (units whose two digests differ) and ``unchecked`` (units where an arm's config.json
    records none: prepared before digests, or scored by an older zoo), each in ``configs_a``' order.
    """
    found = {name: (configs_a[name].get("data_sha256"), configs_b.get(name, {}).get("data_sha256"))
             for name in configs_a}
    return {"same": {name: a for name, (a, b) in found.items() if a is not None and a == b},
            "differ": [name for name, (a, b) in found.items() if None not in (a, b) and a != b],
            "unchecked": [name for name, digests in found.items() if None in digests]}


def compare(run_a, run_b, metric: str = "dice", classes=None, miss_below: float = MISS_BELOW) -> dict:
    """Per-unit differences of the class-mean ``metric``, its 95% CI and the paired t-test (scipy).

    Both folders must hold the same units over the same held-out cases. Also whether each pair of units saw the
    same voxels (``cohort``: ``cohort_check``), and each arm's whole-organ misses below ``miss_below``
    (``misses_a``, ``misses_b``: ``organ_misses``).
    ``classes``: average over these label values only (strings; see ``class_labels``).
    """
    a, b = load_units(run_a), load_units(run_b)
    if [(u["name"], u["test_cases"]) for u in a] != [(u["name"], u["test_cases"]) for u in b]:
        raise ValueError(f"{run_a} and {run_b} do not share the same finished folds and held-out cases")
    if len(a) < 2:
        raise ValueError(f"a paired t-test needs at least 2 finished folds, found {len(a)}")
    values_a, values_b = [unit_mean(u, metric, classes) for u in a], [unit_mean(u, metric, classes) for u in b]
    paired = stats.paired(values_a, values_b)  # scipy's ttest_rel of b - a, with the difference's 95% CI
    names = [u["name"] for u in a]
    configs_a, configs_b = _unit_configs(run_a, names), _unit_configs(run_b, names)
    return {"metric": metric, "classes": classes, "units": names, "a": values_a, "b": values_b,
            "difference": paired["difference"], "t": paired["t"], "p_value": paired["p_value"],
            "summary_a": stats.describe(values_a), "summary_b": stats.describe(values_b),
            "paired": paired, "cohort": cohort_check(configs_a, configs_b),
            "misses_a": organ_misses(a, miss_below, _class_names(configs_a.values())),
            "misses_b": organ_misses(b, miss_below, _class_names(configs_b.values()))}
