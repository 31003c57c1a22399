"""The prepare step: each case of a cohort written once to its own TFRecord shard.

Training then reads no SimpleITK, and folds split by case because a case is a
file. A prepared folder holds::

    PREPARED/dataset.json            manifest: classes, HU window, cases, settings
    PREPARED/shards/<case>.tfrecord  one tf.train.Example per kept axial slice

Slices are stored windowed (float32 in [0, 1]) in the canonical orientation of
``common.ct.volumes``, with their uint8 labels.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import tensorflow as tf

from common import atomic, errors
from common.ct import volumes

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


def write_shard(arrays: volumes.CaseArrays, path: pathlib.Path, slice_indices) -> None:
    """Writes the given z slices of one case to ``path``, atomically."""
    with atomic.atomic_path(path) as tmp, tf.io.TFRecordWriter(str(tmp)) as writer:
        for z in slice_indices:
            writer.write(_example(arrays.image[z], arrays.label[z], arrays.case_id, int(z)))


def read_class_names(cohort: pathlib.Path) -> list[str] | None:
    """Returns the class names of a Decathlon-style ``dataset.json`` ("labels"), if any."""
    path = pathlib.Path(cohort) / "dataset.json"
    if not path.exists():
        return None
    try:
        labels = json.loads(path.read_text(encoding="utf-8"))["labels"]
        return [labels[str(i)] for i in range(len(labels))]
    except (ValueError, KeyError, TypeError) as error:
        raise errors.DataError(f"{path}: 'labels' must map '0'..'N-1' to class names ({error})") from None


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
            min_label_fraction: float = 0.0, label_map: dict | None = None, class_names=None,
            log=print) -> dict:
    """Reads every case of a cohort once and writes its shard and the manifest.

    Args:
        cohort: folder with ``images/`` and ``labels/``, or a LiTS folder (see
            ``common.ct.volumes``).
        out_dir: the prepared folder to write.
        num_classes: number of classes including background; default from
            ``class_names`` or the cohort's ``dataset.json`` "labels".
        hu_window: (low, high) Hounsfield window scaled to [0, 1].
        min_label_fraction: keep only slices whose labelled (non-zero after
            ``label_map``) fraction is at least this.
        label_map: renumbers label values before anything else, e.g. ``{2: 1}``.
        class_names: names of the classes after ``label_map``, background first.
        log: where progress lines go.

    Returns:
        The manifest (also written to ``out_dir/dataset.json``).
    """
    cohort, out_dir = pathlib.Path(cohort), pathlib.Path(out_dir)
    class_names = list(class_names) if class_names is not None else read_class_names(cohort)
    if num_classes is None:
        if class_names is None:
            raise ValueError(f"num_classes: not given and {cohort / 'dataset.json'} has no 'labels'")
        num_classes = len(class_names)
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 (background included), got {num_classes}")
    if class_names is None or len(class_names) != num_classes:
        class_names = ["background"] + [f"class_{i}" for i in range(1, num_classes)]
    volumes.window(np.zeros(1), hu_window)  # validates the window before any work
    entries = []
    for case in volumes.find_cases(cohort):
        arrays = volumes.load_case(case, num_classes, hu_window, label_map)
        kept = volumes.keep_slices(arrays.label, min_label_fraction)
        shard = pathlib.Path("shards") / f"{case.case_id}.tfrecord"
        write_shard(arrays, out_dir / shard, kept)
        entries.append({"id": case.case_id, "shard": str(shard), "slices": int(len(kept)),
                        "shape": list(arrays.image.shape), "spacing": list(arrays.spacing)})
        log(f"prepared {case.case_id}: {len(kept)}/{arrays.image.shape[0]} slices")
    manifest = {
        "format": FORMAT_VERSION,
        "source": str(cohort.resolve()),
        "num_classes": num_classes,
        "class_names": class_names,
        "hu_window": [float(hu_window[0]), float(hu_window[1])],
        "orientation": volumes.CANONICAL_ORIENTATION,
        "min_label_fraction": min_label_fraction,
        "label_map": {str(k): int(v) for k, v in label_map.items()} if label_map else None,
        "cases": entries,
    }
    atomic.write_json(out_dir / MANIFEST, manifest)
    return manifest


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
