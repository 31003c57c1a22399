"""SavedModel export for TF Serving: versioned, atomic, float32, warmed up.

``export_saved_model(model, "serving", "liver")`` writes::

    serving/models.config                       model server config (created or updated)
    serving/liver/<version>/saved_model.pb       serving_default: image -> probabilities, labels
    serving/liver/<version>/variables/
    serving/liver/<version>/assets.extra/tf_serving_warmup_requests
    serving/liver/<version>/assets.extra/metadata.json    the model card (``common.serve.card``)

The version folder is written under a hidden temporary name beside it and
renamed into place, so a model server polling ``serving/liver`` never sees
half a model (it only loads integer-named folders). ``write_version`` does
this for any SavedModel writer (``common.serve.pipeline`` uses it too): the
folder is read back before the rename, a failed write (a full disk) is one
``WriteError`` line naming the version, the loser of two exports racing for
one version is one ``ValueError`` line, and the temporary folders of killed
exports are removed by the next export of the model (they name their process).

Version labels (``version_labels=("stable",)``) go to ``models.config`` as TF
Serving reads them: ``version_labels { key: "stable" value: 3 }``, and the
entry's ``model_version_policy`` becomes ``specific`` with every labelled
version, since TF Serving's default policy loads only the latest version and a
label may only name a loaded one. TF Serving refuses, at start-up, labels
naming versions not yet loaded unless started with
``--allow_version_labels_for_unavailable_models`` (or the labels are added by a
config reload once the versions are up).
"""

from __future__ import annotations

import errno
import logging
import os
import pathlib
import re
import shutil
import socket
import time
import uuid

import keras
import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2
from tensorflow_serving.config import model_server_config_pb2

from common import atomic, errors
from common.serve import allowlist, card
from common.serve.card import SIGNATURE, WARMUP_FILE

logger = logging.getLogger(__name__)


def _float32_policies(config):
    """Returns a layer config with every mixed dtype policy replaced by float32."""
    if isinstance(config, dict):
        if config.get("class_name") == "DTypePolicy" and str(config["config"].get("name", "")).startswith("mixed"):
            return {**config, "config": {**config["config"], "name": "float32"}}
        return {key: _float32_policies(value) for key, value in config.items()}
    if isinstance(config, list):
        return [_float32_policies(value) for value in config]
    return config


def float32_twin(model: keras.Model) -> keras.Model:
    """The same network computing in float32 with the same weights (mixed precision is for training)."""
    if all(layer.compute_dtype == "float32" for layer in model.layers):
        return model
    twin = model.__class__.from_config(_float32_policies(model.get_config()))
    twin.set_weights(model.get_weights())
    return twin


