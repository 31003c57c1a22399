"""The prepare step: each case of a cohort written once to its own TFRecord shard.

Training then reads no SimpleITK, and folds split by case because a case is a
file. A prepared folder holds::

    PREPARED/dataset.json                         manifest: classes, HU window, cases, settings
    PREPARED/shards/<generation>/<case>.tfrecord  one tf.train.Example per kept axial slice

Slices are stored windowed (float32 in [0, 1]) in the canonical orientation of
``common.ct.volumes``, with their uint8 labels. The manifest names each
case's shard; a generation is one run of ``prepare``, so a rerun never
overwrites the shards the current manifest lists (``prepare``).

Each case of the manifest's ``"cases"`` records::

    id        the case id
    shard     its shard, relative to PREPARED
    slices    the slices kept (``min_label_fraction``)
    shape     the canonical volume's (z, y, x), before slices were dropped
    spacing   its voxel spacing (x, y, z) in mm
    sha256    ``voxel_sha256`` of the voxels its shard stores, image and label, as training reads them: two
              preparations of one cohort agree only where every stored voxel does (absent from folders prepared
              before the zoo recorded it: their voxels are not checked)

``cohort_sha256`` folds the cases' digests into one, which every run records (``data_sha256`` in config.json).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import logging
import os
import pathlib
import re
import shutil
import uuid

import numpy as np
import tensorflow as tf

from common import atomic, errors
from common.ct import layouts, volumes

logger = logging.getLogger(__name__)

MANIFEST = "dataset.json"
FORMAT_VERSION = 1


def _example(image: np.ndarray, label: np.ndarray, case_id: str, index: int) -> bytes:
    def int64(v):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v)]))

    def raw(b):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[b]))

    feature = {
        "image": raw(np.ascontiguousarray(image, np.float32).tobytes()),
        "label": raw(np.ascontiguousarray(label, np.uint8).tobytes()),
        "height": int64(image.shape[0]),
        "width": int64(image.shape[1]),
        "case_id": raw(case_id.encode()),
        "slice": int64(index),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_shard(arrays: volumes.CaseArrays, path: pathlib.Path, slice_indices) -> str:
    """Writes the given z slices of one case to ``path``, atomically, read back whole before it takes the name.

    Returns:
        ``voxel_sha256`` of the slices as written, hashed on the way (the shard is not read for it).

    Raises:
        atomic.WriteError: naming ``path`` and the cause ("file too large") when TensorFlow cannot write
            it or it reads back short; TensorFlow's own errors are not OSErrors and would end in a traceback.
    """
    digest = _voxel_hash(np.float32, np.uint8, (len(slice_indices), *arrays.image.shape[1:]))
    with atomic.atomic_path(path, verify=functools.partial(_check_records, expected=len(slice_indices))) as tmp:
        try:
            with tf.io.TFRecordWriter(str(tmp)) as writer:
                for z in slice_indices:
                    image, label = _stored(arrays.image[z], np.float32), _stored(arrays.label[z], np.uint8)
                    digest.update(image)
                    digest.update(label)
                    writer.write(_example(image, label, arrays.case_id, int(z)))
        except tf.errors.OpError as error:
            raise OSError(errno.EIO, _tf_reason(error)) from None
    return digest.hexdigest()


def _stored(array: np.ndarray, dtype) -> np.ndarray:
    """A slice as its shard stores it: of ``dtype``, C-ordered (the bytes written and hashed)."""
    return np.ascontiguousarray(array, dtype)


def _voxel_hash(image_dtype, label_dtype, shape):
    """SHA-256 begun with the arrays' dtypes and shape: a recast or reshaped array of the same bytes differs."""
    header = f"image {np.dtype(image_dtype).str} label {np.dtype(label_dtype).str} shape {list(shape)}\n"
    return hashlib.sha256(header.encode())


def voxel_sha256(image: np.ndarray, label: np.ndarray) -> str:
    """The manifest's ``sha256`` of a case: its stored (z, y, x) image and label, slice by slice.

    The dtypes and shape, then each slice's image bytes and label bytes, as ``write_shard`` hashes them while it
    writes; of the arrays a shard decodes to (``parse_example``) it gives the manifest's value.
    """
    if image.shape != label.shape:
        raise ValueError(f"image {image.shape} and label {label.shape}: one shape expected")
    digest = _voxel_hash(image.dtype, label.dtype, image.shape)
    for image_slice, label_slice in zip(image, label):
        digest.update(_stored(image_slice, image.dtype))
        digest.update(_stored(label_slice, label.dtype))
    return digest.hexdigest()


