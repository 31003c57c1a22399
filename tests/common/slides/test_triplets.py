"""Triplet shards per slide and splits by slide."""

import logging

import cv2
import numpy as np
import pytest

from common import atomic
from common.errors import DataError
from common.slides import reader, store, triplets
from common.slides import synthetic as synthetic_slides
from common.slides.annotations import CLASSES
from tests import helpers

TILE = 32


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    synthetic_slides.write_cohort(root / "slides", slides_per_lab=3, seed=5, size=(512, 512))
    manifest = triplets.prepare_triplets(root / "slides", root / "triplets", tile_size=TILE, max_per_slide=20)
    return root, manifest


def test_prepared_shards_hold_each_slides_triplets(cohort):
    root, manifest = cohort
    assert len(manifest["slides"]) == 6
    for slide_id, entry in manifest["slides"].items():
        shard = store.read_shard(root / "triplets" / "shards" / f"{slide_id}.tfrecord")
        assert shard["tile_40x"].shape == (sum(entry["counts"]), TILE, TILE, 3) and sum(entry["counts"]) <= 20
        assert np.bincount(shard["label"], minlength=5).tolist() == entry["counts"]
    stamp = (root / "triplets" / "shards" / "labA_000.tfrecord").stat().st_mtime_ns
    triplets.prepare_triplets(root / "slides", root / "triplets", tile_size=TILE, max_per_slide=20)
    assert (root / "triplets" / "shards" / "labA_000.tfrecord").stat().st_mtime_ns == stamp  # rerun skips


def test_an_older_npz_folder_is_refused_then_converted_without_reading_a_slide(cohort, tmp_path, monkeypatch, caplog):
    root, manifest = cohort
    (tmp_path / "shards").mkdir()
    for slide_id in manifest["slides"]:  # the format before TFRecords: one .npz per slide, no "format"
        np.savez(tmp_path / "shards" / f"{slide_id}.npz",
                 **store.read_shard(root / "triplets" / "shards" / f"{slide_id}.tfrecord"))
    atomic.write_json(tmp_path / triplets.MANIFEST, {k: v for k, v in manifest.items() if k != "format"})
    with pytest.raises(DataError, match=r"older .npz format.*rerun `zoo triplets SLIDES .*`.*converts"):
        triplets.load_pools(tmp_path)

    def read_a_slide(*args, **kwargs):
        raise AssertionError("a slide was read")

    monkeypatch.setattr(triplets, "extract_slide", read_a_slide)
    caplog.set_level(logging.INFO, logger="common")
    triplets.prepare_triplets(root / "slides", tmp_path, tile_size=TILE, max_per_slide=20)
    assert sum("converted labA_000.npz to labA_000.tfrecord" in line for line in caplog.messages) == 1
    assert sum(" converted " in line for line in caplog.messages) == 6
    converted, fresh = triplets.load_pools(tmp_path), triplets.load_pools(root / "triplets")
    np.testing.assert_array_equal(converted.labels, fresh.labels)
    for a, b in zip(converted.read(np.arange(len(fresh))), fresh.read(np.arange(len(fresh)))):
        np.testing.assert_array_equal(a, b)


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


# A slide whose scanned area sits at ORIGIN of its level 0, as OpenSlide shows MRXS; QuPath annotates from ORIGIN.
ORIGIN, CANVAS, AREA = (192, 256), (1024, 1024), (640, 768)
PALETTE = np.array([synthetic_slides.QUPATH_COLOURS[name] for name in CLASSES] + [[255, 255, 255]] * 251, np.uint8)


@pytest.fixture(scope="module")
def bounded_slide(tmp_path_factory):
    """A Leica SCN whose tissue, one flat colour per class, is offset by ORIGIN; its GeoJSON in QuPath's frame."""
    folder = tmp_path_factory.mktemp("bounded")
    _, labels = synthetic_slides.render_slide(np.random.default_rng(3), AREA, "A", regions=5)
    full = cv2.resize(labels, AREA[::-1], interpolation=cv2.INTER_NEAREST)
    synthetic_slides.write_leica(folder / "bounded.scn", PALETTE[full], ORIGIN, CANVAS)
    features = synthetic_slides.annotation_features(np.random.default_rng(1), labels)
    atomic.write_json(folder / "bounded.geojson", {"type": "FeatureCollection", "features": features})
    return folder / "bounded.scn", folder / "bounded.geojson", full


