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

``clutter`` makes the background harder, so that a network must tell the
annotated person from look-alike parts around it, which is what the attention
masks are for (issue 18):

- ``"none"`` (default): the images above, byte for byte as before the option.
- ``"shapes"``: adds a colour texture to the background and loose limbs
  (one or two sticks of the figure's palette and width, with the dark joint
  dots) and head-coloured discs, most of them inside the annotated crop.
- ``"figures"``: ``"shapes"`` plus one or two second figures of the
  annotated person's size, cut by the crop's edge and partly occluded
  (dropped limbs, a block in front), as in MPII's crowd scenes. Their joints
  are not annotated: the annotated person is the one at ``center``/``scale``.

The extra clutter comes from its own random stream (a child of the image's
generator), so the three settings share every figure, annotation and head
box for a given seed: only the pixels differ, and a study can pair them.
``figures`` images hold the same texture and loose limbs as ``shapes``.
``write_dataset`` records its settings in ``dataset.json``.
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
CLUTTER = ("none", "shapes", "figures")
# Loose limbs drawn by "shapes": indices into LIMBS (arm, forearm alone, leg, lower leg alone, thigh alone).
LOOSE_LIMBS = ((10, 11), (12, 13), (11,), (13,), (0, 1), (2, 3), (0,), (3,))


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


def background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
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


def texture(rng: np.random.Generator, height: int, width: int, amplitude: float = 35.0) -> np.ndarray:
    """Zero-mean colour value noise at three scales, plus stripes half the time, as float (height, width, 3)."""
    total = np.zeros((height, width, 3))
    for cells in (3, 10, 30):  # blotches, patches, grain
        coarse = rng.uniform(-1, 1, size=(cells, cells, 3))
        total += cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC) / 3
    if rng.random() < 0.5:  # fabric-like stripes: long straight edges in every direction, as limbs have
        y, x = np.mgrid[:height, :width]
        angle, period = rng.uniform(0, math.pi), rng.uniform(6, 24) * max(height, width) / 256
        wave = np.sin(2 * math.pi * (x * math.cos(angle) + y * math.sin(angle)) / period)
        total += 0.5 * wave[..., None] * rng.uniform(-1, 1, size=3)
    return amplitude * total


def crop_square(joints) -> tuple[np.ndarray, float]:
    """Centre and side (pixels, 0-based) of the crop the loader cuts around ``joints``' annotation."""
    low, high = joints.min(axis=0), joints.max(axis=0)
    return (low + high) / 2, 1.25 * float(max(high - low))  # data.SCALE_BOX; the centre shift cancels out


def _rotated(points, centre, degrees: float) -> np.ndarray:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return (points - centre) @ np.array([[c, s], [-s, c]]) + centre


def loose_limbs(image, rng: np.random.Generator, joints, torso: float) -> None:
    """Draws 6-11 loose limbs and 1-2 head discs of the figure's palette and sizes, two thirds inside its crop.

    Each loose limb is an arm, a leg or one segment of either, taken from a
    random pose near the figure's size, turned to any angle, with the joint
    dots of ``draw_figure``: locally it is a limb, only its context differs.
    """
    centre, side = crop_square(joints)
    size = np.array(image.shape[1::-1], float)

    def anchor():
        if rng.random() < 2 / 3:
            return centre + rng.uniform(-0.5, 0.5, size=2) * side
        return rng.uniform(0, 1, size=2) * size

    for _ in range(int(rng.integers(6, 12))):
        length = torso * rng.uniform(0.85, 1.15)
        pose = random_pose(rng, length, np.zeros(2))
        chain = [LIMBS[i] for i in LOOSE_LIMBS[int(rng.integers(len(LOOSE_LIMBS)))]]
        ends = np.array([j for a, b, _ in chain for j in (a, b)])
        middle = pose[ends].mean(axis=0)
        pose = _rotated(pose, middle, rng.uniform(0, 360)) - middle + anchor()
        draw_figure(image, pose, length, rng, limbs=chain, head=False)
    radius = 0.5 * np.linalg.norm(joints[9] - joints[8])
    for _ in range(int(rng.integers(1, 3))):
        colour = tuple(int(np.clip(v + rng.integers(-20, 21), 0, 255)) for v in HEAD_COLOUR)
        at = tuple(int(round(v)) for v in anchor())
        cv2.circle(image, at, max(2, int(round(radius * rng.uniform(0.8, 1.2)))), colour, -1, cv2.LINE_AA)


def second_figures(image, rng: np.random.Generator, joints, torso: float) -> list[np.ndarray]:
    """Draws 1-2 unannotated figures of the person's size, cut by its crop's edge and partly occluded.

    Returns:
        The (16, 2) joints of each second figure (0-based), for tests and pictures; never annotated.
    """
    centre, side = crop_square(joints)
    others = []
    for _ in range(int(rng.integers(1, 3))):
        length = torso * rng.uniform(0.85, 1.15)
        # Pelvis 0.3-0.6 crop sides from the centre (max-norm; the edge is at 0.5): the crop cuts the figure as
        # MPII crops cut neighbours, and part of it is always in view.
        direction = _direction(rng.uniform(0, 360))
        pelvis = centre + side * rng.uniform(0.3, 0.6) * direction / np.abs(direction).max()
        pose = random_pose(rng, length, pelvis)
        keep = rng.random(len(LIMBS)) < 0.85  # occluded limbs
        draw_figure(image, pose, length, rng, [limb for limb, k in zip(LIMBS, keep) if k], head=rng.random() < 0.85)
        if rng.random() < 0.5:  # an object in front of part of it
            corner = pose[int(rng.integers(16))] - rng.uniform(0, 0.6, size=2) * length
            far = corner + rng.uniform(0.4, 1.0, size=2) * length
            colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
            cv2.rectangle(image, tuple(int(v) for v in corner), tuple(int(v) for v in far), colour, -1)
        others.append(pose)
    return others