def cohort_sha256(manifest: dict) -> str | None:
    """One SHA-256 over the sorted (case id, case ``sha256``) of every case of a manifest; None where a case has no
    ``sha256`` (a folder prepared before the zoo recorded it)."""
    digests = sorted((case["id"], case.get("sha256")) for case in manifest["cases"])
    if not digests or any(digest is None for _, digest in digests):
        return None
    return hashlib.sha256(json.dumps(digests).encode()).hexdigest()


def _tf_reason(error) -> str:
    """TensorFlow's message without its decorations: "<path>; File too large" as "File too large", and
    "{{function_node ...}} corrupted record at 123 [Op:IteratorGetNext] name: " as "corrupted record at 123"."""
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", error.message)
    text = re.sub(r"\s*\[Op:[^\]]*\].*$", "", text, flags=re.S)
    return text.rsplit("; ", 1)[-1].strip()


def _check_records(path, expected: int) -> None:
    try:
        count = sum(1 for _ in tf.data.TFRecordDataset(str(path)))  # each record's CRC is checked on the way
    except tf.errors.OpError as error:
        raise OSError(errno.EIO, f"the shard reads back damaged ({_tf_reason(error)})") from None
    if count != expected:
        raise OSError(errno.EIO, f"the shard reads back {count} of its {expected} slices")


# The papers' data recipes; ``zoo prepare --preset NAME`` applies one (explicit options override it).
PRESETS = {
    # EAS U-Net (section III.B) on LiTS: HU window [-200, 250], slices where the liver covers at
    # least 1.5 %, liver = labels 1 (liver) and 2 (tumour) merged.
    "lits": {"hu_window": (-200.0, 250.0), "min_label_fraction": 0.015, "label_map": {2: 1},
             "class_names": ["background", "liver"]},
    # The same with the tumour kept as its own class (the slice filter still counts liver + tumour).
    "lits_tumour": {"hu_window": (-200.0, 250.0), "min_label_fraction": 0.015, "label_map": None,
                    "class_names": ["background", "liver", "tumour"]},
}


def prepare(cohort, out_dir, num_classes: int | None = None, hu_window=volumes.DEFAULT_WINDOW,
            min_label_fraction: float = 0.0, label_map: dict | None = None, class_names=None) -> dict:
    """Reads every case of a cohort once and writes its shard and the manifest, all or nothing.

    The shards go to a new generation folder (``shards/.partial-<generation>/`` while they are
    written, ``shards/<generation>/`` once all are) and the manifest, written last, switches the
    folder to them; then the shards of the manifest it replaced, and the folders of interrupted
    runs, are removed (and counted in the log). A failure anywhere (a bad case, a full disk) leaves
    an existing prepared folder as it was and a fresh one empty; a kill leaves the previous
    manifest with its own shards, never a mix. Two runs into one folder at once are refused.

    Args:
        cohort: a cohort folder of any layout ``common.ct.layouts`` reads (the Decathlon's,
            nnU-Net v2's raw, ``images/`` + ``labels/``, LiTS); the layout found is logged first.
        out_dir: the prepared folder to write.
        num_classes: number of classes including background; default from
            ``class_names`` or the cohort's ``dataset.json`` "labels" (read as its layout writes them).
        hu_window: (low, high) Hounsfield window scaled to [0, 1].
        min_label_fraction: keep only slices whose labelled (non-zero after
            ``label_map``) fraction is at least this.
        label_map: renumbers label values before anything else, e.g. ``{2: 1}``.
        class_names: names of the classes after ``label_map``, background first.

    Returns:
        The manifest (also written to ``out_dir/dataset.json``).
    """
    cohort, out_dir = pathlib.Path(cohort), pathlib.Path(out_dir)
    found = layouts.read_cohort(cohort)  # first: a folder without images is named so, not blamed on its dataset.json
    logger.info(f"cohort layout: {found.layout.description}")
    cases = found.cases
    num_classes, class_names = _classes(cohort, num_classes, class_names, found.class_names)
    volumes.window(np.zeros(1), hu_window)  # validates the options before any work
    volumes.keep_slices(np.zeros((1, 1, 1)), min_label_fraction)
    manifest = {
        "format": FORMAT_VERSION,
        "source": str(cohort.resolve()),
        "layout": found.layout.name,
        "num_classes": num_classes,
        "class_names": class_names,
        "hu_window": [float(hu_window[0]), float(hu_window[1])],
        "orientation": volumes.CANONICAL_ORIENTATION,
        "min_label_fraction": min_label_fraction,
        "label_map": {str(k): int(v) for k, v in label_map.items()} if label_map else None,
    }
    read = functools.partial(volumes.load_case, num_classes=num_classes, hu_window=hu_window, label_map=label_map)
    created = [folder for folder in (out_dir, out_dir / SHARDS) if not folder.exists()]
    _make_folder(out_dir)
    with atomic.locked_folder(out_dir, "zoo prepare"):
        previous = _listed_shards(out_dir)
        generation = uuid.uuid4().hex[:8]
        try:
            manifest["cases"] = _write_generation(cases, read, min_label_fraction, out_dir, generation,
                                                  previous is not None)
            atomic.write_json(out_dir / MANIFEST, manifest)  # the switch: until here the folder is the previous one
        except BaseException:
            _discard(out_dir / SHARDS, generation, created)
            raise
        logger.info(f"wrote {out_dir / MANIFEST}: {len(cases)} cases")
        _remove_superseded(out_dir / SHARDS, previous or set(), generation)
    return manifest


