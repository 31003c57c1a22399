"""The model card of an export (``<version>/assets.extra/metadata.json``) and ``zoo export --verify``.

Every ``zoo export`` writes the card beside the SavedModel, so a client (or
a person) knows what the served model expects and returns without the zoo.
Its fields, and what each means, are ``card_schema.json`` beside this module
(format 2, a JSON Schema): MONAI bundle ``metadata.json`` names where they mean
the same thing (``version``, ``changelog``, ``authors``, ``license``,
``references``, ``intended_use``, ``eval_metrics``, ``network_data_format``
with ``value_range``), the zoo's own facts under theirs (``model``, ``task``,
``class_names``, ``hu_window``, ``training_spacing``, ``pipeline``...).

A card leaks nothing of the training machine: the run's ``config.json``
goes on it restricted to an allow-list of keys (the schema's
``training_config`` properties), which describe the model and its recipe;
every other key (paths, the command line, case ids, and any key a later
trainer adds until someone allows it: an allow-list fails closed where a
deny-list would leak a new key) is named in ``training_config_left_out``
with why. ``zoo export --card-include-split`` puts the split back, and only
the split.

``verify(folder)`` checks a served folder against its cards with TensorFlow
alone (``tf.saved_model.load``, no model code): each card against the
schema, the signature's names, dtypes and shapes, and the warm-up requests
replayed through it. Before any of that loads or runs, every version's
graph is read as a protobuf and its ops checked against
``common.serve.allowlist`` (the ops of the zoo's own exports): a version
holding another op (a file, network or Python op) is refused by name, and
nothing of the folder is run.
"""

from __future__ import annotations

import datetime
import functools
import importlib.metadata
import importlib.resources
import json
import logging
import os
import pathlib

import jsonschema
import keras
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from common import atomic, errors, registry
from common.ct import shards
from common.pose import mpii
from common.serve import allowlist
from common.slides import annotations

logger = logging.getLogger(__name__)

FORMAT = 2
CARD_FILE = "metadata.json"
SCHEMA_FILE = "card_schema.json"  # package data of common.serve (setup.cfg)
WARMUP_FILE = "tf_serving_warmup_requests"
SIGNATURE = "serving_default"
DISTRIBUTION = "medzoo"  # setup.cfg's [metadata] name
UNIT_RANGE = [0.0, 1.0]  # every task's images: CT windowed to [0, 1], pose crops and tiles as uint8 / 255
UNKNOWN_RANGE = []  # MONAI's value_range where it is not known
CHANGELOG = "model card format 2: MONAI bundle field names, a JSON Schema, no path, command line or case id"
INTENDED_USE = ("research use only: a reproduction of a published method, not a medical device and not for "
                "clinical diagnosis or treatment decisions")
PATHS = "a path"
CASE_IDS = "case ids (zoo export --card-include-split adds the split)"
# Why a key of config.json is left out, for the keys the zoo's trainers write; any other: not on the allow-list.
LEFT_OUT = {"data": PATHS, "out": PATHS, "source": PATHS, "init": PATHS, "split": CASE_IDS, "test_cases": CASE_IDS,
            "command": "the command line (it names paths)", "verbose": "a console setting",
            "run_eagerly": "a debugging setting", "steps_per_execution": "a speed setting"}
MESSAGE_CHARACTERS = 200  # of a schema finding: jsonschema repeats the offending value, which can be a whole object


@functools.cache
def schema() -> dict:
    """The card's JSON Schema (``card_schema.json``, shipped with the package)."""
    return json.loads((importlib.resources.files("common.serve") / SCHEMA_FILE).read_text(encoding="utf-8"))


def shareable_config(config: dict | None) -> tuple[dict | None, dict]:
    """The rule of what of a run's ``config.json`` goes on a card: (kept, left out -> why).

    Kept: the keys of the schema's ``training_config`` (model and recipe), unless a value holds a path.

    Example:

    >>> kept, left_out = shareable_config({"model": "M", "epochs": 3, "data": "/srv/prepared", "test_cases": ["p7"]})
    >>> kept, sorted(left_out)
    ({'model': 'M', 'epochs': 3}, ['data', 'test_cases'])
    """
    if not config:
        return None, {}
    allowed = schema()["properties"]["training_config"]["properties"]
    kept, left_out = {}, {}
    for key, value in config.items():
        if key not in allowed:
            left_out[key] = LEFT_OUT.get(key, "not on the card's allow-list (common/serve/card_schema.json)")
        elif _holds_path(value):
            left_out[key] = PATHS
        else:
            kept[key] = value
    return kept, left_out


