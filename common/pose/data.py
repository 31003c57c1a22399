"""MPII-style pose data: annotation JSON + images -> crops and target heatmaps -> tf.data.

A data folder is laid out as HRNet's ``data/mpii`` or as mmpose's, which
ships the same JSON and MATLAB files under other names (``layout_of``
detects which)::

    HRNet                          mmpose
    DATA/annot/train.json          DATA/annotations/mpii_train.json    [{"image", "center", "scale", "joints",
    DATA/annot/valid.json          DATA/annotations/mpii_val.json        "joints_vis"}, ...]
    DATA/annot/gt_valid.mat        DATA/annotations/mpii_gt_val.mat    (optional) the toolkit's head boxes
    DATA/images/<image>            DATA/images/<image>

``joints`` are 16 (x, y) pairs in MPII order, 1-based as MATLAB wrote them;
``center`` and ``scale`` (person height / 200 px) locate the person. As
HRNet's loader does, the centre moves down by ``15 * scale``, the scale
grows by 1.25, and centre and joints become 0-based (``- 1``). An entry may
carry its own ``head_box`` ``[[x1, y1], [x2, y2]]`` (the synthetic data
does); otherwise head boxes come from ``gt_valid.mat``.

Crops: the square of side ``200 * scale`` (after the 1.25) around the centre,
rotated, resampled by OpenCV to ``input_size``; heatmaps are 4 times smaller,
with a Gaussian of sigma 1 at each annotated joint inside the crop. Pixel
centres sit at integer coordinates; the square's centre maps to the middle of
the output grid, so the crop and heatmap transforms agree:
``x_input = 4 (u + 0.5) - 0.5``.

The pipeline reads and warps images with OpenCV inside ``tf.numpy_function``
(OpenCV releases the GIL, so parallel calls overlap), then batches and
prefetches in TensorFlow. An error raised in there reaches the user as a
TensorFlow traceback, so every record is checked when the annotation file is
read, before a dataset is built: numbers finite, head box of non-zero size,
image path inside the image folder (checked before anything is opened), and
each image whole (``images.image_problem``: not empty, not truncated).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib

import cv2
import numpy as np

from common.errors import DataError
from common.pose import images
from common.pose.images import read_image
from common.pose.mpii import FLIP_PERMUTATION, MPII_JOINTS, NUM_JOINTS

REQUIRED_KEYS = ("image", "center", "scale", "joints", "joints_vis")
SCALE_BOX = 1.25  # HRNet's crop margin around the annotated person scale
CENTER_SHIFT = 15  # HRNet moves the MPII centre down by 15 * scale pixels


@dataclasses.dataclass
class PoseRecord:
    """One annotated person, 0-based: crop centre and side in pixels, joints, visibility, head box."""

    image: pathlib.Path
    center: np.ndarray  # (2,) x, y
    side: float  # crop square side in pixels (200 * scale * 1.25)
    joints: np.ndarray  # (16, 2)
    visible: np.ndarray  # (16,) bool
    head_box: np.ndarray | None = None  # (2, 2) [[x1, y1], [x2, y2]]


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """Random scale (x in [1 - scale, 1 + scale]), rotation (degrees in +-rotation), flip (probability)."""

    scale: float = 0.25
    rotation: float = 30.0
    flip: float = 0.5

    def sample(self, rng: np.random.Generator) -> tuple[float, float, bool]:
        return (float(rng.uniform(1 - self.scale, 1 + self.scale)), float(rng.uniform(-self.rotation, self.rotation)),
                bool(rng.random() < self.flip))


def _array(entry, key, shape, where):
    try:
        value = np.asarray(entry[key], dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{where}: '{key}' is not numeric") from None
    if key == "joints" and value.ndim == 2 and value.shape[0] != NUM_JOINTS:
        raise DataError(f"{where}: {value.shape[0]} joints, expected {NUM_JOINTS} (MPII order)")
    if value.shape != shape:
        raise DataError(f"{where}: '{key}' has shape {value.shape}, expected {shape}")
    if not np.isfinite(value).all():  # one NaN joint makes every loss NaN
        bad = np.argwhere(~np.isfinite(value))[0]
        which = f"joint {bad[0]}, {MPII_JOINTS[bad[0]]}" if key == "joints" else f"value {value.tolist()}"
        raise DataError(f"{where}: '{key}' holds NaN or Inf ({which})")
    return value


def _scale(value, where) -> float:
    """MPII's person scale: a number, or a list holding one (as some converters write it)."""
    try:
        scale = float(np.asarray(value, dtype=np.float64).reshape(-1)[0])
    except (TypeError, ValueError, IndexError):
        raise DataError(f"{where}: 'scale' is not a number") from None
    if not scale > 0 or not math.isfinite(scale):
        raise DataError(f"{where}: scale must be > 0 and finite, got {scale}")
    return scale


