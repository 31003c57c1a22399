"""The model card of an export (``<version>/assets.extra/metadata.json``) and ``zoo export --verify``.

Every ``zoo export`` writes the card beside the SavedModel, so a client (or
a person) knows what the served model expects and returns without the zoo.
The schema is flat; ``format`` changes when a field changes meaning:

====================  =====================================================================
``format``            1, this schema's version
``name``              the model's name under the served folder (``BASE_DIR/NAME``)
``model``             the registry entry (``unet``, ``eas_unet``, ``acnn``, ``tri_cnn``...)
``task``              ``segmentation``, ``pose`` or ``tiles``
``class_names``       segmentation: the output channels' classes, background first (null: unknown)
``joint_names``       pose: the 16 MPII joints in output order (``common.pose.mpii``)
``tissue_classes``    tiles: the output classes (``common.slides.annotations``)
``hu_window``         CT: [low, high] HU mapped to [0, 1] before the model (null: not a CT run)
``training_spacing``  CT: [x, y] mm, the median in-plane spacing of the prepared cohort the run
                      trained on (``common.ct.shards.training_spacing``; null: cohort not found)
``inputs``            name -> {``dtype``, ``shape`` (None for a free axis), ``range`` [low, high] or null
                      (null also for a pipeline's raw HU volume and its spacing)}
``outputs``           the same for the ``serving_default`` outputs
``command``           the command the run was trained with (null: exported from a bare .keras file)
``training_config``   the run's ``config.json`` (null: exported from a bare .keras file)
``zoo_version``       the installed ``medzoo`` distribution (null: not installed)
``tensorflow_version``, ``keras_version``, ``exported_at`` (UTC, ISO 8601)
``pipeline``          ``zoo export --pipeline`` only (``common.serve.pipeline.describe``): the raw
                      volume's orientation and units, the spacing input, the signatures, the
                      inference options inside the graph (HU window, tile, step, mirroring, folds,
                      resampling) and what is left to the client (reorientation, post-processing)
====================  =====================================================================

``verify(folder)`` checks a served folder against its cards with TensorFlow
alone (``tf.saved_model.load``, no model code): the signature's names, dtypes
and shapes, and the warm-up requests replayed through it. Before any of that
loads or runs, every version's graph is read as a protobuf and its ops
checked against ``common.serve.allowlist`` (the ops of the zoo's own
exports): a version holding another op (a file, network or Python op) is
refused by name, and nothing of the folder is run.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import pathlib

import keras
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from common import atomic, errors
from common.ct import shards
from common.pose import mpii
from common.serve import allowlist
from common.slides import annotations

FORMAT = 1
CARD_FILE = "metadata.json"
WARMUP_FILE = "tf_serving_warmup_requests"
SIGNATURE = "serving_default"
DISTRIBUTION = "medzoo"  # setup.cfg's [metadata] name
UNIT_RANGE = [0.0, 1.0]  # every task's images: CT windowed to [0, 1], pose crops and tiles as uint8 / 255


def run_facts(model: str, task: str, config: dict | None, log=print) -> dict:
    """What the card says about the training run: classes, CT preprocessing, command and config.

    Args:
        model: the registry entry's name.
        task: the entry's task.
        config: the run's ``config.json``; empty or None for a bare ``.keras`` file.
        log: where a note goes when the training cohort (for the spacing) is not found.

    Example:

    >>> run_facts("acnn", "pose", None)["joint_names"][:2]
    ['r_ankle', 'r_knee']
    """
    config = config or {}
    segmentation = task == "segmentation"
    facts = {"model": model, "task": task,
             "class_names": config.get("class_names") if segmentation else None,
             "joint_names": list(mpii.MPII_JOINTS) if task == "pose" else None,
             "tissue_classes": list(annotations.CLASSES) if task == "tiles" else None,
             "hu_window": config.get("hu_window") if segmentation else None,
             "training_spacing": None,
             "command": config.get("command"),
             "training_config": {k: v for k, v in config.items() if k != "command"} or None}
    if segmentation and config.get("data"):
        try:
            facts["training_spacing"] = list(shards.training_spacing(shards.load_manifest(config["data"])))
        except errors.DataError as error:  # the cohort moved since training: the card says unknown
            log(f"training spacing unknown: {error}")
    return facts


def _spec(tensor, value_range) -> dict:
    return {"dtype": tensor.dtype.name, "shape": tensor.shape.as_list(), "range": value_range}


def output_ranges(outputs: dict) -> dict:
    """Value ranges of the zoo's serving outputs by name: probabilities in [0, 1], labels among the classes."""
    ranges = {"probabilities": UNIT_RANGE}
    classes = outputs["probabilities"].shape[-1] if "probabilities" in outputs else None
    if classes is not None:
        ranges["labels"] = [0, int(classes) - 1]
    return ranges


