"""Synthetic pose data: articulated stick figures with the 16 MPII joints on cluttered backgrounds.

``write_dataset(out, num_images)`` writes the layout ``common.pose.data``
reads (``images/``, ``annot/train.json``, ``annot/valid.json``), in the
HRNet/mmpose form with 1-based joints and an extra ``head_box`` per entry, so
the real loader is what reads it.

Each image holds one annotated figure, facing the camera (its right side on
the image's left, as MPII people mostly are, so a mirrored figure is a
valid figure with left and right swapped). Limbs are drawn in one colour per
limb type, the same on both sides. The background has random shapes and
distracting partial figures (a few limbs in the same palette), as the
paper's "redundant body parts" (section 1).
"""

from __future__ import annotations

import math
import pathlib

import cv2
import numpy as np

from common import atomic
from common.pose.mpii import LIMBS

PALETTE = ((230, 60, 60), (240, 160, 40), (60, 200, 90), (200, 200, 60), (60, 120, 240), (170, 70, 220),
           (240, 240, 240))
HEAD_COLOUR = (250, 210, 170)
VALID_FRACTION = 0.2


def _direction(degrees: float) -> np.ndarray:
    return np.array([math.cos(math.radians(degrees)), math.sin(math.radians(degrees))])


def random_pose(rng: np.random.Generator, torso: float, pelvis) -> np.ndarray:
    """(16, 2) joints of a random articulated figure, torso length ``torso``, facing the camera."""
    joints = np.zeros((16, 2))
    up = -90 + rng.uniform(-25, 25)  # image y points down
    u, right = _direction(up), _direction(up - 90)  # the person's right is the image's left
    joints[6] = pelvis
    joints[7] = joints[6] + torso * u
    joints[8] = joints[7] + 0.25 * torso * u
    joints[9] = joints[8] + 0.45 * torso * _direction(up + rng.uniform(-25, 25))
    for side, (shoulder, elbow, wrist, hip, knee, ankle) in ((1, (12, 11, 10, 2, 1, 0)), (-1, (13, 14, 15, 3, 4, 5))):
        joints[shoulder] = joints[7] + side * 0.4 * torso * right
        joints[hip] = joints[6] + side * 0.25 * torso * right
        arm = rng.uniform(0, 360)
        joints[elbow] = joints[shoulder] + 0.55 * torso * _direction(arm)
        joints[wrist] = joints[elbow] + 0.5 * torso * _direction(arm + rng.uniform(-150, 150))
        leg = up + 180 + side * rng.uniform(-10, 40)
        joints[knee] = joints[hip] + 0.75 * torso * _direction(leg)
        joints[ankle] = joints[knee] + 0.7 * torso * _direction(leg + side * rng.uniform(-90, 20))
    return joints


