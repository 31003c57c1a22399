"""Faults in slides and their annotations, one table: a fault is one line naming the slide (and feature or region),
what is repaired or skipped is counted in the output, and what an earlier run wrote is never touched.

Every row copies a slides folder and the triplet folder an earlier `zoo triplets` wrote from it (slide a1), adds
slide b1 with the fault, and runs `zoo triplets` or `zoo tri-al-predict` on it in this process; for a write
failure under a file-size limit (``helpers.file_limit``: writes fail as on a full disk).
"""

import contextlib
import json
import shutil

import numpy as np
import pytest
import tifffile

from common.slides import annotations, triplets
from common.slides import synthetic as synthetic_slides
from tests import helpers

CELL = 32  # the tile size: a 256 px slide is 8 x 8 tiles, its level 1 (64 px) one TIFF tile
PALETTE = np.array([synthetic_slides.QUPATH_COLOURS[name] for name in annotations.CLASSES], np.uint8)
SQUARE = [[40, 40], [200, 40], [200, 200], [40, 200], [40, 40]]
FIGURE_EIGHT = [[40, 40], [200, 40], [40, 200], [200, 200], [40, 40]]  # signed area 0: no triplets, before
OPENSLIDE_ZIP = "TIFFRGBAImageGet failed, last error: ZIPDecode: Decoding error at scanline 0, invalid block type"


def _feature(ring, name="Stroma"):
    return {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {"objectType": "annotation", "classification": {"name": name}}}


def _slide(folder, name, *rings, damaged_level=None):
    """A flat stroma slide ``name``.tiff with ``rings`` as its annotations; one TIFF tile of a level damaged."""
    helpers.flat_slide(folder / f"{name}.tiff", np.full((8, 8), 3, np.uint8), PALETTE, CELL)
    (folder / f"{name}.geojson").write_text(json.dumps({"type": "FeatureCollection",
                                                        "features": [_feature(r) for r in rings]}))
    if damaged_level is not None:  # the tile's zlib stream garbled past its header: libtiff's ZIPDecode fails
        path = folder / f"{name}.tiff"
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[damaged_level]
            offset, size = page.dataoffsets[0], page.databytecounts[0]
        data = bytearray(path.read_bytes())
        data[offset + 2:offset + size] = b"\xff" * (size - 2)
        path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def earlier(tmp_path_factory):
    """A slides folder, the triplet folder `zoo triplets` wrote from it, a TRI-CNN and a folder of predictions."""
    root = tmp_path_factory.mktemp("slide_faults")
    (root / "slides").mkdir()
    _slide(root / "slides", "a1", SQUARE)
    triplets.prepare_triplets(root / "slides", root / "out", tile_size=CELL, max_per_slide=4)
    helpers.palette_classifier(PALETTE, tile_size=CELL).save(root / "tri_cnn.keras")
    (root / "predictions").mkdir()
    (root / "predictions" / "a1.geojson").write_text('{"type": "FeatureCollection", "features": []}')
    return root


TRIPLETS = ("triplets", "{slides}", "{out}", "--tile-size", CELL, "--max-per-slide", 4)
PREDICT = ("tri-al-predict", "{model}", "{slides}/b1.tiff", "{predictions}/b1.geojson")
# (case, slide b1's rings and damage, command, the file-size limit while it runs, exit status, the lines expected:
#  the whole stderr on failure, lines of stdout on success)
FAULTS = [
    ("self-intersecting polygon", dict(rings=[FIGURE_EIGHT]), TRIPLETS, None, 0, [
        "repaired 1 self-intersecting polygons in {slides}/b1.geojson: read by the even-odd rule, as GEOS's "
        "make_valid repairs them (a figure eight is its two loops)",
        "b1: 4 triplets {{'blood': 0, 'damaged': 0, 'muscle': 0, 'stroma': 4, 'urothelium': 0}}",
        "wrote 8 triplets of 2 slides to {out} (repaired 1 self-intersecting polygons: per slide in "
        "{out}/triplets.json)"]),
    ("2-vertex polygon", dict(rings=[SQUARE, [[40, 40], [200, 200], [40, 40]]]), TRIPLETS, None, 0, [
        "skipped 1 degenerate annotations in {slides}/b1.geojson (degenerate: fewer than 3 distinct vertices, or "
        "all on one line: no area to sample)",
        "b1: 4 triplets {{'blood': 0, 'damaged': 0, 'muscle': 0, 'stroma': 4, 'urothelium': 0}}",
        "wrote 8 triplets of 2 slides to {out} (skipped 1 degenerate annotations: per slide in {out}/triplets.json)"]),
    ("NaN vertex", dict(rings=[[[40, 40], [float("nan"), 40], [200, 200], [40, 40]]]), TRIPLETS, None, 2, [
        "zoo triplets: error: {slides}/b1.geojson: feature 0 (Stroma) has a NaN or Inf coordinate"]),
    ("damaged tile, triplets", dict(rings=[SQUARE], damaged_level=1), TRIPLETS, None, 2, [
        "zoo triplets: error: {slides}/b1.tiff: damaged tile in the region level 1, x 0, y 0 (level-0 coordinates), "
        f"size 64x64: {OPENSLIDE_ZIP}"]),
    ("damaged tile, prediction", dict(rings=[SQUARE], damaged_level=0), PREDICT, None, 2, [
        "zoo tri-al-predict: error: {slides}/b1.tiff: damaged tile in the region level 0, x 0, y 0 (level-0 "
        f"coordinates), size 256x256: {OPENSLIDE_ZIP}"]),
    ("disk full", dict(rings=[SQUARE]), TRIPLETS, 2000, 2, [
        "zoo triplets: error: {out}/shards/b1.tfrecord: not written: file too large; nothing was written"]),
]


@pytest.mark.parametrize("case, slide, command, limit, status, expected", FAULTS, ids=[row[0] for row in FAULTS])
def test_a_fault_is_one_line_or_counted_and_what_was_written_stays(zoo_here, earlier, tmp_path, case, slide, command,
                                                                    limit, status, expected):
    folders = {name: tmp_path / name for name in ("slides", "out", "predictions")}
    for name, folder in folders.items():
        shutil.copytree(earlier / name, folder)
    _slide(folders["slides"], "b1", *slide["rings"], damaged_level=slide.get("damaged_level"))
    names = {**folders, "model": earlier / "tri_cnn.keras"}
    argv = [str(word).format(**names) for word in command]
    before = {name: helpers.checksums(folders[name]) for name in ("out", "predictions")}
    with contextlib.nullcontext() if limit is None else helpers.file_limit(limit):
        done = zoo_here(*argv)
    lines = [line.format(**names) for line in expected]
    assert done.returncode == status, done.stdout + done.stderr
    after = {name: helpers.checksums(folders[name]) for name in ("out", "predictions")}
    if status:
        assert done.stderr.splitlines() == lines
        assert after == before
    else:
        assert [line for line in done.stdout.splitlines() if line in lines] == lines, done.stdout
        kept = {path: after["out"].get(path) for path in before["out"] if path != triplets.MANIFEST}
        assert kept == {path: digest for path, digest in before["out"].items() if path != triplets.MANIFEST}
        manifest = json.loads((folders["out"] / triplets.MANIFEST).read_text(encoding="utf-8"))
        flaw = "repaired" if case.startswith("self") else "skipped"
        assert manifest["slides"]["b1"][flaw] == ({"degenerate": 1} if flaw == "skipped" else 1)