SHARDS = "shards"
STAGING = ".partial-"  # shards/.partial-<generation>/: a generation being written
_GENERATION = re.compile(r"(\.partial-)?[0-9a-f]{8}")


def _classes(cohort: pathlib.Path, num_classes: int | None, class_names, cohort_names) -> tuple[int, list[str]]:
    """``num_classes`` and ``class_names``, each defaulting to the other or to the cohort's (``cohort_names()``)."""
    class_names = list(class_names) if class_names is not None else cohort_names()
    if num_classes is None:
        if class_names is None:
            raise ValueError(f"num_classes: not given and {cohort / 'dataset.json'} has no 'labels'")
        num_classes = len(class_names)
    if not 2 <= num_classes <= volumes.MAX_LABEL + 1:
        raise ValueError(f"num_classes must lie in [2, {volumes.MAX_LABEL + 1}] (background included; the shards "
                         f"store uint8 labels), got {num_classes}")
    if class_names is None or len(class_names) != num_classes:
        class_names = ["background"] + [f"class_{i}" for i in range(1, num_classes)]
    return num_classes, class_names


def _make_folder(out_dir: pathlib.Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise atomic.WriteError(f"{out_dir}: cannot create the prepared folder ({error.strerror})") from None


def _listed_shards(out_dir: pathlib.Path) -> set[pathlib.Path] | None:
    """The shards the folder's manifest lists; None without a manifest.

    Raises:
        DataError: for a ``dataset.json`` that is not a zoo manifest (a cohort's own, say), which
            preparing would overwrite.
    """
    path = out_dir / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(manifest, dict) and "format" in manifest:
            return {out_dir / case["shard"] for case in manifest["cases"]}
    except (ValueError, KeyError, TypeError):
        pass
    raise errors.DataError(f"{path}: not a zoo manifest, and `zoo prepare` would replace it; choose another folder")


def _write_generation(cases, read, min_label_fraction: float, out_dir: pathlib.Path, generation: str,
                      replacing: bool) -> list[dict]:
    """Writes every case's shard to ``shards/.partial-<generation>/``, then names it ``shards/<generation>/``."""
    staging = out_dir / SHARDS / f"{STAGING}{generation}"
    kept_text = "the previous prepared folder is untouched" if replacing else "nothing was written"
    entries = []
    for case in cases:
        arrays = read(case)
        kept = volumes.keep_slices(arrays.label, min_label_fraction)
        try:
            digest = write_shard(arrays, staging / f"{case.case_id}.tfrecord", kept)
        except atomic.WriteError as error:  # its message names the staging file; the user knows the folder
            cause = str(error).split(": not written: ", 1)[-1].rsplit("; ", 1)[0]
            raise atomic.WriteError(f"{out_dir}: not written: the shard of {case.case_id}: {cause}; "
                                    f"{kept_text}") from None
        entries.append({"id": case.case_id, "shard": f"{SHARDS}/{generation}/{case.case_id}.tfrecord",
                        "slices": int(len(kept)), "shape": list(arrays.image.shape),
                        "spacing": list(arrays.spacing), "sha256": digest})
        logger.info(f"prepared {case.case_id}: {len(kept)}/{arrays.image.shape[0]} slices")
    try:
        os.rename(staging, staging.with_name(generation))
    except OSError as error:
        raise atomic.WriteError(f"{out_dir}: not written: {error.strerror}; {kept_text}") from None
    return entries


def _discard(shards_dir: pathlib.Path, generation: str, created: list[pathlib.Path]) -> None:
    """Removes a generation that never became the manifest's, and the folders this run created."""
    for name in (f"{STAGING}{generation}", generation):
        shutil.rmtree(shards_dir / name, ignore_errors=True)
    for folder in reversed(created):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when empty: never what someone else put there


def _remove_superseded(shards_dir: pathlib.Path, previous: set[pathlib.Path], generation: str) -> None:
    """Removes the shards of the replaced manifest and the generation folders of interrupted runs, counting them."""
    shards, folders, failed = 0, 0, []
    for path in sorted(previous):
        if path.resolve().is_relative_to(shards_dir.resolve()) and path.is_file():  # never a file outside shards/
            try:
                path.unlink()
                shards += 1
            except OSError as error:
                failed.append(f"{path} ({error.strerror})")
    for folder in sorted(shards_dir.iterdir()):
        if folder.is_dir() and folder.name != generation and _GENERATION.fullmatch(folder.name):
            interrupted = any(folder.iterdir())  # the replaced generation is empty by now
            shutil.rmtree(folder, onerror=lambda _f, path, info: failed.append(f"{path} ({info[1]})"))
            folders += interrupted
    if shards or folders:
        logger.info(f"removed {shards} shards of the replaced manifest and {folders} folders of interrupted runs")
    if failed:
        logger.warning(f"warning: could not remove {len(failed)} superseded files: {', '.join(failed[:3])}")


def check_present(paths) -> None:
    """Raises DataError naming the first of ``paths`` (shards a manifest lists) that is not there."""
    for path in paths:
        if not pathlib.Path(path).is_file():
            raise errors.DataError(f"{path}: a shard the manifest lists is missing; run `zoo prepare` again")


def damaged_shard(paths, error) -> errors.DataError:
    """The error naming the first of ``paths`` that does not read back whole, for TensorFlow's ``error``.

    tf.data's DataLossError ("corrupted record at 82464") names no file; read on the error path only, each record's
    CRC checked, the shards tell which one it was.
    """
    for path in paths:
        try:
            for _ in tf.data.TFRecordDataset(str(path)):
                pass
        except tf.errors.OpError as found:
            return errors.DataError(f"{path}: damaged ({_tf_reason(found)}); run `zoo prepare` again")
    return errors.DataError(f"a shard was damaged while training read it ({_tf_reason(error)}); run `zoo prepare` "
                            "again")


def load_manifest(prepared) -> dict:
    """Reads a prepared folder's manifest, with shard paths made absolute."""
    path = pathlib.Path(prepared) / MANIFEST
    if not path.exists():
        raise errors.DataError(f"{path}: no manifest; run `zoo prepare` on the cohort first")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        for case in manifest["cases"]:
            case["shard"] = str(pathlib.Path(prepared) / case["shard"])
    except (ValueError, KeyError, TypeError) as error:
        raise errors.DataError(f"{path}: not a zoo manifest ({error})") from None
    return manifest


def parse_example(serialized):
    """Decodes one stored slice into (image (H, W, 1) float32, label (H, W) uint8)."""
    features = tf.io.parse_single_example(serialized, {
        "image": tf.io.FixedLenFeature([], tf.string),
        "label": tf.io.FixedLenFeature([], tf.string),
        "height": tf.io.FixedLenFeature([], tf.int64),
        "width": tf.io.FixedLenFeature([], tf.int64),
    })
    shape = tf.stack([features["height"], features["width"]])
    image = tf.reshape(tf.io.decode_raw(features["image"], tf.float32), shape)
    label = tf.reshape(tf.io.decode_raw(features["label"], tf.uint8), shape)
    return image[..., None], label


def training_spacing(manifest: dict) -> tuple[float, float]:
    """The cohort's median in-plane spacing (x, y) in mm, as nnU-Net's target spacing (``zoo predict --spacing``)."""
    spacings = np.array([case["spacing"][:2] for case in manifest["cases"]], np.float64)
    if not len(spacings):
        raise errors.DataError("the manifest lists no cases: no training spacing")
    return tuple(float(s) for s in np.median(spacings, axis=0))
