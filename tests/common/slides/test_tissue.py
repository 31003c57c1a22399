"""Tissue masks: glass and the area outside the scan are background; sampling redraws points on glass."""

import logging

import cv2
import numpy as np
import pytest

from common.slides import annotations, reader, tissue
from common.slides import synthetic as synthetic_slides

PINK = (200, 120, 190)  # eosin-stained tissue


@pytest.mark.parametrize("lab", ["A", "B"])
def test_the_mask_of_a_generated_slide_holds_its_section_and_not_the_glass_around(tmp_path, lab):
    rgb, labels = synthetic_slides.render_slide(np.random.default_rng(2), (1024, 1024), lab)
    synthetic_slides.write_pyramid(tmp_path / "slide.tiff", rgb)
    slide = reader.open_slide(tmp_path / "slide.tiff")
    mask = tissue.tissue_mask(slide, 40.0)
    slide.close()
    assert mask.mask.shape == (32, 32) and mask.scale == (32.0, 32.0) and mask.thumbnail.shape == (32, 32, 3)
    # The share of tissue in each mask pixel (the label map is drawn at 1/16, two label cells per mask pixel).
    share = cv2.resize((labels != 255).astype(np.float32), (32, 32), interpolation=cv2.INTER_AREA)
    assert mask.mask[share == 1].mean() > 0.99  # pale stroma included: Otsu on log density
    near = cv2.dilate((share > 0).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    assert not mask.mask[~near].any() and mask.mask[share == 0].mean() < 0.05  # the closing fills border notches
    assert tissue.MIN_TISSUE_OD <= mask.threshold < 0.2


def test_the_transparent_area_outside_a_scan_is_background(tmp_path):
    origin, area, canvas = (256, 128), (384, 512), (1024, 768)
    synthetic_slides.write_leica(tmp_path / "slide.scn", np.full((*area, 3), PINK, np.uint8), origin, canvas)
    slide = reader.open_slide(tmp_path / "slide.scn")
    whole = tissue.tissue_mask(slide, 40.0)
    frame = reader.qupath_frame(slide, tmp_path / "slide.scn")
    scanned = tissue.tissue_mask(slide, 40.0, frame)
    slide.close()
    ys, xs = np.mgrid[0:canvas[1]:16, 0:canvas[0]:16] + 8
    points = np.stack([xs.ravel(), ys.ravel()], 1)
    inside = ((points >= origin) & (points < np.add(origin, area[::-1]))).all(1)
    np.testing.assert_array_equal(whole.contains(points), inside)
    assert scanned.origin == origin and scanned.mask.all()  # tissue from edge to edge stays tissue
    assert not scanned.contains([[origin[0] - 1, origin[1] + 10]]).any()  # outside the region: not tissue


def test_glass_alone_stays_glass_and_tissue_alone_stays_tissue():
    noise = np.random.default_rng(0).integers(232, 256, (40, 40, 1))
    assert not tissue.tissue_pixels(np.repeat(noise, 3, -1).astype(np.uint8))[0].any()
    assert tissue.tissue_pixels(np.full((40, 40, 3), 180, np.uint8))[0].all()
    dust = np.full((40, 40, 3), 250, np.uint8)
    dust[10:30, 10:30] = PINK
    dust[3, 35] = (60, 30, 90)  # one dark speck on the glass: dropped by the opening
    dust[20, 20] = 255  # a pin-hole in the tissue: filled by the closing
    mask, threshold = tissue.tissue_pixels(dust)
    expected = np.zeros((40, 40), bool)
    expected[10:30, 10:30] = True
    np.testing.assert_array_equal(mask, expected)


def test_contains_maps_level0_points_through_the_origin_and_scale():
    mask = np.zeros((3, 4), bool)
    mask[1, 2] = True
    lookup = tissue.TissueMask(mask, (100.0, 50.0), (8.0, 10.0), 0.1, np.zeros((3, 4, 3), np.uint8))
    points = [[100 + 2 * 8, 50 + 10], [100 + 3 * 8 - 0.01, 50 + 2 * 10 - 0.01], [100 + 3 * 8, 65], [99, 65],
              [116, 49.9], [1e6, 1e6]]
    assert lookup.contains(points).tolist() == [True, True, False, False, False, False]
    assert lookup.share == pytest.approx(1 / 12)


def _square(x0, y0, x1, y1, label=3):
    ring = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], float)
    return annotations.Annotation(label, (ring,))


def test_points_on_glass_are_rejected_and_redrawn_in_the_tissue():
    # Tissue in the left half of a 100 x 100 region; one annotation over both halves, one over glass only.
    half = tissue.TissueMask(np.array([[True, False]]), (0.0, 0.0), (50.0, 100.0), 0.1, np.zeros((1, 2, 3)))
    regions = [_square(0, 0, 100, 100, label=3), _square(60, 10, 90, 40, label=4)]
    points, labels, rejected = tissue.sample_in_tissue(regions, 200, np.random.default_rng(0), half)
    assert len(points) == 200 and (points[:, 0] < 50).all() and set(labels.tolist()) == {3}
    assert 150 < rejected < 600  # about 60% of each draw lands on glass
    everywhere = tissue.TissueMask(np.ones((1, 1), bool), (0.0, 0.0), (100.0, 100.0), 0.1, np.zeros((1, 1, 3)))
    kept = tissue.sample_in_tissue(regions, 50, np.random.default_rng(1), everywhere)
    plain = annotations.sample_points(regions, 50, np.random.default_rng(1))
    np.testing.assert_array_equal(kept[0], plain[0])  # nothing rejected: the plain sample itself
    np.testing.assert_array_equal(kept[1], plain[1])
    assert kept[2] == 0
    glass_only = tissue.sample_in_tissue([_square(60, 10, 90, 40)], 20, np.random.default_rng(2), half)
    assert len(glass_only[0]) == 0 and glass_only[2] > 20  # gives up after its rounds, empty-handed


def test_extracted_triplets_keep_off_the_glass_and_say_how_many_points_were_redrawn(tmp_path, caplog):
    from common import atomic
    from common.slides import triplets

    rgb = np.full((512, 512, 3), 250, np.uint8)
    rgb[:, :256] = PINK  # tissue on the left, glass on the right, one annotation over both
    synthetic_slides.write_pyramid(tmp_path / "half.tiff", rgb)
    ring = [[32, 32], [480, 32], [480, 480], [32, 480], [32, 32]]
    feature = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
               "properties": {"objectType": "annotation", "classification": {"name": "Stroma"}}}
    atomic.write_json(tmp_path / "half.geojson", {"type": "FeatureCollection", "features": [feature]})
    caplog.set_level(logging.INFO, logger="common")
    arrays = triplets.extract_slide(tmp_path / "half.tiff", tmp_path / "half.geojson", 32, max_points=12)
    lines = caplog.messages
    assert len(arrays["label"]) == 12 and (arrays["point"][:, 0] < 256).all()
    assert (arrays["tile_40x"][:, 16, 16] == PINK).all()
    assert len(lines) == 1 and lines[0].startswith(f"{tmp_path / 'half.tiff'}: ")
    rejected = int(lines[0].split(": ")[1].split()[0])
    assert 2 <= rejected and lines[0].endswith("sampled points fell on glass (outside the tissue mask) and were "
                                               "redrawn; 12 in tissue")
    plain = triplets.extract_slide(tmp_path / "half.tiff", tmp_path / "half.geojson", 32, max_points=12,
                                   tissue=False)
    assert (plain["point"][:, 0] >= 256).any()  # without the mask, some triplets come from glass
