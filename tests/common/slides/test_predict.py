"""Whole-slide prediction inside the tissue, and its GeoJSON as QuPath reads it."""

import json

import numpy as np
import pytest

from common.slides import annotations, predict, reader
from common.slides import synthetic as synthetic_slides
from tests import helpers

CELL = 32  # = the tile side at 40x, so each cell is one tile of one flat colour
PALETTE = np.array([synthetic_slides.QUPATH_COLOURS[name] for name in annotations.CLASSES], np.uint8)
PALETTE_WHITE = np.concatenate([PALETTE, np.full((256 - len(PALETTE), 3), 255, np.uint8)])  # 255: glass
ORIGIN, CANVAS = (96, 160), (768, 800)  # the scanned area's place on level 0, as OpenSlide shows a Leica SCN or MRXS


def _labels() -> np.ndarray:
    """16 x 16 cells: glass around a stroma section holding urothelium with a blood island (a hole), muscle in two
    blocks meeting at a corner (one class, two regions), a damaged strip on the edge of the section."""
    labels = np.full((16, 16), 255, np.uint8)
    labels[2:14, 2:14] = 3
    labels[3:9, 3:9] = 4
    labels[5:7, 5:7] = 0
    labels[9:11, 9:11] = 2
    labels[11:13, 11:13] = 2
    labels[10:13, 2:5] = 1
    return labels


@pytest.fixture(scope="module")
def predicted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("predict")
    helpers.flat_slide(folder / "slide.scn", _labels(), PALETTE, CELL, ORIGIN, CANVAS)
    model = helpers.palette_classifier(PALETTE, tile_size=CELL)
    with helpers.logged() as lines:
        prediction = predict.predict_slide(model, folder / "slide.scn", batch_size=16)
    return folder, prediction, lines


def test_each_tissue_tile_gets_its_class_and_glass_none_in_qupaths_frame(predicted):
    _, prediction, lines = predicted
    expected = np.where(_labels() == 255, -1, _labels().astype(np.int64))
    np.testing.assert_array_equal(prediction.grid, expected)  # the bounds offset applied, glass left out
    assert prediction.stride == CELL and prediction.frame == reader.Frame(*ORIGIN, 16 * CELL, 16 * CELL)
    assert prediction.tissue.mask.shape == (16, 16)  # the frame at 1.25x: one pixel per 32 px cell
    np.testing.assert_array_equal(prediction.thumbnail[16::32, 16::32], PALETTE_WHITE[_labels()])  # the scan, whole
    tissue = int((expected >= 0).sum())
    assert lines[0].endswith(f"{tissue} of 256 tiles in tissue (32 px apart at 40x, tissue threshold OD "
                             f"{prediction.tissue.threshold:.2f})")
    assert lines[-1].startswith(f"predicted {tissue}/{tissue} tiles")


def _signed_area(ring) -> float:
    ring = np.asarray(ring, np.float64)
    return 0.5 * float(np.sum(ring[:-1, 0] * ring[1:, 1] - ring[1:, 0] * ring[:-1, 1]))


def _check_ring(ring, frame, exterior: bool) -> None:
    assert len(ring) >= 5 and ring[0] == ring[-1]  # closed; a square at least
    assert len({tuple(p) for p in ring[:-1]}) == len(ring) - 1  # simple: no vertex twice
    assert all(isinstance(v, int) and 0 <= p[0] <= frame.width and 0 <= p[1] <= frame.height
               for p in ring for v in p)
    assert (_signed_area(ring) > 0) == exterior  # RFC 7946: exteriors counter-clockwise, holes clockwise


