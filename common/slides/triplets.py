"""Multiscale triplets of annotated slides, one shard per slide, and per-class pools split by slide.

``prepare_triplets(slides, out)`` reads a folder of slides, each with its
QuPath GeoJSON beside it (``a1.geojson`` or ``a1.svs.geojson``), and their
labs from ``SLIDES/slides.json`` or, without one, from a folder per lab::

    SLIDES/slides.json                  {"slides": {id: {"lab": "A", "slide": "a1.svs", "annotations": "a1.geojson"}}}
    SLIDES/labA/a1.svs + a1.geojson     lab "A": a leading "lab" before a capital, digit or separator is dropped
    SLIDES/erasmus/e1.mrxs + e1.geojson lab "erasmus"

It samples points inside the annotated polygons (at most 500 per slide),
extracts their triplets and writes::

    OUT/triplets.json                  manifest: format, classes, tile size, magnifications, per slide: lab, counts,
                                       annotations skipped ({reason: count}) and self-intersecting ones repaired
    OUT/shards/<slide_id>.tfrecord     one record per triplet: tile_2_5x, tile_10x, tile_40x (PNG), label,
                                       point (level-0 centre)
    OUT/shards/<slide_id>.index.npz    labels, points and record offsets (``common.slides.store``)

One shard per slide, so every split is by slide (never by tile), and the
per-class pools of the active-learning loop keep their slide ids.
``load_pools`` opens pools without reading a tile: the loop streams the ids
it draws through tf.data (``store.TripletPools.batches``), so memory does
not grow with the pools. A folder of the older format (``<slide_id>.npz``
shards) is converted by rerunning ``zoo triplets``, without reading a slide.
"""

from __future__ import annotations

import collections
import json
import logging
import pathlib
import re

import numpy as np

from common import atomic
from common.errors import DataError
from common.slides import store
from common.slides.annotations import (
    CLASSES,
    class_map,
    read_annotations,
    repaired_line,
    sample_points,
    skipped_line,
)
from common.slides.reader import (
    MAGNIFICATIONS,
    base_magnification,
    check_magnification,
    open_slide,
    qupath_frame,
    read_triplet,
)
from common.slides.store import SHARD_KEYS, TripletPools
from common.slides.tissue import sample_in_tissue, tissue_mask

logger = logging.getLogger(__name__)

MAX_PER_SLIDE = 500
MANIFEST = "triplets.json"
SLIDE_SUFFIXES = (".svs", ".tif", ".tiff", ".mrxs", ".ndpi", ".scn", ".bif", ".vms", ".vmu", ".svslide")


def extract_slide(slide_path, annotation_path, tile_size: int = 128, max_points: int = MAX_PER_SLIDE,
                  seed: int = 0, magnification: float | None = None, classes=None, upsample: bool = True,
                  tissue: bool = True) -> dict[str, np.ndarray]:
    """Samples points in one slide's annotations and returns its triplets as arrays (a shard's content).

    Annotations are read in QuPath's frame (the slide's bounds, if any) and
    shifted to level 0; ``classes`` is an ``annotations.class_map``; a slide
    scanned below 40x is upsampled (logged once) or, without
    ``upsample``, refused with a ``DataError``. With ``tissue``, points on
    glass (``tissue.tissue_mask``) are rejected and redrawn, their count logged.
    Besides the arrays, ``"skipped"`` holds what ``read_annotations`` skipped
    (``{reason: count}``) and ``"repaired"`` the self-intersecting polygons
    read by the even-odd rule; both are logged. A damaged tile raises
    ``DataError`` naming the slide and the region (``reader.Slide``).
    """
    slide = open_slide(slide_path)
    try:
        base = base_magnification(slide, slide_path, magnification)
        check_magnification(slide_path, base, upsample)
        frame = qupath_frame(slide, slide_path)
        regions, skipped = read_annotations(annotation_path, (frame.width, frame.height), (frame.x, frame.y), classes)
        if skipped:
            logger.warning(skipped_line(annotation_path, skipped))  # annotations left out: said under -q too
        repaired = sum(region.repaired for region in regions)
        if repaired:
            logger.info(repaired_line(annotation_path, repaired))
        rng = np.random.default_rng(seed)
        if tissue:
            points, labels, rejected = sample_in_tissue(regions, max_points, rng, tissue_mask(slide, base, frame))
            if rejected:
                logger.info(f"{slide_path}: {rejected} sampled points fell on glass (outside the tissue mask) and "
                            f"were redrawn; {len(points)} in tissue")
        else:
            points, labels = sample_points(regions, max_points, rng)
        tiles = {name: np.zeros((len(points), tile_size, tile_size, 3), np.uint8) for name in SHARD_KEYS}
        for i, point in enumerate(points):
            for name, tile in zip(SHARD_KEYS, read_triplet(slide, point, base, tile_size)[0]):
                tiles[name][i] = tile
    finally:
        slide.close()
    return {**tiles, "label": labels, "point": points.astype(np.float32), "skipped": skipped, "repaired": repaired}


