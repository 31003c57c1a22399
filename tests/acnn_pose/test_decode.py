import numpy as np
import pytest

import acnn_pose
from acnn_pose import decode
from common.pose import data as pose_data
from tests import helpers


def _gaussian(size, x, y, sigma=1.0):
    grid = np.arange(size, dtype=np.float64)
    return np.exp(-((grid[None, :] - x) ** 2 + (grid[:, None] - y) ** 2) / (2 * sigma**2))


@pytest.mark.parametrize("x, y", [(20.3, 11.7), (5.5, 40.1), (33.0, 33.0), (12.85, 50.45), (1.2, 61.6)])
def test_decoding_recovers_a_sub_pixel_joint(x, y):
    heatmaps = _gaussian(64, x, y)[None, :, :, None].astype(np.float32)
    coords, scores = decode.decode_heatmaps(heatmaps)
    error = np.abs(np.asarray(coords)[0, 0] - [x, y])
    print(f"joint at ({x}, {y}): decoded {np.asarray(coords)[0, 0].tolist()}, error {error.tolist()}")
    assert np.all(error <= 0.3)  # argmax alone can be off by 0.5
    assert float(np.asarray(scores)[0, 0]) == pytest.approx(heatmaps.max())


def test_quarter_offset_rules():
    h = np.zeros((1, 4, 5, 3), np.float32)
    h[0, 2, 2, 0], h[0, 2, 1, 0], h[0, 1, 2, 0] = 1.0, 0.5, 0.2  # left and upper neighbours higher
    h[0, 0, 4, 1] = 1.0  # on the border corner: no offset
    h[0, 2, 2, 2], h[0, 2, 1, 2], h[0, 2, 3, 2] = 1.0, 0.5, 0.5  # a tie: no offset
    coords, _ = decode.decode_heatmaps(h)
    assert np.asarray(coords)[0].tolist() == [[1.75, 1.75], [4.0, 0.0], [2.0, 2.0]]


def test_heatmap_and_input_crops_agree():
    joints = np.array([[100.0, 80.0], [143.5, 210.25], [60.0, 130.0]])
    on_heatmap = pose_data.transform_points(joints, pose_data.crop_matrix((110, 140), 250, 25, 64, flip=True))
    # Heatmap and input crops agree: x_input = 4 (u + 0.5) - 0.5.
    on_input = pose_data.transform_points(joints, pose_data.crop_matrix((110, 140), 250, 25, 256, flip=True))
    np.testing.assert_allclose(decode.heatmap_to_input(on_heatmap), on_input, atol=1e-9)


def test_decoded_joint_maps_back_to_the_original_image():
    # A joint's target heatmap, decoded and mapped back, lands within 0.3 heatmap pixels of the joint.
    joint = np.array([[171.3, 97.8]])
    matrix = pose_data.crop_matrix(center=(150, 120), side=300, rotation=-10, out_size=64)
    target = pose_data.gaussian_heatmaps(pose_data.transform_points(joint, matrix), [True], 64)
    coords, _ = decode.decode_heatmaps(target[None])
    back = pose_data.inverse_transform_points(np.asarray(coords)[0], matrix)
    assert np.linalg.norm(back - joint) <= 0.3 * 300 / 64 * np.sqrt(2)


def test_serving_outputs_pick_the_last_prediction_of_the_list():
    rng = np.random.default_rng(0)
    p1, p2, m1 = rng.random((1, 8, 8, 16)), rng.random((1, 8, 8, 16)), rng.random((1, 8, 8, 1))
    served = acnn_pose.serving_outputs(num_stacks=2)([p1, p2, m1])
    np.testing.assert_array_equal(np.asarray(served["heatmaps"]), p2)
    coords, scores = decode.decode_heatmaps(p2)
    np.testing.assert_allclose(np.asarray(served["keypoints"]), 4 * (np.asarray(coords) + 0.5) - 0.5)
    np.testing.assert_allclose(np.asarray(served["scores"]), np.asarray(scores))


def test_export_serves_the_last_prediction_and_keypoints(model_files, exported_files):
    # The one-stack hourglass `zoo export` wrote from its file (tests/conftest.py); the list case is tested above.
    model, _, _ = model_files["hourglass"]
    version_dir = exported_files["hourglass"]
    x = np.random.default_rng(0).random((2, 64, 64, 3), dtype=np.float32)
    last = np.asarray(model(x))
    coords, scores = decode.decode_heatmaps(last)
    expected = dict(heatmaps=last, keypoints=4 * (np.asarray(coords) + 0.5) - 0.5, scores=np.asarray(scores))
    # Loaded by TensorFlow alone (no model code is needed: tests/common/serve/test_export.py runs one in a process
    # without the zoo, and zoo export --verify refuses any op outside the zoo's own).
    served = helpers.load_serving(version_dir)(image=x)
    assert sorted(served) == ["heatmaps", "keypoints", "scores"] and served["keypoints"].shape == (2, 16, 2)
    for key, value in expected.items():
        assert served[key].dtype == np.float32, key
        np.testing.assert_allclose(served[key], value, atol=1e-4, err_msg=key)
