import json

import cv2
import numpy as np
import pytest
import scipy.io

from common.pose import data as pose_data
from common.pose import mpii
from common.pose.data import DataError

RED, BLUE = (255, 0, 0), (0, 0, 255)


def _entry(image="a.png", **overrides):
    joints = [[40.0 + 3 * i, 30.0 + 4 * i] for i in range(16)]
    return {"image": image, "center": [64.0, 60.0], "scale": 0.4, "joints": joints, "joints_vis": [1] * 16,
            **overrides}


def _write(root, entries, images=("a.png",), size=128):
    (root / "annot").mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    for name in images:
        cv2.imwrite(str(root / "images" / name), np.full((size, size, 3), 90, np.uint8))
    path = root / "annot" / "train.json"
    path.write_text(json.dumps(entries))
    return path


def test_loader_applies_the_hrnet_mpii_corrections(tmp_path):
    path = _write(tmp_path, [_entry(head_box=[[11, 21], [31, 41]])])
    (record,) = pose_data.read_annotations(path)
    np.testing.assert_allclose(record.center, [63.0, 59.0 + 15 * 0.4])  # moved down 15 * scale, 0-based
    assert record.side == pytest.approx(200 * 0.4 * 1.25)
    np.testing.assert_allclose(record.joints[0], [39.0, 29.0])  # 1-based -> 0-based
    np.testing.assert_allclose(record.head_box, [[10, 20], [30, 40]])
    assert record.image == tmp_path / "images" / "a.png" and record.visible.all()


BAD_ENTRIES = [
    ({"joints": None}, "missing 'joints'"),
    ({"joints": [[1.0, 2.0]] * 15}, "15 joints, expected 16"),
    ({"joints_vis": [1] * 17}, "'joints_vis' has shape"),
    ({"image": "nowhere.jpg"}, "nowhere.jpg does not exist"),
    ({"scale": 0}, "scale must be > 0"),
]


@pytest.mark.parametrize("change, message", BAD_ENTRIES)
def test_bad_annotations_name_the_file(tmp_path, change, message):
    entry = _entry(**{k: v for k, v in change.items() if v is not None})
    for key in [k for k, v in change.items() if v is None]:
        del entry[key]
    path = _write(tmp_path, [_entry(), entry])
    with pytest.raises(DataError, match=message) as error:
        pose_data.read_annotations(path)
    assert str(path) in str(error.value) and "entry 1" in str(error.value)


def test_unreadable_annotation_files(tmp_path):
    with pytest.raises(DataError, match="no such annotation file"):
        pose_data.read_annotations(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match=f"{bad}: not JSON"):
        pose_data.read_annotations(bad)
    bad.write_text("{}")
    with pytest.raises(DataError, match="non-empty JSON list"):
        pose_data.read_annotations(bad)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="broken.png: not an image OpenCV can decode"):
        pose_data.read_image(tmp_path / "broken.png")


def test_head_boxes_from_the_toolkits_gt_valid_mat(tmp_path):
    entries = [_entry(), _entry()]
    path = _write(tmp_path, entries)
    path.rename(tmp_path / "annot" / "valid.json")
    boxes = np.array([[[10, 20], [30, 50]], [[5, 5], [9, 8]]], float)  # (N, corner, xy)
    missing = np.zeros((16, 2))
    missing[3, 1] = 1
    scipy.io.savemat(tmp_path / "annot" / "gt_valid.mat",
                     {"headboxes_src": np.transpose(boxes, (1, 2, 0)), "jnt_missing": missing})
    records = pose_data.load_split(tmp_path, "valid")
    np.testing.assert_allclose([r.head_box for r in records], boxes)
    assert records[0].visible.all() and records[1].visible.sum() == 15 and not records[1].visible[3]
    scipy.io.savemat(tmp_path / "annot" / "gt_valid.mat", {"headboxes_src": np.zeros((2, 2, 3))})
    with pytest.raises(DataError, match="3 head boxes for 2 annotations"):
        pose_data.load_split(tmp_path, "valid")


def test_gaussian_targets():
    maps = pose_data.gaussian_heatmaps([[3, 4], [2.5, 1], [70, 5], [1, 1]], [True, True, True, False], 16)
    assert maps.shape == (16, 16, 4) and maps.dtype == np.float32
    assert maps[4, 3, 0] == 1.0 and np.unravel_index(maps[..., 0].argmax(), (16, 16)) == (4, 3)
    assert maps[4, 3, 0] * np.exp(-0.5) == pytest.approx(maps[4, 4, 0])  # sigma 1
    assert maps[1, 2, 1] == pytest.approx(maps[1, 3, 1])  # sub-pixel centre between two pixels
    assert not maps[..., 2].any() and not maps[..., 3].any()  # outside the map, not annotated