def test_geojson_is_a_feature_collection_qupath_imports(predicted):
    folder, prediction, _ = predicted
    names = predict.class_names("Tumor=urothelium")
    assert predict.write_geojson(folder / "out.geojson", prediction, names, PALETTE) == 5
    payload = json.loads((folder / "out.geojson").read_text(encoding="utf-8"))
    assert payload["type"] == "FeatureCollection" and len(payload["features"]) == 5
    areas = {}
    for feature in payload["features"]:
        assert feature["type"] == "Feature" and isinstance(feature["id"], str)
        properties, geometry = feature["properties"], feature["geometry"]
        assert properties["objectType"] == "annotation"
        name, colour = properties["classification"]["name"], properties["classification"]["color"]
        assert name in names and colour == PALETTE[names.index(name)].tolist()
        assert len(colour) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in colour)
        assert geometry["type"] in ("Polygon", "MultiPolygon")
        polygons = [geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry["coordinates"]
        for polygon in polygons:
            for number, ring in enumerate(polygon):
                _check_ring(ring, prediction.frame, exterior=number == 0)
        areas[name] = sum(_signed_area(ring) for polygon in polygons for ring in polygon)
    counts = np.bincount(prediction.grid[prediction.grid >= 0], minlength=5)
    assert areas == {name: float(n * CELL * CELL) for name, n in zip(names, counts)}
    kinds = {f["properties"]["classification"]["name"]: f["geometry"]["type"] for f in payload["features"]}
    assert kinds["Muscle"] == "MultiPolygon" and len(kinds) == 5  # two blocks meeting at a corner: two polygons
    tumour = next(f for f in payload["features"] if f["properties"]["classification"]["name"] == "Tumor")
    assert len(tumour["geometry"]["coordinates"]) == 2  # urothelium around the blood island: one hole


def test_geojson_read_back_gives_the_predicted_class_everywhere(predicted):
    folder, prediction, _ = predicted
    predict.write_geojson(folder / "back.geojson", prediction, predict.class_names(), PALETTE)
    frame = prediction.frame
    regions, skipped = annotations.read_annotations(folder / "back.geojson", (frame.width, frame.height),
                                                    (frame.x, frame.y))
    assert skipped == {}
    rng = np.random.default_rng(0)
    cells = np.argwhere(np.ones(prediction.grid.shape, bool))
    points = prediction.centres(cells) + rng.uniform(-0.45, 0.45, (len(cells), 2)) * CELL  # anywhere in the cell
    found = np.full(len(points), -1)
    for region in regions:
        hit = annotations.inside(points, region.rings)
        assert not (found[hit] >= 0).any()  # regions never overlap
        found[hit] = region.label
    np.testing.assert_array_equal(found, prediction.grid[cells[:, 0], cells[:, 1]])


@pytest.mark.parametrize("seed", range(4))
def test_region_polygons_cover_exactly_the_cells_of_random_grids(seed):
    mask = np.random.default_rng(seed).random((12, 12)) < 0.55
    polygons = predict.region_polygons(mask)
    centres = np.argwhere(np.ones(mask.shape, bool))[:, ::-1] + 0.5
    covered = np.zeros(len(centres), int)
    for polygon in polygons:
        covered += annotations.inside(centres, polygon)
        assert _signed_area(polygon[0]) > 0 and all(_signed_area(hole) < 0 for hole in polygon[1:])
        for ring in polygon:
            assert (ring[0] == ring[-1]).all() and len(np.unique(ring[:-1], axis=0)) == len(ring) - 1
    np.testing.assert_array_equal(covered, mask.ravel().astype(int))  # each cell once, glass never
    assert sum(_signed_area(r) for p in polygons for r in p) == mask.sum()


def test_class_names_take_the_users_spelling_and_refuse_unknown_classes(tmp_path):
    assert predict.class_names() == ["Blood", "Damaged", "Muscle", "Stroma", "Urothelium"]
    (tmp_path / "map.json").write_text(json.dumps({"Blood vessel": "blood", "stroma": "stroma"}))
    assert predict.class_names(tmp_path / "map.json")[:4] == ["Blood vessel", "Damaged", "Muscle", "Stroma"]
    with pytest.raises(ValueError, match="class mapping tumor=tumour"):
        predict.class_names("Tumor=tumour")


def test_a_model_that_is_not_a_triplet_classifier_or_a_stride_too_large_is_refused(predicted):
    import keras

    folder, _, _ = predicted
    single = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.GlobalAveragePooling2D(),
                               keras.layers.Dense(5)])
    with pytest.raises(ValueError, match=r"model: not a TRI-CNN, whose three \(T, T, 3\) tile inputs give one output"):
        predict.predict_slide(single, folder / "slide.scn")
    model = helpers.palette_classifier(PALETTE, tile_size=CELL)
    with pytest.raises(ValueError, match=r"stride 1000 exceeds the slide .*slide.scn of 512x512 pixels"):
        predict.predict_slide(model, folder / "slide.scn", stride=1000)
    with pytest.raises(ValueError, match="stride must be a positive whole number"):
        predict.predict_slide(model, folder / "slide.scn", stride=0)
    with pytest.raises(ValueError, match="object_type must be annotation or detection"):
        predict.class_features(predicted[1], predict.class_names(), PALETTE, "cell")
