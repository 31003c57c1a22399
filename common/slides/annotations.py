"""QuPath GeoJSON annotations of tissue classes, and points sampled inside them.

Class names match case-insensitively after stripping, through an optional
mapping from the user's names (``class_map``); unclassified annotations,
unknown classes, points and lines, and degenerate polygons (fewer than 3
vertices, or none off one line: no area) are skipped and counted, not fatal.

A self-intersecting polygon (a figure eight, an outline that doubles back)
has a signed area near 0, so it used to get no points without a word. It is
repaired as GEOS's ``make_valid`` (shapely's default, "linework") repairs it:
its inside is what the even-odd rule says, which ``inside`` already samples;
its area, which shares the points out, is measured on an OpenCV raster of
that inside (``even_odd_area``). It is counted as repaired (``Annotation.repaired``).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import pathlib

import cv2
import numpy as np

from common.errors import DataError

CLASSES = ("blood", "damaged", "muscle", "stroma", "urothelium")
DEGENERATE, SELF_INTERSECTING = "degenerate", "self-intersecting"  # what ``polygon_flaw`` finds
WHY = {DEGENERATE: "fewer than 3 distinct vertices, or all on one line: no area to sample"}  # said after the counts
RASTER_SIDE = 2048  # pixels along the longer side of a repaired polygon's box: its area ~0.1% over (the boundary)


@dataclasses.dataclass(frozen=True)
class Annotation:
    """One classified polygon; ``rings`` are (K, 2) level-0 (x, y) arrays, the first the outline."""

    label: int
    rings: tuple
    repaired: bool = False  # self-intersecting: read by the even-odd rule (module docstring)


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

    Returns the annotations (level-0 rings; self-intersecting ones ``repaired``) and what was
    skipped, ``{reason: count}``: "unclassified", a class name outside ``classes`` in quotes,
    "point or line", ``DEGENERATE`` (a polygon without area).
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
                flaw = polygon_flaw(rings)
                if flaw == DEGENERATE:
                    skipped[flaw] += 1
                else:
                    annotations.append(Annotation(classes[name.lower()], tuple(r + np.asarray(origin) for r in rings),
                                                  repaired=flaw == SELF_INTERSECTING))
    return annotations, dict(skipped)


def _rings(polygon, path, number, name, slide_size) -> tuple:
    try:
        rings = tuple(np.asarray(ring, np.float64).reshape(-1, 2) for ring in polygon)
    except (ValueError, TypeError):
        raise DataError(f"{path}: feature {number} ({name}) has malformed coordinates") from None
    if not all(np.isfinite(ring).all() for ring in rings):
        raise DataError(f"{path}: feature {number} ({name}) has a NaN or Inf coordinate")
    outside = [p for ring in rings for p in ring if not (0 <= p[0] <= slide_size[0] and 0 <= p[1] <= slide_size[1])]
    if outside:
        raise DataError(f"{path}: feature {number} ({name}) has vertex ({outside[0][0]:g}, {outside[0][1]:g}) outside "
                        f"the slide of {slide_size[0]}x{slide_size[1]} pixels (QuPath's frame)")
    return rings


def skipped_line(path, skipped: dict) -> str:
    """One line of what ``read_annotations`` skipped, e.g. "skipped 3 unclassified and 2 'Tumor' annotations in X".

    Reasons that need one are explained after the counts (``WHY``).
    """
    return f"skipped {skipped_counts(skipped)} annotations in {path}{skipped_why(skipped)}"


def repaired_line(path, repaired: int) -> str:
    """The line saying that ``repaired`` self-intersecting polygons of ``path`` were read by the even-odd rule."""
    return (f"repaired {repaired} self-intersecting polygons in {path}: read by the even-odd rule, as GEOS's "
            "make_valid repairs them (a figure eight is its two loops)")


def skipped_counts(skipped: dict) -> str:
    """"3 unclassified and 2 'Tumor'": each reason's count, class names last."""
    order = sorted(skipped, key=lambda reason: (reason.startswith("'"), reason))
    parts = [f"{skipped[reason]} {reason}" for reason in order]
    return ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else "".join(parts)


def skipped_why(skipped: dict) -> str:
    """" (self-intersecting: ...)" for each reason of ``skipped`` that ``WHY`` explains, else ""."""
    return "".join(f" ({reason}: {WHY[reason]})" for reason in sorted(skipped) if reason in WHY)