def add_clutter(image, clutter: str, rng: np.random.Generator, joints, torso: float) -> list[np.ndarray]:
    """Draws the loose limbs (``"shapes"``) and second figures (``"figures"``) behind the figure at ``joints``.

    Loose limbs come from one child stream of ``rng``, second figures from
    another, so ``"figures"`` adds its people to the very loose limbs of
    ``"shapes"``. The texture is ``render_example``'s (under the background's
    partial figures).

    Returns:
        The joints of the second figures drawn (empty unless ``"figures"``).
    """
    if clutter not in CLUTTER:
        raise ValueError(f"clutter must be one of {', '.join(CLUTTER)}, got {clutter!r}")
    if clutter == "none":
        return []
    shapes_rng, figures_rng = rng.spawn(2)
    others = second_figures(image, figures_rng, joints, torso) if clutter == "figures" else []
    loose_limbs(image, shapes_rng, joints, torso)
    return others


def render_example(rng: np.random.Generator, size: int = 256, clutter: str = "none",
                   clutter_rng: np.random.Generator | None = None) -> tuple[np.ndarray, dict]:
    """One image and its annotation entry (HRNet form, 1-based, plus ``head_box``), before naming the image.

    Args:
        rng: draws the background, the partial figures and the annotated figure (as before ``clutter``).
        size: image side in pixels.
        clutter: ``"none"``, ``"shapes"`` or ``"figures"`` (module docstring).
        clutter_rng: draws the clutter; default a child of ``rng``, which leaves ``rng``'s stream untouched.

    Example:
        >>> image, entry = render_example(np.random.default_rng(0), 128, clutter="figures")
        >>> image.shape, len(entry["joints"])
        ((128, 128, 3), 16)
    """
    image = background(rng, size, size)
    if clutter != "none":
        clutter_rng = rng.spawn(1)[0] if clutter_rng is None else clutter_rng
        texture_rng, clutter_rng = clutter_rng.spawn(2)
        # Before the partial figures below, so that only the background is textured.
        image = np.clip(image + texture(texture_rng, size, size), 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(1, 4))):  # distracting partial figures, behind the person
        torso = rng.uniform(0.1, 0.2) * size
        joints = random_pose(rng, torso, rng.uniform(0, size, size=2))
        keep = rng.random(len(LIMBS)) < 0.5
        draw_figure(image, joints, torso, rng, [limb for limb, k in zip(LIMBS, keep) if k], head=rng.random() < 0.5)
    torso = rng.uniform(0.15, 0.22) * size
    joints = random_pose(rng, torso, size / 2 + rng.uniform(-0.08, 0.08, size=2) * size + [0, 0.05 * size])
    add_clutter(image, clutter, clutter_rng, joints, torso)
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


def write_dataset(out, num_images: int = 200, seed: int = 0, size: int = 256, clutter: str = "none") -> dict[str, int]:
    """Writes ``num_images`` images, ``annot/{train,valid}.json`` (the last 20 % are valid) and ``dataset.json``.

    Args:
        out: the data folder.
        num_images: images, one annotated figure each.
        seed: one seed for everything; the same seed gives the same figures whatever ``clutter``.
        size: image side in pixels.
        clutter: ``"none"`` (today's images), ``"shapes"`` or ``"figures"`` (module docstring).

    Returns:
        The number of entries per split.
    """
    if num_images < 2:
        raise ValueError(f"images must be >= 2 (one train, one valid), got {num_images}")
    if size < 64:
        raise ValueError(f"size must be >= 64 pixels, got {size}")
    if clutter not in CLUTTER:
        raise ValueError(f"clutter must be one of {', '.join(CLUTTER)}, got {clutter!r}")
    out = pathlib.Path(out)
    rng = np.random.default_rng(seed)
    entries = []
    for index in range(num_images):
        image, entry = render_example(rng, size, clutter)
        name = f"{index:05d}.jpg"
        atomic.write_image(out / "images" / name, image, rgb=True, params=(cv2.IMWRITE_JPEG_QUALITY, 95))
        entries.append({"image": name, **entry})
    num_valid = max(1, int(round(num_images * VALID_FRACTION)))
    splits = {"train": entries[:-num_valid], "valid": entries[-num_valid:]}
    for split, items in splits.items():
        atomic.write_json(out / "annot" / f"{split}.json", items)
    # Beside annot/, as common.ct.synthetic writes its dataset.json: which generator settings made this folder.
    atomic.write_json(out / "dataset.json", {"name": "synthetic stick figures", "generator": "common.pose.synthetic",
                                             "images": num_images, "seed": seed, "size": size, "clutter": clutter})
    return {split: len(items) for split, items in splits.items()}
