"""QuPath GeoJSON annotations of tissue classes, and points sampled inside them.

Class names match case-insensitively after stripping, through an optional
mapping from the user's names (``class_map``); unclassified annotations,
unknown classes, points and lines are skipped and counted, not fatal.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import pathlib

import numpy as np

from common.errors import DataError

CLASSES = ("blood", "damaged", "muscle", "stroma", "urothelium")


@dataclasses.dataclass(frozen=True)
class Annotation:
    """One classified polygon; ``rings`` are (K, 2) level-0 (x, y) arrays, the first the outline."""

    label: int
    rings: tuple


def class_map(spec=None) -> dict[str, int]:
    """The user's class names (stripped, lower case) -> index in ``CLASSES``; model class names map to themselves.

    ``spec`` is ``"QuPathName=model_class,..."``, a dict, or the path of a JSON
    object file of the same pairs; a target outside ``CLASSES`` raises ``ValueError``.

    Example:
        >>> class_map("Tumor=urothelium, Blood vessel = BLOOD")["blood vessel"]
        0
    """
    mapping = {name: index for index, name in enumerate(CLASSES)}
    if spec is None:
        return mapping
    if isinstance(spec, (str, pathlib.Path)) and str(spec).lower().endswith(".json"):
        try:
            spec = json.loads(pathlib.Path(spec).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise DataError(f"{spec}: not a readable JSON class mapping ({error})") from None
        if not isinstance(spec, dict):
            raise DataError(f"{spec}: a class mapping is a JSON object {{\"QuPath name\": \"model class\"}}")
    pairs = spec.items() if isinstance(spec, dict) else [item.partition("=")[::2] for item in str(spec).split(",")]
    for source, target in pairs:
        source, target = str(source).strip().lower(), str(target).strip().lower()
        if not source or target not in CLASSES:
            raise ValueError(f"class mapping {source or '?'}={target or '?'}: expected QuPathName=model_class "
                             f"with the model class one of {', '.join(CLASSES)}")
        mapping[source] = CLASSES.index(target)
    return mapping


def _class_name(feature, path, number) -> str | None:
    try:
        classification = feature.get("properties", {}).get("classification") or {}
    except AttributeError:
        raise DataError(f"{path}: feature {number} has no geometry or properties") from None
    # QuPath >= 0.2 writes {"classification": {"name": ...}}; older exports a plain string.
    name = classification.get("name") if isinstance(classification, dict) else classification
    return str(name).strip() if name is not None and str(name).strip() else None


def read_annotations(path, slide_size: tuple[int, int], origin=(0, 0), classes=None) -> tuple[list, dict]:
    """Reads classified polygons from a QuPath GeoJSON export (FeatureCollection or feature list).

    Args:
        path: the GeoJSON file.
        slide_size: (width, height) of QuPath's frame (``reader.qupath_frame``); a vertex outside it
            raises ``DataError`` naming the file.
        origin: level-0 (x, y) of QuPath's (0, 0), added to every vertex.
        classes: a ``class_map``; default the model's class names, matched case-insensitively.

    Returns the annotations (level-0 rings) and what was skipped, ``{reason: count}``:
    "unclassified", a class name outside ``classes`` in quotes, "point or line".
    """
    try:
        payload = json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: not readable as GeoJSON ({error})") from None
    classes = class_map() if classes is None else classes
    features = payload.get("features", []) if isinstance(payload, dict) else payload
    annotations, skipped = [], collections.Counter()
    for number, feature in enumerate(features):
        name = _class_name(feature, path, number)
        try:
            kind, coordinates = feature["geometry"]["type"], feature["geometry"]["coordinates"]
        except (KeyError, TypeError):
            raise DataError(f"{path}: feature {number} has no geometry or properties") from None
        if kind not in ("Polygon", "MultiPolygon"):
            skipped["point or line"] += 1  # no area to sample from
        elif name is None:
            skipped["unclassified"] += 1
        elif name.lower() not in classes:
            skipped[repr(name)] += 1
        else:
            for polygon in [coordinates] if kind == "Polygon" else coordinates:
                rings = _rings(polygon, path, number, name, slide_size)
                annotations.append(Annotation(classes[name.lower()], tuple(r + np.asarray(origin) for r in rings)))
    return annotations, dict(skipped)


def _rings(polygon, path, number, name, slide_size) -> tuple:
    try:
        rings = tuple(np.asarray(ring, np.float64).reshape(-1, 2) for ring in polygon)
    except (ValueError, TypeError):
        raise DataError(f"{path}: feature {number} ({name}) has malformed coordinates") from None
    outside = [p for ring in rings for p in ring if not (0 <= p[0] <= slide_size[0] and 0 <= p[1] <= slide_size[1])]
    if outside:
        raise DataError(f"{path}: feature {number} ({name}) has vertex ({outside[0][0]:g}, {outside[0][1]:g}) outside "
                        f"the slide of {slide_size[0]}x{slide_size[1]} pixels (QuPath's frame)")
    return rings


def skipped_line(path, skipped: dict) -> str:
    """One line of what ``read_annotations`` skipped, e.g. "skipped 3 unclassified and 2 'Tumor' annotations in X"."""
    order = sorted(skipped, key=lambda reason: (reason.startswith("'"), reason))  # class names last
    parts = [f"{skipped[reason]} {reason}" for reason in order]
    listed = ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else "".join(parts)
    return f"skipped {listed} annotations in {path}"


def inside(points: np.ndarray, rings) -> np.ndarray:
    """Even-odd point-in-polygon test over all rings (so holes are excluded)."""
    result = np.zeros(len(points), bool)
    x, y = points[:, 0:1], points[:, 1:2]
    for ring in rings:
        x0, y0 = ring[:, 0], ring[:, 1]
        x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
        crosses = (y0 > y) != (y1 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_cross = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
        result ^= (crosses & (x < x_cross)).sum(1) % 2 == 1
    return result


def _polygon_area(rings) -> float:
    def shoelace(r):
        return 0.5 * abs(np.dot(r[:, 0], np.roll(r[:, 1], 1)) - np.dot(r[:, 1], np.roll(r[:, 0], 1)))
    return max(0.0, shoelace(rings[0]) - sum(shoelace(r) for r in rings[1:]))


def sample_points(annotations, max_points: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``max_points`` uniform points inside the annotations, shared by area; returns (points, labels)."""
    areas = np.array([_polygon_area(a.rings) for a in annotations])
    if not len(annotations) or areas.sum() == 0:
        return np.zeros((0, 2)), np.zeros((0,), np.int64)
    counts = rng.multinomial(max_points, areas / areas.sum())
    points, labels = [], []
    for annotation, count in zip(annotations, counts):
        low, high = annotation.rings[0].min(0), annotation.rings[0].max(0)
        found = np.zeros((0, 2))
        for _ in range(50):  # rejection sampling in the bounding box
            if len(found) >= count:
                break
            candidates = rng.uniform(low, high, size=(max(4 * count, 16), 2))
            found = np.concatenate([found, candidates[inside(candidates, annotation.rings)]])
        points.append(found[:count])
        labels.append(np.full(len(found[:count]), annotation.label))
    return np.concatenate(points), np.concatenate(labels).astype(np.int64)
