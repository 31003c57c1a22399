"""QuPath GeoJSON annotations and points sampled inside them."""

import json

import numpy as np
import pytest

from common.errors import DataError
from common.slides import annotations
from tests import helpers


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


def test_qupath_exports_old_and_new_read_alike(tmp_path):
    ring = [[10, 10], [100, 10], [100, 100], [10, 10]]
    new, _ = annotations.read_annotations(helpers.qupath_geojson(tmp_path / "new.geojson", "Muscle", ring), (200, 200))
    old = [{"type": "Feature", "properties": {"classification": "muscle"},
            "geometry": {"type": "MultiPolygon", "coordinates": [[ring], [[[150, 150], [160, 150], [150, 160]]]]}}]
    (tmp_path / "old.geojson").write_text(json.dumps(old))
    multi, skipped = annotations.read_annotations(tmp_path / "old.geojson", (200, 200))
    assert [a.label for a in new] == [2] and [a.label for a in multi] == [2, 2] and skipped == {}
    np.testing.assert_array_equal(new[0].rings[0], multi[0].rings[0])


def _feature(name, ring, kind="Polygon"):
    classification = None if name is None else {"name": name, "color": [0, 0, 0]}
    coordinates = [ring] if kind == "Polygon" else ring[0]
    return {"type": "Feature", "geometry": {"type": kind, "coordinates": coordinates},
            "properties": {"objectType": "annotation", **({"classification": classification} if name else {})}}


def test_unclassified_and_unknown_classes_are_skipped_and_counted(tmp_path):
    ring = [[10, 10], [100, 10], [100, 100], [10, 10]]
    features = ([_feature(None, ring)] * 3 + [_feature("Tumor", ring)] * 2 + [_feature(" STROMA ", ring)]
                + [_feature("Urothelium", ring, "Point")])
    path = tmp_path / "X.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    regions, skipped = annotations.read_annotations(path, (200, 200))
    assert [a.label for a in regions] == [3]  # " STROMA ": stripped, any case
    assert skipped == {"unclassified": 3, "'Tumor'": 2, "point or line": 1}
    assert annotations.skipped_line(path, skipped) == \
        f"skipped 1 point or line, 3 unclassified and 2 'Tumor' annotations in {path}"
    assert annotations.skipped_line("Y.geojson", {"'Tumor'": 2}) == "skipped 2 'Tumor' annotations in Y.geojson"
    mapped, skipped = annotations.read_annotations(path, (200, 200), classes=annotations.class_map("tumor=urothelium"))
    assert sorted(a.label for a in mapped) == [3, 4, 4] and skipped == {"unclassified": 3, "point or line": 1}


def test_class_map_from_text_or_json_file(tmp_path):
    assert annotations.class_map()["muscle"] == 2 and len(annotations.class_map()) == 5
    mapping = annotations.class_map(" Tumor = UROTHELIUM ,Blood vessel=blood")
    assert mapping["tumor"] == 4 and mapping["blood vessel"] == 0 and mapping["stroma"] == 3
    (tmp_path / "classes.json").write_text(json.dumps({"Cautery": "damaged", "Muscularis propria": "Muscle"}))
    mapping = annotations.class_map(tmp_path / "classes.json")
    assert mapping["cautery"] == 1 and mapping["muscularis propria"] == 2
    assert annotations.class_map(str(tmp_path / "classes.json")) == mapping
    for bad in ("Tumor=tumour", "Tumor", "=stroma"):
        with pytest.raises(ValueError, match="class mapping .*model class one of blood, damaged"):
            annotations.class_map(bad)
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(DataError, match="broken.json: not a readable JSON class mapping"):
        annotations.class_map(tmp_path / "broken.json")


def test_qupath_coordinates_shift_by_the_origin_and_are_checked_against_the_frame(tmp_path):
    path = helpers.qupath_geojson(tmp_path / "frame.geojson", "Blood", [[0, 0], [300, 0], [300, 200], [0, 0]])
    (region,), _ = annotations.read_annotations(path, (300, 200), origin=(1000, 500))
    np.testing.assert_array_equal(region.rings[0][:3], [[1000, 500], [1300, 500], [1300, 700]])
    with pytest.raises(DataError, match=r"frame.geojson: feature 0 \(Blood\) has vertex \(300, 0\) outside "
                       r"the slide of 299x200 pixels"):
        annotations.read_annotations(path, (299, 200), origin=(1000, 500))


SQUARE = np.array([[0, 0], [40, 0], [40, 40], [0, 40], [0, 0]], float)
FLAWS = [
    ("square", [SQUARE], None),
    ("square with a hole", [SQUARE, np.array([[10, 10], [20, 10], [20, 20], [10, 10]], float)], None),
    ("hole touching the outline at a corner", [SQUARE, np.array([[0, 0], [20, 10], [10, 20], [0, 0]], float)], None),
    ("figure eight", [SQUARE[[0, 1, 3, 2, 0]]], annotations.SELF_INTERSECTING),
    ("hole across the outline", [SQUARE, np.array([[30, 10], [50, 10], [50, 20], [30, 10]], float)],
     annotations.SELF_INTERSECTING),
    ("two vertices", [SQUARE[[0, 2, 0]]], annotations.DEGENERATE),
    ("one line", [np.array([[0, 0], [10, 10], [30, 30], [0, 0]], float)], annotations.DEGENERATE),
    ("no rings", [], annotations.DEGENERATE),
]


@pytest.mark.parametrize("rings, flaw", [row[1:] for row in FLAWS], ids=[row[0] for row in FLAWS])
def test_polygon_flaws(rings, flaw):
    assert annotations.polygon_flaw(tuple(rings)) == flaw


def test_crossings_agree_with_testing_every_pair():
    rng = np.random.default_rng(0)

    def every_pair(ring):
        a, b = ring, np.roll(ring, -1, axis=0)
        i, j = np.triu_indices(len(ring), 1)
        side = annotations._side
        return bool(np.any((side(a[i], b[i], a[j]) * side(a[i], b[i], b[j]) < 0)
                           & (side(a[j], b[j], a[i]) * side(a[j], b[j], b[i]) < 0)))

    for _ in range(200):
        ring = rng.integers(0, 12, (int(rng.integers(3, 9)), 2)).astype(float)
        expected = every_pair(ring)
        for budget in (1, 5, 1 << 21):  # chunks of every size give the same answer
            assert annotations._crossings(ring, np.roll(ring, -1, axis=0), budget) == expected


def test_a_figure_eight_is_repaired_by_the_even_odd_rule_and_sampled_in_both_loops(tmp_path):
    path = helpers.qupath_geojson(tmp_path / "eight.geojson", "Stroma", (SQUARE[[0, 1, 3, 2, 0]] * 5).tolist())
    (eight,), skipped = annotations.read_annotations(path, (200, 200))
    assert eight.repaired and skipped == {}
    assert annotations.area(eight) == pytest.approx(2 * 0.5 * 200 * 100, rel=0.005)  # two triangles
    assert annotations.even_odd_area((SQUARE * 5, SQUARE)) == pytest.approx(40000 - 1600, rel=0.005)  # a hole
    points, _ = annotations.sample_points([eight], 200, np.random.default_rng(0))
    lower = points[:, 1] < 100
    assert len(points) == 200 and 60 < lower.sum() < 140  # both loops, about half each
    assert annotations.repaired_line(path, 1) == (f"repaired 1 self-intersecting polygons in {path}: read by the "
                                                  "even-odd rule, as GEOS's make_valid repairs them (a figure eight "
                                                  "is its two loops)")
