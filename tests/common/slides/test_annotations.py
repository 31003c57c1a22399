"""QuPath GeoJSON annotations and points sampled inside them."""

import json

import numpy as np

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
    new = annotations.read_annotations(helpers.qupath_geojson(tmp_path / "new.geojson", "Muscle", ring), (200, 200))
    old = [{"type": "Feature", "properties": {"classification": "muscle"},
            "geometry": {"type": "MultiPolygon", "coordinates": [[ring], [[[150, 150], [160, 150], [150, 160]]]]}}]
    (tmp_path / "old.geojson").write_text(json.dumps(old))
    multi = annotations.read_annotations(tmp_path / "old.geojson", (200, 200))
    assert [a.label for a in new] == [2] and [a.label for a in multi] == [2, 2]
    np.testing.assert_array_equal(new[0].rings[0], multi[0].rings[0])
