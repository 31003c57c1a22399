"""Serving: ``zoo export`` (SavedModel for TF Serving, ``--pipeline`` for the whole inference, ``--verify`` to check
one) and ``request`` (a gRPC client)."""

from __future__ import annotations

import json
import logging
import math
import pathlib
import re

from common.cli import options
from common.ct import volumes

logger = logging.getLogger(__name__)


def _add_export(sub):
    from common.cli import ct

    p = sub.add_parser("export", help="write a versioned SavedModel for TF Serving, or check one (--verify)")
    p.add_argument("model", nargs="?", help="run folder or .keras file; with --pipeline also a zoo cv folder")
    p.add_argument("base_dir", nargs="?", help="folder the model server watches")
    p.add_argument("--name", default=None, help="model name (default: the run folder's or file's name)")
    p.add_argument("--version", type=int, default=None, help="integer version (default: next free)")
    p.add_argument("--server-base-path", default=None,
                   help="where the server sees BASE_DIR/NAME, e.g. /models/NAME in docker")
    p.add_argument("--version-label", action="append", default=[], metavar="LABEL",
                   help="name this version LABEL (e.g. stable, canary) in models.config; repeatable. The model's "
                        "policy then serves exactly its labelled versions")
    p.add_argument("--card-include-split", action="store_true",
                   help="put the run's split, its case ids (often patient identifiers), on the model card; by "
                        "default the card holds no case id, no path and no command line of the training machine")
    p.add_argument("--verify", metavar="DIR", default=None,
                   help="instead of exporting, check a served model folder (BASE_DIR/NAME, or one version): first "
                        "every op of its graphs against the ops of the zoo's own exports, before anything runs (any "
                        "other op, e.g. a file or Python op, is refused by name), then the signature against its "
                        "metadata.json (first against its JSON Schema, common/serve/card_schema.json) and the "
                        "warm-up requests through it; exit status 2 on any mismatch")
    pipeline = p.add_argument_group(
        "pipeline", "--pipeline: one SavedModel from a raw HU volume [z, y, x] (LPS) to its uint8 labels, holding "
                    "zoo predict's inference with these options (common.serve.pipeline)")
    pipeline.add_argument("--pipeline", action="store_true", help="export the whole inference, not the network")
    pipeline.add_argument("--probabilities", action="store_true",
                          help="the pipeline also returns the probabilities [z, y, x, C]")
    ct.inference_options(pipeline)
    p.set_defaults(handler=export)


# The pipeline's options (common.cli.ct.inference_options) with their defaults: a plain export takes none.
PIPELINE_DEFAULTS = {"tile": "auto", "step": 0.5, "tta": None, "spacing": "none", "postprocess": False,
                     "batch_size": 8, "probabilities": False}


def _add_request(sub):
    p = sub.add_parser("request", help="send one CT slice to TF Serving over gRPC, write its label map")
    p.add_argument("server", help="model server gRPC address, e.g. localhost:8500")
    p.add_argument("name", help="model name on the server")
    p.add_argument("input", help="CT volume")
    p.add_argument("output", help="label map to write (.png of class indices, or .npy)")
    p.add_argument("--slice", type=int, default=None, help="axial slice index (default: the middle one)")
    p.add_argument("--window", type=options.hu_window, default=None, help="HU window LOW,HIGH (default -160,240)")
    p.set_defaults(handler=request)


def export(args) -> None:
    if args.verify:
        return verify(args)
    for argument in ("model", "base_dir"):
        if getattr(args, argument) is None:
            raise ValueError(f"{argument.upper()}: required to export (or give --verify DIR)")
    from common import registry
    from common.serve import export as export_module

    path = pathlib.Path(args.model)
    name = args.name or (path.name if path.is_dir() else path.name.removesuffix(".keras"))
    if args.pipeline:
        return export_pipeline(args, name)
    given = [f"--{key.replace('_', '-')}" for key, value in PIPELINE_DEFAULTS.items() if getattr(args, key) != value]
    if given:
        raise ValueError(f"{', '.join(given)}: options of --pipeline exports; add --pipeline or drop them")
    model, config = registry.load_run(args.model)
    entry = registry.entry_of(model, config)
    facts = card_facts(args, entry, [config], [path.name])
    kwargs = {"outputs": entry.serving_outputs(model)} if entry.serving_outputs else {}
    version_dir = export_module.export_saved_model(model, args.base_dir, name, args.version,
                                                   server_base_path=args.server_base_path, facts=facts,
                                                   version_labels=args.version_label, **kwargs)
    logger.info(f"exported {version_dir}")
    _log_left_out(facts)


