"""The TRI-AL study (paper III): source model, supervised baselines, ITER / OOD / ENT (and RANDOM), over several runs.

``run_study(config)`` reads a triplet folder (``common.slides.triplets.prepare_triplets``)
whose slides come from two laboratories, and writes::

    OUT/study.json                   the settings and the target split by slide (a rerun must match)
    OUT/source/                      the starting point of every target run: TRI-CNN trained on the source
                                     lab (model.keras), or the ``source_model`` given; its weights and its
                                     metrics on the target test
    OUT/SL_<pct>/run_<r>/            TRI-SL on pct % of the target training set
    OUT/<ITER|OOD|ENT|RANDOM>/run_<r>/  active-learning runs, one state file per iteration (RANDOM: not the
                                     paper's, ITER's schedule with uniform draws; ``tri_al.strategies``)
    OUT/results.json                 test metrics of every finished run, by column of Table II

Every training logs its epochs as ``zoo train`` does (``history.csv`` and
TensorBoard's events, ``common.train.callbacks.logging_callbacks``): in
``source/logs/``, ``SL_<pct>/run_<r>/logs/`` and
``<strategy>/run_<r>/logs/iteration_<j>/``.

Every stage is skipped when its state file exists, so rerunning the command
resumes an interrupted study. With ``source_model`` (an already trained
TRI-CNN, ``.keras``) no source lab is needed and no source model is trained.
Triplets stream from their shards (``triplets.load_pools``), so a study of
the paper's size (~346k target triplets) does not hold them in memory.
``train.stain_augment`` (``zoo tri-al --stain-augment``, not the paper's)
jitters the stains of every training batch: source, TRI-SL and TRI-AL.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib

import keras
import numpy as np

from common import atomic, errors, registry
from common.slides import triplets
from common.train import callbacks as train_callbacks
from tri_al import INPUT_NAMES, build_model
from tri_al import active_learning as al
from tri_al.model import BASE_FILTERS, HEAD_UNITS, base_filters_of_width, check_base_filters  # CLI: defaults, --width
from tri_al.strategies import STRATEGIES  # with TrainConfig, what the CLI configures a study with
from tri_al.training import TrainConfig, fresh_logs

logger = logging.getLogger(__name__)

FRACTIONS = (0.2, 0.4, 0.6, 0.8, 1.0)


@dataclasses.dataclass
class StudyConfig:
    data: str
    out: str
    strategies: tuple = ("supervised", "ITER", "OOD", "ENT")
    runs: int = 5
    fractions: tuple = FRACTIONS
    base_filters: int | None = None  # None: 64 (VGG16), or the source model's
    head_units: int | None = None  # None: 4096 (the original's), or the source model's
    backbone_weights: str | None = None
    preprocessing: str | None = None  # None: "raw", the original's 0-255 RGB; "imagenet": caffe preprocessing
    source_model: str | None = None  # a trained TRI-CNN (.keras) to adapt instead of training one
    source_lab: str = "A"
    target_lab: str = "B"
    target_split: tuple = (0.7, 0.15, 0.15)  # train, val, test shares of the target slides
    iterations: int = 5
    budget: int = 20000
    candidates: int = 30000
    initial_per_class: int = 25000
    source_epochs: int = 100
    seed: int = 0
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)

    def __post_init__(self):
        unknown = sorted(set(self.strategies) - {"supervised", *STRATEGIES})
        if unknown:
            raise ValueError(f"strategy must be among supervised, {', '.join(STRATEGIES)}, got {unknown}")
        if self.runs < 1:
            raise ValueError(f"runs must be at least 1, got {self.runs}")
        if any(not 0 < f <= 1 for f in self.fractions):
            raise ValueError(f"fractions must lie in (0, 1], got {self.fractions}")
        if self.source_model is not None:
            given = [n for n in ("base_filters", "head_units", "backbone_weights", "preprocessing")
                     if getattr(self, n) is not None]
            if given:
                raise ValueError(f"{', '.join(given)}: the model comes from source_model {self.source_model}; "
                                 "leave them out")
        else:
            self.base_filters = BASE_FILTERS if self.base_filters is None else self.base_filters
            check_base_filters(self.base_filters)  # before study.json records it
            self.head_units = HEAD_UNITS if self.head_units is None else self.head_units
            self.preprocessing = "raw" if self.preprocessing is None else self.preprocessing


def load_source_model(path, classes, tile_size: int) -> keras.Model:
    """A trained TRI-CNN to adapt, checked against the triplets: its inputs, tile size and classes."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise errors.DataError(f"{path}: no such model file (source model)")
    model, _ = registry.load_run(path)  # one line for a file that is not a model, or that safe mode refuses
    inputs = [t.name for t in model.inputs]
    if inputs != list(INPUT_NAMES) or len(model.outputs) != 1:
        raise errors.DataError(f"{path}: not a TRI-CNN (inputs {inputs}, {len(model.outputs)} outputs; expected "
                               f"inputs {list(INPUT_NAMES)} and one output)")
    sides = sorted({side for t in model.inputs for side in t.shape[1:3]}, key=str)
    if sides != [tile_size]:
        raise errors.DataError(f"{path}: a TRI-CNN of {'/'.join(map(str, sides))}-pixel tiles; the triplets are "
                               f"{tile_size}-pixel")
    if model.output_shape[-1] != len(classes):
        raise errors.DataError(f"{path}: a TRI-CNN of {model.output_shape[-1]} classes; the triplets have "
                               f"{len(classes)} ({', '.join(classes)})")
    return model


