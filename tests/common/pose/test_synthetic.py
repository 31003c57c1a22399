import json

import numpy as np
import pytest

from common.pose import data as pose_data
from common.pose import synthetic as synthetic_pose


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("pose")
    counts = synthetic_pose.write_dataset(root, num_images=10, seed=3, size=128)
    return root, counts


def test_written_in_the_mpii_json_form_the_loader_reads(data):
    root, counts = data
    assert counts == {"train": 8, "valid": 2}
    assert len(list((root / "images").glob("*.jpg"))) == 10
    entry = json.loads((root / "annot" / "train.json").read_text(encoding="utf-8"))[0]
    assert set(entry) == {"image", "center", "scale", "joints", "joints_vis", "head_box"}
    records = pose_data.load_split(root, "train") + pose_data.load_split(root, "valid")
    assert len(records) == 10
    for record in records:
        assert record.joints.shape == (16, 2) and record.visible.sum() >= 12
        inside = record.joints[record.visible]
        assert np.all((inside >= 0) & (inside <= 127))
        # The crop square (after the loader's corrections) holds the figure.
        assert np.all(np.abs(inside - record.center) <= record.side / 2)
        # The head box is around the head: upper neck and head top lie inside it.
        (x1, y1), (x2, y2) = record.head_box
        for x, y in record.joints[[8, 9]]:
            assert x1 - 1e-6 <= x <= x2 + 1e-6 and y1 - 1e-6 <= y <= y2 + 1e-6


def test_same_seed_same_data(data, tmp_path):
    root, _ = data
    synthetic_pose.write_dataset(tmp_path, num_images=10, seed=3, size=128)
    valid = (root / "annot" / "valid.json").read_text(encoding="utf-8")
    assert (tmp_path / "annot" / "valid.json").read_text(encoding="utf-8") == valid
    other = synthetic_pose.write_dataset(tmp_path / "other", num_images=10, seed=4, size=128)
    assert other == {"train": 8, "valid": 2}
    assert (tmp_path / "other" / "annot" / "valid.json").read_text(encoding="utf-8") != valid


def test_figures_face_the_camera():
    # Right joints sit on the image's left of their left partners along the shoulder and hip lines.
    rng = np.random.default_rng(0)
    for _ in range(20):
        joints = synthetic_pose.random_pose(rng, 40.0, np.array([100.0, 120.0]))
        assert joints[12, 0] < joints[13, 0] and joints[2, 0] < joints[3, 0]


def test_the_image_is_cluttered_and_shows_the_figure(data):
    root, _ = data
    (record,) = pose_data.load_split(root, "train")[:1]
    image = pose_data.read_image(record.image).astype(float)
    assert image.shape == (128, 128, 3) and image.std() > 20
    head = np.round((record.joints[8] + record.joints[9]) / 2).astype(int)
    np.testing.assert_allclose(image[head[1], head[0]], synthetic_pose.HEAD_COLOUR, atol=40)


@pytest.mark.parametrize("kwargs, message", [(dict(num_images=1), "images"), (dict(size=32), "size")])
def test_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        synthetic_pose.write_dataset(tmp_path, **kwargs)