def draw_figure(image, joints, torso: float, rng: np.random.Generator, limbs=LIMBS, head: bool = True) -> None:
    """Draws limbs (palette colour per limb type, jittered), joint dots and a head disc, in place."""
    thickness = max(2, int(round(0.13 * torso)))
    jitter = rng.integers(-25, 26, size=3)
    point = lambda j: tuple(int(round(v)) for v in joints[j])  # noqa: E731
    for a, b, colour in limbs:
        c = tuple(int(np.clip(v + jitter[i], 0, 255)) for i, v in enumerate(PALETTE[colour]))
        cv2.line(image, point(a), point(b), c, thickness, cv2.LINE_AA)
    for a, b, _ in limbs:
        for j in (a, b):
            cv2.circle(image, point(j), max(1, thickness // 2), (30, 30, 30), -1, cv2.LINE_AA)
    if head:
        centre = (joints[8] + joints[9]) / 2
        radius = max(2, int(round(0.5 * np.linalg.norm(joints[9] - joints[8]))))
        cv2.circle(image, tuple(int(round(v)) for v in centre), radius, HEAD_COLOUR, -1, cv2.LINE_AA)


def clutter(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A noisy background of random rectangles, ellipses and lines (RGB uint8)."""
    image = np.empty((height, width, 3), np.uint8)
    image[:] = rng.integers(0, 256, size=3)
    for _ in range(int(rng.integers(8, 20))):
        colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        size = int(rng.integers(5, max(6, width // 3)))
        kind = rng.integers(3)
        if kind == 0:
            cv2.rectangle(image, (x, y), (x + size, y + int(rng.integers(5, size + 6))), colour, -1)
        elif kind == 1:
            cv2.ellipse(image, (x, y), (size // 2 + 1, int(rng.integers(2, size // 2 + 3))), float(rng.uniform(0, 180)),
                        0, 360, colour, -1)
        else:
            cv2.line(image, (x, y), (int(rng.integers(0, width)), int(rng.integers(0, height))), colour,
                     int(rng.integers(1, 5)))
    noise = rng.normal(0, 12, image.shape)
    return np.clip(cv2.GaussianBlur(image, (3, 3), 0) + noise, 0, 255).astype(np.uint8)


def render_example(rng: np.random.Generator, size: int = 256) -> tuple[np.ndarray, dict]:
    """One image and its annotation entry (HRNet form, 1-based, plus ``head_box``), before naming the image."""
    image = clutter(rng, size, size)
    for _ in range(int(rng.integers(1, 4))):  # distracting partial figures, behind the person
        torso = rng.uniform(0.1, 0.2) * size
        joints = random_pose(rng, torso, rng.uniform(0, size, size=2))
        keep = rng.random(len(LIMBS)) < 0.5
        draw_figure(image, joints, torso, rng, [limb for limb, k in zip(LIMBS, keep) if k], head=rng.random() < 0.5)
    torso = rng.uniform(0.15, 0.22) * size
    joints = random_pose(rng, torso, size / 2 + rng.uniform(-0.08, 0.08, size=2) * size + [0, 0.05 * size])
    draw_figure(image, joints, torso, rng)
    low, high = joints.min(axis=0), joints.max(axis=0)
    scale = float(max(high - low) / 200.0)
    center = (low + high) / 2
    visible = np.all((joints >= 0) & (joints <= size - 1), axis=1)
    neck, top = joints[8], joints[9]
    half = 0.5 * np.linalg.norm(top - neck)
    mid = (neck + top) / 2
    entry = {
        "center": [float(center[0] + 1), float(center[1] + 1 - 15 * scale)],  # undone by the loader
        "scale": scale,
        "joints": (joints + 1).round(2).tolist(),
        "joints_vis": visible.astype(int).tolist(),
        "head_box": (np.stack([mid - half, mid + half]) + 1).round(2).tolist(),
    }
    return image, entry


def write_dataset(out, num_images: int = 200, seed: int = 0, size: int = 256) -> dict[str, int]:
    """Writes ``num_images`` images and ``annot/{train,valid}.json`` (the last 20 % are valid).

    Returns:
        The number of entries per split.
    """
    if num_images < 2:
        raise ValueError(f"images must be >= 2 (one train, one valid), got {num_images}")
    if size < 64:
        raise ValueError(f"size must be >= 64 pixels, got {size}")
    out = pathlib.Path(out)
    rng = np.random.default_rng(seed)
    entries = []
    for index in range(num_images):
        image, entry = render_example(rng, size)
        name = f"{index:05d}.jpg"
        atomic.write_image(out / "images" / name, image, rgb=True, params=(cv2.IMWRITE_JPEG_QUALITY, 95))
        entries.append({"image": name, **entry})
    num_valid = max(1, int(round(num_images * VALID_FRACTION)))
    splits = {"train": entries[:-num_valid], "valid": entries[-num_valid:]}
    for split, items in splits.items():
        atomic.write_json(out / "annot" / f"{split}.json", items)
    return {split: len(items) for split, items in splits.items()}