def test_tiles_of_a_bounded_slide_are_centred_in_the_annotated_regions(bounded_slide):
    slide_path, geojson, full = bounded_slide
    arrays = triplets.extract_slide(slide_path, geojson, TILE, max_points=40)
    labels, tiles = arrays["label"], arrays["tile_40x"]
    assert len(labels) == 40 and len(set(labels.tolist())) >= 3
    centre = tiles[:, TILE // 2 - 4:TILE // 2 + 4, TILE // 2 - 4:TILE // 2 + 4].reshape(len(tiles), -1, 3)
    # Every centre pixel has its annotation's class colour: the tile was cut where QuPath's polygon is.
    np.testing.assert_array_equal(centre, np.broadcast_to(PALETTE[labels][:, None], centre.shape))
    qupath = arrays["point"] - np.array(ORIGIN)
    assert (full[qupath[:, 1].astype(int), qupath[:, 0].astype(int)] == labels).all()
    # The bug this guards against: QuPath's coordinates taken as level 0 land elsewhere (other tissue or glass).
    slide = reader.open_slide(slide_path)
    wrong = [reader.read_tile(slide, p, 40.0, 40.0, TILE)[0][TILE // 2, TILE // 2] for p in qupath]
    slide.close()
    print("share of tiles right without the bounds offset:", (np.array(wrong) == PALETTE[labels]).all(-1).mean())
    assert (np.array(wrong) == PALETTE[labels]).all(-1).mean() < 0.5


def test_labs_from_a_folder_per_lab(tmp_path):
    ring = [[10, 10], [100, 10], [100, 100], [10, 10]]
    for relative in ("labA/a1.tiff", "labA/a2.svs", "lab_B/b1.svs", "erasmus/e1.mrxs", "loose.tif"):
        (tmp_path / relative).parent.mkdir(exist_ok=True)
        (tmp_path / relative).write_bytes(b"")
    for relative in ("labA/a1.geojson", "labA/a2.svs.geojson", "lab_B/b1.geojson", "erasmus/e1.geojson",
                     "laboratory/orphan.geojson"):
        (tmp_path / relative).parent.mkdir(exist_ok=True)
        helpers.qupath_geojson(tmp_path / relative, "Stroma", ring)
    (tmp_path / "erasmus" / "e1").mkdir()  # an MRXS data folder: not a lab
    found = triplets.slide_list(tmp_path)
    assert {s: e["lab"] for s, e in found.items()} == {"a1": "A", "a2": "A", "b1": "B", "e1": "erasmus"}
    assert found["a2"]["annotations"] == tmp_path / "labA" / "a2.svs.geojson"
    (tmp_path / "erasmus" / "a1.tiff").write_bytes(b"")
    helpers.qupath_geojson(tmp_path / "erasmus" / "a1.geojson", "Stroma", ring)
    with pytest.raises(DataError, match=r"labA/a1.tiff: same name as .*erasmus/a1.tiff; slide names must be unique"):
        triplets.slide_list(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: no slides with annotations"):
        triplets.slide_list(tmp_path / "empty")


@pytest.mark.parametrize("manifest, message", [
    ('{"slides": {"s1": {"lab": "A", "slide": "s1.tiff"}}}', r"slides.json: expected .* missing 'annotations'"),
    ('{"slides": {"s1": {"lab": "A", "slide": "gone.tiff", "annotations": "s1.geojson"}}}',
     r"slides.json: slide 's1': slide file .*gone.tiff does not exist"),
    ('{"slides": [}', r"slides.json: not readable JSON"),
    ('{"slides": {"s1": {"lab": "A", "slide": "s1.tiff", "annotations": "s1.geojson", "magnification": "20"}}}',
     r"slides.json: slide 's1': magnification must be a positive number, got '20'"),
])
def test_bad_slides_json_names_the_file_and_the_entry(tmp_path, manifest, message):
    (tmp_path / "s1.tiff").write_bytes(b"")
    helpers.qupath_geojson(tmp_path / "s1.geojson", "Stroma", [[1, 1], [5, 1], [5, 5], [1, 1]])
    (tmp_path / "slides.json").write_text(manifest)
    with pytest.raises(DataError, match=message):
        triplets.slide_list(tmp_path)


def test_a_20x_slide_is_upsampled_and_said_once_or_refused(tmp_path, caplog):
    rgb, labels = synthetic_slides.render_slide(np.random.default_rng(4), (512, 512), "B", regions=5)
    lab = tmp_path / "slides" / "labB"
    synthetic_slides.write_aperio(lab / "scan20.svs", rgb, mpp=0.5, magnification=20)
    features = synthetic_slides.annotation_features(np.random.default_rng(1), labels)
    atomic.write_json(lab / "scan20.geojson", {"type": "FeatureCollection", "features": features})
    caplog.set_level(logging.INFO, logger="common")
    manifest = triplets.prepare_triplets(lab.parent, tmp_path / "out", TILE, max_per_slide=6)
    said = [line for line in caplog.messages if "upsampl" in line]
    assert said == [f"{lab / 'scan20.svs'}: scanned at 20x, below the 40x tiles: reading them at 20x and upsampling 2x"]
    assert manifest["slides"]["scan20"]["lab"] == "B" and sum(manifest["slides"]["scan20"]["counts"]) == 6
    with pytest.raises(DataError, match=r"scan20.svs: scanned at 20x, below the 40x tiles; drop --no-upsample"):
        triplets.prepare_triplets(lab.parent, tmp_path / "refused", TILE, max_per_slide=6, upsample=False)


def test_a_slides_json_magnification_overrides_a_slide_whose_power_and_mpp_disagree(tmp_path):
    synthetic_slides.write_aperio(tmp_path / "odd.svs", np.full((256, 256, 3), 180, np.uint8), mpp=0.25,
                                  magnification=20)
    helpers.qupath_geojson(tmp_path / "odd.geojson", "Stroma", [[40, 40], [200, 40], [200, 200], [40, 40]])
    entry = {"lab": "A", "slide": "odd.svs", "annotations": "odd.geojson"}
    atomic.write_json(tmp_path / "slides.json", {"slides": {"odd": entry}})
    with pytest.raises(DataError, match="odd.svs: objective power 20x and 0.25 um/px disagree"):
        triplets.prepare_triplets(tmp_path, tmp_path / "out", TILE, max_per_slide=3)
    atomic.write_json(tmp_path / "slides.json", {"slides": {"odd": {**entry, "magnification": 40}}})
    manifest = triplets.prepare_triplets(tmp_path, tmp_path / "out", TILE, max_per_slide=3)
    assert manifest["slides"]["odd"]["counts"] == [0, 0, 0, 3, 0]
