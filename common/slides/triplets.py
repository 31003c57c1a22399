"""Multiscale triplets of annotated slides, one shard per slide, and per-class pools split by slide.

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

import numpy as np

from common import atomic
from common.errors import DataError
from common.slides.annotations import CLASSES, read_annotations, sample_points
from common.slides.reader import MAGNIFICATIONS, base_magnification, open_slide, read_triplet

SHARD_KEYS = ("tile_2_5x", "tile_10x", "tile_40x")  # a shard's tile arrays, in MAGNIFICATIONS order
MAX_PER_SLIDE = 500
MANIFEST = "triplets.json"


def extract_slide(slide_path, annotation_path, tile_size: int = 128, max_points: int = MAX_PER_SLIDE,
                  seed: int = 0, magnification: float | None = None) -> dict[str, np.ndarray]:
    """Samples points in one slide's annotations and returns its triplets as arrays (a shard's content)."""
    slide = open_slide(slide_path)
    try:
        base = base_magnification(slide, slide_path, magnification)
        annotations = read_annotations(annotation_path, slide.dimensions)
        points, labels = sample_points(annotations, max_points, np.random.default_rng(seed))
        tiles = {name: np.zeros((len(points), tile_size, tile_size, 3), np.uint8) for name in SHARD_KEYS}
        for i, point in enumerate(points):
            for name, tile in zip(SHARD_KEYS, read_triplet(slide, point, base, tile_size)[0]):
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
    """Triplets of several slides as plain arrays: ``tiles`` in SHARD_KEYS order, uint8."""

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
    tiles = [np.concatenate([p[name] for p in parts]) for name in SHARD_KEYS]
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
