"""QuPath GeoJSON annotations of tissue classes, and points sampled inside them."""

from __future__ import annotations

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


def _class_index(name, path) -> int:
    key = str(name).strip().lower()
    if key not in CLASSES:
        raise DataError(f"{path}: unknown class {name!r}; expected one of {', '.join(CLASSES)}")
    return CLASSES.index(key)


def read_annotations(path, slide_size: tuple[int, int]) -> list[Annotation]:
    """Reads classified polygons from a QuPath GeoJSON export (FeatureCollection or feature list).

    A class outside ``CLASSES``, a missing classification or a vertex outside
    the slide (``slide_size`` = (width, height)) raises ``DataError`` naming the file.
    """
    try:
        payload = json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: not readable as GeoJSON ({error})") from None
    features = payload.get("features", []) if isinstance(payload, dict) else payload
    annotations = []
    for number, feature in enumerate(features):
        try:
            geometry, props = feature["geometry"], feature.get("properties", {})
            classification = props.get("classification") or {}
            # QuPath >= 0.2 writes {"classification": {"name": ...}}; older exports a plain string.
            name = classification.get("name") if isinstance(classification, dict) else classification or None
            if geometry["type"] == "Polygon":
                polygons = [geometry["coordinates"]]
            elif geometry["type"] == "MultiPolygon":
                polygons = geometry["coordinates"]
            else:
                continue  # points and lines carry no area to sample from
        except (KeyError, TypeError, AttributeError):
            raise DataError(f"{path}: feature {number} has no geometry or properties") from None
        if name is None:
            raise DataError(f"{path}: feature {number} has no classification name")
        label = _class_index(name, path)
        for polygon in polygons:
            rings = tuple(np.asarray(ring, np.float64).reshape(-1, 2) for ring in polygon)
            outside = [p for ring in rings for p in ring
                       if not (0 <= p[0] <= slide_size[0] and 0 <= p[1] <= slide_size[1])]
            if outside:
                raise DataError(f"{path}: feature {number} ({name}) has vertex {tuple(outside[0])} outside "
                                f"the slide of {slide_size[0]}x{slide_size[1]} pixels")
            annotations.append(Annotation(label, rings))
    return annotations


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