def _lab_name(folder: str) -> str:
    """A lab folder's lab: its name less a leading "lab" before a separator, a capital or a digit (labA -> A)."""
    match = re.fullmatch(r"(?i:lab)(?:[ _-]+(.+)|([A-Z0-9].*))", folder)
    return (match.group(1) or match.group(2)) if match else folder


def _pairs(folder: pathlib.Path) -> dict[str, tuple]:
    """Slide files of ``folder`` with a GeoJSON beside them (``x.geojson`` or ``x.svs.geojson``), by stem."""
    found = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in SLIDE_SUFFIXES:
            for geojson in (path.with_suffix(".geojson"), path.with_name(path.name + ".geojson")):
                if geojson.exists():
                    found[path.stem] = (path, geojson)
                    break
    return found


def _read_slides_json(manifest: pathlib.Path) -> dict[str, dict]:
    folder = manifest.parent
    try:
        entries = json.loads(manifest.read_text(encoding="utf-8"))["slides"]
        slides = {str(k): {**v, "lab": str(v.get("lab", "")), "slide": folder / v["slide"],
                           "annotations": folder / v["annotations"]} for k, v in entries.items()}
    except (OSError, ValueError) as error:
        raise DataError(f"{manifest}: not readable JSON ({error})") from None
    except (KeyError, TypeError, AttributeError) as error:
        raise DataError(f"{manifest}: expected {{\"slides\": {{id: {{\"lab\", \"slide\", \"annotations\"}}}}}}, "
                        f"missing {error}") from None
    for slide_id, entry in slides.items():
        for key in ("slide", "annotations"):
            if not entry[key].exists():
                raise DataError(f"{manifest}: slide {slide_id!r}: {key} file {entry[key]} does not exist")
        if "magnification" in entry and not (isinstance(entry["magnification"], (int, float))
                                             and entry["magnification"] > 0):
            raise DataError(f"{manifest}: slide {slide_id!r}: magnification must be a positive number, "
                            f"got {entry['magnification']!r}")
    return slides


def slide_list(slides) -> dict[str, dict]:
    """The slides of a folder, ``{slide_id: {"lab", "slide", "annotations"}}``.

    From ``slides.json`` when present; else a folder per lab
    (``SLIDES/<lab folder>/<name>.svs`` beside ``<name>.geojson``, the lab
    named by ``_lab_name``) and slides directly in ``SLIDES`` (lab "").
    Slide ids are file stems, unique across labs.
    """
    folder = pathlib.Path(slides)
    if (folder / "slides.json").exists():
        return _read_slides_json(folder / "slides.json")
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder of slides")
    found = {}
    groups = [("", folder)] + [(_lab_name(sub.name), sub) for sub in sorted(folder.iterdir()) if sub.is_dir()]
    for lab, group in groups:
        for stem, (path, geojson) in _pairs(group).items():
            if stem in found:
                raise DataError(f"{path}: same name as {found[stem]['slide']}; slide names must be unique "
                                "across labs (rename one, or list them in slides.json)")
            found[stem] = {"lab": lab, "slide": path, "annotations": geojson}
    if not found:
        raise DataError(f"{folder}: no slides with annotations (<name>.svs beside <name>.geojson, in SLIDES or "
                        "SLIDES/<lab>/, or a slides.json)")
    return found


