"""Whole slides: OpenSlide reading, multiscale triplets, QuPath annotations, per-class pools.

A triplet (paper II.A) is three ``tile_size`` tiles at 2.5x, 10x and 40x
centred on the same level-0 point, so the 2.5x tile covers 16 times the side
(256 times the area) of the 40x tile. Tiles are read from the pyramid level
closest below the wanted downsample and resized with area averaging; outside
the slide OpenSlide returns transparent pixels, which are padded as white
glass.

``prepare_triplets(slides, out)`` samples points inside the annotated
polygons (at most 500 per slide), extracts their triplets and writes::

    OUT/triplets.json             manifest: classes, tile size, magnifications, per slide: lab, counts
    OUT/shards/<slide_id>.npz     tile_2_5x, tile_10x, tile_40x (N, T, T, 3) uint8, label (N,), point (N, 2)

One shard per slide, so every split is by slide (never by tile), and the
per-class pools of the active-learning loop keep their slide ids. Shards are
NumPy archives rather than TFRecords because the loop draws triplets by id,
at random, every iteration; a sequential record format would need an index.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

import cv2
import numpy as np

from common import atomic
from common.errors import DataError

CLASSES = ("blood", "damaged", "muscle", "stroma", "urothelium")
MAGNIFICATIONS = (2.5, 10.0, 40.0)
TILE_NAMES = ("tile_2_5x", "tile_10x", "tile_40x")  # the model's input names, in MAGNIFICATIONS order
MAX_PER_SLIDE = 500
MANIFEST = "triplets.json"


def open_slide(path):
    """Opens a whole slide with OpenSlide; an unreadable file raises ``DataError`` naming it."""
    import openslide

    try:
        return openslide.OpenSlide(str(path))
    except (openslide.OpenSlideError, OSError) as error:
        raise DataError(f"{path}: cannot be opened as a whole slide ({error or type(error).__name__})") from None


def base_magnification(slide, path, given: float | None = None) -> float:
    """The objective power of level 0: ``given``, else the slide's properties, else 10 / mpp."""
    if given is not None:
        if given <= 0:
            raise ValueError(f"base magnification must be positive, got {given}")
        return float(given)
    props = slide.properties
    try:
        for key in ("openslide.objective-power", "aperio.AppMag"):
            if props.get(key):
                return float(props[key])
        if props.get("openslide.mpp-x"):
            return round(10.0 / float(props["openslide.mpp-x"]), 2)  # 0.25 um/px is a 40x scan
    except (ValueError, ZeroDivisionError):
        raise DataError(f"{path}: unreadable magnification or mpp property; give the base magnification") from None
    raise DataError(f"{path}: no objective power or mpp in its properties; give the base magnification")


def read_tile(slide, center, magnification: float, base: float, tile_size: int) -> tuple[np.ndarray, tuple]:
    """One RGB uint8 tile at ``magnification`` centred on level-0 point ``center`` (x, y).

    Returns the tile and the level-0 box it covers, (x0, y0, x1, y1).
    """
    downsample = base / magnification
    if downsample < 1:
        raise ValueError(f"magnification {magnification} exceeds the slide's base magnification {base}")
    side = tile_size * downsample  # level-0 pixels
    x0, y0 = center[0] - side / 2, center[1] - side / 2
    level = slide.get_best_level_for_downsample(downsample + 1e-6)
    level_ds = slide.level_downsamples[level]
    read = max(1, int(round(side / level_ds)))
    rgba = np.asarray(slide.read_region((int(round(x0)), int(round(y0))), level, (read, read)), np.float32)
    alpha = rgba[..., 3:] / 255.0  # 0 outside the slide: pad with white glass
    rgb = rgba[..., :3] * alpha + 255.0 * (1 - alpha)
    if read != tile_size:
        rgb = cv2.resize(rgb, (tile_size, tile_size), interpolation=cv2.INTER_AREA if read > tile_size
                         else cv2.INTER_LINEAR)
    return rgb.round().astype(np.uint8), (x0, y0, x0 + side, y0 + side)


def read_triplet(slide, center, base: float, tile_size: int = 128) -> tuple[list[np.ndarray], list[tuple]]:
    """The 2.5x, 10x and 40x tiles centred on ``center`` and their level-0 boxes."""
    tiles, boxes = zip(*(read_tile(slide, center, m, base, tile_size) for m in MAGNIFICATIONS))
    return list(tiles), list(boxes)


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


def extract_slide(slide_path, annotation_path, tile_size: int = 128, max_points: int = MAX_PER_SLIDE,
                  seed: int = 0, magnification: float | None = None) -> dict[str, np.ndarray]:
    """Samples points in one slide's annotations and returns its triplets as arrays (a shard's content)."""
    slide = open_slide(slide_path)
    try:
        base = base_magnification(slide, slide_path, magnification)
        annotations = read_annotations(annotation_path, slide.dimensions)
        points, labels = sample_points(annotations, max_points, np.random.default_rng(seed))
        tiles = {name: np.zeros((len(points), tile_size, tile_size, 3), np.uint8) for name in TILE_NAMES}
        for i, point in enumerate(points):
            for name, tile in zip(TILE_NAMES, read_triplet(slide, point, base, tile_size)[0]):
                tiles[name][i] = tile
    finally:
        slide.close()
    return {**tiles, "label": labels, "point": points.astype(np.float32)}