def next_version(model_dir: pathlib.Path) -> int:
    """One more than the largest integer-named version folder (1 when there is none)."""
    if not model_dir.exists():
        return 1
    versions = [int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    return max(versions, default=0) + 1


def segmentation_outputs(result):
    """Named serving outputs of a segmentation model: probabilities and the argmax label map.

    ``result`` is the model's output; of a model with several outputs (deep
    supervision, attention maps) the first is the segmentation.
    """
    probabilities = result[0] if isinstance(result, (list, tuple)) else result
    return {"probabilities": probabilities, "labels": tf.argmax(probabilities, axis=-1, output_type=tf.int32)}


def input_names(model: keras.Model) -> list[str]:
    """Serving input names: ``image`` for a one-input model, else the Keras input names."""
    if len(model.inputs) == 1:
        return ["image"]
    names = [tensor.name.split(":")[0] for tensor in model.inputs]
    bad = [n for n in names if not n.isidentifier()]
    if bad:
        raise ValueError(f"model: input names must be identifiers to serve, got {bad}")
    return names


def _warmup_requests(model: keras.Model, sizes) -> list[dict[str, np.ndarray]]:
    """Random float32 inputs: one request per size for a one-input model of free size, else one."""
    rng = np.random.default_rng(0)
    shapes = [tuple(tensor.shape[1:]) for tensor in model.inputs]
    if len(shapes) == 1 and any(side is None for side in shapes[0][:2]):
        requests = [[(h, w, shapes[0][-1])] for h, w in sizes]
    elif any(side is None for shape in shapes for side in shape):
        raise ValueError("model: a model with several inputs must fix their shapes to be warmed up")
    else:
        requests = [shapes]
    return [{name: rng.random((1, *shape), dtype=np.float32) for name, shape in zip(input_names(model), request)}
            for request in requests]


def write_warmup_requests(path: pathlib.Path, name: str, requests) -> None:
    """Writes PredictionLog records that TF Serving replays when it loads the version.

    ``requests``: one dict of input name -> array per request (each sent with its own dtype).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for inputs in requests:
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=name, signature_name=SIGNATURE))
            for input_name, value in inputs.items():
                value = np.asarray(value)  # its own dtype: float32 images, a pipeline's float64 spacing
                request.inputs[input_name].CopyFrom(tf.make_tensor_proto(value, dtype=tf.as_dtype(value.dtype)))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())


TMP_PREFIX = ".tmp-"  # a version folder being written: ".tmp-<version>-<host>-<pid>-<random>"
STALE_AFTER_S = 24 * 3600  # a temporary folder this old is a killed export's, whichever machine wrote it
WRITE_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EDQUOT)  # said in the system's words
LABEL_CHARACTERS = "_-"  # TF Serving takes any string; a letter first and no separators keep URLs simple


def check_version_labels(labels) -> tuple[str, ...]:
    """The labels, each a letter then letters, digits, ``_`` or ``-``; raises ValueError naming a bad one."""
    labels = tuple(labels or ())
    for label in labels:
        if not (isinstance(label, str) and label[:1].isalpha() and label.isascii()
                and all(c.isalnum() or c in LABEL_CHARACTERS for c in label)):
            raise ValueError(f"version-label: {label!r} is not a label (a letter, then letters, digits, '_', '-')")
    return labels


def update_models_config(base_dir: pathlib.Path, name: str, base_path: str, version: int | None = None,
                         version_labels=()) -> pathlib.Path:
    """Adds (or refreshes) ``name`` in ``base_dir/models.config`` for ``--model_config_file``.

    Args:
        version: the version just written; with ``version_labels``, what they now name.
        version_labels: labels (``stable``, ``canary``) moved to ``version``; the entry's policy then
            serves exactly the labelled versions (TF Serving's ``specific`` policy).
    """
    labels = check_version_labels(version_labels)
    path = base_dir / "models.config"
    config = model_server_config_pb2.ModelServerConfig()
    if path.exists():
        try:
            text_format.Parse(path.read_text(encoding="utf-8"), config)
        except text_format.ParseError as error:
            raise ValueError(f"{path}: not a model server config ({error})") from None
    entries = config.model_config_list.config
    entry = next((e for e in entries if e.name == name), None) or entries.add()
    entry.name, entry.base_path, entry.model_platform = name, base_path, "tensorflow"
    if labels:
        if version is None:
            raise ValueError("version: labels need the version they name")
        for label in labels:
            entry.version_labels[label] = version
        specific = entry.model_version_policy.specific
        del specific.versions[:]
        specific.versions.extend(sorted(set(entry.version_labels.values())))
    elif version is not None and entry.model_version_policy.HasField("specific") \
            and version not in entry.model_version_policy.specific.versions:
        logger.warning(f"note: {path} serves {name}'s labelled versions "
                       f"{', '.join(map(str, entry.model_version_policy.specific.versions))} only; version {version} "
                       "is not served until labelled (--version-label)")
    with atomic.atomic_path(path) as tmp:
        tmp.write_text(text_format.MessageToString(config), encoding="utf-8")
    return path


def new_version_folder(base_dir, name: str, version: int | None) -> pathlib.Path:
    """``base_dir/name/version`` (None: the next free version), checked before anything is traced or written.

    Raises:
        ValueError naming ``name`` or ``version``: a bad name, a version below 1, or one that exists.
    """
    if not name or not all(c.isalnum() or c in "_-." for c in name) or name.startswith("."):
        raise ValueError(f"name must be letters, digits, '_', '-' or '.', got {name!r}")
    model_dir = pathlib.Path(base_dir) / name
    version = next_version(model_dir) if version is None else version
    if not isinstance(version, int) or version < 1:
        raise ValueError(f"version must be a positive integer, got {version!r}")
    if (model_dir / str(version)).exists():
        raise ValueError(f"version: {model_dir / str(version)} already exists; versions are never overwritten")
    return model_dir / str(version)


def write_version(base_dir, name: str, version: int | None, write, requests, model_card: dict,
                  server_base_path: str | None = None, version_labels=()) -> pathlib.Path:
    """Writes one version folder atomically: the SavedModel, its warm-up requests and card; then models.config.

    The folder is written under a hidden temporary name, read back (``check_written``) and renamed
    into place; temporary folders that killed exports left beside it are removed first
    (``remove_stale_temporaries``).

    Args:
        base_dir: the folder the model server watches.
        name: the model's name under it (``new_version_folder``).
        version: integer version; None: the next free one. An existing version is never overwritten.
        write: ``write(folder)`` writes the SavedModel into a (temporary) folder.
        requests: the warm-up requests (``write_warmup_requests``).
        model_card: the card (``card.model_card``).
        server_base_path: where the server sees ``base_dir/name``; default the absolute local path.
        version_labels: labels for this version in models.config (``update_models_config``).

    Returns:
        The version folder.

    Raises:
        WriteError naming the version folder when a write fails (disk full); ValueError naming
        ``version`` when another export wrote the same version meanwhile. Nothing of this export
        is left behind either way.
    """
    labels = check_version_labels(version_labels)
    final = new_version_folder(base_dir, name, version)
    model_dir, version = final.parent, int(final.name)
    try:
        model_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise atomic.WriteError(f"{model_dir}: cannot create the folder ({write_cause(error)})") from None
    remove_stale_temporaries(model_dir)
    tmp = model_dir / f"{TMP_PREFIX}{version}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        try:
            write(tmp)
            write_warmup_requests(tmp / "assets.extra" / WARMUP_FILE, name, requests)
            card.write_card(tmp, model_card)
            check_written(tmp)
        except (OSError, tf.errors.OpError) as error:
            raise atomic.WriteError(f"{final}: not written: {write_cause(error)}; nothing was written") from None
        _rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    update_models_config(pathlib.Path(base_dir), name, server_base_path or str(model_dir.resolve()), version,
                         labels)
    return final


def _rename(tmp: pathlib.Path, final: pathlib.Path) -> None:
    """Moves the written folder into place; another export's version there first is a one-line ValueError."""
    try:
        tmp.rename(final)  # a directory's rename never replaces a non-empty one: versions stay whole
    except OSError as error:
        if error.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise ValueError(f"version: {final} was written by another export meanwhile; versions are never "
                             "overwritten, so this export was not kept (export again for the next version)") from None
        raise atomic.WriteError(f"{final}: not written: {write_cause(error)}; nothing was written") from None


def check_written(folder: pathlib.Path) -> None:
    """Raises OSError unless a written version folder reads back whole: the graph, every variable, every warm-up
    record (TensorFlow checks the checksums of the last two)."""
    try:
        allowlist.read_saved_model(folder)
    except errors.DataError as error:
        raise OSError(errno.EIO, f"the file is incomplete ({error})") from None
    prefix = folder / "variables" / "variables"
    if prefix.with_name("variables.index").exists():
        reader = tf.train.load_checkpoint(str(prefix))
        for key in reader.get_variable_to_shape_map():
            reader.get_tensor(key)
    for _ in tf.data.TFRecordDataset(str(folder / "assets.extra" / WARMUP_FILE)):
        pass


def write_cause(error: Exception) -> str:
    """The cause of a failed write in a few words ("file too large", "no space left on device")."""
    if isinstance(error, atomic.WriteError):  # a file of the folder: its cause, not its temporary name
        found = re.search(r": not written: (.*); (?:the previous file is untouched|nothing was written)$", str(error))
        text = found.group(1) if found else str(error)
    elif isinstance(error, OSError) and error.errno in WRITE_ERRNOS:
        text = os.strerror(error.errno)
    elif isinstance(error, OSError):
        text = error.strerror or str(error)
    else:  # TensorFlow's "{{function_node ...}} <path>; File too large [Op:SaveV2]"
        text = re.sub(r"\s*\[Op:\w+\]\s*$", "", str(getattr(error, "message", error))).rsplit("; ", 1)[-1].strip()
        text = text.splitlines()[0] if text else type(error).__name__
    return text[:1].lower() + text[1:]


def remove_stale_temporaries(model_dir: pathlib.Path) -> list[pathlib.Path]:
    """Removes the hidden temporary folders that killed exports left in ``model_dir``; says which.

    A temporary folder names the machine and process writing it: it is stale once that process
    is gone (this machine), or older than ``STALE_AFTER_S`` (another machine, or a zoo that did
    not name its process). An export in progress keeps its folder. The model server never reads
    these (it loads integer-named folders only); they would only fill the disk.
    """
    removed = []
    for folder in sorted(model_dir.glob(f"{TMP_PREFIX}*")):
        if folder.is_dir() and _stale(folder):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    if removed:
        logger.info(f"removed {len(removed)} temporary folder(s) that killed exports left in {model_dir}: "
                    + ", ".join(folder.name for folder in removed))
    return removed


def _stale(folder: pathlib.Path) -> bool:
    named = re.fullmatch(rf"{re.escape(TMP_PREFIX)}\d+-(.+)-(\d+)-[0-9a-f]{{8}}", folder.name)
    if named and named.group(1) == socket.gethostname():
        try:
            os.kill(int(named.group(2)), 0)  # signal 0: is the process there
        except ProcessLookupError:
            return True
        except OSError:  # there, another user's
            return False
        return False
    try:
        return time.time() - folder.stat().st_mtime > STALE_AFTER_S
    except OSError:  # removed meanwhile
        return False


def export_saved_model(model: keras.Model, base_dir, name: str, version: int | None = None,
                       outputs=segmentation_outputs, warmup_sizes=((128, 128), (256, 256)),
                       server_base_path: str | None = None, facts: dict | None = None,
                       version_labels=()) -> pathlib.Path:
    """Exports ``model`` as ``<base_dir>/<name>/<version>/`` for TF Serving.

    Args:
        model: a Keras model. One input is served as ``image``; several inputs
            (fixed shapes) under their Keras names, in the model's order.
        base_dir: the folder the model server watches.
        name: the model's name under it (letters, digits, ``_``, ``-``, ``.``).
        version: integer version; default the next free one.
        outputs: maps the model's float32 output (a tensor, or a list for several
            outputs) to the dict of named serving outputs.
        warmup_sizes: (H, W) of the warm-up requests (ignored for fixed-size models).
        server_base_path: where the server sees ``base_dir/name`` (e.g. ``/models/liver``
            inside docker); default the absolute local path.
        facts: what the model card says of the run (``card.run_facts``); None: unknown.
        version_labels: labels (``stable``, ``canary``) naming this version in models.config.

    Returns:
        The version folder.
    """
    new_version_folder(base_dir, name, version)
    check_version_labels(version_labels)
    serving, specs, archive, endpoint = serving_archive(model, outputs)
    model_card = card.model_card(name, specs, endpoint.get_concrete_function().structured_outputs, facts)
    return write_version(base_dir, name, version, lambda folder: archive.write_out(str(folder), verbose=False),
                         _warmup_requests(serving, warmup_sizes), model_card, server_base_path, version_labels)


def serving_archive(model: keras.Model, outputs=segmentation_outputs):
    """What ``export_saved_model`` writes: (float32 twin, input name -> spec, ExportArchive, its ``serving_default``).

    ``endpoint.get_concrete_function().graph`` is the served graph before anything is written
    (``tests/common/serve/test_export.py`` derives ``allowlist.SERVING_OPS`` from its ops).
    """
    serving = float32_twin(model)
    names = input_names(serving)
    specs = [tf.TensorSpec((None, *tensor.shape[1:]), tf.float32, name=input_name)
             for input_name, tensor in zip(names, serving.inputs)]

    def serve(*inputs):
        return outputs(serving(inputs[0] if len(inputs) == 1 else list(inputs), training=False))

    archive = keras.export.ExportArchive()
    archive.track(serving)
    endpoint = archive.add_endpoint(name=SIGNATURE, fn=serve, input_signature=specs)
    return serving, dict(zip(names, specs)), archive, endpoint