def prepare_triplets(slides, out, tile_size: int = 128, max_per_slide: int = MAX_PER_SLIDE, seed: int = 0,
                     magnification: float | None = None, classes=None, upsample: bool = True) -> dict:
    """Writes one triplet shard per slide and the manifest; a rerun skips slides already written.

    ``classes`` maps the user's QuPath class names to the model's (an ``annotations.class_map``);
    a slide's ``"magnification"`` in slides.json overrides ``magnification`` for that slide.
    """
    out = pathlib.Path(out)
    entries = slide_list(slides)
    classes = class_map() if classes is None else classes
    labs = collections.Counter(entry["lab"] for entry in entries.values())
    logger.info(f"{len(entries)} slides: " + ", ".join(f"lab {lab!r} {n}" for lab, n in sorted(labs.items())))
    manifest = {"format": store.FORMAT, "classes": list(CLASSES), "tile_size": tile_size,
                "magnifications": list(MAGNIFICATIONS), "max_per_slide": max_per_slide, "slides": {}}
    for index, (slide_id, entry) in enumerate(sorted(entries.items())):
        shard = out / "shards" / f"{slide_id}{store.SHARD_SUFFIX}"
        if not store.index_path(shard).exists():
            older = out / "shards" / f"{slide_id}.npz"
            if older.exists():  # the format before TFRecords: converted, the slide is not read again
                with np.load(older) as arrays:
                    store.write_shard(shard, {key: arrays[key] for key in arrays.files})
                logger.info(f"{slide_id}: converted {older.name} to {shard.name} ({older.name} can be deleted)")
            else:
                store.write_shard(shard, extract_slide(
                    entry["slide"], entry["annotations"], tile_size, max_per_slide, seed=seed * 100003 + index,
                    magnification=entry.get("magnification", magnification), classes=classes, upsample=upsample))
        labels = store.read_index(shard)["label"]
        counts = np.bincount(labels, minlength=len(CLASSES)).tolist()
        manifest["slides"][slide_id] = {"lab": entry.get("lab", ""), "counts": counts,
                                        "slide": str(pathlib.Path(entry["slide"]).resolve()),
                                        **store.read_notes(shard)}
        logger.info(f"{slide_id}: {sum(counts)} triplets {dict(zip(CLASSES, counts))}")
    atomic.write_json(out / MANIFEST, manifest)
    return manifest


def load_pools(prepared, slide_ids=None) -> TripletPools:
    """The triplets of ``slide_ids`` (default all, sorted), ids in that slide order, streamed from their shards."""
    prepared = pathlib.Path(prepared)
    try:
        manifest = json.loads((prepared / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DataError(f"{prepared / MANIFEST}: not a triplet folder ({error})") from None
    if manifest.get("format") != store.FORMAT:
        raise DataError(f"{prepared}: triplets in the older .npz format, read whole into memory; rerun "
                        f"`zoo triplets SLIDES {prepared}` with its slides folder: it converts the shards to "
                        "TFRecords without reading the slides again")
    slide_ids = sorted(manifest["slides"]) if slide_ids is None else list(slide_ids)
    unknown = sorted(set(slide_ids) - set(manifest["slides"]))
    if unknown:
        raise DataError(f"{prepared / MANIFEST}: unknown slides {unknown}")
    return store.open_pools(prepared / "shards", slide_ids, manifest["tile_size"])


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
