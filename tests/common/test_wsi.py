import json

import cv2
import numpy as np
import pytest

from common.errors import DataError
from common.slides import annotations, reader, triplets
from common.slides import synthetic as synthetic_slides

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


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    synthetic_slides.write_cohort(root / "slides", slides_per_lab=3, seed=5, size=(512, 512))
    manifest = triplets.prepare_triplets(root / "slides", root / "triplets", tile_size=TILE, max_per_slide=20,
                                    log=lambda _: None)
    return root, manifest


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


def test_points_fall_inside_their_polygon_and_outside_its_hole():
    outline = np.array([[100, 100], [500, 100], [500, 500], [100, 500]], float)
    hole = np.array([[200, 200], [400, 200], [400, 400], [200, 400]], float)
    triangle = np.array([[600, 100], [900, 100], [600, 400]], float)
    regions = [annotations.Annotation(3, (outline, hole)), annotations.Annotation(0, (triangle,))]
    points, labels = annotations.sample_points(regions, 500, np.random.default_rng(1))
    assert len(points) == 500 and set(labels.tolist()) == {0, 3}
    for annotation in regions:
        mine = points[labels == annotation.label]
        assert annotations.inside(mine, annotation.rings).all()
    in_hole = (points[:, 0] > 200) & (points[:, 0] < 400) & (points[:, 1] > 200) & (points[:, 1] < 400)
    assert not in_hole.any()
    # Shares follow the areas: 160000 - 40000 for stroma against 45000 for blood.
    assert abs((labels == 3).mean() - 120000 / 165000) < 0.06


def test_prepared_shards_hold_each_slides_triplets(cohort):
    root, manifest = cohort
    assert len(manifest["slides"]) == 6
    for slide_id, entry in manifest["slides"].items():
        shard = np.load(root / "triplets" / "shards" / f"{slide_id}.npz")
        assert shard["tile_40x"].shape == (sum(entry["counts"]), TILE, TILE, 3) and sum(entry["counts"]) <= 20
        assert np.bincount(shard["label"], minlength=5).tolist() == entry["counts"]
    stamp = (root / "triplets" / "shards" / "labA_000.npz").stat().st_mtime_ns
    triplets.prepare_triplets(root / "slides", root / "triplets", tile_size=TILE, max_per_slide=20, log=lambda _: None)
    assert (root / "triplets" / "shards" / "labA_000.npz").stat().st_mtime_ns == stamp  # rerun skips


def test_no_slide_contributes_to_both_training_and_test(cohort):
    root, manifest = cohort
    split = triplets.split_slides(manifest["slides"], seed=2)
    assert sorted(sum(split.values(), [])) == sorted(manifest["slides"])
    assert not set(split["train"]) & set(split["test"]) and not set(split["val"]) & set(split["test"])
    pools = triplets.load_pools(root / "triplets")
    assert len(pools) == sum(sum(e["counts"]) for e in manifest["slides"].values())
    train_slides = set(pools.slide_ids[np.isin(pools.slide_ids, split["train"])])
    test_slides = set(pools.slide_ids[np.isin(pools.slide_ids, split["test"])])
    assert train_slides and test_slides and not train_slides & test_slides


def _geojson(path, name, ring):
    feature = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
               "properties": {"objectType": "annotation", "classification": {"name": name}}}
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    return path


def test_qupath_exports_old_and_new_read_alike(tmp_path):
    ring = [[10, 10], [100, 10], [100, 100], [10, 10]]
    new = annotations.read_annotations(_geojson(tmp_path / "new.geojson", "Muscle", ring), (200, 200))
    old = [{"type": "Feature", "properties": {"classification": "muscle"},
            "geometry": {"type": "MultiPolygon", "coordinates": [[ring], [[[150, 150], [160, 150], [150, 160]]]]}}]
    (tmp_path / "old.geojson").write_text(json.dumps(old))
    multi = annotations.read_annotations(tmp_path / "old.geojson", (200, 200))
    assert [a.label for a in new] == [2] and [a.label for a in multi] == [2, 2]
    np.testing.assert_array_equal(new[0].rings[0], multi[0].rings[0])


def test_bad_inputs_name_the_file(tmp_path, textured_slide):
    not_a_slide = tmp_path / "broken.tiff"
    not_a_slide.write_bytes(b"not a tiff at all")
    with pytest.raises(DataError, match="broken.tiff.*cannot be opened"):
        reader.open_slide(not_a_slide)
    ring = [[10, 10], [100, 10], [100, 100], [10, 10]]
    with pytest.raises(DataError, match=r"tumour.geojson.*unknown class 'Tumour'"):
        annotations.read_annotations(_geojson(tmp_path / "tumour.geojson", "Tumour", ring), (2048, 2048))
    outside = [[10, 10], [3000, 10], [100, 100], [10, 10]]
    with pytest.raises(DataError, match=r"outside.geojson.*outside the slide"):
        triplets.extract_slide(textured_slide, _geojson(tmp_path / "outside.geojson", "Stroma", outside), TILE)
    (tmp_path / "nameless.geojson").write_text(json.dumps([{"geometry": {"type": "Polygon", "coordinates": [ring]}}]))
    with pytest.raises(DataError, match="nameless.geojson.*no classification"):
        annotations.read_annotations(tmp_path / "nameless.geojson", (2048, 2048))


def test_cli_reports_an_unreadable_slide_in_one_line(zoo, tmp_path):
    (tmp_path / "slides").mkdir()
    (tmp_path / "slides" / "bad.tiff").write_bytes(b"garbage")
    _geojson(tmp_path / "slides" / "bad.geojson", "Stroma", [[1, 1], [5, 1], [5, 5], [1, 1]])
    done = zoo("triplets", tmp_path / "slides", tmp_path / "out", "--tile-size", TILE)
    assert done.returncode == 2, done.stderr
    assert "bad.tiff" in done.stderr and "cannot be opened" in done.stderr and "Traceback" not in done.stderr