def _image_path(name: str, image_dir: pathlib.Path, where: str) -> pathlib.Path:
    """``image_dir / name``, refused before anything is opened if ``name`` leads outside ``image_dir``.

    Checked on the words, not on the resolved file: an images folder that is
    a link to a data disk is common, and stays usable.
    """
    relative = pathlib.PurePath(os.path.normpath(name))
    if "\x00" in name:
        raise DataError(f"{where}: image path {name!r} holds a NUL character")
    if relative.is_absolute() or relative.parts[:1] == ("..",):
        raise DataError(f"{where}: image path {name!r} leads outside the image folder {image_dir}; refused "
                        "(image names are relative to it)")
    return image_dir / name


def _record(entry, index: int, path: pathlib.Path, image_dir: pathlib.Path, checked: dict) -> PoseRecord:
    where = f"{path}: entry {index}"
    if not isinstance(entry, dict):
        raise DataError(f"{where} is not an object")
    where += f" ({entry['image']})" if "image" in entry else ""
    missing = [key for key in REQUIRED_KEYS if key not in entry]
    if missing:
        raise DataError(f"{where} is missing {', '.join(repr(k) for k in missing)}")
    joints = _array(entry, "joints", (NUM_JOINTS, 2), where)
    visible = _array(entry, "joints_vis", (NUM_JOINTS,), where) > 0
    center = _array(entry, "center", (2,), where)
    scale = _scale(entry["scale"], where)
    head_box = _array(entry, "head_box", (2, 2), where) - 1 if "head_box" in entry else None
    if head_box is not None and visible.any() and not np.linalg.norm(head_box[1] - head_box[0]) > 0:
        raise DataError(f"{where}: 'head_box' {entry['head_box']} has zero size (PCKh divides by it)")
    image = _image_path(str(entry["image"]), image_dir, where)
    if not image.is_file():
        raise DataError(f"{where}: image {image} does not exist")
    if image not in checked:  # once per image: MPII has several people per image
        checked[image] = images.image_problem(image)
    if checked[image]:
        raise DataError(f"{where}: image {image}: {checked[image]}")
    center = center + np.array([0.0, CENTER_SHIFT * scale]) - 1  # HRNet's MPII adjustment, then 0-based
    return PoseRecord(image, center, 200.0 * scale * SCALE_BOX, joints - 1, visible, head_box)


def read_annotations(path, image_dir=None) -> list[PoseRecord]:
    """Reads an HRNet/mmpose MPII annotation file.

    Args:
        path: the JSON list.
        image_dir: where ``image`` names are found; default ``../images`` beside ``annot/`` (or ``annotations/``).

    Raises:
        DataError: naming the file and the entry (index and image) for a
            missing file, bad JSON, missing keys, a joint count other than 16,
            NaN or Inf, a zero-size head box, an image path leading outside
            ``image_dir``, or a missing, empty or truncated image
            (``images.image_problem``; each image is checked once, here, so
            that tf.data never meets a bad one).
    """
    path = pathlib.Path(path)
    image_dir = pathlib.Path(image_dir) if image_dir is not None else path.parent.parent / "images"
    if not path.is_file():
        raise DataError(f"{path}: no such annotation file")
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: not JSON ({error})") from None
    if not isinstance(entries, list) or not entries:
        raise DataError(f"{path}: expected a non-empty JSON list of annotations")
    checked = {}
    return [_record(entry, i, path, image_dir, checked) for i, entry in enumerate(entries)]


