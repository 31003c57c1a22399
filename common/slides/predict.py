"""Whole-slide prediction with a triplet classifier (TRI-CNN), and the class map as QuPath GeoJSON.

``predict_slide`` lays a grid of cells over QuPath's frame of the slide
(``reader.qupath_frame``: all of level 0, or a bounded format's scanned
area), one 40x tile per cell by default, and classifies the triplet
centred on each cell whose centre lies in tissue (``tissue.tissue_mask``);
cells on glass stay -1. That is the paper's Fig. 3: "a labelled colormap
based on tile predictions" (TRI-AL, section IV).

``write_geojson`` turns the grid into one QuPath annotation per class, the
union of its cells as a (Multi)Polygon whose edges follow the cells' edges,
holes as interior rings, in QuPath's coordinates (level 0 less the frame's
origin), with ``{"objectType", "classification": {"name", "color": [r, g, b]}}``
as QuPath 0.4 and later write them (qupath/qupath#1099; a class of one
region is a Polygon: QuPath mishandles a MultiPolygon of one, as
TissUUmaps/TissUUmaps#49 found). File > Import
objects, or a drop on the viewer, brings it in, and
``annotations.read_annotations`` reads it back.
Exterior rings run counter-clockwise by the coordinates' numbers (RFC 7946's
right-hand rule; clockwise on a screen, whose y points down), holes clockwise.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import time
import uuid

import cv2
import numpy as np

from common import atomic
from common.slides import reader
from common.slides.annotations import CLASSES, class_map
from common.slides.tissue import TissueMask, read_thumbnail, tissue_mask

logger = logging.getLogger(__name__)

# A cell's four sides, clockwise on screen: start and end corner (dx, dy) from its top-left, the neighbour's (dr, dc).
SIDES = (((0, 0), (1, 0), (-1, 0)), ((1, 0), (1, 1), (0, 1)), ((1, 1), (0, 1), (1, 0)), ((0, 1), (0, 0), (0, -1)))
PROGRESS_EVERY = 2048  # tiles between progress lines
THUMBNAIL_SIDE = 1024  # pixels of the picture of the slide beside its colour map (Fig. 3)


@dataclasses.dataclass(frozen=True)
class SlidePrediction:
    """A class per grid cell (-1 on glass); cell (r, c) covers QuPath's [c, c + 1) x [r, r + 1) times ``stride``."""

    grid: np.ndarray
    stride: int
    frame: reader.Frame
    tissue: TissueMask
    thumbnail: np.ndarray  # RGB of the frame, THUMBNAIL_SIDE pixels at most (the left half of Fig. 3)

    def centres(self, cells) -> np.ndarray:
        """Level-0 (x, y) centres of (row, col) ``cells``."""
        cells = np.asarray(cells, np.float64).reshape(-1, 2)
        return (cells[:, ::-1] + 0.5) * self.stride + (self.frame.x, self.frame.y)


def tile_size_of(model) -> int:
    """The tile side of a triplet classifier: three (T, T, 3) inputs (2.5x, 10x, 40x), one output of class scores."""
    shapes = [tuple(t.shape[1:]) for t in model.inputs]
    if len(shapes) != 3 or len(set(shapes)) != 1 or len(shapes[0]) != 3 or shapes[0][0] != shapes[0][1] \
            or shapes[0][0] is None or len(model.outputs) != 1:
        raise ValueError(f"model: not a TRI-CNN, whose three (T, T, 3) tile inputs give one output; got inputs "
                         f"{shapes} and {len(model.outputs)} outputs")
    return int(shapes[0][0])