def _holds_path(value) -> bool:
    """Whether a config value, at any depth, holds a string that names a file or folder."""
    if isinstance(value, dict):
        return any(_holds_path(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_holds_path(v) for v in value)
    return isinstance(value, str) and (os.path.isabs(value) or value.startswith("~")
                                       or any(sep in value for sep in ("/", "\\")))


def paper(model: str | None) -> dict:
    """What the card says of a registry entry's paper (``registry.Entry.paper``, from its package): its one-line
    summary, authors and references."""
    if model is None:
        return {"description": None, "authors": None, "references": []}
    facts = registry.get(model).paper or {}
    authors = facts.get("authors")
    return {"description": facts.get("description"),
            "authors": f"{authors} (the paper); reproduced in TensorFlow/Keras by {DISTRIBUTION}" if authors else None,
            "references": list(facts.get("references", []))}


def run_facts(model: str | None, task: str | None, config: dict | None, eval_metrics=(),
              split: dict | None = None) -> dict:
    """What the card says about the training run: the paper, classes, CT preprocessing, recipe and evaluations.

    Args:
        model: the registry entry's name (None: unknown).
        task: the entry's task.
        config: the run's ``config.json``; empty or None for a bare ``.keras`` file.
        eval_metrics: what the run's evaluations measured, each with its command (``common.cli.serve``).
        split: the case ids to put on the card (``--card-include-split``); None: none.

    Example:

    >>> run_facts(registry.names("pose")[0], "pose", None)["joint_names"][:2]
    ['r_ankle', 'r_knee']
    """
    config = config or {}
    segmentation = task == "segmentation"
    kept, left_out = shareable_config(config)
    facts = {"model": model, "task": task, **paper(model),
             "class_names": config.get("class_names") if segmentation else None,
             "joint_names": list(mpii.MPII_JOINTS) if task == "pose" else None,
             "tissue_classes": list(annotations.CLASSES) if task == "tiles" else None,
             "hu_window": config.get("hu_window") if segmentation else None,
             "training_spacing": None, "eval_metrics": list(eval_metrics),
             "training_config": kept, "training_config_left_out": left_out}
    if split is not None:
        facts["split"] = split
    if segmentation and config.get("data"):
        try:
            facts["training_spacing"] = list(shards.training_spacing(shards.load_manifest(config["data"])))
        except errors.DataError as error:  # the cohort moved since training: the card says unknown
            logger.warning(f"training spacing unknown: {error}")
    return facts


def _spec(tensor, value_range) -> dict:
    return {"dtype": tensor.dtype.name, "shape": tensor.shape.as_list(),
            "value_range": list(UNKNOWN_RANGE if value_range is None else value_range)}


def output_ranges(outputs: dict) -> dict:
    """Value ranges of the zoo's serving outputs by name: probabilities in [0, 1], labels among the classes."""
    ranges = {"probabilities": UNIT_RANGE}
    classes = outputs["probabilities"].shape[-1] if "probabilities" in outputs else None
    if classes is not None:
        ranges["labels"] = [0, int(classes) - 1]
    return ranges


def model_card(name: str, inputs: dict, outputs: dict, facts: dict | None, input_ranges: dict | None = None,
               pipeline: dict | None = None) -> dict:
    """The card of an export: the release, the run's facts and the ``serving_default`` signature's tensors.

    Args:
        name: the model's name in the served folder.
        inputs: name -> tensor or ``tf.TensorSpec`` of the signature's inputs.
        outputs: the same for its outputs.
        facts: ``run_facts(...)``; None where the run is unknown (nulls, input ranges unknown).
        input_ranges: name -> [low, high] or None (unknown), where the inputs are not the windowed [0, 1]
            images (a pipeline's raw HU volume); default: [0, 1] for a known task.
        pipeline: ``common.serve.pipeline.describe(...)`` for a pipeline export, else None (no field).
    """
    facts = facts or run_facts(None, None, None)
    ranges = output_ranges(outputs)
    if input_ranges is None:
        input_ranges = {k: UNIT_RANGE if facts["task"] else None for k in inputs}
    version = _zoo_version()
    card = {"format": FORMAT, "name": name, "version": version, "changelog": {version or "unreleased": CHANGELOG},
            "license": _zoo_license(), "intended_use": INTENDED_USE, **facts,
            "network_data_format": {"inputs": {k: _spec(v, input_ranges.get(k)) for k, v in inputs.items()},
                                    "outputs": {k: _spec(v, ranges.get(k)) for k, v in outputs.items()}},
            "tensorflow_version": tf.__version__, "keras_version": keras.__version__, "numpy_version": np.__version__,
            "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    if pipeline is not None:
        card["pipeline"] = pipeline
    return card


def _zoo_version() -> str | None:
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None


def _zoo_license() -> str | None:
    """setup.cfg's ``license`` as the installed distribution declares it (null: not installed)."""
    try:
        declared = importlib.metadata.metadata(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None
    return declared.get("License-Expression") or declared.get("License")


def write_card(version_dir, card: dict) -> pathlib.Path:
    """Writes ``card`` as ``<version_dir>/assets.extra/metadata.json``, atomically."""
    path = pathlib.Path(version_dir) / "assets.extra" / CARD_FILE
    atomic.write_json(path, card)
    return path


def version_folders(folder) -> list[pathlib.Path]:
    """The version folders of a served model folder (``BASE_DIR/NAME``), or ``[folder]`` for one version."""
    folder = pathlib.Path(folder)
    if (folder / "saved_model.pb").exists():
        return [folder]
    versions = sorted((p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)) \
        if folder.is_dir() else []
    if not versions:
        raise errors.DataError(f"{folder}: not a served model folder (no saved_model.pb, no integer-named versions)")
    return versions


def verify(folder) -> list[pathlib.Path]:
    """Checks each version of a served model against its card and its warm-up requests, one log line per check:
    ``ok  <file>: ...`` at INFO, ``MISMATCH  <file>: ...`` at WARNING (what ``zoo export --verify -q`` still shows).

    Args:
        folder: a served model folder (``BASE_DIR/NAME``) or one version folder.

    Returns:
        The version folders checked.

    Raises:
        allowlist.Refused, one line, before anything is loaded, when a version's graph holds an op
        outside the allow-list; DataError listing every mismatch, after all checks ran.
    """
    problems = []
    versions = version_folders(folder)
    graphs = _check_graphs(versions)
    for version_dir in versions:
        for ok, line in _check_version(version_dir, graphs[version_dir]):
            if ok:
                logger.info(f"ok  {line}")
            else:
                logger.warning(f"MISMATCH  {line}")
                problems.append(line)
    if problems:
        raise errors.DataError(f"{folder}: {len(problems)} mismatch(es)\n  " + "\n  ".join(problems))
    return versions


def _check_graphs(versions) -> dict:
    """(ok, line) of each version's ops (``allowlist.check``), read before any version is loaded.

    Raises:
        Refused naming every version holding an op outside the allow-list: nothing is loaded or run.
    """
    graphs, refused = {}, []
    for version_dir in versions:
        try:
            graphs[version_dir] = True, allowlist.check(version_dir)
        except allowlist.Refused as error:
            refused.append(str(error))
        except errors.DataError as error:  # unreadable: a finding, and that version is not loaded
            graphs[version_dir] = False, str(error)
    if refused:
        raise allowlist.Refused("; ".join(refused))
    return graphs


def _check_version(version_dir: pathlib.Path, graph):
    """Yields (ok, line) for the card (its schema), the graph's ops, the signature's inputs and outputs, and the warm-up
    requests; a version whose graph was not read is not loaded."""
    card, line = _read_card(version_dir)
    yield card is not None, line
    yield graph
    if not graph[0]:
        return
    try:
        signature = tf.saved_model.load(str(version_dir)).signatures[SIGNATURE]
    except Exception as error:  # whatever a broken SavedModel raises (protobuf, OSError, KeyError) is a finding
        yield False, f"{version_dir / 'saved_model.pb'}: no loadable {SIGNATURE} signature ({error})"
        return
    served = {"inputs": signature.structured_input_signature[1], "outputs": signature.structured_outputs}
    if card is not None:
        for side in ("inputs", "outputs"):
            yield _compare(version_dir / "assets.extra" / CARD_FILE, side, card["network_data_format"][side],
                           served[side])
    yield _check_warmup(version_dir / "assets.extra" / WARMUP_FILE, signature, card)


def _read_card(version_dir: pathlib.Path):
    """(card, line): the parsed card and an ok line, or (None, what is wrong with it)."""
    path = version_dir / "assets.extra" / CARD_FILE
    if not path.exists():
        return None, f"{path}: missing (exported before model cards, or not by the zoo)"
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        return None, f"{path}: not JSON ({error})"
    found = card.get("format") if isinstance(card, dict) else type(card).__name__
    if found == 1:
        return None, (f"{path}: format 1, an older zoo's card (it may hold paths, the command line and case ids); "
                      f"export the model again for a format {FORMAT} card")
    if found != FORMAT:
        return None, f"{path}: format {found!r}, this zoo reads format {FORMAT}"
    problem = schema_problem(card)
    if problem:
        return None, f"{path}: {problem}"
    return card, f"{path}: format {FORMAT}, valid against {SCHEMA_FILE}, model {card['model']} ({card['task']}), " \
                 f"exported {card['exported_at']} by zoo {card['version']}"


def schema_problem(card: dict) -> str | None:
    """``<JSON path>: <what is wrong>`` of the card's most relevant schema violation, or None for a valid card."""
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema()).iter_errors(card))
    if error is None:
        return None
    where = ".".join(str(part) for part in error.absolute_path) or "the card"
    message = error.message if len(error.message) <= MESSAGE_CHARACTERS else error.message[:MESSAGE_CHARACTERS] + "..."
    return f"{where}: {message}"


def _compare(path: pathlib.Path, side: str, declared: dict, served: dict):
    """(ok, line): the card's ``inputs`` or ``outputs`` against the signature's names, dtypes and shapes."""
    if set(declared) != set(served):
        return False, f"{path}: {side} {sorted(declared)}, the signature's {sorted(served)}"
    problems = []
    for name, spec in served.items():
        dtype, shape = declared[name].get("dtype"), declared[name].get("shape")
        if dtype != spec.dtype.name:
            problems.append(f"{side}['{name}'] dtype {dtype}, the signature's {spec.dtype.name}")
        if shape != spec.shape.as_list():
            problems.append(f"{side}['{name}'] shape {shape}, the signature's {spec.shape.as_list()}")
    if problems:
        return False, f"{path}: " + "; ".join(problems)
    listed = ", ".join(f"{name} {spec.dtype.name} {spec.shape.as_list()}" for name, spec in sorted(served.items()))
    return True, f"{path}: {side} match the signature: {listed}"


def _check_warmup(path: pathlib.Path, signature, card: dict | None):
    """(ok, line): every warm-up record parses, runs through the signature, and fits the card."""
    if not path.exists():
        return False, f"{path}: missing"
    problems, count = [], 0
    try:
        for count, record in enumerate(tf.data.TFRecordDataset(str(path)), 1):
            problems += [f"request {count}: {p}" for p in _replay(record.numpy(), signature, card)]
    except tf.errors.OpError as error:  # a CRC mismatch or a truncated record
        problems.append(f"record {count + 1}: unreadable ({error.message})")
    if not count and not problems:
        problems.append("no requests")
    if problems:
        return False, f"{path}: " + "; ".join(problems)
    return True, f"{path}: {count} request(s) ran through {SIGNATURE}" + (" within the card" if card else "")


def _replay(payload: bytes, signature, card: dict | None) -> list[str]:
    """What is wrong with one warm-up record: its parse, its inputs, its run, its outputs against the card."""
    try:
        record = prediction_log_pb2.PredictionLog.FromString(payload)
    except Exception as error:  # protobuf's DecodeError, whose module path differs between protobuf builds
        return [f"not a PredictionLog ({error})"]
    request = record.predict_log.request
    if record.WhichOneof("log_type") != "predict_log" or request.model_spec.signature_name not in ("", SIGNATURE):
        return [f"not a Predict request for {SIGNATURE}"]
    expected = sorted(signature.structured_input_signature[1])
    if sorted(request.inputs) != expected:
        return [f"inputs {sorted(request.inputs)}, the signature's {expected}"]
    inputs = {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}
    try:
        outputs = {k: v.numpy() for k, v in signature(**{k: tf.constant(v) for k, v in inputs.items()}).items()}
    except Exception as error:  # any failure of the graph on this request is a finding
        return [f"does not run ({str(error).splitlines()[0]})"]
    if card is None:
        return []
    tensors = card["network_data_format"]
    return [*_fits(inputs, tensors["inputs"], "input"), *_fits(outputs, tensors["outputs"], "output")]


def _fits(arrays: dict, declared: dict, side: str) -> list[str]:
    """Arrays against the card's specification: dtype, shape (None is free) and value range."""
    problems = []
    for name, value in arrays.items():
        spec = declared.get(name, {})
        if spec.get("dtype") != tf.as_dtype(value.dtype).name:
            problems.append(f"{side} {name} is {value.dtype}, the card says {spec.get('dtype')}")
        if not tf.TensorShape(spec.get("shape")).is_compatible_with(value.shape):
            problems.append(f"{side} {name} has shape {list(value.shape)}, the card says {spec.get('shape')}")
        low, high = spec.get("value_range") or (-np.inf, np.inf)  # [] where the range is unknown
        if value.size and (value.min() < low - 1e-5 or value.max() > high + 1e-5):  # softmax rounds past 1
            problems.append(f"{side} {name} spans [{value.min():g}, {value.max():g}], the card says [{low}, {high}]")
    return problems