def read_head_boxes_mat(path, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Head boxes (N, 2, 2) and annotated-joint flags (N, 16) from the toolkit's ``gt_valid.mat``."""
    import scipy.io

    path = pathlib.Path(path)
    try:
        mat = scipy.io.loadmat(str(path))
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: cannot be read as a MATLAB file ({error})") from None
    if "headboxes_src" not in mat:
        raise DataError(f"{path}: no 'headboxes_src' (not the toolkit's gt_valid.mat)")
    boxes = np.transpose(np.asarray(mat["headboxes_src"], np.float64), (2, 0, 1))  # (2 corners, xy, N) -> (N, 2, 2)
    if boxes.shape != (count, 2, 2):
        raise DataError(f"{path}: {boxes.shape[0]} head boxes for {count} annotations")
    visible = np.ones((count, NUM_JOINTS), bool)
    if "jnt_missing" in mat:
        visible = np.asarray(mat["jnt_missing"]).T == 0
    return boxes, visible


def layout_of(root) -> str:
    """"hrnet" (``annot/``) or "mmpose" (``annotations/mpii_*.json``): how the data folder ``root`` names its files."""
    root = pathlib.Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such data folder")
    if not (root / "annot").is_dir() and any((root / "annotations").glob("mpii_*.json")):
        return "mmpose"
    return "hrnet"


def _layout_name(layout: str, split: str, kind: str) -> str:
    if layout == "mmpose":  # mmpose calls the validation split "val"
        split = {"valid": "val"}.get(split, split)
        return f"annotations/mpii_{split}.json" if kind == "json" else f"annotations/mpii_gt_{split}.mat"
    return f"annot/{split}.json" if kind == "json" else f"annot/gt_{split}.mat"


def split_paths(root, split: str) -> tuple[pathlib.Path, pathlib.Path]:
    """The annotation file and image folder of ``split`` ("train" or "valid") in a data folder of either layout."""
    root = pathlib.Path(root)
    return root / _layout_name(layout_of(root), split, "json"), root / "images"


def load_split(root, split: str) -> list[PoseRecord]:
    """Reads a split; fills in head boxes (and annotated flags) from the layout's ``.mat`` when entries lack them."""
    annotation, image_dir = split_paths(root, split)
    records = read_annotations(annotation, image_dir)
    mat = pathlib.Path(root) / _layout_name(layout_of(root), split, "mat")
    if any(r.head_box is None for r in records) and mat.is_file():
        boxes, visible = read_head_boxes_mat(mat, len(records))
        for index, (record, box, vis) in enumerate(zip(records, boxes, visible)):
            record.head_box, record.visible = box, record.visible & vis
            if not np.isfinite(box).all() or (record.visible.any() and not np.linalg.norm(box[1] - box[0]) > 0):
                raise DataError(f"{mat}: head box {index} (of {annotation} entry {index} ({record.image.name})) is "
                                f"{box.tolist()}: zero size, NaN or Inf (PCKh divides by its size)")
    return records


def crop_matrix(center, side: float, rotation: float, out_size: int, flip: bool = False) -> np.ndarray:
    """The 2x3 affine taking image coordinates to a ``out_size`` square crop.

    The square of ``side`` pixels around ``center``, rotated by ``rotation``
    degrees, fills the output; ``flip`` mirrors it left-right.
    """
    k = out_size / side
    angle = math.radians(rotation)
    linear = k * np.array([[math.cos(angle), math.sin(angle)], [-math.sin(angle), math.cos(angle)]])
    shift = (out_size - 1) / 2 - linear @ np.asarray(center, np.float64)
    matrix = np.concatenate([linear, shift[:, None]], axis=1)
    if flip:
        matrix[0] = -matrix[0]
        matrix[0, 2] += out_size - 1
    return matrix


def transform_points(points, matrix) -> np.ndarray:
    """Applies a 2x3 affine to (..., 2) points."""
    points = np.asarray(points, np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def inverse_transform_points(points, matrices) -> np.ndarray:
    """Maps (..., K, 2) points back through the inverse of (..., 2, 3) affines (one per sample, or one for all).

    With ``crop_matrix`` at the heatmap's size, it takes decoded heatmap
    coordinates back to the original image.
    """
    points, matrices = np.asarray(points, np.float64), np.asarray(matrices, np.float64)
    linear, shift = matrices[..., :, :2], matrices[..., :, 2]
    return np.einsum("...ij,...kj->...ki", np.linalg.inv(linear), points - shift[..., None, :])


def flip_joints(joints, visible):
    """Swaps the MPII left/right pairs (after a mirror the person's left is the old right)."""
    return np.asarray(joints)[FLIP_PERMUTATION], np.asarray(visible)[FLIP_PERMUTATION]


def gaussian_heatmaps(joints, visible, size: int, sigma: float = 1.0) -> np.ndarray:
    """(size, size, K) float32: exp(-d^2 / 2 sigma^2) around each visible joint inside the map, else zeros."""
    joints, visible = np.asarray(joints, np.float32), np.asarray(visible, bool)
    grid = np.arange(size, dtype=np.float32)
    inside = visible & np.all((joints >= -0.5) & (joints <= size - 0.5), axis=-1)
    gx = np.exp(-((grid[None, :] - joints[:, :1]) ** 2) / (2 * sigma**2))  # (K, W)
    gy = np.exp(-((grid[None, :] - joints[:, 1:]) ** 2) / (2 * sigma**2))  # (K, H)
    maps = gy[:, :, None] * gx[:, None, :] * inside[:, None, None]
    return np.transpose(maps, (1, 2, 0)).astype(np.float32)


def prepare_sample(record: PoseRecord, input_size: int = 256, sigma: float = 1.0, augmentation=None, rng=None,
                   image=None):
    """One training or evaluation sample.

    Returns:
        ``(crop, heatmaps, matrix)``: the float32 crop in [0, 1] (input_size,
        input_size, 3), target heatmaps (input_size / 4, .., 16) and the 2x3
        matrix from original-image to heatmap coordinates (for decoding).
    """
    scale, rotation, flip = augmentation.sample(rng) if augmentation is not None else (1.0, 0.0, False)
    side = record.side * scale
    image = read_image(record.image) if image is None else image
    crop = cv2.warpAffine(image, crop_matrix(record.center, side, rotation, input_size, flip),
                          (input_size, input_size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    heatmap_size = input_size // 4
    matrix = crop_matrix(record.center, side, rotation, heatmap_size, flip)
    joints, visible = transform_points(record.joints, matrix), record.visible
    if flip:
        joints, visible = flip_joints(joints, visible)
    heatmaps = gaussian_heatmaps(joints, visible, heatmap_size, sigma)
    return crop.astype(np.float32) / 255.0, heatmaps, matrix


def pose_dataset(records: list[PoseRecord], batch_size: int, input_size: int = 256, training: bool = True,
                 seed: int = 0, augmentation: Augmentation | None = Augmentation(), sigma: float = 1.0):
    """A tf.data pipeline of (images, heatmaps) batches; training repeats, shuffles and augments.

    Each element draws its augmentation from a generator seeded by the
    pipeline's own random stream, so a seed gives the same batches.
    """
    import tensorflow as tf

    if not records:
        raise ValueError("records: no annotations to read")
    if input_size < 4 or input_size % 4:  # the model's own stride is its trainer's check (PoseTrainConfig.validate)
        raise ValueError(f"input_size must be a positive multiple of 4 (the heatmaps are a quarter of the crop), "
                         f"got {input_size}")
    heatmap_size = input_size // 4

    def load(index, element_seed):
        rng = np.random.default_rng(int(element_seed) & 0x7FFFFFFF)
        crop, heatmaps, _ = prepare_sample(records[int(index)], input_size, sigma,
                                           augmentation if training else None, rng)
        return crop, heatmaps

    def load_tf(index, element_seed):
        crop, heatmaps = tf.numpy_function(load, [index, element_seed], [tf.float32, tf.float32])
        return (tf.ensure_shape(crop, (input_size, input_size, 3)),
                tf.ensure_shape(heatmaps, (heatmap_size, heatmap_size, NUM_JOINTS)))

    dataset = tf.data.Dataset.range(len(records))
    if training:
        dataset = dataset.shuffle(len(records), seed=seed, reshuffle_each_iteration=True).repeat()
    dataset = tf.data.Dataset.zip(dataset, tf.data.Dataset.random(seed=seed))
    dataset = dataset.map(load_tf, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.batch(batch_size, drop_remainder=training).prefetch(tf.data.AUTOTUNE)