def _ids_of(pools: triplets.TripletPools, slides) -> np.ndarray:
    return np.flatnonzero(np.isin(pools.slide_ids, list(slides)))


def _as_today(settings: dict, path) -> None:
    """A study.json's settings as today's StudyConfig writes them, for studies from before an option or a name."""
    settings.get("train", {}).setdefault("stain_augment", 0.0)  # studies from before the option
    # Studies from before the option fed ImageNet's preprocessing: `--preprocessing imagenet` resumes them.
    settings.setdefault("preprocessing", None if settings.get("source_model") else "imagenet")
    if "width" in settings:  # the VGG16 width multiplier before base_filters (None with a source model)
        width = settings.pop("width")
        try:
            settings["base_filters"] = None if width is None else base_filters_of_width(width)
        except ValueError as error:  # 64 x width not whole: no model of today has those widths
            raise errors.DataError(f"{path}: settings: {error}; the study cannot resume, use a new OUT") from None


def _plan(config: StudyConfig, manifest: dict) -> dict:
    """The slides of each lab and the target split by slide; written once, checked on reruns."""
    labs = (config.target_lab,) if config.source_model else (config.source_lab, config.target_lab)
    by_lab = {lab: sorted(s for s, e in manifest["slides"].items() if e["lab"] == lab) for lab in labs}
    for lab, slides in by_lab.items():
        if len(slides) < (3 if lab == config.target_lab else 2):
            raise ValueError(f"{config.data}: lab {lab!r} has {len(slides)} slides; the source lab needs 2 "
                             "(train, val) and the target lab 3 (train, val, test)")
    # Strategies, runs and fractions only add columns: a rerun may change them.
    settings = {k: v for k, v in dataclasses.asdict(config).items()
                if k not in ("out", "strategies", "runs", "fractions")}
    plan = {"source": {"model": config.source_model},
            "target": triplets.split_slides(by_lab[config.target_lab], config.target_split, seed=config.seed),
            "settings": settings}
    if not config.source_model:
        slides = by_lab[config.source_lab]
        source = triplets.split_slides(slides, seed=config.seed) if len(slides) > 2 \
            else {"train": slides[:1], "val": slides[1:], "test": []}
        plan["source"] = {"train": sorted(source["train"] + source["test"]), "val": source["val"]}
    path = pathlib.Path(config.out) / "study.json"
    if path.exists():
        previous = json.loads(path.read_text(encoding="utf-8"))
        _as_today(previous["settings"], path)
        if previous["target"] != plan["target"] or previous["settings"] != json.loads(json.dumps(plan["settings"])):
            raise ValueError(f"{path}: this folder holds a study with other settings; use a new OUT")
    else:
        atomic.write_json(path, plan)
    return plan


