"""Tiles and triplets read from a textured pyramid slide."""

import json

import cv2
import numpy as np
import pytest

from common.errors import DataError
from common.slides import annotations, reader, triplets
from common.slides import synthetic as synthetic_slides
from tests import helpers

TILE = 32


@pytest.fixture(scope="module")
def textured_slide(tmp_path_factory):
    """A 2048^2 slide at 40x whose texture has detail at every scale, so misaligned tiles would differ."""
    rng = np.random.default_rng(0)
    coarse = cv2.resize(rng.random((128, 128, 3), dtype=np.float32), (2048, 2048), interpolation=cv2.INTER_CUBIC)
    fine = cv2.GaussianBlur(rng.random((2048, 2048, 3), dtype=np.float32), (0, 0), 2)
    rgb = (255 * (0.6 * coarse + 0.4 * (fine - 0.5) * 4 + 0.2)).clip(0, 255).astype(np.uint8)
    path = tmp_path_factory.mktemp("slide") / "textured.tiff"
    synthetic_slides.write_pyramid(path, rgb)
    return path


def _pool(tile, factor):
    side = tile.shape[0] // factor
    return tile.astype(float).reshape(side, factor, side, factor, 3).mean((1, 3))


def test_triplet_tiles_share_their_centre_and_cover_16_4_1_times_the_side(textured_slide):
    slide = reader.open_slide(textured_slide)
    base = reader.base_magnification(slide, textured_slide)
    assert slide.level_count == 3 and base == 40.0
    center = (1024.0, 896.0)
    (t25, t10, t40), boxes = reader.read_triplet(slide, center, base, TILE)
    assert all(t.shape == (TILE, TILE, 3) and t.dtype == np.uint8 for t in (t25, t10, t40))
    sides = [b[2] - b[0] for b in boxes]
    print("level-0 sides of the 2.5x, 10x, 40x tiles:", sides, "areas / 40x:", [s * s / sides[2] ** 2 for s in sides])
    assert sides == [16 * TILE, 4 * TILE, TILE]  # sides 16x, 4x, 1x: areas 256x, 16x, 1x the 40x tile's
    for x0, y0, x1, y1 in boxes:
        assert ((x0 + x1) / 2, (y0 + y1) / 2) == center
    # Content: the centre of each lower-magnification tile is the next tile, downsampled 4x.
    middle = slice(TILE // 2 - TILE // 8, TILE // 2 + TILE // 8)
    assert np.abs(t10[middle, middle].astype(float) - _pool(t40, 4)).mean() < 1.0
    assert np.abs(t25[middle, middle].astype(float) - _pool(t10, 4)).mean() < 1.0
    shifted = reader.read_triplet(slide, (center[0] + 8, center[1]), base, TILE)[0][2]
    assert np.abs(shifted.astype(float) - t40).mean() > 5  # the comparison above would notice a shift
    full = np.asarray(slide.read_region((1024 - 16, 896 - 16), 0, (TILE, TILE)))[..., :3]
    np.testing.assert_array_equal(t40, full)
    slide.close()


def test_tiles_are_padded_with_white_at_the_border(textured_slide):
    slide = reader.open_slide(textured_slide)
    (t25, _, t40), _ = reader.read_triplet(slide, (0.0, 0.0), 40.0, TILE)
    assert (t25[:TILE // 2, :] == 255).all() and (t25[:, :TILE // 2] == 255).all()
    assert (t25[TILE // 2 + 1:, TILE // 2 + 1:] < 255).any()
    assert (t40[:TILE // 2, :TILE // 2] == 255).all()
    slide.close()


def test_base_magnification_given_or_from_properties(textured_slide):
    slide = reader.open_slide(textured_slide)
    assert reader.base_magnification(slide, textured_slide, given=20) == 20.0
    with pytest.raises(ValueError, match="magnification"):
        reader.read_tile(slide, (100, 100), 40.0, 20.0, TILE)  # 40x tiles from a 20x scan
    slide.close()


def test_bad_inputs_name_the_file(tmp_path, textured_slide):
    not_a_slide = tmp_path / "broken.tiff"
    not_a_slide.write_bytes(b"not a tiff at all")
    with pytest.raises(DataError, match="broken.tiff.*cannot be opened"):
        reader.open_slide(not_a_slide)
    ring = [[10, 10], [100, 10], [100, 100], [10, 10]]
    with pytest.raises(DataError, match=r"tumour.geojson.*unknown class 'Tumour'"):
        annotations.read_annotations(helpers.qupath_geojson(tmp_path / "tumour.geojson", "Tumour", ring), (2048, 2048))
    outside = [[10, 10], [3000, 10], [100, 100], [10, 10]]
    with pytest.raises(DataError, match=r"outside.geojson.*outside the slide"):
        outside_path = helpers.qupath_geojson(tmp_path / "outside.geojson", "Stroma", outside)
        triplets.extract_slide(textured_slide, outside_path, TILE)
    (tmp_path / "nameless.geojson").write_text(json.dumps([{"geometry": {"type": "Polygon", "coordinates": [ring]}}]))
    with pytest.raises(DataError, match="nameless.geojson.*no classification"):
        annotations.read_annotations(tmp_path / "nameless.geojson", (2048, 2048))