def _figure_record(tmp_path):
    """A constructed figure: the right wrist is a red disc, the left wrist a blue one, elsewhere grey."""
    image = np.full((200, 200, 3), 90, np.uint8)
    joints = np.full((16, 2), 100.0)
    joints[10], joints[15] = (70.0, 90.0), (135.0, 110.0)  # r_wrist on the image's left, l_wrist right
    cv2.circle(image, (70, 90), 5, RED, -1)
    cv2.circle(image, (135, 110), 5, BLUE, -1)
    cv2.imwrite(str(tmp_path / "figure.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    visible = np.zeros(16, bool)
    visible[[10, 15]] = True
    return pose_data.PoseRecord(tmp_path / "figure.png", np.array([100.0, 100.0]), 180.0, joints, visible)


def _colour_at_joint(crop, heatmaps, joint):
    v, u = np.unravel_index(heatmaps[..., joint].argmax(), heatmaps.shape[:2])
    x, y = (int(round(4 * (c + 0.5) - 0.5)) for c in (u, v))
    r, g, b = crop[y, x] * 255
    return RED if r > 200 > 60 > max(g, b) else BLUE if b > 200 > 60 > max(r, g) else (int(r), int(g), int(b))


def test_flip_swaps_left_and_right_joints(tmp_path):
    record = _figure_record(tmp_path)
    crop, heatmaps, _ = pose_data.prepare_sample(record, 128)
    assert _colour_at_joint(crop, heatmaps, 10) == RED and _colour_at_joint(crop, heatmaps, 15) == BLUE
    flip_only = pose_data.Augmentation(scale=0.0, rotation=0.0, flip=1.0)
    flipped, flipped_maps, _ = pose_data.prepare_sample(record, 128, augmentation=flip_only,
                                                        rng=np.random.default_rng(0))
    np.testing.assert_allclose(flipped, crop[:, ::-1], atol=1 / 255)  # the crop is mirrored
    # After the mirror the red wrist is the person's left wrist: its heatmap is now channel 15.
    assert _colour_at_joint(flipped, flipped_maps, 15) == RED and _colour_at_joint(flipped, flipped_maps, 10) == BLUE
    assert sorted(map(tuple, mpii.FLIP_PAIRS)) == [(0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13)]
    joints, visible = pose_data.flip_joints(np.arange(32).reshape(16, 2), np.arange(16) < 3)
    assert joints[:, 0].tolist() == [10, 8, 6, 4, 2, 0, 12, 14, 16, 18, 30, 28, 26, 24, 22, 20]
    assert visible.tolist() == [False] * 3 + [True] * 3 + [False] * 10  # joints 0-2 became 5-3


def test_targets_follow_the_joints_under_scale_and_rotation(tmp_path):
    record = _figure_record(tmp_path)
    rng = np.random.default_rng(3)
    for _ in range(4):
        crop, heatmaps, matrix = pose_data.prepare_sample(record, 128, augmentation=pose_data.Augmentation(), rng=rng)
        assert crop.shape == (128, 128, 3) and heatmaps.shape == (32, 32, 16)
        assert {_colour_at_joint(crop, heatmaps, 10), _colour_at_joint(crop, heatmaps, 15)} == {RED, BLUE}
        assert matrix.shape == (2, 3)


def test_pose_dataset_batches_and_repeats_deterministically(tmp_path):
    record = _figure_record(tmp_path)
    records = [record] * 3

    def first_batches(seed):
        dataset = pose_data.pose_dataset(records, batch_size=2, input_size=64, training=True, seed=seed)
        return [(x.numpy(), y.numpy()) for x, y in dataset.take(3)]

    batches = first_batches(5)
    assert [b[0].shape for b in batches] == [(2, 64, 64, 3)] * 3 and batches[0][1].shape == (2, 16, 16, 16)
    again = first_batches(5)
    for (x, y), (x2, y2) in zip(batches, again):
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y, y2)
    evaluation = list(pose_data.pose_dataset(records, batch_size=2, input_size=64, training=False))
    assert [x.shape[0] for x, _ in evaluation] == [2, 1]  # one pass, the last batch kept
    for size in (102, 0):  # the heatmaps are a quarter of the crop; the model's stride is its trainer's check
        with pytest.raises(ValueError, match=rf"^input_size must be a positive multiple of 4 .*, got {size}$"):
            pose_data.pose_dataset(records, batch_size=2, input_size=size)


def test_image_coordinates_round_trip_through_the_crop():
    joints = np.array([[100.0, 80.0], [143.5, 210.25], [60.0, 130.0]])
    matrix = pose_data.crop_matrix(center=(110, 140), side=250, rotation=25, out_size=64, flip=True)
    on_heatmap = pose_data.transform_points(joints, matrix)
    np.testing.assert_allclose(pose_data.inverse_transform_points(on_heatmap, matrix), joints, atol=1e-9)
    batched = pose_data.inverse_transform_points(np.stack([on_heatmap] * 2), np.stack([matrix] * 2))
    np.testing.assert_allclose(batched, np.stack([joints] * 2), atol=1e-9)