def predict_slide(model, slide_path, stride: int | None = None, magnification: float | None = None,
                  batch_size: int = 64, upsample: bool = True) -> SlidePrediction:
    """Classifies the triplet of every grid cell in tissue; logs progress every ``PROGRESS_EVERY`` tiles.

    Args:
        model: a triplet classifier (``tile_size_of``), inputs in ``reader.MAGNIFICATIONS`` order.
        slide_path: the whole slide.
        stride: level-0 pixels between cell centres (default one 40x tile: tile size x base / 40).
        magnification: the objective power of level 0 (default the slide's, ``reader.base_magnification``).
        batch_size: triplets per model call.
        upsample: read a slide scanned below 40x at level 0 and upsample (said once), else refuse it.
    """
    tile_size = tile_size_of(model)
    if stride is not None and (int(stride) != stride or stride < 1):
        raise ValueError(f"stride must be a positive whole number of level-0 pixels, got {stride!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    slide = reader.open_slide(slide_path)
    try:
        base = reader.base_magnification(slide, slide_path, magnification)
        reader.check_magnification(slide_path, base, upsample)
        stride = int(stride or max(1, round(tile_size * base / reader.MAGNIFICATIONS[-1])))
        frame = reader.qupath_frame(slide, slide_path)
        tissue = tissue_mask(slide, base, frame)
        rows, cols = frame.height // stride, frame.width // stride
        if not rows or not cols:
            raise ValueError(f"stride {stride} exceeds the slide {slide_path} of {frame.width}x{frame.height} pixels")
        thumbnail, _ = read_thumbnail(slide, max(1.0, max(frame.width, frame.height) / THUMBNAIL_SIDE), frame)
        prediction = SlidePrediction(np.full((rows, cols), -1, np.int64), stride, frame, tissue, thumbnail)
        cells = np.argwhere(np.ones((rows, cols), bool))
        cells = cells[tissue.contains(prediction.centres(cells))]
        logger.info(f"{slide_path}: {len(cells)} of {rows * cols} tiles in tissue ({stride} px apart at {base:g}x, "
                    f"tissue threshold OD {tissue.threshold:.2f})")
        _classify(model, slide, base, tile_size, prediction, cells, batch_size)
    finally:
        slide.close()
    return prediction


def _classify(model, slide, base, tile_size, prediction, cells, batch_size) -> None:
    start, next_line = time.monotonic(), PROGRESS_EVERY
    for first in range(0, len(cells), batch_size):
        batch = cells[first:first + batch_size]
        triplets = [reader.read_triplet(slide, centre, base, tile_size)[0] for centre in prediction.centres(batch)]
        inputs = [np.stack([t[k] for t in triplets]).astype(np.float32) / 255.0 for k in range(3)]
        scores = np.asarray(model.predict_on_batch(inputs))
        prediction.grid[batch[:, 0], batch[:, 1]] = scores.argmax(-1)
        done = first + len(batch)
        if done >= next_line or done == len(cells):
            logger.info(f"predicted {done}/{len(cells)} tiles ({time.monotonic() - start:.0f} s)")
            next_line += PROGRESS_EVERY


def _boundary_edges(mask: np.ndarray):
    """The cell sides between ``mask`` and the rest, as (start xy, end xy, cell rc), region on the right."""
    padded = np.pad(mask, 1)
    starts, ends, cells = [], [], []
    for start, end, (dr, dc) in SIDES:
        rc = np.argwhere(mask & ~padded[1 + dr:padded.shape[0] - 1 + dr, 1 + dc:padded.shape[1] - 1 + dc])
        starts.append(rc[:, ::-1] + start)
        ends.append(rc[:, ::-1] + end)
        cells.append(rc)
    return np.concatenate(starts), np.concatenate(ends), np.concatenate(cells)


def _trace(starts, ends, cells, owners) -> list[list[int]]:
    """Chains directed edges (region on the right) into closed rings of edge indices.

    Where two cells of the region meet only at a corner, a ring turns left
    (joining them) if they are of one 4-connected component ``owners``, right
    (keeping them apart) if not; so every ring is simple and of one component,
    and a hole that touches the outline does so at a point, as OGC's rules allow.
    """
    # Hand-written: cv2.findContours traces pixel centres, which cuts the cells' corners; rings here follow edges.
    starts, ends = [tuple(p) for p in starts.tolist()], [tuple(p) for p in ends.tolist()]
    cells, owners = [tuple(c) for c in cells.tolist()], owners.tolist()
    outgoing = {}
    for index, start in enumerate(starts):
        outgoing.setdefault(start, []).append(index)
    used, rings = [False] * len(starts), []
    for first in range(len(starts)):
        ring, edge = [], first
        while not used[edge]:
            used[edge] = True
            ring.append(edge)
            options = outgoing[ends[edge]]
            if len(options) > 1:  # the right turn goes on around the same cell, the left to the diagonal one
                same = [o for o in options if cells[o] == cells[edge]]
                other = [o for o in options if cells[o] != cells[edge]]
                options = other if owners[other[0]] == owners[edge] else same
            edge = options[0]
        if ring:
            rings.append(ring)
    return rings


def _corners(points: np.ndarray) -> np.ndarray:
    """A ring's vertices where it turns (collinear ones dropped), closed: first == last."""
    before, after = points - np.roll(points, 1, 0), np.roll(points, -1, 0) - points
    turns = points[np.any(before != after, axis=1)]
    return np.concatenate([turns, turns[:1]])


def region_polygons(mask: np.ndarray) -> list[list[np.ndarray]]:
    """The 4-connected regions of a boolean grid as polygons: [exterior, *holes], closed (x, y) rings in cells.

    Example:
        >>> ring = region_polygons(np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1]], bool))[0]
        >>> [r.tolist() for r in ring]
        [[[0, 0], [3, 0], [3, 3], [0, 3], [0, 0]], [[1, 2], [2, 2], [2, 1], [1, 1], [1, 2]]]
    """
    mask = np.asarray(mask, bool)
    if not mask.any():
        return []
    _, components = cv2.connectedComponents(mask.astype(np.uint8), connectivity=4)
    starts, ends, cells = _boundary_edges(mask)
    owners = components[cells[:, 0], cells[:, 1]]
    polygons = {}  # component -> [exterior, holes]
    for ring in _trace(starts, ends, cells, owners):
        points = _corners(starts[ring])
        area = np.sum(points[:-1, 0] * points[1:, 1] - points[1:, 0] * points[:-1, 1])
        polygon = polygons.setdefault(int(owners[ring[0]]), [None, []])
        if area > 0:  # counter-clockwise by the numbers: the exterior
            polygon[0] = points
        else:
            polygon[1].append(points)
    return [[exterior, *holes] for _, (exterior, holes) in sorted(polygons.items())]


def class_names(spec=None) -> list[str]:
    """QuPath names of the model's classes: the first name of ``spec`` (``--classes``) mapped to each, else the
    class capitalised ("Stroma"), as QuPath names classes.

    Example:
        >>> class_names("Tumor=urothelium,Carcinoma=urothelium")
        ['Blood', 'Damaged', 'Muscle', 'Stroma', 'Tumor']
    """
    mapping = class_map(spec)  # validates; lower-cased, but QuPath's names are case-sensitive: spelling from spec
    if isinstance(spec, (str, pathlib.Path)) and str(spec).lower().endswith(".json"):
        spec = json.loads(pathlib.Path(spec).read_text(encoding="utf-8"))
    sources = list(spec) if isinstance(spec, dict) else [item.partition("=")[0] for item in str(spec or "").split(",")]
    names, named = [name.capitalize() for name in CLASSES], set()
    for source in (str(s).strip() for s in sources if str(s).strip()):
        index = mapping[source.lower()]
        if index not in named and source.lower() not in CLASSES:
            names[index] = source
            named.add(index)
    return names


def class_features(prediction: SlidePrediction, names, colours, object_type: str = "annotation") -> list[dict]:
    """One QuPath feature per predicted class: its cells' union as a Polygon or MultiPolygon in QuPath's frame.

    Args:
        prediction: a ``predict_slide`` result.
        names: QuPath class name of each class index.
        colours: (r, g, b) 0-255 of each class index.
        object_type: "annotation" (editable in QuPath) or "detection" (lighter for many regions).
    """
    if object_type not in ("annotation", "detection"):
        raise ValueError(f"object_type must be annotation or detection, got {object_type!r}")
    features = []
    for index in np.unique(prediction.grid[prediction.grid >= 0]):
        polygons = [[(ring * prediction.stride).tolist() for ring in polygon]
                    for polygon in region_polygons(prediction.grid == index)]
        geometry = {"type": "Polygon", "coordinates": polygons[0]} if len(polygons) == 1 else \
            {"type": "MultiPolygon", "coordinates": polygons}
        classification = {"name": names[index], "color": [int(v) for v in colours[index]]}
        features.append({"type": "Feature", "id": str(uuid.uuid4()), "geometry": geometry,
                         "properties": {"objectType": object_type, "classification": classification}})
    return features


def write_geojson(path, prediction: SlidePrediction, names, colours, object_type: str = "annotation") -> int:
    """Writes ``class_features`` as a GeoJSON FeatureCollection, atomically; returns the number of features."""
    features = class_features(prediction, names, colours, object_type)
    with atomic.atomic_path(path) as tmp:  # compact: a whole slide's rings run to megabytes
        tmp.write_text(json.dumps({"type": "FeatureCollection", "features": features}, separators=(",", ":")),
                       encoding="utf-8")
    return len(features)