def _train_on_source(model, config: StudyConfig, plan: dict) -> dict:
    """Trains TRI-CNN on the source lab's slides; returns its metrics on the source validation slides."""
    source = triplets.load_pools(config.data, plan["source"]["train"] + plan["source"]["val"])
    split = {"train": _ids_of(source, plan["source"]["train"]), "val": _ids_of(source, plan["source"]["val"])}
    train_config = dataclasses.replace(config.train, epochs=config.source_epochs)
    logs = fresh_logs(pathlib.Path(config.out) / "source" / "logs", train_callbacks.logging_callbacks)
    al.train(model, source, split["train"], split["val"], train_config, seed=config.seed,
             run=f"{config.out}: source training", callbacks=logs)
    return al.evaluate(model, source, split["val"])


def _source_stage(model, config: StudyConfig, plan: dict, target, target_split) -> pathlib.Path:
    """The weights every target run starts from: TRI-CNN trained on the source lab, or ``source_model``'s.

    Either is scored on the target test slides (Table II, column 1).
    """
    folder = pathlib.Path(config.out) / "source"
    weights = folder / "model.weights.h5"
    if (folder / "metrics.json").exists():
        return weights
    if config.source_model:
        metrics = {"source_model": config.source_model}
    else:
        metrics = {"source_val": _train_on_source(model, config, plan)}
        with atomic.atomic_path(folder / "model.keras") as tmp:  # to adapt again: --source-model
            model.save(tmp)
    metrics["test"] = al.evaluate(model, target, target_split["test"])
    atomic.save_weights(model, weights)
    atomic.write_json(folder / "metrics.json", metrics)
    origin = (f"{config.source_model}" if config.source_model else
              f"val micro F1 {metrics['source_val']['micro_f1']:.3f} (source lab)")
    logger.info(f"source model: {origin}, test micro F1 {metrics['test']['micro_f1']:.3f} (target lab)")
    return weights


def run_study(config: StudyConfig) -> dict:
    """Runs (or resumes) every requested column of Table II and writes ``results.json``."""
    out = pathlib.Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((pathlib.Path(config.data) / triplets.MANIFEST).read_text(encoding="utf-8")) \
        if (pathlib.Path(config.data) / triplets.MANIFEST).exists() else None
    if manifest is None:
        raise errors.DataError(f"{pathlib.Path(config.data) / triplets.MANIFEST}: missing; run `zoo triplets` first")
    # A wrong source model must fail before study.json records it in the settings.
    model = load_source_model(config.source_model, manifest["classes"], manifest["tile_size"]) \
        if config.source_model else None
    plan = _plan(config, manifest)
    if model is None:
        model = build_model(num_classes=len(manifest["classes"]), tile_size=manifest["tile_size"],
                            backbone_weights=config.backbone_weights, base_filters=config.base_filters,
                            head_units=config.head_units, preprocessing=config.preprocessing)
    target = triplets.load_pools(config.data, sorted(sum(plan["target"].values(), [])))
    split = {k: _ids_of(target, v) for k, v in plan["target"].items()}
    source_weights = _source_stage(model, config, plan, target, split)
    for run in range(config.runs):
        seed = config.seed + run
        if "supervised" in config.strategies:
            for fraction in config.fractions:
                state = al.run_supervised(model, target, split, fraction, out / f"SL_{round(fraction * 100)}" /
                                          f"run_{run}", config.train, seed=seed, initial_weights=source_weights,
                                          log_callbacks=train_callbacks.logging_callbacks)
                logger.info(f"SL {fraction:.0%} run {run}: test micro F1 {state['test']['micro_f1']:.3f}")
        for strategy in (s for s in STRATEGIES if s in config.strategies):
            al_config = al.ALConfig(strategy, iterations=config.iterations, budget=config.budget,
                                    candidates=config.candidates, initial_per_class=config.initial_per_class,
                                    seed=seed, train=config.train)
            folder = out / strategy / f"run_{run}"
            states = al.run_active_learning(model, target, split, folder, al_config, initial_weights=source_weights,
                                            log_callbacks=train_callbacks.logging_callbacks)
            if not (folder / "model.keras").exists():
                with atomic.atomic_path(folder / "model.keras") as tmp:
                    model.save(tmp)
            logger.info(f"{strategy} run {run}: {len(states)} iterations, {len(states[-1].train_ids)} samples, "
                        f"test micro F1 {states[-1].test['micro_f1']:.3f}")
    results = collect_results(out)
    atomic.write_json(out / "results.json", results)
    return results