def _side(a, b, p) -> np.ndarray:
    """The sign of the cross product (b - a) x (p - a): on which side of the line a -> b each point p lies."""
    return np.sign((b[:, 0] - a[:, 0]) * (p[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (p[:, 0] - a[:, 0]))


def _crossings(starts: np.ndarray, ends: np.ndarray, budget: int = 1 << 21) -> bool:
    """Whether two of the segments ``starts[i] -> ends[i]`` cross at a point inside both.

    Segments are sorted by their left end, so only pairs that overlap in x
    are tested, about ``budget`` pairs at a time: an outline of 10^4 vertices
    costs milliseconds, not 10^8 tests. Touching at a vertex and overlapping
    along a line are not crossings (a shared corner is legal).
    """
    low = np.minimum(starts[:, 0], ends[:, 0])
    order = np.argsort(low, kind="stable")
    starts, ends, low = starts[order], ends[order], low[order]
    stop = np.searchsorted(low, np.maximum(starts[:, 0], ends[:, 0]), side="right")
    counts = np.maximum(stop - np.arange(len(low)) - 1, 0)  # the segments after i that overlap it in x
    total, first = np.cumsum(counts), 0
    while first < len(low):
        done = total[first - 1] if first else 0
        last = max(first + 1, int(np.searchsorted(total, done + budget, side="right")))
        n = counts[first:last]
        i = np.repeat(np.arange(first, last), n)
        j = i + 1 + np.arange(len(i)) - np.repeat(np.cumsum(n) - n, n)  # i's partners: i + 1, i + 2, ...
        a, b, c, d = starts[i], ends[i], starts[j], ends[j]
        if np.any((_side(a, b, c) * _side(a, b, d) < 0) & (_side(c, d, a) * _side(c, d, b) < 0)):
            return True
        first = last
    return False


def polygon_flaw(rings) -> str | None:
    """What is wrong with a polygon, or None: ``DEGENERATE`` (no area) or ``SELF_INTERSECTING`` (edges cross).

    Example:
        >>> square = np.array([[0, 0], [4, 0], [4, 4], [0, 4], [0, 0]], float)
        >>> polygon_flaw([square]), polygon_flaw([square[[0, 1, 3, 2, 0]]]), polygon_flaw([square[:2]])
        (None, 'self-intersecting', 'degenerate')
    """
    if not rings or len(np.unique(rings[0], axis=0)) < 3:
        return DEGENERATE
    if _crossings(np.concatenate(rings), np.concatenate([np.roll(ring, -1, axis=0) for ring in rings])):
        return SELF_INTERSECTING
    return DEGENERATE if _polygon_area(rings[:1]) == 0 else None  # all vertices on one line


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


def even_odd_area(rings) -> float:
    """The area inside ``rings`` by the even-odd rule (``inside``'s), counted on a raster: for any polygon.

    OpenCV's ``fillPoly`` fills by that rule across all the rings, so a figure
    eight's two loops both count and a hole is left out; the raster has
    ``RASTER_SIDE`` pixels along the box's longer side, 1/16 pixel vertices.

    Example:
        >>> figure_eight = np.array([[0, 0], [100, 0], [0, 100], [100, 100]], float)
        >>> round(even_odd_area([figure_eight]), -1)  # two triangles of 2500
        5010.0
    """
    points = np.concatenate(rings)
    low = points.min(axis=0)
    scale = RASTER_SIDE / max(float((points.max(axis=0) - low).max()), 1e-9)
    canvas = np.zeros((RASTER_SIDE + 1, RASTER_SIDE + 1), np.uint8)
    cv2.fillPoly(canvas, [np.round((ring - low) * scale * 16).astype(np.int32) for ring in rings], 1, cv2.LINE_8, 4)
    return float(np.count_nonzero(canvas)) / scale**2


def area(annotation: Annotation) -> float:
    """The area an annotation's points are shared out by: exact for a simple polygon, ``even_odd_area`` if repaired."""
    return even_odd_area(annotation.rings) if annotation.repaired else _polygon_area(annotation.rings)


def sample_points(annotations, max_points: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``max_points`` uniform points inside the annotations, shared by area; returns (points, labels)."""
    areas = np.array([area(a) for a in annotations])
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