def export_pipeline(args, name: str) -> None:
    """``zoo export --pipeline``: the run's, or a cv folder's, inference with ``zoo predict``'s options."""
    from common import registry
    from common.ct import ensemble
    from common.serve import pipeline

    if args.spacing == "auto":
        raise ValueError(pipeline.SPACING_REFUSED)
    loaded = ensemble.load(args.model)
    entry = registry.entry_of(loaded.models[0], loaded.config)
    if entry.task != "segmentation":
        raise ValueError(f"--pipeline: {args.model} is a {entry.task} model; the pipeline segments CT volumes")
    options = ensemble.options_for(loaded, args.tile, args.step, args.tta, args.spacing, args.postprocess)
    hu_window = loaded.config.get("hu_window", volumes.DEFAULT_WINDOW)
    facts = card_facts(args, entry, loaded.configs, loaded.names)
    version_dir = pipeline.export_pipeline(
        loaded.models, args.base_dir, name, options, hu_window, loaded.stride, args.batch_size, args.probabilities,
        args.version, args.server_base_path, facts, loaded.names, args.version_label)
    logger.info(f"exported {version_dir}: raw HU volume [z, y, x] (LPS) -> uint8 labels, {len(loaded.models)} "
                f"model(s), {options.describe()}")
    _log_left_out(facts)


def card_facts(args, entry, configs: list[dict], names: list[str]) -> dict:
    """The card's run facts (``card.run_facts``): with the run's (or cv folder's) evaluations, and with
    ``--card-include-split`` its split (a cv folder's by fold).

    Raises:
        ValueError naming ``--card-include-split`` when a model given records no split.
    """
    from common.serve import card

    split = None
    if args.card_include_split:
        splits = [config.get("split") for config in configs]
        if not all(splits):
            raise ValueError(f"--card-include-split: {args.model} records no split (only a `zoo train` run or a "
                             "`zoo cv` folder does); export without it")
        split = splits[0] if len(splits) == 1 else dict(zip(names, splits))
    folder = pathlib.Path(args.model)
    measured = evaluations(folder if folder.is_dir() else None, configs[0].get("class_names"))
    return card.run_facts(entry.name, entry.task, configs[0], eval_metrics=measured, split=split)


def _log_left_out(facts: dict) -> None:
    left_out = facts["training_config_left_out"]
    if left_out:
        logger.info("model card: left out of the run's config.json: "
                    + "; ".join(f"{key} ({why})" for key, why in left_out.items()))


# What each of the zoo's result files holds, and the command that writes it, paths as placeholders.
CV_SUMMARY, EVALUATION, EVALUATION_OPTIONS = "summary.json", "evaluation.json", "evaluation_options.json"
PCKH = re.compile(r"pckh_(?P<split>.+?)(?:_stage_(?P<stage>[ABC]))?(?P<noflip>_noflip)?(?:_shift(?P<shift>\d))?\.json")


def evaluations(folder, class_names=None) -> list[dict]:
    """The model card's ``eval_metrics``: the results ``zoo evaluate``, ``zoo cv`` and ``zoo eval-pose`` wrote in
    a run (or cv) folder, means over cases (never a case's id or its own scores), each with its command.

    Raises:
        DataError naming a result file that is not what the zoo writes there.
    """
    if folder is None:
        return []
    found = [_evaluation(folder / EVALUATION, class_names)] if (folder / EVALUATION).exists() else []
    if (folder / CV_SUMMARY).exists():
        found.append(_cv_summary(folder / CV_SUMMARY, class_names))
    for path in sorted(folder.glob("pckh_?*.json")):  # the name holds the options (zoo eval-pose)
        named = PCKH.fullmatch(path.name)  # the split's group takes any name: every file matches
        flags = [f"--split {named['split']}", f"--stage {named['stage']}" if named["stage"] else "",
                 "--no-flip-test" if named["noflip"] else "",
                 f"--flip-shift {named['shift']}" if named["shift"] else ""]
        scores = _read_result(path, lambda result: {k: _finite(v) for k, v in result.items()
                                                    if not isinstance(v, (dict, list))})  # the curve stays out
        found.append({"command": " ".join(["zoo eval-pose DATA RUN", *filter(None, flags)]), "file": path.name,
                      "metrics": scores})
    return found