def _slide_list(slides) -> dict[str, dict]:
    """Slides of a folder: ``slides.json`` when present, else every slide file with a .geojson beside it."""
    folder = pathlib.Path(slides)
    manifest = folder / "slides.json"
    if manifest.exists():
        entries = json.loads(manifest.read_text(encoding="utf-8"))["slides"]
        return {k: {**v, "slide": folder / v["slide"], "annotations": folder / v["annotations"]}
                for k, v in entries.items()}
    found = {}
    for path in sorted(folder.iterdir()):
        geojson = path.with_suffix(".geojson")
        if path.suffix.lower() in (".tif", ".tiff", ".svs", ".mrxs", ".ndpi", ".scn") and geojson.exists():
            found[path.stem] = {"lab": "", "slide": path, "annotations": geojson}
    if not found:
        raise DataError(f"{folder}: no slides with annotations (<name>.tiff beside <name>.geojson)")
    return found


def prepare_triplets(slides, out, tile_size: int = 128, max_per_slide: int = MAX_PER_SLIDE, seed: int = 0,
                     magnification: float | None = None, log=print) -> dict:
    """Writes one triplet shard per slide and the manifest; a rerun skips slides already written."""
    out = pathlib.Path(out)
    entries = _slide_list(slides)
    manifest = {"classes": list(CLASSES), "tile_size": tile_size, "magnifications": list(MAGNIFICATIONS),
                "max_per_slide": max_per_slide, "slides": {}}
    for index, (slide_id, entry) in enumerate(sorted(entries.items())):
        shard = out / "shards" / f"{slide_id}.npz"
        if not shard.exists():
            arrays = extract_slide(entry["slide"], entry["annotations"], tile_size, max_per_slide,
                                   seed=seed * 100003 + index, magnification=magnification)
            with atomic.atomic_path(shard) as tmp:
                np.savez(tmp, **arrays)
        labels = np.load(shard)["label"]
        counts = np.bincount(labels, minlength=len(CLASSES)).tolist()
        manifest["slides"][slide_id] = {"lab": entry.get("lab", ""), "counts": counts,
                                        "slide": str(pathlib.Path(entry["slide"]).resolve())}
        log(f"{slide_id}: {sum(counts)} triplets {dict(zip(CLASSES, counts))}")
    atomic.write_json(out / MANIFEST, manifest)
    return manifest


@dataclasses.dataclass
class TripletPools:
    """Triplets of several slides as plain arrays: ``tiles`` in TILE_NAMES order, uint8."""

    tiles: list[np.ndarray]
    labels: np.ndarray
    slide_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def load_pools(prepared, slide_ids=None) -> TripletPools:
    """Concatenates the shards of ``slide_ids`` (default all, sorted) in a fixed order."""
    prepared = pathlib.Path(prepared)
    try:
        manifest = json.loads((prepared / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DataError(f"{prepared / MANIFEST}: not a triplet folder ({error})") from None
    slide_ids = sorted(manifest["slides"]) if slide_ids is None else list(slide_ids)
    unknown = sorted(set(slide_ids) - set(manifest["slides"]))
    if unknown:
        raise DataError(f"{prepared / MANIFEST}: unknown slides {unknown}")
    parts = [np.load(prepared / "shards" / f"{s}.npz") for s in slide_ids]
    tiles = [np.concatenate([p[name] for p in parts]) for name in TILE_NAMES]
    labels = np.concatenate([p["label"] for p in parts]).astype(np.int64)
    owners = np.concatenate([np.full(len(p["label"]), s) for s, p in zip(slide_ids, parts)])
    return TripletPools(tiles, labels, owners)


def split_slides(slide_ids, fractions=(0.7, 0.15, 0.15), seed: int = 0) -> dict[str, list[str]]:
    """Splits slide ids into train / val / test by slide (paper: 127 / 16 / 12 WSIs), each non-empty."""
    slide_ids = sorted(slide_ids)
    if len(slide_ids) < 3:
        raise ValueError(f"need at least 3 slides to split into train, val and test, got {len(slide_ids)}")
    if len(fractions) != 3 or min(fractions) <= 0:
        raise ValueError(f"fractions must be three positive shares, got {fractions}")
    order = [slide_ids[i] for i in np.random.default_rng(seed).permutation(len(slide_ids))]
    total = sum(fractions)
    n_val = max(1, int(round(fractions[1] / total * len(order))))
    n_test = max(1, int(round(fractions[2] / total * len(order))))
    n_val, n_test = min(n_val, len(order) - 2), min(n_test, len(order) - 1 - min(n_val, len(order) - 2))
    return {"val": sorted(order[:n_val]), "test": sorted(order[n_val:n_val + n_test]),
            "train": sorted(order[n_val + n_test:])}