def collect_results(out) -> dict:
    """Test metrics of every finished run under ``out``, keyed by Table II's column names."""
    out = pathlib.Path(out)
    columns = {}
    if (out / "source" / "metrics.json").exists():
        columns["TRI-CNN"] = [json.loads((out / "source" / "metrics.json").read_text(encoding="utf-8"))["test"]]
    for folder in sorted(out.glob("SL_*"), key=lambda p: int(p.name.split("_")[1])):
        runs = [al.load_supervised(p) for p in sorted(folder.glob("run_*/supervised.json"))]
        if runs:
            columns[f"TRI-SL({folder.name.split('_')[1]}%)"] = [
                {**r["test"], "samples": len(r["train_ids"]), "run": int(p.parent.name.split("_")[1])}
                for r, p in zip(runs, sorted(folder.glob("run_*/supervised.json")))]
    for strategy in STRATEGIES:
        finals = []
        for run in sorted((out / strategy).glob("run_*")):
            states = sorted(run.glob("iteration_*.json"), key=lambda p: int(p.stem.split("_")[1]))
            last = al.LoopState.load(states[-1]) if states else None
            if last and last.done:
                finals.append({**last.test, "samples": len(last.train_ids), "iterations": len(states),
                               "run": int(run.name.split("_")[1])})
        if finals:
            columns[f"TRI-AL_{strategy}"] = finals
    return columns


def collect_studies(folders) -> tuple[dict, dict[str, pathlib.Path]]:
    """``collect_results`` of several study folders of one study, and the folder of each column.

    A study whose arms train at rates of their own (a learning-rate sweep per arm) runs each arm in a folder of
    its own, since a folder's settings hold one rate. They are one study when every folder has the same target
    split and the same source model (``zoo tri-al --source-model``, the same file) and no column is in two of them
    (TRI-CNN, the source model scored on the target test slides, is in each: the same scores). The columns come
    in Table II's order whatever the folders' order.
    """
    folders = [pathlib.Path(f) for f in folders]
    results, where, first = {}, {}, None
    for folder in folders:
        path = folder / "study.json"
        if not path.exists():
            raise errors.DataError(f"{path}: missing; not a study folder of `zoo tri-al`")
        plan = json.loads(path.read_text(encoding="utf-8"))
        if first is None:
            first = (folder, plan)
        elif (plan["target"], plan["source"]) != (first[1]["target"], first[1]["source"]):
            raise errors.DataError(f"{folder}: another target split or source model than {first[0]}; a report "
                                   "pairs runs of one study only")
        for column, runs in collect_results(folder).items():
            if column in results and not (column == "TRI-CNN" and runs == results[column]):
                raise errors.DataError(f"{column}: in both {where[column]} and {folder}; give each column once")
            results.setdefault(column, runs)
            where.setdefault(column, folder)
    return {column: results[column] for column in sorted(results, key=_column_order)}, where


def _column_order(column: str) -> tuple:
    """Table II's order, as ``collect_results`` gives it: TRI-CNN, TRI-SL by share, then the strategies."""
    if column.startswith("TRI-SL("):
        return 1, float(column[len("TRI-SL("):-len("%)")])
    if column.startswith("TRI-AL_"):
        return 2, list(STRATEGIES).index(column[len("TRI-AL_"):])
    return 0, 0