def _evaluation(path: pathlib.Path, class_names) -> dict:
    """``zoo evaluate``'s {case: {label: {metric: value}}} as the cases' means, as its table prints them."""
    from common.ct import metrics

    def means(result):
        summary = metrics.summarize([{int(k): v for k, v in case.items()} for case in result.values()])
        return len(result), {_class(label, class_names): {name: _finite(s["mean"]) for name, s in by.items()}
                             for label, by in summary.items()}

    cases, scores = _read_result(path, means)
    return {"command": _evaluate_command(path), "file": path.name, "cases": cases, "metrics": scores}


def _evaluate_command(path: pathlib.Path) -> str:
    """``zoo evaluate RUN (its options)``, from the ``evaluation_options.json`` written with ``path``."""
    import hashlib

    options_path = path.with_name(EVALUATION_OPTIONS)
    recorded = _read_result(options_path, lambda o: o if isinstance(o["inference"], str) else {}) \
        if options_path.exists() else {}
    if recorded.get("evaluation_sha256") != hashlib.sha256(path.read_bytes()).hexdigest():
        return f"zoo evaluate RUN ({path.name} was written without a record of its options)"
    return f"zoo evaluate RUN ({recorded['inference']}; {recorded['cohort']})"


def _cv_summary(path: pathlib.Path, class_names) -> dict:
    """``zoo cv``'s {per_class: {label: {metric: {mean, std, values}}}} (one value per fold) as mean and std."""
    def means(summary):
        names = summary.get("class_names") or class_names
        return len(summary["units"]), {
            _class(label, names): {name: {"mean": _finite(st["mean"]), "std": _finite(st["std"])}
                                   for name, st in by.items()}
            for label, by in summary["per_class"].items()}

    units, scores = _read_result(path, means)
    return {"command": "zoo cv DATA OUT (the folds' options: training_config)", "file": path.name, "units": units,
            "metrics": scores}


def _read_result(path: pathlib.Path, read):
    """``read(result)`` of a result file; DataError naming the file when it is not JSON or not the zoo's shape."""
    from common.errors import DataError

    try:
        return read(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise DataError(f"{path}: not the result file the zoo writes there ({type(error).__name__}: {error})") \
            from None


def _class(label, class_names) -> str:
    """A result's class key (the label value) as the class's name where the run names it."""
    index = int(label) if str(label).isdigit() else None
    return class_names[index] if class_names and index is not None and index < len(class_names) else str(label)


def _finite(value):
    """A score for JSON: NaN (undefined: no case had the class) as null, never as a number."""
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None


def verify(args) -> None:
    ignored = [flag for flag, value in (("MODEL", args.model), ("BASE_DIR", args.base_dir), ("--name", args.name),
                                        ("--version", args.version),
                                        ("--server-base-path", args.server_base_path),
                                        ("--version-label", args.version_label or None),
                                        ("--pipeline", args.pipeline or None),
                                        ("--card-include-split", args.card_include_split or None)) if value is not None]
    if ignored:
        raise ValueError(f"--verify checks DIR only; drop {', '.join(ignored)}")
    from common.serve import card

    versions = card.verify(args.verify)  # its per-check lines are logged: "ok" at INFO, "MISMATCH" at WARNING
    # the verdict is this command's result, so it prints even under -q
    print(f"verified {len(versions)} version(s) of {args.verify}: every check ok")


def request(args) -> None:
    from common.serve import client as serving_client

    image = volumes.read_slice(args.input, args.slice, args.window or volumes.DEFAULT_WINDOW)
    labels = serving_client.predict_labels(args.server, args.name, image)
    serving_client.write_labels(args.output, labels)
    logger.info(f"wrote {args.output}: classes {sorted(set(labels.ravel().tolist()))}")


# Each subcommand's parser, in the order ``zoo --help`` lists them.
PARSERS = (_add_export, _add_request)
