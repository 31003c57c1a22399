"""Tiles and triplets read from a textured pyramid slide."""

import logging

import cv2
import numpy as np
import pytest

from common.errors import DataError
from common.slides import reader, triplets
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
    assert reader.base_magnification(slide, textured_slide) == 40.0  # generic TIFF: 10 / mpp 0.25
    assert reader.base_magnification(slide, textured_slide, given=20) == 20.0
    with pytest.raises(ValueError, match="base magnification must be positive"):
        reader.base_magnification(slide, textured_slide, given=0)
    slide.close()


@pytest.mark.parametrize("power, mpp, expected", [(20, 0.5, 20.0), (40, 0.2527, 40.0), (20, 0.4536, 20.0)])
def test_objective_power_agreeing_with_the_mpp_is_the_base(tmp_path, power, mpp, expected):
    synthetic_slides.write_aperio(tmp_path / "scan.svs", np.full((256, 256, 3), 200, np.uint8), mpp, power)
    slide = reader.open_slide(tmp_path / "scan.svs")
    assert slide.properties["openslide.vendor"] == "aperio"
    assert reader.base_magnification(slide, tmp_path / "scan.svs") == expected
    slide.close()


@pytest.mark.parametrize("power, mpp", [(20, 0.25), (40, 0.5), (20, 0.243)])  # the last: a 3DHistech-like MRXS
def test_objective_power_and_mpp_that_disagree_name_the_file_both_values_and_the_flag(tmp_path, power, mpp):
    synthetic_slides.write_aperio(tmp_path / "odd.svs", np.full((256, 256, 3), 200, np.uint8), mpp, power)
    slide = reader.open_slide(tmp_path / "odd.svs")
    message = rf"odd.svs: objective power {power}x and {mpp} um/px disagree.*--magnification"
    with pytest.raises(DataError, match=message):
        reader.base_magnification(slide, tmp_path / "odd.svs")
    assert reader.base_magnification(slide, tmp_path / "odd.svs", given=power) == power  # the way out
    slide.close()


def test_tiles_above_the_base_magnification_are_upsampled_from_level_0(tmp_path, textured_slide):
    """The same tissue scanned at 40x and at 20x gives the same triplet, the 20x scan's 40x tile a blurred one."""
    at40 = np.asarray(reader.open_slide(textured_slide).read_region((0, 0), 0, (2048, 2048)))[..., :3]
    synthetic_slides.write_aperio(tmp_path / "scan20.svs", cv2.resize(at40, (1024, 1024), interpolation=cv2.INTER_AREA),
                                  mpp=0.5, magnification=20)
    slide40, slide20 = reader.open_slide(textured_slide), reader.open_slide(tmp_path / "scan20.svs")
    base20 = reader.base_magnification(slide20, "scan20.svs")
    center = (1024.0, 896.0)  # on every level's pixel grid: OpenSlide reads lower levels at whole pixels
    tiles40, boxes40 = reader.read_triplet(slide40, center, 40.0, TILE)
    tiles20, boxes20 = reader.read_triplet(slide20, (center[0] / 2, center[1] / 2), base20, TILE)
    assert base20 == 20.0 and [b[2] - b[0] for b in boxes20] == [8 * TILE, 2 * TILE, TILE / 2]
    errors = [np.abs(a.astype(float) - b).mean() for a, b in zip(tiles40, tiles20)]
    shifted = reader.read_triplet(slide40, (center[0] + 8, center[1]), 40.0, TILE)[0][2]
    print("mean |40x scan - 20x scan| per tile (2.5x, 10x, 40x):", errors,
          "a 40x tile 8 px away:", np.abs(shifted.astype(float) - tiles40[2]).mean())
    assert errors[0] < 2 and errors[1] < 2  # both read from coarser levels of the same tissue
    assert errors[2] < 0.2 * np.abs(shifted.astype(float) - tiles40[2]).mean()  # blurred, but in place
    halved = cv2.resize(tiles40[2], (TILE // 2, TILE // 2), interpolation=cv2.INTER_AREA)
    expected = cv2.resize(halved.astype(np.float32), (TILE, TILE), interpolation=cv2.INTER_LINEAR)
    assert np.abs(expected - tiles20[2]).mean() < 1.0  # the 40x tile is the 20x pixels, upsampled 2x
    slide40.close()
    slide20.close()


def test_check_magnification_says_once_or_refuses(caplog):
    caplog.set_level(logging.INFO, logger="common")
    assert reader.check_magnification("a.svs", 40.0) is False and caplog.messages == []
    assert reader.check_magnification("b.svs", 20.0) is True
    assert caplog.messages == ["b.svs: scanned at 20x, below the 40x tiles: reading them at 20x and upsampling 2x"]
    with pytest.raises(DataError, match=r"c.svs: scanned at 20x, below the 40x tiles; drop --no-upsample"):
        reader.check_magnification("c.svs", 20.0, upsample=False)


def test_qupath_frame_is_the_bounds_or_the_whole_slide(tmp_path, textured_slide):
    slide = reader.open_slide(textured_slide)
    assert reader.qupath_frame(slide, textured_slide) == reader.Frame(0, 0, 2048, 2048)
    slide.close()
    synthetic_slides.write_leica(tmp_path / "b.scn", np.full((256, 320, 3), 90, np.uint8), (100, 60), (512, 512))
    slide = reader.open_slide(tmp_path / "b.scn")
    assert reader.qupath_frame(slide, tmp_path / "b.scn") == reader.Frame(100, 60, 320, 256)
    assert slide.dimensions == (512, 512)
    slide.close()


def test_bad_inputs_name_the_file(tmp_path, textured_slide):
    not_a_slide = tmp_path / "broken.tiff"
    not_a_slide.write_bytes(b"not a tiff at all")
    with pytest.raises(DataError, match="broken.tiff.*cannot be opened"):
        reader.open_slide(not_a_slide)
    outside = [[10, 10], [3000, 10], [100, 100], [10, 10]]
    with pytest.raises(DataError, match=r"outside.geojson.*outside the slide"):
        outside_path = helpers.qupath_geojson(tmp_path / "outside.geojson", "Stroma", outside)
        triplets.extract_slide(textured_slide, outside_path, TILE)


def test_a_damaged_tile_names_the_slide_and_the_region_and_so_does_a_later_read(tmp_path):
    import tifffile

    path = tmp_path / "damaged.tiff"
    synthetic_slides.write_pyramid(path, np.full((512, 512, 3), 200, np.uint8))
    with tifffile.TiffFile(path) as tif:  # level 0's second tile: x 256-511, y 0-255
        offset, size = tif.pages[0].dataoffsets[1], tif.pages[0].databytecounts[1]
    data = bytearray(path.read_bytes())
    data[offset + 2:offset + size] = b"\xff" * (size - 2)
    path.write_bytes(bytes(data))
    slide = reader.open_slide(path)
    assert reader.read_tile(slide, (100, 100), 40.0, 40.0, TILE)[0].shape == (TILE, TILE, 3)  # a whole tile
    cause = "TIFFRGBAImageGet failed, last error: ZIPDecode: Decoding error at scanline 256, invalid block type"
    with pytest.raises(DataError) as error:
        reader.read_tile(slide, (300, 100), 40.0, 40.0, TILE)
    assert str(error.value) == (f"{path}: damaged tile in the region level 0, x 284, y 84 (level-0 coordinates), "
                                f"size {TILE}x{TILE}: {cause}")
    with pytest.raises(DataError, match="region level 0, x 84, y 84 .*ZIPDecode"):  # OpenSlide latches its error
        slide.read_region((84, 84), 0, (TILE, TILE))
    slide.close()