def model_card(name: str, inputs: dict, outputs: dict, facts: dict | None, input_ranges: dict | None = None,
               pipeline: dict | None = None) -> dict:
    """The card of an export: the run's facts and the ``serving_default`` signature's tensors.

    Args:
        name: the model's name in the served folder.
        inputs: name -> tensor or ``tf.TensorSpec`` of the signature's inputs.
        outputs: the same for its outputs.
        facts: ``run_facts(...)``; None where the run is unknown (nulls, input ranges unknown).
        input_ranges: name -> [low, high] or None, where the inputs are not the windowed [0, 1] images
            (a pipeline's raw HU volume); default: [0, 1] for a known task.
        pipeline: ``common.serve.pipeline.describe(...)`` for a pipeline export, else None (no field).
    """
    facts = facts or run_facts(None, None, None)
    ranges = output_ranges(outputs)
    if input_ranges is None:
        input_ranges = {k: UNIT_RANGE if facts["task"] else None for k in inputs}
    card = {"format": FORMAT, "name": name, **facts,
            "inputs": {k: _spec(v, input_ranges.get(k)) for k, v in inputs.items()},
            "outputs": {k: _spec(v, ranges.get(k)) for k, v in outputs.items()},
            "zoo_version": _zoo_version(), "tensorflow_version": tf.__version__, "keras_version": keras.__version__,
            "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    if pipeline is not None:
        card["pipeline"] = pipeline
    return card


def _zoo_version() -> str | None:
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None


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


def verify(folder, log=print) -> list[pathlib.Path]:
    """Checks each version of a served model against its card and its warm-up requests, one line per check.

    Args:
        folder: a served model folder (``BASE_DIR/NAME``) or one version folder.
        log: where the lines go: ``ok  <file>: ...`` or ``MISMATCH  <file>: ...``.

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
            log(f"{'ok' if ok else 'MISMATCH'}  {line}")
            problems += [] if ok else [line]
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
    """Yields (ok, line) for the card, the graph's ops, the signature's inputs and outputs, and the warm-up
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
            yield _compare(version_dir / "assets.extra" / CARD_FILE, side, card[side], served[side])
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
    if not isinstance(card, dict) or card.get("format") != FORMAT:
        found = card.get("format") if isinstance(card, dict) else type(card).__name__
        return None, f"{path}: format {found!r}, this zoo reads format {FORMAT}"
    absent = [key for key in ("inputs", "outputs") if not isinstance(card.get(key), dict)]
    if absent:
        return None, f"{path}: no {' or '.join(absent)} specification"
    return card, f"{path}: format {FORMAT}, model {card.get('model')} ({card.get('task')}), exported " \
                 f"{card.get('exported_at')} by zoo {card.get('zoo_version')}"


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
    return [*_fits(inputs, card["inputs"], "input"), *_fits(outputs, card["outputs"], "output")]


def _fits(arrays: dict, declared: dict, side: str) -> list[str]:
    """Arrays against the card's specification: dtype, shape (None is free) and value range."""
    problems = []
    for name, value in arrays.items():
        spec = declared.get(name, {})
        if spec.get("dtype") != tf.as_dtype(value.dtype).name:
            problems.append(f"{side} {name} is {value.dtype}, the card says {spec.get('dtype')}")
        if not tf.TensorShape(spec.get("shape")).is_compatible_with(value.shape):
            problems.append(f"{side} {name} has shape {list(value.shape)}, the card says {spec.get('shape')}")
        low, high = spec.get("range") or (-np.inf, np.inf)
        if value.size and (value.min() < low - 1e-5 or value.max() > high + 1e-5):  # softmax rounds past 1
            problems.append(f"{side} {name} spans [{value.min():g}, {value.max():g}], the card says [{low}, {high}]")
    return problems
